// Expanded once per SIMD target by hwy/foreach_target.h (see
// qkern/dispatch.h). Every per-target -inl.h file of qkern is included here,
// so one translation unit expands foreach_target exactly once. After the last
// target (HWY_ONCE) it exports the dispatch tables and defines the wrappers.
// No plain include guard on purpose.

#include <hwy/highway.h>

#include "qkern/kernels/matmul-inl.h"
// [anchor: rope includes]
// [anchor: ops includes]
// [anchor: attention includes]

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {

// Non-template entry points, one per exported operation.
inline void MatMulPackedF32(const MatMulCall& call) { MatMulPacked(call); }
inline size_t PanelRowsForTarget() { return PanelRows(); }
inline const char* DotPathForTarget() { return DotPathName(); }
inline void QuantizeActivationsF32(const float* x, size_t k, int8_t* codes,
                                   float* scale, float* scaled_sum) {
  QuantizeActivationsRow(x, k, codes, scale, scaled_sum);
}
// [anchor: rope entry points]
// [anchor: ops entry points]
// [anchor: attention entry points]

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
HWY_EXPORT(DotPathForTarget);
HWY_EXPORT(QuantizeActivationsF32);
// [anchor: rope exports]
// [anchor: ops exports]
// [anchor: attention exports]
#define QKERN_DISPATCH(name) HWY_DYNAMIC_DISPATCH(name)
#endif

inline void DispatchMatMul(const MatMulCall& call) {
  QKERN_DISPATCH(MatMulPackedF32)(call);
}
inline size_t DispatchPanelRows() { return QKERN_DISPATCH(PanelRowsForTarget)(); }
inline const char* DispatchDotPath() { return QKERN_DISPATCH(DotPathForTarget)(); }
inline void DispatchQuantizeActivations(const float* x, size_t k, int8_t* codes,
                                        float* scale, float* scaled_sum) {
  QKERN_DISPATCH(QuantizeActivationsF32)(x, k, codes, scale, scaled_sum);
}
// [anchor: rope wrappers]
// [anchor: ops wrappers]
// [anchor: attention wrappers]

#undef QKERN_DISPATCH

}  // namespace detail
}  // namespace qkern

#endif  // QKERN_DETAIL_DISPATCH_TARGETS_ONCE_
#endif  // HWY_ONCE
