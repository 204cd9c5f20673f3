// Per-target elementwise kernels on f32 spans: the residual add y += x, the
// scaled add y += a * x and the scale y = s * x, plus the span walkers the
// other per-lane ops (activations, norm, softmax) are built on.
//
// The walkers never touch memory outside [0, n): the last partial vector goes
// through a padded copy on the stack. Highway 1.0.3 has no LoadN, and its
// MaskedLoad on SSSE3/SSE4 is a full-width load (it can fault at the end of a
// page), so a stack copy is the portable way. Tails thus run the same vector
// code as the body: an element's result does not depend on where it sits.
//
// Aliasing: outputs may be the very same pointer as an input (each lane is
// loaded before it is stored); partially overlapping spans are not supported
// (the public API in qkern/kernels/ops.h rejects them).

#if defined(QKERN_KERNELS_ELEMENTWISE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_ELEMENTWISE_INL_H_
#undef QKERN_KERNELS_ELEMENTWISE_INL_H_
#else
#define QKERN_KERNELS_ELEMENTWISE_INL_H_
#endif

#include <hwy/highway.h>
#include <stddef.h>
#include <string.h>

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Largest f32 vector of this target, in lanes: sizes the tail buffers.
constexpr size_t kMaxF32Lanes = HWY_MAX_BYTES / sizeof(float);

// y[i] = op(d, x[i]) for i < n. Partial tail lanes are fed zeros.
template <class D, class Op>
HWY_INLINE void ElementwiseUnary(D d, const float* x, size_t n, float* y,
                                 Op op) {
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  // Two vectors per step: the exp-based ops are latency chains, two
  // independent ones per iteration keep more of the FMA pipes busy.
  for (; i + 2 * N <= n; i += 2 * N) {
    const auto v0 = hn::LoadU(d, x + i);
    const auto v1 = hn::LoadU(d, x + i + N);
    hn::StoreU(op(d, v0), d, y + i);
    hn::StoreU(op(d, v1), d, y + i + N);
  }
  for (; i + N <= n; i += N) hn::StoreU(op(d, hn::LoadU(d, x + i)), d, y + i);
  if (i == n) return;
  const size_t rest = n - i;
  HWY_ALIGN float buf[kMaxF32Lanes];
  for (size_t j = 0; j < N; ++j) buf[j] = 0.0f;
  memcpy(buf, x + i, rest * sizeof(float));
  hn::Store(op(d, hn::Load(d, buf)), d, buf);
  memcpy(y + i, buf, rest * sizeof(float));
}

// y[i] = op(d, a[i], b[i]) for i < n. Partial tail lanes are fed zeros.
template <class D, class Op>
HWY_INLINE void ElementwiseBinary(D d, const float* a, const float* b, size_t n,
                                  float* y, Op op) {
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const auto a0 = hn::LoadU(d, a + i);
    const auto b0 = hn::LoadU(d, b + i);
    const auto a1 = hn::LoadU(d, a + i + N);
    const auto b1 = hn::LoadU(d, b + i + N);
    hn::StoreU(op(d, a0, b0), d, y + i);
    hn::StoreU(op(d, a1, b1), d, y + i + N);
  }
  for (; i + N <= n; i += N) {
    hn::StoreU(op(d, hn::LoadU(d, a + i), hn::LoadU(d, b + i)), d, y + i);
  }
  if (i == n) return;
  const size_t rest = n - i;
  HWY_ALIGN float buf_a[kMaxF32Lanes];
  HWY_ALIGN float buf_b[kMaxF32Lanes];
  for (size_t j = 0; j < N; ++j) buf_a[j] = buf_b[j] = 0.0f;
  memcpy(buf_a, a + i, rest * sizeof(float));
  memcpy(buf_b, b + i, rest * sizeof(float));
  hn::Store(op(d, hn::Load(d, buf_a), hn::Load(d, buf_b)), d, buf_a);
  memcpy(y + i, buf_a, rest * sizeof(float));
}

// y += x, one rounding per element (bit-identical to scalar f32 adds).
HWY_INLINE void AddSpan(const float* x, size_t n, float* y) {
  ElementwiseBinary(
      hn::ScalableTag<float>(), y, x, n, y,
      [](auto /*d*/, auto vy, auto vx) { return hn::Add(vy, vx); });
}

// y += a * x. Fused where the target has FMA (one rounding), else a rounded
// product and a rounded sum.
HWY_INLINE void AddScaledSpan(float a, const float* x, size_t n, float* y) {
  ElementwiseBinary(hn::ScalableTag<float>(), y, x, n, y,
                    [a](auto d, auto vy, auto vx) {
                      return hn::MulAdd(hn::Set(d, a), vx, vy);
                    });
}

// y = s * x, one rounding per element.
HWY_INLINE void ScaleSpan(const float* x, float s, size_t n, float* y) {
  ElementwiseUnary(hn::ScalableTag<float>(), x, n, y,
                   [s](auto d, auto v) { return hn::Mul(v, hn::Set(d, s)); });
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
