// Per-target softmax over f32 rows, in place: p_i = exp(s (x_i - m)) / sum,
// m = max x, s > 0 a logit scale (1 / temperature for sampling, or the
// 1 / sqrt(head_dim) of attention scores).
//
// Three passes: the max, exp and its sum (the exps are stored in place), and
// the normalization. Subtracting the max keeps every Exp argument <= 0, so
// nothing overflows whatever the logits' magnitude, and the largest term is
// exactly 1.
//
// The sum is compensated (Kahan) in each f32 lane and the lanes are added in
// f64: its relative error is at most 2u + n u^2 (u = 2^-24) for any n,
// where a plain f32 sum would degrade with n / lanes (the vocabulary is 128K
// wide on Llama 3). With Exp's 3u and the roundings of x - m, * s, 1 / sum and
// the final product, p_i is within (2 |a_i| + 2 W + 10) u relative of the
// exact softmax (a_i = s (x_i - m), W = sum_j p_j |a_j|); the |a| terms are
// the rounding of the Exp argument, amplified by exp's slope.
//
// -inf logits (masked positions) get probability 0. A row with no finite
// logit has no distribution; it is set to zeros.

#if defined(QKERN_KERNELS_SOFTMAX_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_SOFTMAX_INL_H_
#undef QKERN_KERNELS_SOFTMAX_INL_H_
#else
#define QKERN_KERNELS_SOFTMAX_INL_H_
#endif

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>
#include <stddef.h>
#include <string.h>

#include <algorithm>
#include <limits>

#include "qkern/kernels/elementwise-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

HWY_INLINE float SoftmaxRowMax(const float* HWY_RESTRICT x, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  float max = -std::numeric_limits<float>::infinity();
  size_t i = 0;
  if (n >= N) {
    // Two chains: Max has a latency of several cycles.
    auto m0 = hn::LoadU(d, x);
    auto m1 = m0;
    for (i = N; i + 2 * N <= n; i += 2 * N) {
      m0 = hn::Max(m0, hn::LoadU(d, x + i));
      m1 = hn::Max(m1, hn::LoadU(d, x + i + N));
    }
    for (; i + N <= n; i += N) m0 = hn::Max(m0, hn::LoadU(d, x + i));
    max = hn::GetLane(hn::MaxOfLanes(d, hn::Max(m0, m1)));
  }
  for (; i < n; ++i) max = std::max(max, x[i]);
  return max;
}

// Kahan step on each lane: sum - c tracks the running total.
template <class V>
HWY_INLINE void KahanAdd(V term, V& sum, V& c) {
  const V y = hn::Sub(term, c);
  const V t = hn::Add(sum, y);
  c = hn::Sub(hn::Sub(t, sum), y);
  sum = t;
}

// exp(s (v - max)) for one vector.
template <class D, class V>
HWY_INLINE V SoftmaxExp(D d, V v, V vmax, V vs) {
  return hn::Exp(d, hn::Mul(hn::Sub(v, vmax), vs));
}

// x[i] = exp(s (x[i] - max)); returns the sum of those values.
//
// Four Kahan chains: one compensated add is a chain of four dependent adds
// (~16 cycles), which with fewer chains, not Exp, would bound the loop.
HWY_INLINE double SoftmaxExpAndSum(float* HWY_RESTRICT x, size_t n, float max,
                                   float s) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto vmax = hn::Set(d, max);
  const auto vs = hn::Set(d, s);
  auto sum0 = hn::Zero(d), c0 = hn::Zero(d);
  auto sum1 = hn::Zero(d), c1 = hn::Zero(d);
  auto sum2 = hn::Zero(d), c2 = hn::Zero(d);
  auto sum3 = hn::Zero(d), c3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const auto e0 = SoftmaxExp(d, hn::LoadU(d, x + i), vmax, vs);
    const auto e1 = SoftmaxExp(d, hn::LoadU(d, x + i + N), vmax, vs);
    const auto e2 = SoftmaxExp(d, hn::LoadU(d, x + i + 2 * N), vmax, vs);
    const auto e3 = SoftmaxExp(d, hn::LoadU(d, x + i + 3 * N), vmax, vs);
    hn::StoreU(e0, d, x + i);
    hn::StoreU(e1, d, x + i + N);
    hn::StoreU(e2, d, x + i + 2 * N);
    hn::StoreU(e3, d, x + i + 3 * N);
    KahanAdd(e0, sum0, c0);
    KahanAdd(e1, sum1, c1);
    KahanAdd(e2, sum2, c2);
    KahanAdd(e3, sum3, c3);
  }
  for (; i + N <= n; i += N) {
    const auto e = SoftmaxExp(d, hn::LoadU(d, x + i), vmax, vs);
    hn::StoreU(e, d, x + i);
    KahanAdd(e, sum0, c0);
  }
  if (i < n) {
    const size_t rest = n - i;
    HWY_ALIGN float buf[kMaxF32Lanes];
    for (size_t j = 0; j < N; ++j) buf[j] = max;
    memcpy(buf, x + i, rest * sizeof(float));
    const auto e = hn::IfThenElseZero(
        hn::FirstN(d, rest), SoftmaxExp(d, hn::Load(d, buf), vmax, vs));
    hn::Store(e, d, buf);
    memcpy(x + i, buf, rest * sizeof(float));
    KahanAdd(e, sum1, c1);
  }
  // Lanes to f64: each lane's sum minus its compensation, exactly enough.
  HWY_ALIGN float lanes[8 * kMaxF32Lanes];
  hn::Store(sum0, d, lanes);
  hn::Store(c0, d, lanes + N);
  hn::Store(sum1, d, lanes + 2 * N);
  hn::Store(c1, d, lanes + 3 * N);
  hn::Store(sum2, d, lanes + 4 * N);
  hn::Store(c2, d, lanes + 5 * N);
  hn::Store(sum3, d, lanes + 6 * N);
  hn::Store(c3, d, lanes + 7 * N);
  double total = 0.0;
  for (size_t j = 0; j < N; ++j) {
    for (size_t chain = 0; chain < 4; ++chain) {
      total += static_cast<double>(lanes[2 * chain * N + j]) -
               lanes[(2 * chain + 1) * N + j];
    }
  }
  return total;
}

// One row in place.
HWY_INLINE void SoftmaxRow(float* x, size_t n, float s) {
  const float max = SoftmaxRowMax(x, n);
  if (max == -std::numeric_limits<float>::infinity()) {
    memset(x, 0, n * sizeof(float));
    return;
  }
  const double sum = SoftmaxExpAndSum(x, n, max, s);
  // sum >= 1: the max's own term is exp(0) = 1.
  const float inv = static_cast<float>(1.0 / sum);
  ElementwiseUnary(hn::ScalableTag<float>(), x, n, x, [inv](auto d, auto v) {
    return hn::Mul(v, hn::Set(d, inv));
  });
}

// `rows` rows of n values, `stride` floats apart, each normalized on its own.
HWY_INLINE void SoftmaxRows(float* x, size_t rows, size_t n, size_t stride,
                            float s) {
  for (size_t r = 0; r < rows; ++r) SoftmaxRow(x + r * stride, n, s);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
