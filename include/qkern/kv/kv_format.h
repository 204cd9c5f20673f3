// How the KV cache stores K and V: the element formats, the int8 scheme, and
// the byte layout of one cache block.
//
// This header is all an attention kernel needs to read K/V straight from the
// cache: a block table (from PagedKvCache), a block's base pointer and a
// KvBlockLayout. It knows nothing about sequences or the pool.
//
// Int8 scheme: symmetric, one f32 scale per (token, kv head) row of head_dim
// values: scale = amax / 127, q = round_to_nearest_even(x * (127 / amax)),
// clamped to [-127, 127]; value = scale * q. A row whose amax is below
// kKvInt8MinAmax (~1.5e-36, where the scale would be subnormal) is stored as
// zeros with scale 0.
// Why per token and not per block:
//  - A token's scale is fixed when it is appended and never changes. A
//    per-block scale would have to grow when a later token raises the block's
//    amax, and then every earlier token of the block would be requantized
//    (extra error and a write of the whole block per append).
//  - The scale factors out of both attention products: score_t =
//    scale_t * dot(q, k_t) and out += (p_t * scale_t) * v_t, so the kernel
//    runs integer (or widened) dot products over the row and multiplies once.
//  - The cost is 4 bytes per head_dim values: ~3% of int8 data for
//    head_dim 128, ~6% for 64.
// (DESIGN.md speaks of "per-block scales": the scales do live in the block,
// next to the codes they scale, but there is one per row, for the reasons
// above.)
// Encoding: EncodeKvRow below is the specification and scalar reference;
// the cache writes rows with the per-target encoders of kv_codec-inl.h,
// which produce the same bytes and the same errors.
// Error bound of a stored value (derived in tests/kv_cache_test.cc):
// |x - value| <= scale * (1/2 + 2^-15), or <= amax for a row stored as zeros.
#ifndef QKERN_KV_KV_FORMAT_H_
#define QKERN_KV_KV_FORMAT_H_

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qkern/base/f16.h"
#include "qkern/base/status.h"

namespace qkern {

enum class KvFormat : uint32_t {
  kF32 = 0,
  kF16,   // IEEE half, round-to-nearest-even; |x| must stay <= 65504.
  kInt8,  // int8 codes plus one f32 scale per (token, kv head) row.
};

constexpr KvFormat kAllKvFormats[] = {KvFormat::kF32, KvFormat::kF16,
                                      KvFormat::kInt8};

inline bool IsKnownKvFormat(KvFormat format) {
  return static_cast<uint32_t>(format) <=
         static_cast<uint32_t>(KvFormat::kInt8);
}

struct KvFormatInfo {
  const char* name;
  size_t element_bytes;  // bytes per stored K or V value
  bool has_row_scale;    // one f32 scale per (token, kv head) row
};

// `format` must be known (IsKnownKvFormat).
inline const KvFormatInfo& GetKvFormatInfo(KvFormat format) {
  static constexpr KvFormatInfo kTable[] = {
      {"f32", 4, false},
      {"f16", 2, false},
      {"int8", 1, true},
  };
  return kTable[static_cast<uint32_t>(format)];
}

// Largest magnitude that rounds to a finite f16 (values from 65504 up to this
// bound round down to 65504).
constexpr float kKvF16Limit = 65520.0f;

// Smallest int8 row amax with a normal scale (amax / 127 >= FLT_MIN), so the
// reciprocal 127 / amax stays finite.
constexpr float kKvInt8MinAmax = 127.0f * FLT_MIN;

// --- One row: head_dim values of one token and one kv head -----------------

// Stores `n` floats in `format` at `values` (n * element_bytes bytes) and, for
// int8, the row's scale at `*scale`. Returns n on success, else the index of
// the first value the format cannot hold (not finite, or too large for f16);
// the row's bytes are then unspecified. Pointers need no alignment.
inline size_t EncodeKvRow(KvFormat format, const float* src, size_t n,
                          void* values, float* scale) {
  uint8_t* out = static_cast<uint8_t*>(values);
  switch (format) {
    case KvFormat::kF32:
      for (size_t i = 0; i < n; ++i) {
        if (!isfinite(src[i])) return i;
      }
      memcpy(out, src, n * sizeof(float));
      return n;
    case KvFormat::kF16:
      for (size_t i = 0; i < n; ++i) {
        // NaN fails the comparison too.
        if (!(fabsf(src[i]) < kKvF16Limit)) return i;
        const f16_t h = F16FromF32(src[i]);
        memcpy(out + 2 * i, &h, 2);
      }
      return n;
    case KvFormat::kInt8: {
      float amax = 0.0f;
      for (size_t i = 0; i < n; ++i) {
        if (!isfinite(src[i])) return i;
        amax = fmaxf(amax, fabsf(src[i]));
      }
      if (amax < kKvInt8MinAmax) amax = 0.0f;
      const float row_scale = amax / 127.0f;
      const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      memcpy(scale, &row_scale, sizeof(float));
      for (size_t i = 0; i < n; ++i) {
        // nearbyintf rounds ties to even in the default rounding mode, as the
        // SIMD conversions do; the clamp only guards against amax rounding.
        float r = nearbyintf(src[i] * inverse);
        r = fminf(fmaxf(r, -127.0f), 127.0f);
        const int8_t q = static_cast<int8_t>(r);
        memcpy(out + i, &q, 1);
      }
      return n;
    }
  }
  return 0;  // unknown format: nothing stored
}

// Inverse of EncodeKvRow: `n` floats to `dst`. `scale` is read for int8 only.
inline void DecodeKvRow(KvFormat format, const void* values, const float* scale,
                        size_t n, float* dst) {
  const uint8_t* in = static_cast<const uint8_t*>(values);
  switch (format) {
    case KvFormat::kF32:
      memcpy(dst, in, n * sizeof(float));
      return;
    case KvFormat::kF16:
      for (size_t i = 0; i < n; ++i) {
        f16_t h;
        memcpy(&h, in + 2 * i, 2);
        dst[i] = F32FromF16(h);
      }
      return;
    case KvFormat::kInt8: {
      float row_scale;
      memcpy(&row_scale, scale, sizeof(float));
      for (size_t i = 0; i < n; ++i) {
        int8_t q;
        memcpy(&q, in + i, 1);
        dst[i] = row_scale * static_cast<float>(q);
      }
      return;
    }
  }
}

// Moves `n` values of `element_bytes` each between the contiguous row that
// EncodeKvRow writes (and DecodeKvRow reads) and a row stored `stride` bytes
// apart in a block (KvBlockLayout::ValueStride).
inline void ScatterKvValues(const void* row, size_t n, size_t element_bytes,
                            void* dst, size_t stride) {
  const uint8_t* in = static_cast<const uint8_t*>(row);
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (size_t i = 0; i < n; ++i) {
    memcpy(out + i * stride, in + i * element_bytes, element_bytes);
  }
}
inline void GatherKvValues(const void* src, size_t stride, size_t n,
                           size_t element_bytes, void* row) {
  const uint8_t* in = static_cast<const uint8_t*>(src);
  uint8_t* out = static_cast<uint8_t*>(row);
  for (size_t i = 0; i < n; ++i) {
    memcpy(out + i * element_bytes, in + i * stride, element_bytes);
  }
}

// --- Block layout ----------------------------------------------------------
//
// A block holds `block_tokens` consecutive positions of one sequence for all
// layers, so one block table serves every layer. It is one piece of
// HeadBytes() per (layer, kv head):
//
//   K part: values[head_dim][block_tokens]  (dim-major)
//           scales[block_tokens]            (f32, int8 only)
//   V part: values[block_tokens][head_dim]  (token-major)
//           scales[block_tokens]            (f32, int8 only)
//
// and a pool of P blocks (SetPoolBlocks) stores the pieces (layer, kv
// head)-major, blocks innermost:
//
//   for layer in [0, num_layers):
//     for kv_head in [0, num_kv_heads):
//       for block in [0, P):
//         piece(block, layer, kv_head)
//
// A block's base, the address every offset below is taken from, is its
// piece of (layer 0, head 0); bases are BlockStride() = HeadBytes() apart.
// Before SetPoolBlocks (P = 1) this is one block alone: its pieces back to
// back in (layer, head) order.
//
// Each values and scales array starts on a kKvAlign boundary (padding after
// it when needed), and so does each piece, so a kernel's vector loads are
// aligned for the usual shapes. A row's values are ValueStride(part) bytes
// apart and rows TokenStride(part) bytes apart.
// Why this order: decode attention for one (layer, kv head) walks the block
// table and, per block, reads K then V of that head, with the int8 scales
// right behind the codes they scale. With the pool (layer, head)-major, the
// pieces of consecutive blocks are adjacent, so a sequence whose blocks were
// allocated in order is one stream per head, which memory serves far faster
// (the kernel still prefetches a tile ahead: without, 2-2.5x slower).
// Block-major (each block's pieces together) made every piece a separate 2-4
// KiB run a whole block apart: on a Zen 4 VM a plain read of that pattern
// (tools/kv_read_pattern.cc: Llama-3.2-1B int8, 16-token blocks) reached 10
// GB/s a core (13 with software prefetch one piece ahead) against 22 (26) over
// adjacent pieces and a 31 GB/s streaming roof. V rows are token-major because
// P*V accumulates whole rows. K is dim-major because q.k then runs with
// positions in the vector lanes: one FMA per (dim, row) with q's value
// broadcast, and no sum across lanes per position (which, token-major, costs
// about as many shuffles as the FMAs themselves at head_dim 64); the int8
// integer-dot kernel turns four dim rows into 4-byte groups per position with
// one byte permute. A kernel may read up to kKvMaxOverreadBytes past the end of
// a K values array (a vector load starting at the last dim's position s covers
// positions past the block's end): that stays inside the piece, because the
// head's V part (at least kKvAlign bytes) follows.
// Kernels must take every offset from this struct, never recompute them.

constexpr size_t kKvAlign = 64;
// Bytes a kernel may read past a K values array (see above): at most one
// vector of 16 f32 lanes minus one element.
constexpr size_t kKvMaxOverreadBytes = kKvAlign - 4;

enum class KvPart : uint32_t { kK = 0, kV = 1 };

// Upper limits that catch corrupt or absurd configurations early; all are far
// above any real model.
constexpr size_t kMaxKvLayers = 1024;
constexpr size_t kMaxKvHeads = 1024;
constexpr size_t kMaxKvHeadDim = 8192;
constexpr size_t kMaxKvBlockTokens = 4096;

namespace detail {

// a * b, or false if it does not fit size_t (size_t is 32 bits on some Arm).
inline bool KvCheckedMul(size_t a, size_t b, size_t* out) {
  if (a != 0 && b > SIZE_MAX / a) return false;
  *out = a * b;
  return true;
}

inline bool KvCheckedRoundUp(size_t bytes, size_t* out) {
  if (bytes > SIZE_MAX - (kKvAlign - 1)) return false;
  *out = (bytes + kKvAlign - 1) / kKvAlign * kKvAlign;
  return true;
}

}  // namespace detail

class KvBlockLayout {
 public:
  // Validates the shape and computes the layout; on error `*out` is unchanged.
  static Status Compute(size_t num_layers, size_t num_kv_heads, size_t head_dim,
                        size_t block_tokens, KvFormat format,
                        KvBlockLayout* out) {
    if (out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "KvBlockLayout: output is null");
    }
    if (!IsKnownKvFormat(format)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "KV cache: unknown format %u (known: 0 = f32, "
                        "1 = f16, 2 = int8)",
                        static_cast<unsigned>(format));
    }
    struct Limit {
      const char* name;
      size_t value;
      size_t max;
    };
    const Limit limits[] = {{"num_layers", num_layers, kMaxKvLayers},
                            {"num_kv_heads", num_kv_heads, kMaxKvHeads},
                            {"head_dim", head_dim, kMaxKvHeadDim},
                            {"block_tokens", block_tokens, kMaxKvBlockTokens}};
    for (const Limit& limit : limits) {
      if (limit.value == 0 || limit.value > limit.max) {
        return MakeStatus(StatusCode::kInvalidArgument,
                          "KV cache: %s = %zu, must be in [1, %zu]", limit.name,
                          limit.value, limit.max);
      }
    }
    const KvFormatInfo& info = GetKvFormatInfo(format);
    KvBlockLayout l;
    l.num_layers_ = num_layers;
    l.num_kv_heads_ = num_kv_heads;
    l.head_dim_ = head_dim;
    l.block_tokens_ = block_tokens;
    l.format_ = format;
    l.row_bytes_ = head_dim * info.element_bytes;
    size_t values, scales = 0, part, head, layer, block;
    bool ok = detail::KvCheckedMul(block_tokens, l.row_bytes_, &values) &&
              detail::KvCheckedRoundUp(values, &l.values_bytes_);
    if (ok && info.has_row_scale) {
      ok = detail::KvCheckedRoundUp(block_tokens * sizeof(float), &scales);
    }
    ok = ok && l.values_bytes_ <= SIZE_MAX - scales;
    part = ok ? l.values_bytes_ + scales : 0;
    ok = ok && detail::KvCheckedMul(part, 2, &head) &&
         detail::KvCheckedMul(head, num_kv_heads, &layer) &&
         detail::KvCheckedMul(layer, num_layers, &block);
    if (!ok) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "KV cache: block of %zu layers x %zu kv heads x %zu "
                        "tokens x head_dim %zu overflows size_t",
                        num_layers, num_kv_heads, block_tokens, head_dim);
    }
    l.part_bytes_ = part;
    l.head_bytes_ = head;
    l.block_bytes_ = block;
    l.slab_bytes_ = head;
    *out = l;
    return Status::Ok();
  }

  // Spreads the layout over a pool of `num_blocks` blocks (see above): the
  // offsets then step over num_blocks pieces per (layer, head). The pool's
  // storage is num_blocks * BlockBytes(); fails if that overflows size_t.
  Status SetPoolBlocks(size_t num_blocks) {
    size_t slab, pool;
    if (num_blocks == 0 ||
        !detail::KvCheckedMul(num_blocks, head_bytes_, &slab) ||
        !detail::KvCheckedMul(num_blocks, block_bytes_, &pool)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "KV cache: a pool of %zu blocks of %zu bytes is empty "
                        "or overflows size_t",
                        num_blocks, block_bytes_);
    }
    slab_bytes_ = slab;
    return Status::Ok();
  }

  size_t num_layers() const { return num_layers_; }
  size_t num_kv_heads() const { return num_kv_heads_; }
  size_t head_dim() const { return head_dim_; }
  size_t block_tokens() const { return block_tokens_; }
  KvFormat format() const { return format_; }
  bool has_row_scales() const { return GetKvFormatInfo(format_).has_row_scale; }

  // Bytes of one stored row's values (head_dim values of one token and
  // head), as EncodeKvRow writes them contiguously.
  size_t RowBytes() const { return row_bytes_; }
  // Bytes between consecutive values of one row of `part` in a block (K is
  // dim-major, V token-major: see the layout above).
  size_t ValueStride(KvPart part) const {
    const size_t element = GetKvFormatInfo(format_).element_bytes;
    return part == KvPart::kK ? block_tokens_ * element : element;
  }
  // Bytes between the first values of consecutive tokens' rows of `part`.
  size_t TokenStride(KvPart part) const {
    return part == KvPart::kK ? GetKvFormatInfo(format_).element_bytes
                              : row_bytes_;
  }
  // One piece, a (layer, kv head) of a block: K part then V part.
  size_t HeadBytes() const { return head_bytes_; }
  // Storage of one block, all its pieces.
  size_t BlockBytes() const { return block_bytes_; }
  // Bytes between the bases of consecutive blocks in a pool.
  size_t BlockStride() const { return head_bytes_; }

  // Offset of the values array of one part.
  // Arguments must be in range (checked by the cache's entry points).
  size_t ValuesOffset(size_t layer, size_t kv_head, KvPart part) const {
    return (layer * num_kv_heads_ + kv_head) * slab_bytes_ +
           static_cast<size_t>(part) * part_bytes_;
  }
  // Offset of the [block_tokens] f32 scales of one part (int8 only).
  size_t ScalesOffset(size_t layer, size_t kv_head, KvPart part) const {
    return ValuesOffset(layer, kv_head, part) + values_bytes_;
  }
  // Offset of the first value of one token's row, `slot` in
  // [0, block_tokens); the others follow ValueStride(part) bytes apart.
  size_t RowOffset(size_t layer, size_t kv_head, KvPart part,
                   size_t slot) const {
    return ValuesOffset(layer, kv_head, part) + slot * TokenStride(part);
  }
  size_t ScaleOffset(size_t layer, size_t kv_head, KvPart part,
                     size_t slot) const {
    return ScalesOffset(layer, kv_head, part) + slot * sizeof(float);
  }

 private:
  size_t num_layers_ = 0;
  size_t num_kv_heads_ = 0;
  size_t head_dim_ = 0;
  size_t block_tokens_ = 0;
  KvFormat format_ = KvFormat::kF32;
  size_t row_bytes_ = 0;
  size_t values_bytes_ = 0;  // rounded up to kKvAlign
  size_t part_bytes_ = 0;    // values (+ scales), aligned
  size_t head_bytes_ = 0;
  size_t block_bytes_ = 0;
  size_t slab_bytes_ = 0;  // one (layer, head)'s pieces of every block
};

}  // namespace qkern

#endif  // QKERN_KV_KV_FORMAT_H_
