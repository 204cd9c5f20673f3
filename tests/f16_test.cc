// Tests for qkern/base/f16.h: exhaustive f16 round trips, and f16/bf16
// rounding checked against a reference that works on values in double
// arithmetic instead of on bit patterns.
#include "qkern/base/f16.h"

#include <float.h>
#include <stdint.h>
#include <stdio.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace qkern {
namespace {

// Bits of the nearest value of a binary float format with `mant_bits`
// fraction bits and `exp_bits` exponent bits: ties to even, gradual
// underflow, overflow to infinity. `v` must not be NaN.
uint32_t RoundToBinary(double v, int mant_bits, int exp_bits) {
  const uint32_t sign = std::signbit(v) ? 1u << (mant_bits + exp_bits) : 0u;
  const uint32_t inf_bits = ((1u << exp_bits) - 1u) << mant_bits;
  const double a = std::fabs(v);
  if (std::isinf(a)) return sign | inf_bits;
  if (a == 0.0) return sign;
  const int emin = 2 - (1 << (exp_bits - 1));  // exponent of the least normal
  int e;
  std::frexp(a, &e);  // a = f * 2^e with f in [0.5, 1)
  const int exponent = std::max(e - 1, emin);
  const double quantum = std::ldexp(1.0, exponent - mant_bits);
  const double n = a / quantum;  // exact: a is a float, quantum a power of 2
  double k = std::floor(n);
  if (n - k > 0.5 || (n - k == 0.5 && std::fmod(k, 2.0) == 1.0)) k += 1.0;
  // k counts quanta of this binade: adding the binade's first code carries
  // into the exponent when k reaches 2^(mant_bits+1), and for the lowest
  // binade it spans subnormals and the least normal alike.
  const uint64_t bits = (static_cast<uint64_t>(exponent - emin) << mant_bits) +
                        static_cast<uint64_t>(k);
  return sign | static_cast<uint32_t>(std::min<uint64_t>(bits, inf_bits));
}

uint16_t RefF16(float f) {
  return static_cast<uint16_t>(RoundToBinary(f, 10, 5));
}
uint16_t RefBF16(float f) {
  return static_cast<uint16_t>(RoundToBinary(f, 7, 8));
}

// The value of an f16 from its fields (NaN and inf excluded).
double DecodeF16(uint16_t h) {
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  const double mag =
      exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

bool IsF16NaN(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }

TEST(F16Test, ExhaustiveRoundTrip) {
  int nans = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = F32FromF16(h);
    const uint16_t back = F16FromF32(f);
    EXPECT_EQ(std::signbit(f) != 0, (h & 0x8000) != 0) << std::hex << h;
    if (IsF16NaN(h)) {
      ++nans;
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
      EXPECT_TRUE(IsF16NaN(back)) << std::hex << h << " -> " << back;
      EXPECT_EQ(back & 0x8000, h & 0x8000);
      continue;
    }
    if ((h & 0x7FFF) == 0x7C00) {
      EXPECT_TRUE(std::isinf(f)) << std::hex << h;
    } else {
      EXPECT_EQ(static_cast<double>(f), DecodeF16(h)) << std::hex << h;
    }
    EXPECT_EQ(back, h) << std::hex << h << " -> " << f << " -> " << back;
  }
  EXPECT_EQ(nans, 2 * 1023);
}

// Values the reference itself must get right, so that agreeing with it means
// something.
TEST(F16Test, KnownRoundings) {
  struct Case {
    float f;
    uint16_t h;
  };
  const Case kCases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {0x1p-25f, 0x0000},  // half the least subnormal: tie to 0
      {std::nextafter(0x1p-25f, 1.0f), 0x0001},  // just above the tie
      {0x1p-24f, 0x0001},                        // least subnormal
      {0x3p-25f, 0x0002},                        // 1.5 quanta: tie to even 2
      {0x5p-25f, 0x0002},                        // 2.5 quanta: tie to even 2
      {0x1p-14f - 0x1p-25f, 0x0400},  // 1023.5 quanta: up to least normal
      {0x1p-14f, 0x0400},
      {FLT_MIN, 0x0000},
      {-FLT_TRUE_MIN, 0x8000},
      {1.0f + 0x1p-11f, 0x3C00},  // tie, down to even
      {1.0f + 0x3p-11f, 0x3C02},  // tie, up to even
      {65504.0f, 0x7BFF},         // largest finite
      {std::nextafter(65520.0f, 0.0f), 0x7BFF},
      {65520.0f, 0x7C00},  // tie with 65536: infinity
      {-65520.0f, 0xFC00},
      {1e10f, 0x7C00},
      {FLT_MAX, 0x7C00},
      {INFINITY, 0x7C00},
      {-INFINITY, 0xFC00},
  };
  for (const Case& c : kCases) {
    EXPECT_EQ(RefF16(c.f), c.h) << "reference, " << c.f;
    EXPECT_EQ(F16FromF32(c.f), c.h)
        << c.f << " (" << std::hexfloat << c.f << ")";
  }
}

void ExpectF16Matches(float f, size_t* failures) {
  const uint16_t got = F16FromF32(f);
  if (std::isnan(f)) {
    if (!IsF16NaN(got) || (got & 0x8000) != (std::signbit(f) ? 0x8000 : 0)) {
      if ((*failures)++ < 8)
        ADD_FAILURE() << "NaN " << std::hex << BitsFromF32(f);
    }
    return;
  }
  const uint16_t want = RefF16(f);
  if (got != want && (*failures)++ < 8) {
    ADD_FAILURE() << std::hexfloat << f << " (0x" << std::hex << BitsFromF32(f)
                  << "): got 0x" << got << ", want 0x" << want;
  }
}

TEST(F16Test, MatchesReferenceOnMillionsOfFloats) {
  size_t checked = 0, failures = 0;
  // Every 1021st bit pattern: all exponents, signs, NaNs and f32 subnormals.
  for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += 1021) {
    ExpectF16Matches(F32FromBits(static_cast<uint32_t>(u)), &failures);
    ++checked;
  }
  // Around every rounding tie of f16 (and every f16 value), both signs.
  for (uint32_t h = 0; h <= 0x7BFF; ++h) {
    const int exp = static_cast<int>(h >> 10);
    const double tie =
        DecodeF16(static_cast<uint16_t>(h)) +
        std::ldexp(1.0, std::max(exp, 1) - 26);  // half a quantum
    for (const double center : {DecodeF16(static_cast<uint16_t>(h)), tie}) {
      float f = static_cast<float>(center);  // exact: 12 significant bits
      for (int i = 0; i < 2; ++i) f = std::nextafter(f, 0.0f);
      for (int i = -2; i <= 2; ++i, f = std::nextafter(f, INFINITY)) {
        ExpectF16Matches(f, &failures);
        ExpectF16Matches(-f, &failures);
        checked += 2;
      }
    }
  }
  // Dense random sampling of the exponents f16 can represent or round from.
  std::mt19937 rng(42);
  std::uniform_int_distribution<uint32_t> mant(0, (1u << 23) - 1);
  std::uniform_int_distribution<uint32_t> exp(100, 145);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t sign = (i & 1u) << 31;
    ExpectF16Matches(F32FromBits(sign | exp(rng) << 23 | mant(rng)), &failures);
    ++checked;
  }
  printf("  F16FromF32: %zu floats checked against the double reference\n",
         checked);
  EXPECT_EQ(failures, 0u);
}

TEST(BF16Test, KnownRoundings) {
  struct Case {
    uint32_t f_bits;
    uint16_t b;
  };
  const Case kCases[] = {
      {0x3F808000u, 0x3F80},  // 1 + 2^-8: tie, down to even
      {0x3F818000u, 0x3F82},  // 1 + 3 * 2^-8: tie, up to even
      {0x3F808001u, 0x3F81}, {0x00008000u, 0x0000},  // subnormal tie to even
                                                     // zero
      {0x00018000u, 0x0002}, {0x80000001u, 0x8000}, {0x7F7F7FFFu, 0x7F7F},
      {0x7F7F8000u, 0x7F80},  // largest bf16 vs infinity: tie to infinity
      {0x7F7FFFFFu, 0x7F80},  // FLT_MAX
      {0xFF800000u, 0xFF80},
  };
  for (const Case& c : kCases) {
    const float f = F32FromBits(c.f_bits);
    EXPECT_EQ(RefBF16(f), c.b) << "reference, " << std::hex << c.f_bits;
    EXPECT_EQ(BF16FromF32(f), c.b) << std::hex << c.f_bits;
  }
}

TEST(BF16Test, MatchesReferenceAndRoundTrips) {
  size_t checked = 0, failures = 0;
  auto check = [&](uint32_t u) {
    ++checked;
    const float f = F32FromBits(u);
    const uint16_t got = BF16FromF32(f);
    if (std::isnan(f)) {
      // Quiet, same sign and top payload bits as f, as ggml and gguf do.
      if (got != static_cast<uint16_t>((u >> 16) | 0x40) && failures++ < 8) {
        ADD_FAILURE() << "NaN 0x" << std::hex << u << " -> 0x" << got;
      }
      return;
    }
    const uint16_t want = RefBF16(f);
    if (got != want && failures++ < 8) {
      ADD_FAILURE() << "0x" << std::hex << u << ": got 0x" << got << ", want 0x"
                    << want;
    }
  };
  for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += 1021)
    check(static_cast<uint32_t>(u));
  // Below, at and above every tie.
  for (uint32_t hi = 0; hi <= 0xFFFF; ++hi) {
    for (uint32_t lo : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u})
      check(hi << 16 | lo);
  }
  printf("  BF16FromF32: %zu floats checked against the double reference\n",
         checked);
  EXPECT_EQ(failures, 0u);

  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const float f = F32FromBF16(b);
    EXPECT_EQ(BitsFromF32(f), static_cast<uint32_t>(b) << 16);
    // Every non-NaN bf16 survives the trip; NaNs come back quiet.
    const uint16_t quiet = std::isnan(f) ? (b | 0x40) : b;
    EXPECT_EQ(BF16FromF32(f), quiet) << std::hex << i;
  }
}

}  // namespace
}  // namespace qkern
