// The non-matmul ops of a decoder layer, on f32 spans: RMSNorm, SiLU / GELU
// and their gated forms, softmax, residual add and scale, and the embedding
// row lookup from a (quantized) table.
//
//   RmsNorm(x, attn_norm_weight, 1e-5f, dim, xn);
//   SwiGlu(gate, up, ffn_dim, gate);               // in place into gate
//   AddInPlace(residual, attn_out, dim);           // residual += attn_out
//   Softmax(logits, vocab, 1.0f / temperature);
//   EmbeddingRow(token_embd, EmbeddingFormat::kQ8_0, vocab, dim, token, x);
//
// Every function validates its arguments in O(1) and returns a Status naming
// the offending value; then it runs the best SIMD target of this CPU. None
// allocates. Outputs may be the same pointer as an input where noted ("in
// place"), never a partially overlapping span. Error bounds are stated in
// the per-target files (norm-inl.h, activations-inl.h, softmax-inl.h,
// elementwise-inl.h, embedding-inl.h) and checked in tests/ops_test.cc.
#ifndef QKERN_KERNELS_OPS_H_
#define QKERN_KERNELS_OPS_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qkern/base/f16.h"
#include "qkern/base/status.h"
#include "qkern/dispatch.h"
#include "qkern/quant/block_formats.h"

namespace qkern {

namespace detail {

// True if the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte
// without starting at the same address (the only overlap the ops allow is
// exact aliasing).
inline bool OpsPartialOverlap(const void* a, size_t a_bytes, const void* b,
                              size_t b_bytes) {
  const uintptr_t pa = reinterpret_cast<uintptr_t>(a);
  const uintptr_t pb = reinterpret_cast<uintptr_t>(b);
  if (pa == pb) return false;
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

// Floats spanned by `rows` rows of n values `stride` apart, or false on
// overflow.
inline bool OpsSpanFloats(size_t rows, size_t n, size_t stride, size_t* out) {
  size_t last;
  if (__builtin_mul_overflow(rows - 1, stride, &last) ||
      __builtin_add_overflow(last, n, out) ||
      *out > (~size_t{0}) / sizeof(float)) {
    return false;
  }
  return true;
}

inline Status OpsCheckPointer(const char* op, const char* name, const void* p) {
  if (p == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "%s: %s is null", op, name);
  }
  return Status::Ok();
}

// Validates `rows` rows of n floats at x (stride x_stride) read, and at y
// (stride y_stride) written, y either exactly x (same stride) or disjoint.
inline Status OpsCheckRows(const char* op, const void* x, size_t x_stride,
                           const void* y, size_t y_stride, size_t rows,
                           size_t n) {
  if (rows > 1 && x_stride < n) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: x_stride = %zu is smaller than n = %zu", op,
                      x_stride, n);
  }
  if (rows > 1 && y_stride < n) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: y_stride = %zu is smaller than n = %zu", op,
                      y_stride, n);
  }
  size_t x_floats, y_floats;
  if (!OpsSpanFloats(rows, n, x_stride, &x_floats) ||
      !OpsSpanFloats(rows, n, y_stride, &y_floats)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s: %zu rows of n = %zu with strides %zu / %zu overflow",
                      op, rows, n, x_stride, y_stride);
  }
  if (x == y && rows > 1 && x_stride != y_stride) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: in place with x_stride = %zu != y_stride = %zu", op,
                      x_stride, y_stride);
  }
  if (OpsPartialOverlap(x, x_floats * sizeof(float), y,
                        y_floats * sizeof(float))) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: output overlaps an input without being the same "
                      "pointer",
                      op);
  }
  return Status::Ok();
}

// One span of n floats: in, out, exact aliasing allowed.
inline Status OpsCheckSpan(const char* op, const char* in_name, const float* in,
                           const char* out_name, const float* out, size_t n) {
  QKERN_RETURN_IF_ERROR(OpsCheckPointer(op, in_name, in));
  QKERN_RETURN_IF_ERROR(OpsCheckPointer(op, out_name, out));
  if (n > (~size_t{0}) / sizeof(float)) {
    return MakeStatus(StatusCode::kOutOfRange, "%s: n = %zu floats overflow",
                      op, n);
  }
  if (OpsPartialOverlap(in, n * sizeof(float), out, n * sizeof(float))) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: %s overlaps %s without being the same pointer", op,
                      out_name, in_name);
  }
  return Status::Ok();
}

}  // namespace detail

// ---------------------------------------------------------------------------
// RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, per row of n values.
// In place (y == x) allowed. eps >= 0 and finite; a zero row with eps = 0 has
// no scale and gives zeros. Relative error <= 3 f32 roundings.

inline Status RmsNormRows(const float* x, size_t x_stride, const float* weight,
                          float eps, size_t rows, size_t n, float* y,
                          size_t y_stride) {
  const char* op = "RmsNorm";
  if (!(eps >= 0.0f) || !isfinite(eps)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: eps = %g must be finite and >= 0", op,
                      static_cast<double>(eps));
  }
  if (n == 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: n = 0, a row needs at least 1 value", op);
  }
  if (rows == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "x", x));
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "weight", weight));
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "y", y));
  QKERN_RETURN_IF_ERROR(
      detail::OpsCheckRows(op, x, x_stride, y, y_stride, rows, n));
  size_t y_floats = 0;
  detail::OpsSpanFloats(rows, n, y_stride, &y_floats);
  if (weight == y || detail::OpsPartialOverlap(weight, n * sizeof(float), y,
                                               y_floats * sizeof(float))) {
    return MakeStatus(StatusCode::kInvalidArgument, "%s: y overlaps weight",
                      op);
  }
  detail::DispatchRmsNormRows(x, x_stride, weight, eps, rows, n, y, y_stride);
  return Status::Ok();
}

inline Status RmsNorm(const float* x, const float* weight, float eps, size_t n,
                      float* y) {
  return RmsNormRows(x, n, weight, eps, 1, n, y, n);
}

// ---------------------------------------------------------------------------
// Activations, y[i] = f(x[i]); in place (y == x) allowed; n == 0 is a no-op.

enum class GeluApproximation {
  kTanh,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GPT-2, Gemma
  kErf,   // x * Phi(x), Phi the normal CDF: BERT, PyTorch's default GELU
};

inline Status Silu(const float* x, size_t n, float* y) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckSpan("Silu", "x", x, "y", y, n));
  detail::DispatchSilu(x, n, y);
  return Status::Ok();
}

inline Status Gelu(const float* x, size_t n, float* y,
                   GeluApproximation approximation) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckSpan("Gelu", "x", x, "y", y, n));
  switch (approximation) {
    case GeluApproximation::kTanh:
      detail::DispatchGeluTanh(x, n, y);
      return Status::Ok();
    case GeluApproximation::kErf:
      detail::DispatchGeluErf(x, n, y);
      return Status::Ok();
  }
  return MakeStatus(StatusCode::kInvalidArgument,
                    "Gelu: unknown approximation %d",
                    static_cast<int>(approximation));
}

// Gated forms: out = act(gate) * up, the feed-forward of Llama (SwiGLU) and
// Gemma (GeGLU). out may be gate or up (in place), n == 0 is a no-op.
namespace detail {
inline Status OpsCheckGated(const char* op, const float* gate, const float* up,
                            size_t n, const float* out) {
  QKERN_RETURN_IF_ERROR(OpsCheckSpan(op, "gate", gate, "out", out, n));
  return OpsCheckSpan(op, "up", up, "out", out, n);
}
}  // namespace detail

inline Status SwiGlu(const float* gate, const float* up, size_t n, float* out) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckGated("SwiGlu", gate, up, n, out));
  detail::DispatchSwiGlu(gate, up, n, out);
  return Status::Ok();
}

inline Status GeGlu(const float* gate, const float* up, size_t n, float* out,
                    GeluApproximation approximation) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckGated("GeGlu", gate, up, n, out));
  switch (approximation) {
    case GeluApproximation::kTanh:
      detail::DispatchGeGluTanh(gate, up, n, out);
      return Status::Ok();
    case GeluApproximation::kErf:
      detail::DispatchGeGluErf(gate, up, n, out);
      return Status::Ok();
  }
  return MakeStatus(StatusCode::kInvalidArgument,
                    "GeGlu: unknown approximation %d",
                    static_cast<int>(approximation));
}

// ---------------------------------------------------------------------------
// Softmax of scale * x, in place, numerically stable for any finite logits
// (and -inf for masked positions, which get 0). scale > 0 and finite: use
// 1 / temperature when sampling. A row with no finite logit becomes zeros.

inline Status SoftmaxRows(float* x, size_t rows, size_t n, size_t stride,
                          float scale = 1.0f) {
  const char* op = "Softmax";
  if (!(scale > 0.0f) || !isfinite(scale)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: scale = %g must be finite and > 0", op,
                      static_cast<double>(scale));
  }
  if (n == 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: n = 0, a distribution needs at least 1 value", op);
  }
  if (rows == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "x", x));
  QKERN_RETURN_IF_ERROR(
      detail::OpsCheckRows(op, x, stride, x, stride, rows, n));
  detail::DispatchSoftmaxRows(x, rows, n, stride, scale);
  return Status::Ok();
}

inline Status Softmax(float* x, size_t n, float scale = 1.0f) {
  return SoftmaxRows(x, 1, n, n, scale);
}

// ---------------------------------------------------------------------------
// Elementwise; n == 0 is a no-op. x may be y.

// y += x (the residual connection), bit-identical to scalar f32 adds.
inline Status AddInPlace(float* y, const float* x, size_t n) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckSpan("AddInPlace", "x", x, "y", y, n));
  detail::DispatchAdd(x, n, y);
  return Status::Ok();
}

// y += a * x (one rounding with FMA, two without).
inline Status AddScaledInPlace(float* y, float a, const float* x, size_t n) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(
      detail::OpsCheckSpan("AddScaledInPlace", "x", x, "y", y, n));
  detail::DispatchAddScaled(a, x, n, y);
  return Status::Ok();
}

// y = s * x, bit-identical to scalar f32 products; in place allowed.
inline Status Scale(const float* x, float s, size_t n, float* y) {
  if (n == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckSpan("Scale", "x", x, "y", y, n));
  detail::DispatchScale(x, s, n, y);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Embedding lookup: row `row` of a rows x cols table, stored row-major in one
// of the GGUF tensor types a token embedding comes in, dequantized to f32.
// Block formats need cols % 32 == 0 and take any table address (GGUF blocks
// are unaligned); f16/bf16/f32 tables must be aligned to their element.

enum class EmbeddingFormat : uint32_t {
  kF32 = 0,
  kF16,
  kBF16,
  kQ4_0,
  kQ4_1,
  kQ8_0,
};

inline const char* EmbeddingFormatName(EmbeddingFormat format) {
  switch (format) {
    case EmbeddingFormat::kF32:
      return "F32";
    case EmbeddingFormat::kF16:
      return "F16";
    case EmbeddingFormat::kBF16:
      return "BF16";
    case EmbeddingFormat::kQ4_0:
      return "Q4_0";
    case EmbeddingFormat::kQ4_1:
      return "Q4_1";
    case EmbeddingFormat::kQ8_0:
      return "Q8_0";
  }
  return "unknown";
}

// Bytes of one row of `cols` values (0 for an unknown format). Block formats
// round down: validate cols % 32 first.
inline size_t EmbeddingRowBytes(EmbeddingFormat format, size_t cols) {
  switch (format) {
    case EmbeddingFormat::kF32:
      return cols * 4;
    case EmbeddingFormat::kF16:
    case EmbeddingFormat::kBF16:
      return cols * 2;
    case EmbeddingFormat::kQ4_0:
      return cols / kQuantBlock * sizeof(BlockQ4_0);
    case EmbeddingFormat::kQ4_1:
      return cols / kQuantBlock * sizeof(BlockQ4_1);
    case EmbeddingFormat::kQ8_0:
      return cols / kQuantBlock * sizeof(BlockQ8_0);
  }
  return 0;
}

namespace detail {

inline Status ValidateEmbeddingTable(const char* op, const void* table,
                                     EmbeddingFormat format, size_t rows,
                                     size_t cols) {
  QKERN_RETURN_IF_ERROR(OpsCheckPointer(op, "table", table));
  if (static_cast<uint32_t>(format) >
      static_cast<uint32_t>(EmbeddingFormat::kQ8_0)) {
    return MakeStatus(StatusCode::kUnsupported, "%s: unknown format %u", op,
                      static_cast<unsigned>(format));
  }
  const bool is_block = format == EmbeddingFormat::kQ4_0 ||
                        format == EmbeddingFormat::kQ4_1 ||
                        format == EmbeddingFormat::kQ8_0;
  if (cols == 0 || (is_block && cols % kQuantBlock != 0)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: cols = %zu, %s needs a positive multiple of %zu", op,
                      cols, EmbeddingFormatName(format),
                      is_block ? kQuantBlock : size_t{1});
  }
  size_t bytes;
  if (cols > (~size_t{0}) / 4 ||
      __builtin_mul_overflow(rows, EmbeddingRowBytes(format, cols), &bytes)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s: table of %zu x %zu %s overflows", op, rows, cols,
                      EmbeddingFormatName(format));
  }
  const size_t align =
      format == EmbeddingFormat::kF32                                       ? 4
      : format == EmbeddingFormat::kF16 || format == EmbeddingFormat::kBF16 ? 2
                                                                            : 1;
  if (reinterpret_cast<uintptr_t>(table) % align != 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: %s table at %p is not %zu-byte aligned", op,
                      EmbeddingFormatName(format), table, align);
  }
  return Status::Ok();
}

// No validation: row < rows, out holds cols floats.
inline void EmbeddingRowUnchecked(const void* table, EmbeddingFormat format,
                                  size_t cols, size_t row, float* out) {
  const uint8_t* src = static_cast<const uint8_t*>(table) +
                       row * EmbeddingRowBytes(format, cols);
  switch (format) {
    case EmbeddingFormat::kF32:
      memcpy(out, src, cols * sizeof(float));
      return;
    case EmbeddingFormat::kF16:
      DispatchDequantizeRowF16(reinterpret_cast<const uint16_t*>(src), cols,
                               out);
      return;
    case EmbeddingFormat::kBF16:
      DispatchDequantizeRowBF16(reinterpret_cast<const uint16_t*>(src), cols,
                                out);
      return;
    case EmbeddingFormat::kQ4_0:
      DispatchDequantizeRowQ4_0(src, cols, out);
      return;
    case EmbeddingFormat::kQ4_1:
      DispatchDequantizeRowQ4_1(src, cols, out);
      return;
    case EmbeddingFormat::kQ8_0:
      DispatchDequantizeRowQ8_0(src, cols, out);
      return;
  }
}

}  // namespace detail

inline Status EmbeddingRow(const void* table, EmbeddingFormat format,
                           size_t rows, size_t cols, size_t row, float* out) {
  const char* op = "EmbeddingRow";
  QKERN_RETURN_IF_ERROR(
      detail::ValidateEmbeddingTable(op, table, format, rows, cols));
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "out", out));
  if (row >= rows) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s: row = %zu is out of range for %zu rows", op, row,
                      rows);
  }
  detail::EmbeddingRowUnchecked(table, format, cols, row, out);
  return Status::Ok();
}

// The GGUF block subset of WeightFormat; the groupwise formats keep their
// scales apart from the codes and are no embedding storage.
inline Status EmbeddingRow(const void* table, WeightFormat format, size_t rows,
                           size_t cols, size_t row, float* out) {
  switch (format) {
    case WeightFormat::kQ4_0:
      return EmbeddingRow(table, EmbeddingFormat::kQ4_0, rows, cols, row, out);
    case WeightFormat::kQ4_1:
      return EmbeddingRow(table, EmbeddingFormat::kQ4_1, rows, cols, row, out);
    case WeightFormat::kQ8_0:
      return EmbeddingRow(table, EmbeddingFormat::kQ8_0, rows, cols, row, out);
    default:
      break;
  }
  return MakeStatus(
      StatusCode::kUnsupported,
      "EmbeddingRow: weight format %s is not a GGUF block format",
      IsKnownFormat(format) ? FormatInfo(format).name : "unknown");
}

// Gathers `count` rows (token ids) into out, rows `out_stride` floats apart
// (prefill). Every id is checked before anything is written.
inline Status EmbeddingRows(const void* table, EmbeddingFormat format,
                            size_t rows, size_t cols, const int32_t* ids,
                            size_t count, float* out, size_t out_stride) {
  const char* op = "EmbeddingRows";
  QKERN_RETURN_IF_ERROR(
      detail::ValidateEmbeddingTable(op, table, format, rows, cols));
  if (count == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "ids", ids));
  QKERN_RETURN_IF_ERROR(detail::OpsCheckPointer(op, "out", out));
  size_t out_floats;
  if (count > 1 && out_stride < cols) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: out_stride = %zu is smaller than cols = %zu", op,
                      out_stride, cols);
  }
  if (!detail::OpsSpanFloats(count, cols, out_stride, &out_floats)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s: %zu rows of %zu with stride %zu overflow", op, count,
                      cols, out_stride);
  }
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= rows) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "%s: ids[%zu] = %d is out of range for %zu rows", op, i,
                        static_cast<int>(ids[i]), rows);
    }
  }
  for (size_t i = 0; i < count; ++i) {
    detail::EmbeddingRowUnchecked(
        table, format, cols, static_cast<size_t>(ids[i]), out + i * out_stride);
  }
  return Status::Ok();
}

}  // namespace qkern

#endif  // QKERN_KERNELS_OPS_H_
