// Per-target RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight.
//
// The sum of squares is accumulated in f64. Squares of f32 values are exact
// in f64 (48 significant bits) and the sum's relative error is at most
// n * 2^-53, below 2^-9 of an f32 ulp for any n < 2^20, so the result has
// the same accuracy for a 576-wide SmolLM2 row as for a 128K-wide one: at
// most 3 f32 roundings (the scale rounded to f32, x * scale, then * weight),
// |y - exact| <= (3u + n 2^-53) |exact|, u = 2^-24. An f32 sum with a few
// vector accumulators would instead carry a bound of about n / lanes * u,
// which depends on the target and on n. The f64 pass costs a promotion per
// element on a row that sits in L1/L2; the kernel stays bound by its two
// passes over memory (see benchmarks/ops_bench.cc).

#if defined(QKERN_KERNELS_NORM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_NORM_INL_H_
#undef QKERN_KERNELS_NORM_INL_H_
#else
#define QKERN_KERNELS_NORM_INL_H_
#endif

#include <hwy/highway.h>
#include <math.h>
#include <stddef.h>

#include "qkern/kernels/elementwise-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of x[i]^2 in f64.
HWY_INLINE double SumOfSquaresF64(const float* HWY_RESTRICT x, size_t n) {
  size_t i = 0;
  double sum = 0.0;
#if HWY_HAVE_FLOAT64
  const hn::ScalableTag<double> dd;
  // As many f32 lanes as dd has f64 lanes: loads half a vector of floats.
  const hn::Rebind<float, decltype(dd)> df;
  const size_t N = hn::Lanes(dd);
  auto s0 = hn::Zero(dd), s1 = hn::Zero(dd), s2 = hn::Zero(dd),
       s3 = hn::Zero(dd);
  for (; i + 4 * N <= n; i += 4 * N) {
    const auto v0 = hn::PromoteTo(dd, hn::LoadU(df, x + i));
    const auto v1 = hn::PromoteTo(dd, hn::LoadU(df, x + i + N));
    const auto v2 = hn::PromoteTo(dd, hn::LoadU(df, x + i + 2 * N));
    const auto v3 = hn::PromoteTo(dd, hn::LoadU(df, x + i + 3 * N));
    s0 = hn::MulAdd(v0, v0, s0);
    s1 = hn::MulAdd(v1, v1, s1);
    s2 = hn::MulAdd(v2, v2, s2);
    s3 = hn::MulAdd(v3, v3, s3);
  }
  for (; i + N <= n; i += N) {
    const auto v = hn::PromoteTo(dd, hn::LoadU(df, x + i));
    s0 = hn::MulAdd(v, v, s0);
  }
  sum = hn::GetLane(
      hn::SumOfLanes(dd, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
#endif
  for (; i < n; ++i) {
    const double v = x[i];
    sum += v * v;
  }
  return sum;
}

// 1 / sqrt(sum_sq / n + eps), rounded once to f32. A zero row with eps = 0
// has no defined scale; 0 makes its output zeros rather than NaNs.
HWY_INLINE float RmsScale(double sum_sq, size_t n, float eps) {
  const double mean =
      sum_sq / static_cast<double>(n) + static_cast<double>(eps);
  return mean > 0.0 ? static_cast<float>(1.0 / sqrt(mean)) : 0.0f;
}

// One row; y may be x.
HWY_INLINE void RmsNormRow(const float* x, const float* weight, float eps,
                           size_t n, float* y) {
  const float scale = RmsScale(SumOfSquaresF64(x, n), n, eps);
  ElementwiseBinary(hn::ScalableTag<float>(), x, weight, n, y,
                    [scale](auto d, auto vx, auto vw) {
                      return hn::Mul(hn::Mul(vx, hn::Set(d, scale)), vw);
                    });
}

// `rows` rows of n values, x and y rows `x_stride` / `y_stride` floats apart.
HWY_INLINE void RmsNormRows(const float* x, size_t x_stride,
                            const float* weight, float eps, size_t rows,
                            size_t n, float* y, size_t y_stride) {
  for (size_t r = 0; r < rows; ++r) {
    RmsNormRow(x + r * x_stride, weight, eps, n, y + r * y_stride);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
