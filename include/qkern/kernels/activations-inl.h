// Per-target activation functions on f32 spans: SiLU, GELU (tanh
// approximation and exact erf form), and the gated forms SwiGLU and GeGLU
// used by Llama- and Gemma-family feed-forward blocks.
//
// Every function here goes through the logistic sigmoid or erfc built on
// Highway's Exp (hwy/contrib/math, documented max error 1 ULP against
// std::exp in f32, so <= 1.5 ULP = 3 * 2^-24 relative from the exact value).
// Both are evaluated as exp(-|v|) so the argument of Exp is never positive:
// nothing overflows, and small results keep their relative accuracy instead
// of cancelling in 1 - (something close to 1).
//
// Error bounds, u = 2^-24, first order (tests/ops_test.cc checks them):
//   SiLU        x >= 0: 4.5u relative      x < 0: 7.5u relative
//   GELU (tanh) 7.5u + 5u * |v| * (1 - sigmoid(v)) relative, v the sigmoid
//               argument (the f32 rounding of v moves sigmoid(v)).
//   GELU (erf)  absolute |x| erfc(|x|/sqrt 2) (18 + x^2) u / 2 + 2u |gelu|;
//               derivation at GeluErf below.
//   Gated forms add one rounding (u) for the product with `up`.

#if defined(QKERN_KERNELS_ACTIVATIONS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_ACTIVATIONS_INL_H_
#undef QKERN_KERNELS_ACTIVATIONS_INL_H_
#else
#define QKERN_KERNELS_ACTIVATIONS_INL_H_
#endif

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>
#include <stddef.h>

#include "qkern/kernels/elementwise-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// 1 / (1 + exp(-v)), as exp(-|v|) / (1 + exp(-|v|)) for v < 0.
template <class D, class V>
HWY_INLINE V Sigmoid(D d, V v) {
  const V one = hn::Set(d, 1.0f);
  const V e = hn::Exp(d, hn::Neg(hn::Abs(v)));
  const V numerator = hn::IfThenElse(hn::Lt(v, hn::Zero(d)), e, one);
  return hn::Div(numerator, hn::Add(one, e));
}

// x * sigmoid(x).
template <class D, class V>
HWY_INLINE V Silu(D d, V x) {
  return hn::Mul(x, Sigmoid(d, x));
}

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x * sigmoid(v) with
// v = x (k1 + k3 x^2), k1 = 2 sqrt(2/pi), k3 = 0.044715 k1. Using the
// sigmoid form instead of Tanh (4 ULP) keeps Exp's 1 ULP and avoids the
// cancellation of 1 + tanh for negative x.
template <class D, class V>
HWY_INLINE V GeluTanh(D d, V x) {
  const V k1 = hn::Set(d, 1.5957691216057308f);
  const V k3 = hn::Set(d, 0.07135481627159867f);
  const V v = hn::Mul(x, hn::MulAdd(k3, hn::Mul(x, x), k1));
  return hn::Mul(x, Sigmoid(d, v));
}

// x * Phi(x), Phi the standard normal CDF, via erfc of z = |x| / sqrt(2):
// Phi = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 otherwise.
//
// erfc(z) = t * exp(-z^2 + P(s)), t = 1 / (1 + z / 2), s = 2t - 1 in [-1, 1].
// P is our degree-9 near-minimax fit (Lawson-weighted least squares on 4000
// Chebyshev nodes in t, against erfc from mpmath at 40 digits) of
// log(erfc(z) / t) + z^2 for z in [0, 10.5]; beyond 10.5 the exponent is
// below -104 and Exp returns 0, as erfc's f32 value is. Its error in the
// exponent, with the coefficients rounded to f32 and evaluated by f32 Horner
// (running error bound, separate multiply and add; FMA only lowers it), is at
// most 3.5u. The exponent's other errors: t off by <= 4u relative (|x|/(2
// sqrt 2) 2u, the sum u, the division u) moves P by <= 1.26 * 4u (max |t P'|
// = 1.26), s's rounding by <= 0.35u, and -x^2 / 2 + P rounds to within
// u z^2 + u (z^2 + 1.1): at most (10 + 2 z^2) u in all. Exp (3u), t (4u) and
// the product (u) make erfc's relative error at most (18 + 2 z^2) u, so
// x * Phi is off by at most |x| erfc(z) (18 + 2 z^2) u / 2 plus two
// roundings (1 - erfc / 2 and the product with x).
template <class D, class V>
HWY_INLINE V GeluErf(D d, V x) {
  const V one = hn::Set(d, 1.0f);
  const V half_z = hn::Mul(hn::Abs(x), hn::Set(d, 0.35355339059327373f));
  const V t = hn::Div(one, hn::Add(one, half_z));
  const V s = hn::Sub(hn::Add(t, t), one);
  V p = hn::Set(d, +2.846704738e-04f);
  p = hn::MulAdd(p, s, hn::Set(d, -1.159125095e-04f));
  p = hn::MulAdd(p, s, hn::Set(d, -2.045978326e-03f));
  p = hn::MulAdd(p, s, hn::Set(d, +1.693424303e-03f));
  p = hn::MulAdd(p, s, hn::Set(d, +8.727871813e-03f));
  p = hn::MulAdd(p, s, hn::Set(d, -9.851242416e-03f));
  p = hn::MulAdd(p, s, hn::Set(d, -4.688277096e-02f));
  p = hn::MulAdd(p, s, hn::Set(d, +4.734130949e-02f));
  p = hn::MulAdd(p, s, hn::Set(d, +6.726427078e-01f));
  p = hn::MulAdd(p, s, hn::Set(d, -6.717940569e-01f));
  // -z^2 = -x^2 / 2: squaring x rather than z keeps the scaling by 1/sqrt(2)
  // out of the exponent, where its rounding would be multiplied by z^2.
  const V exponent = hn::MulAdd(hn::Mul(x, x), hn::Set(d, -0.5f), p);
  const V half_erfc =
      hn::Mul(hn::Mul(t, hn::Set(d, 0.5f)), hn::Exp(d, exponent));
  const V phi = hn::IfThenElse(hn::Lt(x, hn::Zero(d)), half_erfc,
                               hn::Sub(one, half_erfc));
  return hn::Mul(x, phi);
}

HWY_INLINE void SiluRow(const float* x, size_t n, float* y) {
  ElementwiseUnary(hn::ScalableTag<float>(), x, n, y,
                   [](auto d, auto v) { return Silu(d, v); });
}

HWY_INLINE void GeluTanhRow(const float* x, size_t n, float* y) {
  ElementwiseUnary(hn::ScalableTag<float>(), x, n, y,
                   [](auto d, auto v) { return GeluTanh(d, v); });
}

HWY_INLINE void GeluErfRow(const float* x, size_t n, float* y) {
  ElementwiseUnary(hn::ScalableTag<float>(), x, n, y,
                   [](auto d, auto v) { return GeluErf(d, v); });
}

// out = silu(gate) * up.
HWY_INLINE void SwiGluRow(const float* gate, const float* up, size_t n,
                          float* out) {
  ElementwiseBinary(
      hn::ScalableTag<float>(), gate, up, n, out,
      [](auto d, auto g, auto u) { return hn::Mul(Silu(d, g), u); });
}

// out = gelu(gate) * up, tanh approximation.
HWY_INLINE void GeGluTanhRow(const float* gate, const float* up, size_t n,
                             float* out) {
  ElementwiseBinary(
      hn::ScalableTag<float>(), gate, up, n, out,
      [](auto d, auto g, auto u) { return hn::Mul(GeluTanh(d, g), u); });
}

// out = gelu(gate) * up, erf form.
HWY_INLINE void GeGluErfRow(const float* gate, const float* up, size_t n,
                            float* out) {
  ElementwiseBinary(
      hn::ScalableTag<float>(), gate, up, n, out,
      [](auto d, auto g, auto u) { return hn::Mul(GeluErf(d, g), u); });
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
