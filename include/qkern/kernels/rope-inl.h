// Per-target rotary position embedding (RoPE) of f32 rows, in place or into a
// second buffer. The public API, the table and the layouts are described in
// qkern/kernels/rope.h.
//
// Each head is rotated pair by pair with one cos/sin row per token, taken from
// the precomputed table or, for positions past it, computed on the fly. The
// row format is chosen so that both layouts need only contiguous loads:
//  - NeoX (rotate-half): pair i is (x[i], x[i + half]), so the two halves are
//    two contiguous streams and the row is cos[half], sin[half].
//  - GPT-J (interleaved): pair i is (x[2i], x[2i + 1]). Highway 1.0.3 has no
//    whole-vector interleave on x86 (InterleaveLower works per 128-bit block),
//    so instead of de-interleaving x the row is stored per lane: cos[2i] =
//    cos[2i + 1] = c_i, sin[2i] = -s_i, sin[2i + 1] = +s_i. Then
//    y = x * cos + Reverse2(x) * sin is the whole rotation, and Reverse2 (swap
//    of adjacent lanes) exists on every target.

#include "qkern/kernels/rope_types.h"

#if defined(QKERN_KERNELS_ROPE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_ROPE_INL_H_
#undef QKERN_KERNELS_ROPE_INL_H_
#else
#define QKERN_KERNELS_ROPE_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>

#include <hwy/highway.h>

#include "qkern/kv/kv_codec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The rotation is written once, as a producer of rotated values: it feeds
// each result to a sink (sink.Vec(d, v, i) for a vector of lanes [i, i +
// Lanes(d)), sink.One(x, i) for one value), so the in-place rotation (a
// storing sink) and the fused K write (an encoding sink, kv_codec-inl.h)
// run the same arithmetic and agree bit for bit.

// Rounding must not depend on how the compiler contracts a * b + c, or
// the two instantiations of a producer (storing, encoding) could differ in
// the last bit. SIMD targets' MulAdd is one instruction; SCALAR and EMU128
// implement it as a plain expression that GCC may or may not fuse (it does
// on aarch64), so there, and in the scalar tails, the fused form is spelled
// out with std::fma.
#if HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128
template <class D, class V>
HWY_INLINE V RopeMulAdd(D d, V mul, V x, V add, float sign = 1.0f) {
  float m[4], v[4], a[4];
  hn::StoreU(mul, d, m);
  hn::StoreU(x, d, v);
  hn::StoreU(add, d, a);
  for (size_t j = 0; j < hn::Lanes(d); ++j) a[j] = std::fma(sign * m[j], v[j], a[j]);
  return hn::LoadU(d, a);
}
template <class D, class V>
HWY_INLINE V RopeNegMulAdd(D d, V mul, V x, V add) {
  return RopeMulAdd(d, mul, x, add, -1.0f);
}
#else
template <class D, class V>
HWY_INLINE V RopeMulAdd(D /*d*/, V mul, V x, V add) {
  return hn::MulAdd(mul, x, add);
}
template <class D, class V>
HWY_INLINE V RopeNegMulAdd(D /*d*/, V mul, V x, V add) {
  return hn::NegMulAdd(mul, x, add);
}
#endif

// NeoX pairs [i, half) in whole vectors of `d`; returns the first pair left.
// Both halves are loaded before either result reaches the sink, so the sink
// may store over src.
template <class D, class Sink>
HWY_INLINE size_t RopeNeoxSpan(D d, const float* HWY_RESTRICT cos_row,
                               const float* HWY_RESTRICT sin_row,
                               const float* src, size_t half, size_t i,
                               Sink& sink) {
  const size_t N = hn::Lanes(d);
  for (; i + N <= half; i += N) {
    const auto c = hn::LoadU(d, cos_row + i);
    const auto s = hn::LoadU(d, sin_row + i);
    const auto x0 = hn::LoadU(d, src + i);
    const auto x1 = hn::LoadU(d, src + half + i);
    const auto y0 = RopeNegMulAdd(d, x1, s, hn::Mul(x0, c));
    const auto y1 = RopeMulAdd(d, x0, s, hn::Mul(x1, c));
    sink.Vec(d, y0, i);
    sink.Vec(d, y1, half + i);
  }
  return i;
}

#if HWY_TARGET != HWY_SCALAR
// GPT-J lanes [i, rotary_dim) in whole vectors of `d` (an even lane count, so
// a vector never splits a pair); returns the first lane left.
template <class D, class Sink>
HWY_INLINE size_t RopeGptJSpan(D d, const float* HWY_RESTRICT cos_row,
                               const float* HWY_RESTRICT sin_row,
                               const float* src, size_t rotary_dim, size_t i,
                               Sink& sink) {
  const size_t N = hn::Lanes(d);
  for (; i + N <= rotary_dim; i += N) {
    const auto x = hn::LoadU(d, src + i);
    const auto swapped = hn::Reverse2(d, x);
    const auto y = RopeMulAdd(d, swapped, hn::LoadU(d, sin_row + i),
                              hn::Mul(x, hn::LoadU(d, cos_row + i)));
    sink.Vec(d, y, i);
  }
  return i;
}
#endif

// Feeds the rotated first rotary_dim values of one head to `sink`.
template <class Sink>
HWY_INLINE void RopeVisitHead(const float* HWY_RESTRICT cos_row,
                              const float* HWY_RESTRICT sin_row,
                              const float* src, size_t rotary_dim,
                              bool interleaved, Sink& sink) {
  const hn::ScalableTag<float> d;
  // Heads like 80 or 96 are not a multiple of wide vectors: 4-lane vectors
  // take most of the remainder before the scalar tail.
  const hn::CappedTag<float, 4> d4;
  if (!interleaved) {
    const size_t half = rotary_dim / 2;
    size_t i = RopeNeoxSpan(d, cos_row, sin_row, src, half, 0, sink);
    if (hn::Lanes(d) > 4) {
      i = RopeNeoxSpan(d4, cos_row, sin_row, src, half, i, sink);
    }
    for (; i < half; ++i) {
      const float x0 = src[i];
      const float x1 = src[half + i];
      const float y0 = std::fma(-x1, sin_row[i], x0 * cos_row[i]);
      const float y1 = std::fma(x0, sin_row[i], x1 * cos_row[i]);
      sink.One(y0, i);
      sink.One(y1, half + i);
    }
    return;
  }
  size_t i = 0;
#if HWY_TARGET != HWY_SCALAR
  // One-lane vectors cannot swap the lanes of a pair: the scalar target runs
  // the plain loop below for GPT-J.
  i = RopeGptJSpan(d, cos_row, sin_row, src, rotary_dim, i, sink);
  if (hn::Lanes(d) > 4) {
    i = RopeGptJSpan(d4, cos_row, sin_row, src, rotary_dim, i, sink);
  }
#endif
  for (; i < rotary_dim; i += 2) {
    const float x0 = src[i];
    const float x1 = src[i + 1];
    const float y0 = std::fma(x1, sin_row[i], x0 * cos_row[i]);
    const float y1 = std::fma(x0, sin_row[i + 1], x1 * cos_row[i + 1]);
    sink.One(y0, i);
    sink.One(y1, i + 1);
  }
}

// Stores rotated values to a head of f32.
struct RopeStoreSink {
  float* dst;

  template <class D>
  HWY_INLINE void Vec(D d, hn::Vec<D> v, size_t i) {
    hn::StoreU(v, d, dst + i);
  }
  HWY_INLINE void One(float x, size_t i) { dst[i] = x; }
};

// Rotates the first rotary_dim values of one head.
HWY_INLINE void RopeRotateHead(const float* HWY_RESTRICT cos_row,
                               const float* HWY_RESTRICT sin_row,
                               const float* src, float* dst, size_t rotary_dim,
                               bool interleaved) {
  RopeStoreSink sink{dst};
  RopeVisitHead(cos_row, sin_row, src, rotary_dim, interleaved, sink);
}

// Rotates one head of K (src, head_dim floats) and encodes it as the cache
// row `values` (+ `scale` for int8) in one pass: rotated values go from
// registers to the encoder, never to memory as f32. Returns head_dim, or the
// first index whose rotated value the format cannot hold (value in
// *bad_value), as EncodeKvRow on the rotated head would.
HWY_INLINE size_t RopeEncodeKvRow(const RopeKvRowCall& call,
                                  const float* HWY_RESTRICT src, void* values,
                                  float* scale, float* bad_value) {
  const size_t rotary_dim = call.rotary_dim;
  const size_t head_dim = call.head_dim;
  auto visit = [&](auto& sink) {
    RopeVisitHead(call.cos_row, call.sin_row, src, rotary_dim,
                  call.interleaved, sink);
    const hn::ScalableTag<float> d;
    const size_t N = hn::Lanes(d);
    size_t i = rotary_dim;
    for (; i + N <= head_dim; i += N) sink.Vec(d, hn::LoadU(d, src + i), i);
    for (; i < head_dim; ++i) sink.One(src[i], i);
  };
  return EncodeKvRowFrom(call.format, head_dim, visit, values, scale,
                         bad_value);
}

HWY_INLINE void RopeRows(const RopeCall& call) {
  const size_t row_floats = RopeRowFloats(call.rotary_dim, call.interleaved);
  const size_t pairs = call.rotary_dim / 2;
  const size_t pass_through = call.head_dim - call.rotary_dim;
  // Row for positions past the table; 8 KiB, never allocated.
  HWY_ALIGN float computed[2 * kMaxRopeHeadDim];
  for (size_t t = 0; t < call.num_tokens; ++t) {
    const int64_t position =
        call.positions != nullptr
            ? static_cast<int64_t>(call.positions[t])
            : call.first_position + static_cast<int64_t>(t);
    const float* cos_row;
    if (static_cast<uint64_t>(position) < call.table_positions) {
      cos_row = call.table + static_cast<size_t>(position) * 2 * row_floats;
    } else {
      ComputeRopeRow(call.inv_freq, pairs, call.attention_factor,
                     call.interleaved, position, computed,
                     computed + row_floats);
      cos_row = computed;
    }
    const float* sin_row = cos_row + row_floats;
    const float* src = call.src + t * call.src_stride;
    float* dst = call.dst + t * call.dst_stride;
    for (size_t h = 0; h < call.num_heads; ++h) {
      const float* head_src = src + h * call.head_dim;
      float* head_dst = dst + h * call.head_dim;
      RopeRotateHead(cos_row, sin_row, head_src, head_dst, call.rotary_dim,
                     call.interleaved);
      if (pass_through != 0 && head_dst != head_src) {
        memcpy(head_dst + call.rotary_dim, head_src + call.rotary_dim,
               pass_through * sizeof(float));
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
