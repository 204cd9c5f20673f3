// Per-target dequantization of one row of a weight table to f32: the token
// embedding lookup (a GGUF `token_embd` tensor is a vocab x dim matrix in any
// of these formats), also usable for any row-wise access to GGUF weights.
//
// Each function reads `cols` values of one row: GGUF blocks (cols / 32 of
// them, no alignment: rows of 18-byte Q4_0 blocks land anywhere), or f16 /
// bf16 elements (2-byte aligned). Results are bit-identical to the scalar
// dequantizers in qkern/quant/quantize_ref.h and qkern/base/f16.h, except
// Q4_1, whose q * d + m is one fused rounding where the target has FMA
// (the reference's compiler may or may not fuse it): within u |q d| + u |y|.

#if defined(QKERN_KERNELS_EMBEDDING_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_EMBEDDING_INL_H_
#undef QKERN_KERNELS_EMBEDDING_INL_H_
#else
#define QKERN_KERNELS_EMBEDDING_INL_H_
#endif

#include <hwy/highway.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qkern/base/f16.h"
#include "qkern/quant/block_formats.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The block's f16 scale (or min) at byte offset `offset`; blocks have no
// alignment, hence memcpy.
HWY_INLINE float BlockHalf(const uint8_t* block, size_t offset) {
  f16_t bits;
  memcpy(&bits, block + offset, sizeof(bits));
  return F32FromF16(bits);
}

// Q4_0 and Q4_1 share the nibble layout: byte j holds element j (low) and
// element j + 16 (high). kOffset is subtracted from the code (8 for Q4_0).
template <int kOffset, bool kHasMin>
HWY_INLINE void DequantizeRowQ4(const uint8_t* HWY_RESTRICT blocks, size_t cols,
                                float* HWY_RESTRICT out) {
  constexpr size_t kBlockBytes =
      kHasMin ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
  constexpr size_t kCodesOffset = kHasMin ? 4 : 2;
  const hn::CappedTag<float, kQuantBlock / 2> df;
  const hn::RebindToSigned<decltype(df)> di32;
  const hn::Rebind<uint8_t, decltype(df)> du8;
  const size_t N = hn::Lanes(df);
  const auto low_mask = hn::Set(di32, 15);
  const auto offset = hn::Set(di32, kOffset);
  for (size_t b = 0; b < cols / kQuantBlock; ++b) {
    const uint8_t* block = blocks + b * kBlockBytes;
    const uint8_t* qs = block + kCodesOffset;
    const auto scale = hn::Set(df, BlockHalf(block, 0));
    const auto min = hn::Set(df, kHasMin ? BlockHalf(block, 2) : 0.0f);
    float* y = out + b * kQuantBlock;
    for (size_t j = 0; j < kQuantBlock / 2; j += N) {
      const auto q = hn::PromoteTo(di32, hn::LoadU(du8, qs + j));
      const auto lo = hn::ConvertTo(df, hn::Sub(hn::And(q, low_mask), offset));
      const auto hi = hn::ConvertTo(df, hn::Sub(hn::ShiftRight<4>(q), offset));
      if constexpr (kHasMin) {
        hn::StoreU(hn::MulAdd(lo, scale, min), df, y + j);
        hn::StoreU(hn::MulAdd(hi, scale, min), df, y + j + kQuantBlock / 2);
      } else {
        hn::StoreU(hn::Mul(lo, scale), df, y + j);
        hn::StoreU(hn::Mul(hi, scale), df, y + j + kQuantBlock / 2);
      }
    }
  }
}

HWY_INLINE void DequantizeRowQ4_0(const uint8_t* blocks, size_t cols,
                                  float* out) {
  DequantizeRowQ4<8, false>(blocks, cols, out);
}

HWY_INLINE void DequantizeRowQ4_1(const uint8_t* blocks, size_t cols,
                                  float* out) {
  DequantizeRowQ4<0, true>(blocks, cols, out);
}

HWY_INLINE void DequantizeRowQ8_0(const uint8_t* HWY_RESTRICT blocks,
                                  size_t cols, float* HWY_RESTRICT out) {
  const hn::CappedTag<float, kQuantBlock> df;
  const hn::RebindToSigned<decltype(df)> di32;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const size_t N = hn::Lanes(df);
  for (size_t b = 0; b < cols / kQuantBlock; ++b) {
    const uint8_t* block = blocks + b * sizeof(BlockQ8_0);
    const int8_t* qs = reinterpret_cast<const int8_t*>(block + 2);
    const auto scale = hn::Set(df, BlockHalf(block, 0));
    for (size_t j = 0; j < kQuantBlock; j += N) {
      const auto q =
          hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di8, qs + j)));
      hn::StoreU(hn::Mul(q, scale), df, out + b * kQuantBlock + j);
    }
  }
}

// f16 bits (in the low half of u32 lanes) to f32, exact for every input:
// normals and subnormals by moving the exponent/mantissa field into place
// and rescaling by 2^112 (exact: it only changes the exponent), Inf/NaN by
// forcing the f32 all-ones exponent. Highway 1.0.3's PromoteTo from f16 is
// only right for Inf/NaN where the CPU converts natively (F16C, Arm); its
// emulation on SSSE3/SSE4/scalar turns them into finite numbers.
template <class DF, class VU32>
HWY_INLINE hn::Vec<DF> F32FromF16Bits(DF df, VU32 h) {
  const hn::RebindToUnsigned<DF> du32;
  const auto magnitude = hn::And(h, hn::Set(du32, 0x7FFFu));
  const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du32, 0x8000u)));
  const auto shifted = hn::ShiftLeft<13>(magnitude);
  const auto finite = hn::BitCast(
      du32,
      hn::Mul(hn::BitCast(df, shifted), hn::Set(df, 5.192296858534828e33f)));
  const auto inf_nan = hn::Or(shifted, hn::Set(du32, 0x7F800000u));
  // Signed compare (x86 before AVX-512 has none for u32); magnitude < 2^15.
  const hn::RebindToSigned<DF> di32;
  const auto is_inf_nan = hn::RebindMask(
      du32, hn::Gt(hn::BitCast(di32, magnitude), hn::Set(di32, 0x7BFF)));
  return hn::BitCast(df,
                     hn::Or(sign, hn::IfThenElse(is_inf_nan, inf_nan, finite)));
}

#if (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)) || \
    (HWY_ARCH_ARM_A64 && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128)
#define QKERN_NATIVE_F16_PROMOTE 1
#else
#define QKERN_NATIVE_F16_PROMOTE 0
#endif

HWY_INLINE void DequantizeRowF16(const uint16_t* HWY_RESTRICT in, size_t cols,
                                 float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
#if QKERN_NATIVE_F16_PROMOTE
  const hn::Rebind<hwy::float16_t, decltype(df)> df16;
#else
  const hn::RebindToUnsigned<decltype(df)> du32;
  const hn::Rebind<uint16_t, decltype(df)> du16;
#endif
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= cols; i += N) {
#if QKERN_NATIVE_F16_PROMOTE
    // One instruction (F16C, FCVTL, SVE FCVT), exact for every input.
    const auto v = hn::PromoteTo(
        df, hn::LoadU(df16, reinterpret_cast<const hwy::float16_t*>(in + i)));
#else
    const auto v =
        F32FromF16Bits(df, hn::PromoteTo(du32, hn::LoadU(du16, in + i)));
#endif
    hn::StoreU(v, df, out + i);
  }
  for (; i < cols; ++i) out[i] = F32FromF16(in[i]);
}
#undef QKERN_NATIVE_F16_PROMOTE

HWY_INLINE void DequantizeRowBF16(const uint16_t* HWY_RESTRICT in, size_t cols,
                                  float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du32;
  const hn::Rebind<uint16_t, decltype(df)> du16;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= cols; i += N) {
    const auto bits =
        hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, in + i)));
    hn::StoreU(hn::BitCast(df, bits), df, out + i);
  }
  for (; i < cols; ++i) out[i] = F32FromBF16(in[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
