// Reference dequantizers for the GGUF block types a model file may carry
// besides Q4_0 / Q4_1 / Q8_0: the 5-bit pair Q5_0 / Q5_1 and the 256-value
// "K" super-blocks Q4_K, Q5_K and Q6_K.
//
// They reproduce the `gguf` Python package's dequantize bit for bit (checked
// against tests/data/kquant_fixtures.bin), including where each float is
// rounded. They are the specification a repacker or kernel is tested against;
// nothing here is fast.
#ifndef QKERN_QUANT_KQUANTS_REF_H_
#define QKERN_QUANT_KQUANTS_REF_H_

#include <stddef.h>
#include <stdint.h>

#include "qkern/base/f16.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/quantize_ref.h"

namespace qkern {

// Values per K-quant super-block.
constexpr size_t kSuperBlock = 256;

// value = d * (q - 16), q in [0, 31]. Bits 0-3 of q as in BlockQ4_0 (element
// j low nibble of qs[j], element j + 16 high nibble); bit 4 of element j is
// bit j of qh read as a little-endian u32.
struct BlockQ5_0 {
  f16_t d;
  uint8_t qh[4];
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "GGUF Q5_0 block is 22 bytes");

// value = d * q + m, q in [0, 31]; bits as BlockQ5_0.
struct BlockQ5_1 {
  f16_t d;
  f16_t m;
  uint8_t qh[4];
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "GGUF Q5_1 block is 24 bytes");

// Eight sub-blocks of 32. Sub-block s has a 6-bit scale sc[s] and 6-bit min
// mn[s] (see UnpackKScaleMin); value = (d * sc) * q - dmin * mn, q in [0, 15].
// qs is four 32-byte chunks: chunk c holds sub-block 2c in its low nibbles and
// sub-block 2c + 1 in its high nibbles.
struct BlockQ4_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "GGUF Q4_K block is 144 bytes");

// BlockQ4_K plus a fifth bit: bit 4 of element l of sub-block s is bit s of
// qh[l]; q in [0, 31].
struct BlockQ5_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "GGUF Q5_K block is 176 bytes");

// Sixteen sub-blocks of 16 with signed 8-bit scales; value = (d * scale) *
// (q - 32), q in [0, 63]. The block is two halves of 128 values: in half h,
// element r takes its low 4 bits from ql[64h + r % 64] (low nibble for
// r < 64, high nibble otherwise) and its top 2 bits from bits 2 * (r / 32)
// of qh[32h + r % 32].
struct BlockQ6_K {
  uint8_t ql[kSuperBlock / 2];
  uint8_t qh[kSuperBlock / 4];
  int8_t scales[kSuperBlock / 16];
  f16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "GGUF Q6_K block is 210 bytes");

namespace ref {

// Q4_K / Q5_K pack eight 6-bit scales and eight 6-bit mins in 12 bytes.
// Sub-blocks 0-3 keep all six bits in the low bits of bytes 0-3 (scale) and
// 4-7 (min). Sub-blocks 4-7 keep their low four bits in bytes 8-11 (scale in
// the low nibble, min in the high nibble) and their top two bits in the
// otherwise unused top bits of bytes 0-3 (scale) and 4-7 (min).
inline void UnpackKScaleMin(const uint8_t packed[12], int s, int* scale,
                            int* min) {
  if (s < 4) {
    *scale = packed[s] & 63;
    *min = packed[s + 4] & 63;
  } else {
    *scale = (packed[s + 4] & 15) | ((packed[s - 4] >> 6) << 4);
    *min = (packed[s + 4] >> 4) | ((packed[s] >> 6) << 4);
  }
}

inline void DequantizeQ5_0(const BlockQ5_0* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F32FromF16(in[b].d);
    const uint32_t qh = static_cast<uint32_t>(in[b].qh[0]) |
                        static_cast<uint32_t>(in[b].qh[1]) << 8 |
                        static_cast<uint32_t>(in[b].qh[2]) << 16 |
                        static_cast<uint32_t>(in[b].qh[3]) << 24;
    for (size_t j = 0; j < kQuantBlock / 2; ++j) {
      const int lo = (in[b].qs[j] & 15) | (((qh >> j) & 1) << 4);
      const int hi = (in[b].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[b * kQuantBlock + j] = d * static_cast<float>(lo - 16);
      y[b * kQuantBlock + j + 16] = d * static_cast<float>(hi - 16);
    }
  }
}

inline void DequantizeQ5_1(const BlockQ5_1* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F32FromF16(in[b].d);
    const float m = F32FromF16(in[b].m);
    const uint32_t qh = static_cast<uint32_t>(in[b].qh[0]) |
                        static_cast<uint32_t>(in[b].qh[1]) << 8 |
                        static_cast<uint32_t>(in[b].qh[2]) << 16 |
                        static_cast<uint32_t>(in[b].qh[3]) << 24;
    for (size_t j = 0; j < kQuantBlock / 2; ++j) {
      const int lo = (in[b].qs[j] & 15) | (((qh >> j) & 1) << 4);
      const int hi = (in[b].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[b * kQuantBlock + j] = RoundedProduct(d, static_cast<float>(lo)) + m;
      y[b * kQuantBlock + j + 16] =
          RoundedProduct(d, static_cast<float>(hi)) + m;
    }
  }
}

// Q4_K and Q5_K differ only in the fifth bit; qh == nullptr means Q4_K.
inline void DequantizeKSuperBlock(float d, float dmin, const uint8_t* scales,
                                  const uint8_t* qs, const uint8_t* qh,
                                  float* y) {
  for (int s = 0; s < 8; ++s) {
    int scale, min;
    UnpackKScaleMin(scales, s, &scale, &min);
    // Both products are rounded before the subtraction, as the oracle does.
    const float dl = d * static_cast<float>(scale);
    const float ml = RoundedProduct(dmin, static_cast<float>(min));
    const uint8_t* chunk = qs + (s / 2) * 32;
    const int shift = (s & 1) * 4;
    for (int l = 0; l < 32; ++l) {
      int q = (chunk[l] >> shift) & 15;
      if (qh != nullptr) q |= ((qh[l] >> s) & 1) << 4;
      y[s * 32 + l] = RoundedProduct(dl, static_cast<float>(q)) - ml;
    }
  }
}

inline void DequantizeQ4_K(const BlockQ4_K* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kSuperBlock; ++b) {
    DequantizeKSuperBlock(F32FromF16(in[b].d), F32FromF16(in[b].dmin),
                          in[b].scales, in[b].qs, nullptr, y + b * kSuperBlock);
  }
}

inline void DequantizeQ5_K(const BlockQ5_K* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kSuperBlock; ++b) {
    DequantizeKSuperBlock(F32FromF16(in[b].d), F32FromF16(in[b].dmin),
                          in[b].scales, in[b].qs, in[b].qh,
                          y + b * kSuperBlock);
  }
}

inline void DequantizeQ6_K(const BlockQ6_K* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kSuperBlock; ++b) {
    const BlockQ6_K& blk = in[b];
    const float d = F32FromF16(blk.d);
    float* out = y + b * kSuperBlock;
    for (int e = 0; e < static_cast<int>(kSuperBlock); ++e) {
      const int h = e / 128, r = e % 128;
      const int low = (blk.ql[64 * h + r % 64] >> (4 * (r / 64))) & 15;
      const int high = (blk.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const float scaled = d * static_cast<float>(blk.scales[e / 16]);
      out[e] = scaled * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

}  // namespace ref
}  // namespace qkern

#endif  // QKERN_QUANT_KQUANTS_REF_H_
