// Expanded once per SIMD target by hwy/foreach_target.h (see
// qkern/dispatch.h). Every per-target -inl.h file of qkern is included here,
// so one translation unit expands foreach_target exactly once. After the last
// target (HWY_ONCE) it exports the dispatch tables and defines the wrappers.
// No plain include guard on purpose.

#include <hwy/highway.h>

// Before matmul-inl.h: its MatMulPacked hands kMmla8 weights to MatMulMmla.
#include "qkern/kernels/matmul_mmla-inl.h"
#include "qkern/kernels/matmul-inl.h"
// [anchor: rope includes]
#include "qkern/kv/kv_codec-inl.h"
#include "qkern/kernels/rope-inl.h"
// [anchor: ops includes]
#include "qkern/kernels/activations-inl.h"
#include "qkern/kernels/elementwise-inl.h"
#include "qkern/kernels/embedding-inl.h"
#include "qkern/kernels/exp_nonpositive-inl.h"
#include "qkern/kernels/norm-inl.h"
#include "qkern/kernels/softmax-inl.h"
// [anchor: attention includes]
#include "qkern/kernels/attention-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {

// Non-template entry points, one per exported operation.
inline void MatMulPackedF32(const MatMulCall& call) { MatMulPacked(call); }
inline size_t PanelRowsForTarget() { return PanelRows(); }
inline PanelLayout PanelLayoutForTarget() { return PanelLayoutHere(); }
inline const char* DotPathForTarget() { return DotPathName(); }
inline void QuantizeActivationsF32(const float* x, size_t k, int8_t* codes,
                                   float* scale, float* scaled_sum) {
  QuantizeActivationsRow(x, k, codes, scale, scaled_sum);
}
// [anchor: rope entry points]
inline void RopeF32(const RopeCall& call) { RopeRows(call); }
inline size_t RopeEncodeKvRowF32(const RopeKvRowCall& call, const float* src,
                                 void* values, float* scale, float* bad_value) {
  return RopeEncodeKvRow(call, src, values, scale, bad_value);
}
// [anchor: ops entry points]
inline void RmsNormRowsF32(const float* x, size_t x_stride, const float* weight,
                           float eps, size_t rows, size_t n, float* y,
                           size_t y_stride) {
  RmsNormRows(x, x_stride, weight, eps, rows, n, y, y_stride);
}
inline void SiluF32(const float* x, size_t n, float* y) { SiluRow(x, n, y); }
inline void ExpNonPositiveF32(const float* x, size_t n, float* y) {
  ExpNonPositiveRow(x, n, y);
}
inline void GeluTanhF32(const float* x, size_t n, float* y) {
  GeluTanhRow(x, n, y);
}
inline void GeluErfF32(const float* x, size_t n, float* y) {
  GeluErfRow(x, n, y);
}
inline void SwiGluF32(const float* gate, const float* up, size_t n,
                      float* out) {
  SwiGluRow(gate, up, n, out);
}
inline void GeGluTanhF32(const float* gate, const float* up, size_t n,
                         float* out) {
  GeGluTanhRow(gate, up, n, out);
}
inline void GeGluErfF32(const float* gate, const float* up, size_t n,
                        float* out) {
  GeGluErfRow(gate, up, n, out);
}
inline void SoftmaxRowsF32(float* x, size_t rows, size_t n, size_t stride,
                           float scale) {
  SoftmaxRows(x, rows, n, stride, scale);
}
inline void AddF32(const float* x, size_t n, float* y) { AddSpan(x, n, y); }
inline void AddScaledF32(float a, const float* x, size_t n, float* y) {
  AddScaledSpan(a, x, n, y);
}
inline void ScaleF32(const float* x, float s, size_t n, float* y) {
  ScaleSpan(x, s, n, y);
}
inline void DequantizeRowQ4_0F32(const uint8_t* blocks, size_t cols,
                                 float* out) {
  DequantizeRowQ4_0(blocks, cols, out);
}
inline void DequantizeRowQ4_1F32(const uint8_t* blocks, size_t cols,
                                 float* out) {
  DequantizeRowQ4_1(blocks, cols, out);
}
inline void DequantizeRowQ8_0F32(const uint8_t* blocks, size_t cols,
                                 float* out) {
  DequantizeRowQ8_0(blocks, cols, out);
}
inline void DequantizeRowF16F32(const uint16_t* in, size_t cols, float* out) {
  DequantizeRowF16(in, cols, out);
}
inline void DequantizeRowBF16F32(const uint16_t* in, size_t cols, float* out) {
  DequantizeRowBF16(in, cols, out);
}
// [anchor: attention entry points]
inline void AttentionPagedF32(const detail::AttentionCall& call) {
  AttentionPaged(call);
}
inline bool AttentionInt8IntegerDotForTarget(size_t head_dim) {
  return UseInt8IntegerDot(KvFormat::kInt8, head_dim);
}
inline size_t EncodeKvRowFromF32(KvFormat format, const float* src, size_t n,
                                 void* values, float* scale) {
  return EncodeKvRowSimd(format, src, n, values, scale);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#ifndef QKERN_DETAIL_DISPATCH_TARGETS_ONCE_
#define QKERN_DETAIL_DISPATCH_TARGETS_ONCE_

namespace qkern {
namespace detail {

#if defined(QKERN_STATIC_DISPATCH)
#define QKERN_DISPATCH(name) HWY_STATIC_DISPATCH(name)
#else
HWY_EXPORT(MatMulPackedF32);
HWY_EXPORT(PanelRowsForTarget);
HWY_EXPORT(PanelLayoutForTarget);
HWY_EXPORT(DotPathForTarget);
HWY_EXPORT(QuantizeActivationsF32);
// [anchor: rope exports]
HWY_EXPORT(RopeF32);
HWY_EXPORT(RopeEncodeKvRowF32);
// [anchor: ops exports]
HWY_EXPORT(RmsNormRowsF32);
HWY_EXPORT(SiluF32);
HWY_EXPORT(ExpNonPositiveF32);
HWY_EXPORT(GeluTanhF32);
HWY_EXPORT(GeluErfF32);
HWY_EXPORT(SwiGluF32);
HWY_EXPORT(GeGluTanhF32);
HWY_EXPORT(GeGluErfF32);
HWY_EXPORT(SoftmaxRowsF32);
HWY_EXPORT(AddF32);
HWY_EXPORT(AddScaledF32);
HWY_EXPORT(ScaleF32);
HWY_EXPORT(DequantizeRowQ4_0F32);
HWY_EXPORT(DequantizeRowQ4_1F32);
HWY_EXPORT(DequantizeRowQ8_0F32);
HWY_EXPORT(DequantizeRowF16F32);
HWY_EXPORT(DequantizeRowBF16F32);
// [anchor: attention exports]
HWY_EXPORT(AttentionPagedF32);
HWY_EXPORT(AttentionInt8IntegerDotForTarget);
HWY_EXPORT(EncodeKvRowFromF32);
#define QKERN_DISPATCH(name) HWY_DYNAMIC_DISPATCH(name)
#endif

inline void DispatchMatMul(const MatMulCall& call) {
  QKERN_DISPATCH(MatMulPackedF32)(call);
}
inline size_t DispatchPanelRows() { return QKERN_DISPATCH(PanelRowsForTarget)(); }
inline PanelLayout DispatchPanelLayout() {
  return QKERN_DISPATCH(PanelLayoutForTarget)();
}
inline const char* DispatchDotPath() { return QKERN_DISPATCH(DotPathForTarget)(); }
inline void DispatchQuantizeActivations(const float* x, size_t k, int8_t* codes,
                                        float* scale, float* scaled_sum) {
  QKERN_DISPATCH(QuantizeActivationsF32)(x, k, codes, scale, scaled_sum);
}
// [anchor: rope wrappers]
inline void DispatchRope(const RopeCall& call) { QKERN_DISPATCH(RopeF32)(call); }
inline size_t DispatchRopeEncodeKvRow(const RopeKvRowCall& call,
                                      const float* src, void* values,
                                      float* scale, float* bad_value) {
  return QKERN_DISPATCH(RopeEncodeKvRowF32)(call, src, values, scale,
                                            bad_value);
}
// [anchor: ops wrappers]
inline void DispatchRmsNormRows(const float* x, size_t x_stride,
                                const float* weight, float eps, size_t rows,
                                size_t n, float* y, size_t y_stride) {
  QKERN_DISPATCH(RmsNormRowsF32)
  (x, x_stride, weight, eps, rows, n, y, y_stride);
}
inline void DispatchSilu(const float* x, size_t n, float* y) {
  QKERN_DISPATCH(SiluF32)(x, n, y);
}
// The attention softmax's exp (exp_nonpositive-inl.h); for tests.
inline void DispatchExpNonPositive(const float* x, size_t n, float* y) {
  QKERN_DISPATCH(ExpNonPositiveF32)(x, n, y);
}
inline void DispatchGeluTanh(const float* x, size_t n, float* y) {
  QKERN_DISPATCH(GeluTanhF32)(x, n, y);
}
inline void DispatchGeluErf(const float* x, size_t n, float* y) {
  QKERN_DISPATCH(GeluErfF32)(x, n, y);
}
inline void DispatchSwiGlu(const float* gate, const float* up, size_t n,
                           float* out) {
  QKERN_DISPATCH(SwiGluF32)(gate, up, n, out);
}
inline void DispatchGeGluTanh(const float* gate, const float* up, size_t n,
                              float* out) {
  QKERN_DISPATCH(GeGluTanhF32)(gate, up, n, out);
}
inline void DispatchGeGluErf(const float* gate, const float* up, size_t n,
                             float* out) {
  QKERN_DISPATCH(GeGluErfF32)(gate, up, n, out);
}
inline void DispatchSoftmaxRows(float* x, size_t rows, size_t n, size_t stride,
                                float scale) {
  QKERN_DISPATCH(SoftmaxRowsF32)(x, rows, n, stride, scale);
}
inline void DispatchAdd(const float* x, size_t n, float* y) {
  QKERN_DISPATCH(AddF32)(x, n, y);
}
inline void DispatchAddScaled(float a, const float* x, size_t n, float* y) {
  QKERN_DISPATCH(AddScaledF32)(a, x, n, y);
}
inline void DispatchScale(const float* x, float s, size_t n, float* y) {
  QKERN_DISPATCH(ScaleF32)(x, s, n, y);
}
inline void DispatchDequantizeRowQ4_0(const uint8_t* blocks, size_t cols,
                                      float* out) {
  QKERN_DISPATCH(DequantizeRowQ4_0F32)(blocks, cols, out);
}
inline void DispatchDequantizeRowQ4_1(const uint8_t* blocks, size_t cols,
                                      float* out) {
  QKERN_DISPATCH(DequantizeRowQ4_1F32)(blocks, cols, out);
}
inline void DispatchDequantizeRowQ8_0(const uint8_t* blocks, size_t cols,
                                      float* out) {
  QKERN_DISPATCH(DequantizeRowQ8_0F32)(blocks, cols, out);
}
inline void DispatchDequantizeRowF16(const uint16_t* in, size_t cols,
                                     float* out) {
  QKERN_DISPATCH(DequantizeRowF16F32)(in, cols, out);
}
inline void DispatchDequantizeRowBF16(const uint16_t* in, size_t cols,
                                      float* out) {
  QKERN_DISPATCH(DequantizeRowBF16F32)(in, cols, out);
}
// [anchor: attention wrappers]
inline void DispatchAttention(const AttentionCall& call) {
  QKERN_DISPATCH(AttentionPagedF32)(call);
}
inline bool DispatchAttentionInt8IntegerDot(size_t head_dim) {
  return QKERN_DISPATCH(AttentionInt8IntegerDotForTarget)(head_dim);
}
inline size_t DispatchEncodeKvRow(KvFormat format, const float* src, size_t n,
                                  void* values, float* scale) {
  return QKERN_DISPATCH(EncodeKvRowFromF32)(format, src, n, values, scale);
}

#undef QKERN_DISPATCH

}  // namespace detail
}  // namespace qkern

#endif  // QKERN_DETAIL_DISPATCH_TARGETS_ONCE_
#endif  // HWY_ONCE
