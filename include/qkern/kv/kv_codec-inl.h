// Per-target encoders of KV rows: f32 values to the cache formats of
// kv_format.h (f32, f16, int8 with one f32 scale per row). EncodeKvRow in
// kv_format.h is the specification and the scalar reference; these give the
// same bytes and the same error index for every input (tested bit for bit
// on every target in tests/kv_cache_test.cc).
//
// The encoders are written as "sinks" that a producer feeds with the row's
// values, a vector or a single value at a time, at known offsets:
//  - KvRowVisitPlain loads the row from memory (EncodeKvRow, WriteKV);
//  - rope-inl.h feeds the rotated K values of a head straight from its
//    registers (RopeAndWriteK), so K is rotated and encoded in one pass.
// f32 and f16 need one pass (check and store). int8 needs the row's amax
// before the first code, so its producer runs twice: once into an amax sink,
// once into the quantizing sink (for RoPE the rotation is recomputed, which
// costs less than a round trip through memory and needs no buffer).
//
// Errors: a value the format cannot hold (not finite; |x| >= 65520 for f16)
// makes the encoder report the smallest such index and its value, as the
// reference does; the row's bytes are then unspecified. Checks are per
// vector (one compare and a mask test); only a failing vector is examined
// lane by lane.
//
// f16 on SSSE3/SSE4/EMU128/SCALAR: Highway 1.0.3's software DemoteTo
// truncates the mantissa and maps Inf/NaN to finite values, so those
// targets round in integer arithmetic (round to nearest even, as the
// reference) and all targets reject non-finite or too large values before
// converting; hardware conversions (F16C, NEON, SVE) round to nearest even.

// Target-independent part, emitted once.
#ifndef QKERN_KV_KV_CODEC_INL_ONCE_
#define QKERN_KV_KV_CODEC_INL_ONCE_

#include <stddef.h>
#include <stdint.h>

#include "qkern/kv/kv_format.h"

#endif  // QKERN_KV_KV_CODEC_INL_ONCE_

#if defined(QKERN_KV_KV_CODEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KV_KV_CODEC_INL_H_
#undef QKERN_KV_KV_CODEC_INL_H_
#else
#define QKERN_KV_KV_CODEC_INL_H_
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <hwy/highway.h>

#include "qkern/base/f16.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// True where DemoteTo(f16) is Highway's software conversion (see above).
#if (HWY_ARCH_X86 && HWY_TARGET >= HWY_SSE4) || HWY_TARGET == HWY_EMU128 || \
    HWY_TARGET == HWY_SCALAR
constexpr bool kKvSoftF16 = true;
#else
constexpr bool kKvSoftF16 = false;
#endif

// Finite f32 lanes with |x| < 65520 to IEEE half bits, round to nearest
// even, stored at `out` (Lanes(d) * 2 bytes, unaligned).
template <class D>
HWY_INLINE void StoreKvF16(D d, hn::Vec<D> v, uint8_t* out) {
  if constexpr (!kKvSoftF16) {
    const hn::Rebind<hwy::float16_t, D> dh;
    hn::StoreU(hn::DemoteTo(dh, v), dh, reinterpret_cast<hwy::float16_t*>(out));
  } else {
    // The same integer steps as F16FromF32 (qkern/base/f16.h), per lane.
    const hn::RebindToUnsigned<D> du;
    const hn::RebindToSigned<D> di;
    const hn::Rebind<uint16_t, D> du16;
    const auto bits = hn::BitCast(du, v);
    const auto sign = hn::ShiftRight<16>(hn::And(bits, hn::Set(du, 0x80000000u)));
    const auto abs = hn::And(bits, hn::Set(du, 0x7FFFFFFFu));
    const auto odd = hn::And(hn::ShiftRight<13>(abs), hn::Set(du, 1u));
    const auto normal = hn::ShiftRight<13>(hn::Sub(
        hn::Add(hn::Add(abs, hn::Set(du, 0xFFFu)), odd), hn::Set(du, 0x38000000u)));
    // Below 2^-14: adding 0.5 rounds to multiples of 2^-24 in f32.
    const auto scaled = hn::Add(hn::BitCast(d, abs), hn::Set(d, 0.5f));
    const auto subnormal =
        hn::Sub(hn::BitCast(du, scaled), hn::Set(du, 0x3F000000u));
    const auto is_subnormal =
        hn::Lt(hn::BitCast(di, abs), hn::Set(di, 0x38800000));
    const auto half = hn::Or(
        sign, hn::IfThenElse(hn::RebindMask(du, is_subnormal), subnormal, normal));
    hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di, half)), du16,
               reinterpret_cast<uint16_t*>(out));
  }
}

// Lanes of a vector, for the rare look at a failing one.
constexpr size_t kKvMaxLanes = HWY_MAX_BYTES / sizeof(float);

// Records the first (smallest-index) value a format cannot hold.
struct KvBadValue {
  size_t index = SIZE_MAX;
  float value = 0.0f;

  HWY_INLINE void Note(size_t i, float x) {
    if (i < index) {
      index = i;
      value = x;
    }
  }
  // `ok` lanes are storable; the others are noted.
  template <class D, class M>
  HWY_NOINLINE void NoteLanes(D d, hn::Vec<D> v, M ok, size_t offset) {
    HWY_ALIGN float lanes[kKvMaxLanes];
    HWY_ALIGN float good[kKvMaxLanes];
    hn::Store(v, d, lanes);
    hn::Store(hn::IfThenElseZero(ok, hn::Set(d, 1.0f)), d, good);
    for (size_t j = 0; j < hn::Lanes(d); ++j) {
      if (good[j] == 0.0f) Note(offset + j, lanes[j]);
    }
  }
};

// f32: checks finiteness and stores.
struct KvSinkF32 {
  uint8_t* out;
  KvBadValue bad;

  template <class D>
  HWY_INLINE void Vec(D d, hn::Vec<D> v, size_t i) {
    const auto ok = hn::Lt(hn::Abs(v), hn::Set(d, HUGE_VALF));
    if (HWY_UNLIKELY(!hn::AllTrue(d, ok))) bad.NoteLanes(d, v, ok, i);
    hn::StoreU(v, d, reinterpret_cast<float*>(out) + i);
  }
  HWY_INLINE void One(float x, size_t i) {
    if (!isfinite(x)) bad.Note(i, x);
    memcpy(out + i * sizeof(float), &x, sizeof(float));
  }
};

// f16: checks |x| < kKvF16Limit (false for NaN) and stores halves.
struct KvSinkF16 {
  uint8_t* out;
  KvBadValue bad;

  template <class D>
  HWY_INLINE void Vec(D d, hn::Vec<D> v, size_t i) {
    const auto ok = hn::Lt(hn::Abs(v), hn::Set(d, kKvF16Limit));
    if (HWY_UNLIKELY(!hn::AllTrue(d, ok))) {
      bad.NoteLanes(d, v, ok, i);
      return;  // the row is unspecified anyway; never convert Inf/NaN
    }
    StoreKvF16(d, v, out + i * sizeof(f16_t));
  }
  HWY_INLINE void One(float x, size_t i) {
    if (!(fabsf(x) < kKvF16Limit)) {
      bad.Note(i, x);
      return;
    }
    const f16_t h = F16FromF32(x);
    memcpy(out + i * sizeof(f16_t), &h, sizeof(f16_t));
  }
};

// int8, first pass: finiteness and the row's amax.
struct KvSinkInt8Amax {
  float amax = 0.0f;
  KvBadValue bad;

  template <class D>
  HWY_INLINE void Vec(D d, hn::Vec<D> v, size_t i) {
    const auto a = hn::Abs(v);
    const auto ok = hn::Lt(a, hn::Set(d, HUGE_VALF));
    if (HWY_UNLIKELY(!hn::AllTrue(d, ok))) {
      bad.NoteLanes(d, v, ok, i);
      return;
    }
    amax = fmaxf(amax, hn::GetLane(hn::MaxOfLanes(d, a)));
  }
  HWY_INLINE void One(float x, size_t i) {
    if (!isfinite(x)) {
      bad.Note(i, x);
      return;
    }
    amax = fmaxf(amax, fabsf(x));
  }
};

// int8, second pass: codes rne(x * inverse) clamped to [-127, 127].
struct KvSinkInt8Codes {
  uint8_t* out;
  float inverse;

  template <class D>
  HWY_INLINE void Vec(D d, hn::Vec<D> v, size_t i) {
    const hn::RebindToSigned<D> di;
    const hn::Rebind<int8_t, D> d8;
    auto r = hn::Round(hn::Mul(v, hn::Set(d, inverse)));
    r = hn::Min(hn::Max(r, hn::Set(d, -127.0f)), hn::Set(d, 127.0f));
    hn::StoreU(hn::DemoteTo(d8, hn::ConvertTo(di, r)), d8,
               reinterpret_cast<int8_t*>(out) + i);
  }
  HWY_INLINE void One(float x, size_t i) {
    float r = nearbyintf(x * inverse);
    r = fminf(fmaxf(r, -127.0f), 127.0f);
    const int8_t q = static_cast<int8_t>(r);
    memcpy(out + i, &q, 1);
  }
};

// Feeds src[0, n) to `sink` in whole vectors, then one value at a time.
template <class Sink>
HWY_INLINE void KvRowVisitPlain(const float* HWY_RESTRICT src, size_t n,
                                Sink& sink) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) sink.Vec(d, hn::LoadU(d, src + i), i);
  for (; i < n; ++i) sink.One(src[i], i);
}

// Encodes the `n` values a producer yields: `visit(sink)` must feed every
// index in [0, n) exactly once, and yield the same values each time it runs
// (int8 runs it twice). Returns n, or the smallest index of a value the
// format cannot hold (its value in *bad_value when not null).
template <class Visit>
HWY_INLINE size_t EncodeKvRowFrom(KvFormat format, size_t n,
                                  const Visit& visit, void* values,
                                  float* scale, float* bad_value) {
  uint8_t* out = static_cast<uint8_t*>(values);
  KvBadValue bad;
  switch (format) {
    case KvFormat::kF32: {
      KvSinkF32 sink{out, {}};
      visit(sink);
      bad = sink.bad;
      break;
    }
    case KvFormat::kF16: {
      KvSinkF16 sink{out, {}};
      visit(sink);
      bad = sink.bad;
      break;
    }
    case KvFormat::kInt8: {
      KvSinkInt8Amax amax_sink;
      visit(amax_sink);
      bad = amax_sink.bad;
      if (bad.index != SIZE_MAX) break;
      // Same scalar steps as the reference.
      float amax = amax_sink.amax;
      if (amax < kKvInt8MinAmax) amax = 0.0f;
      const float row_scale = amax / 127.0f;
      const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      memcpy(scale, &row_scale, sizeof(float));
      KvSinkInt8Codes sink{out, inverse};
      visit(sink);
      break;
    }
    default:
      return 0;  // unknown format: nothing stored
  }
  if (bad.index == SIZE_MAX) return n;
  if (bad_value != nullptr) *bad_value = bad.value;
  return bad.index;
}

// EncodeKvRow (kv_format.h), vectorized.
HWY_INLINE size_t EncodeKvRowSimd(KvFormat format, const float* src, size_t n,
                                  void* values, float* scale) {
  return EncodeKvRowFrom(
      format, n, [src, n](auto& sink) { KvRowVisitPlain(src, n, sink); },
      values, scale, nullptr);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
