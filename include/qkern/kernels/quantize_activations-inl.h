// Per-target dynamic quantization of f32 activations to int8 blocks of 32
// (Q8_0-like, f32 scale): per-row scaling loses too much on models with
// outlier activations. Bit-identical to ref::QuantizeActivationsRow.

#if defined(QKERN_KERNELS_QUANTIZE_ACTIVATIONS_INL_H_) == \
    defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_QUANTIZE_ACTIVATIONS_INL_H_
#undef QKERN_KERNELS_QUANTIZE_ACTIVATIONS_INL_H_
#else
#define QKERN_KERNELS_QUANTIZE_ACTIVATIONS_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>

#include <hwy/highway.h>

#include "qkern/quant/block_formats.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// For each block b of 32 values: scale[b] = amax / 127, codes = round-to-
// nearest-even(x / scale), and scaled_sum[b] = scale[b] * sum(codes), which
// the kernels need for the zero-point term of asymmetric weights. Block b's
// codes go to codes + b * block_stride and its scale and sum to index
// b * scale_stride (32 and 1: a plain row; AMX tiles interleave 16 rows'
// blocks, 512 and 16).
HWY_INLINE void QuantizeActivationsRow(const float* HWY_RESTRICT x, size_t k,
                                       int8_t* HWY_RESTRICT codes,
                                       float* HWY_RESTRICT scale,
                                       float* HWY_RESTRICT scaled_sum,
                                       size_t block_stride = kQuantBlock,
                                       size_t scale_stride = 1) {
  const hn::CappedTag<float, kQuantBlock> df;
  const hn::RebindToSigned<decltype(df)> di32;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const size_t N = hn::Lanes(df);
  for (size_t b = 0; b < k / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    auto amax = hn::Zero(df);
    for (size_t i = 0; i < kQuantBlock; i += N) {
      amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xb + i)));
    }
    const float max_abs = hn::GetLane(hn::MaxOfLanes(df, amax));
    const float d = max_abs / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const auto vid = hn::Set(df, id);
    auto sum = hn::Zero(di32);
    for (size_t i = 0; i < kQuantBlock; i += N) {
      const auto q = hn::NearestInt(hn::Mul(hn::LoadU(df, xb + i), vid));
      sum = hn::Add(sum, q);
      hn::StoreU(hn::DemoteTo(di8, q), di8, codes + b * block_stride + i);
    }
    scale[b * scale_stride] = d;
    scaled_sum[b * scale_stride] = d * static_cast<float>(hn::GetLane(hn::SumOfLanes(di32, sum)));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
