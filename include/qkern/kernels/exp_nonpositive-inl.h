// Per-target e^x for x <= 0: the softmax weights of attention, where every
// argument is a logit minus the running max. Highway's Exp serves the whole
// f32 range and costs about twice the operations; on the int8 decode path it
// was ~17% of the time (Zen 4, warm cache, Llama-3.2-1B shape).
//
// Method: n = round(x log2 e), r = x - n ln2 in two steps (ln2_hi has 9
// significant bits, so n ln2_hi and x - n ln2_hi are exact for |n| <= 185),
// e^r by a degree-6 polynomial with leading coefficients 1, 1 (fitted for
// minimax relative error on |r| <= 0.3467 by tools/fit_exp_nonpositive.py),
// and 2^n built in the exponent field.
//
// Error, measured over every f32 x in [-87, 0] against double exp: at most
// 1.29 u relative (u = 2^-24) where MulAdd is fused, 1.66 u where it is a
// product and a sum (SSSE3, SSE4, SCALAR): tools/exp_nonpositive_sweep.cc.
// tests/ops_test.cc checks 2u on a strided sweep on every target.
// e^0 is exactly 1. Arguments below -128 (and -inf) are taken as -128; n is
// clamped to -127, whose 2^n is the bit pattern of +0, so results below
// ~e^-87.68 are exactly 0 (between that and e^-87 they may be subnormal). A
// NaN gives NaN or 0, depending on the target's Max.

#if defined(QKERN_KERNELS_EXP_NONPOSITIVE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_EXP_NONPOSITIVE_INL_H_
#undef QKERN_KERNELS_EXP_NONPOSITIVE_INL_H_
#else
#define QKERN_KERNELS_EXP_NONPOSITIVE_INL_H_
#endif

#include <hwy/highway.h>
#include <stddef.h>

#include "qkern/kernels/elementwise-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {

template <class D, class V = hwy::HWY_NAMESPACE::Vec<D>>
HWY_INLINE V ExpNonPositive(D d, V x) {
  const hn::RebindToSigned<D> di;
  x = hn::Max(x, hn::Set(d, -128.0f));
  const V n = hn::Round(hn::Mul(x, hn::Set(d, 1.44269504088896341f)));
  // x - n ln2, with ln2 = 0.693359375 - 2.12194440e-4 (to ~2^-37).
  V r = hn::NegMulAdd(n, hn::Set(d, 0.693359375f), x);
  r = hn::MulAdd(n, hn::Set(d, 2.12194440e-4f), r);
  V p = hn::Set(d, 0x1.6a23f0p-10f);
  p = hn::MulAdd(p, r, hn::Set(d, 0x1.123a0cp-7f));
  p = hn::MulAdd(p, r, hn::Set(d, 0x1.5558f2p-5f));
  p = hn::MulAdd(p, r, hn::Set(d, 0x1.555492p-3f));
  p = hn::MulAdd(p, r, hn::Set(d, 0x1.fffffcp-2f));
  const V one = hn::Set(d, 1.0f);
  p = hn::MulAdd(p, r, one);
  p = hn::MulAdd(p, r, one);
  // 2^n for n >= -126; n = -127 gives exponent field 0, i.e. +0. The
  // integer n + 127 is read off the low mantissa bits of n + 127 + 2^23 (an
  // exact sum; a float-to-int conversion costs range fix-ups on x86), and the
  // shift drops the bits of 2^23's exponent.
  const V biased =
      hn::Add(hn::Max(n, hn::Set(d, -127.0f)), hn::Set(d, 8388608.0f + 127.0f));
  return hn::Mul(p, hn::BitCast(d, hn::ShiftLeft<23>(hn::BitCast(di, biased))));
}

// y[i] = ExpNonPositive(x[i]) for i < n (what tests/ops_test.cc checks).
HWY_INLINE void ExpNonPositiveRow(const float* x, size_t n, float* y) {
  ElementwiseUnary(hn::ScalableTag<float>(), x, n, y,
                   [](auto d, auto v) { return ExpNonPositive(d, v); });
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard
