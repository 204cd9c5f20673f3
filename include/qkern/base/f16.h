// Scalar IEEE half (f16) and bfloat16 conversions. Round-to-nearest-even, as
// the F16C/NEON hardware converters and numpy do, so block scales written here
// match GGUF files bit for bit.
#ifndef QKERN_BASE_F16_H_
#define QKERN_BASE_F16_H_

#include <stdint.h>
#include <string.h>

namespace qkern {

// Storage types: plain bits, so block structs stay trivially copyable PODs.
using f16_t = uint16_t;
using bf16_t = uint16_t;

inline uint32_t BitsFromF32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline float F32FromBits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

inline float F32FromF16(f16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return F32FromBits(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return F32FromBits(sign | ((exp + 112u) << 23) | (mant << 13));
  // Subnormal (or zero): value = mant * 2^-24, exact in f32.
  const float magnitude = static_cast<float>(mant) * (1.0f / 16777216.0f);
  return sign ? -magnitude : magnitude;
}

inline f16_t F16FromF32(float f) {
  const uint32_t u = BitsFromF32(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // Inf or NaN (keep NaN quiet and non-zero).
    return static_cast<f16_t>(sign | 0x7C00u |
                              (abs > 0x7F800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477FF000u) return static_cast<f16_t>(sign | 0x7C00u);  // >= 65520
  if (abs < 0x38800000u) {  // Below the smallest normal half: subnormal or 0.
    // Scale into units of 2^-24 and round to nearest even in f32 arithmetic:
    // adding 0.5 (2^-1) to a value < 2^-14 in f32 of exponent -1 does it.
    const float scaled = F32FromBits(abs) + 0.5f;
    return static_cast<f16_t>(sign | (BitsFromF32(scaled) - 0x3F000000u));
  }
  // Normal: drop 13 mantissa bits with round-to-nearest-even.
  const uint32_t odd = (abs >> 13) & 1u;
  const uint32_t rounded = abs + 0xFFFu + odd;
  return static_cast<f16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

inline float F32FromBF16(bf16_t b) {
  return F32FromBits(static_cast<uint32_t>(b) << 16);
}

inline bf16_t BF16FromF32(float f) {
  const uint32_t u = BitsFromF32(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<bf16_t>((u >> 16) | 0x40u);  // quiet NaN
  }
  return static_cast<bf16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace qkern

#endif  // QKERN_BASE_F16_H_
