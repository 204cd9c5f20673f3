// Tests for qkern/kernels/rope.h on every compiled SIMD target, against the
// double-precision reference in rope_ref.h.
//
// Error bound of one rotated value. Pair (a, b) (f32, exact), exact angle
// phi, attention factor m; the exact result is y = m (a cos phi - b sin phi)
// (the second value is alike). With u = 2^-24:
//  - Angle. Kernel and reference both form phi = position * f in double but
//    compute f in different ways (pow(theta, -x) vs 1 / pow(theta, x), with
//    the scaling applied in another order): each f is within a few double
//    ulps, and the product adds one more, so the angles differ by at most
//    2^-50 |phi|, and cos and sin by at most that much.
//  - Table values. c = fl32(m cos phi~), s = fl32(m sin phi~): each within
//    u m (rounding of double to f32; the double product by m adds ~2^-53).
//  - Arithmetic. y~ = fl(a c - fl(b s)) (or the FMA form): at most
//    u (|a c| + |b s|) + u |y~| <= 2u m (|a| + |b|) (1 + u).
//  Summed: |y~ - y| <= m (|a| + |b|) (3u + 2^-50 |phi|) plus second-order
//  terms; the tests allow 4u for them. Values past rotary_dim are copied and
//  must be bit-exact; bytes outside the heads must be untouched.
#include "qkern/kernels/rope.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qkern/kernels/rope_ref.h"
#include "qkern/kv/kv_format.h"
#include "qkern/kv/paged_kv_cache.h"
#include "test_util.h"

namespace qkern {
namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24

// The bound derived above for one output of pair (a, b) at `angle`.
double PairBound(double m, double a, double b, double angle) {
  return m * (fabs(a) + fabs(b)) * (4.0 * kU + ldexp(fabs(angle), -50));
}

std::string Describe(const RopeConfig& c) {
  const char* scaling[] = {"none", "linear", "llama3", "yarn"};
  return std::string(c.layout == RopeLayout::kGptJ ? "GPT-J" : "NeoX") +
         " head_dim=" + std::to_string(c.head_dim) +
         " rotary_dim=" + std::to_string(c.rotary_dim) +
         " theta=" + std::to_string(c.theta_base) +
         " scaling=" + scaling[static_cast<uint32_t>(c.scaling.type)];
}

// One rotated head against the reference: the derived bound for rotated
// values, bit-exact for the rest.
::testing::AssertionResult HeadMatchesReference(const RopeConfig& c,
                                                int64_t position,
                                                const float* in,
                                                const float* out) {
  std::vector<double> expected(c.head_dim);
  ref::RopeHead(c, position, in, expected.data());
  const double m = ref::RopeAttentionFactor(c);
  for (size_t pair = 0; pair < c.rotary_dim / 2; ++pair) {
    size_t i, j;
    ref::RopePairIndices(c, pair, &i, &j);
    const double angle =
        static_cast<double>(position) * ref::RopeFrequency(c, pair);
    const double bound = PairBound(m, in[i], in[j], angle);
    for (size_t k : {i, j}) {
      const double err = fabs(static_cast<double>(out[k]) - expected[k]);
      if (!(err <= bound)) {
        return ::testing::AssertionFailure()
               << Describe(c) << " position " << position << " value " << k
               << ": got " << out[k] << ", expected " << expected[k]
               << ", error " << err << " > bound " << bound;
      }
    }
  }
  for (size_t k = c.rotary_dim; k < c.head_dim; ++k) {
    if (memcmp(&out[k], &in[k], sizeof(float)) != 0) {
      return ::testing::AssertionFailure()
             << Describe(c) << " position " << position << " pass-through "
             << "value " << k << " changed from " << in[k] << " to " << out[k];
    }
  }
  return ::testing::AssertionSuccess();
}

// Tables are target-independent and cost a few million sin/cos each: built
// once per (config, size) and shared by the per-target runs.
const RopeTable& CachedTable(const RopeConfig& c, size_t max_positions) {
  static std::map<std::string, std::unique_ptr<RopeTable>> tables;
  const RopeScaling& s = c.scaling;
  char key[512];
  snprintf(
      key, sizeof(key),
      "%zu/%zu/%.17g/%u/%u/%.17g/%.17g/%.17g/%.17g/%.17g/%.17g/%.17g/%d/%zu",
      c.head_dim, c.rotary_dim, c.theta_base, static_cast<unsigned>(c.layout),
      static_cast<unsigned>(s.type), s.factor, s.original_max_position,
      s.low_freq_factor, s.high_freq_factor, s.beta_fast, s.beta_slow,
      s.attention_factor, s.yarn_truncate ? 1 : 0, max_positions);
  std::unique_ptr<RopeTable>& table = tables[key];
  if (!table) {
    table.reset(new RopeTable());
    const Status status = RopeTable::Create(c, max_positions, table.get());
    EXPECT_TRUE(status.ok()) << status.message();
  }
  return *table;
}

RopeConfig MakeConfig(RopeLayout layout, size_t head_dim, size_t rotary_dim,
                      double theta, RopeScaling scaling = RopeScaling::None()) {
  RopeConfig c;
  c.layout = layout;
  c.head_dim = head_dim;
  c.rotary_dim = rotary_dim;
  c.theta_base = theta;
  c.scaling = scaling;
  return c;
}

// Positions that exercise the table (< 4096 below), its last row, the
// on-the-fly path just past it, long contexts, and the largest accepted.
std::vector<int32_t> TestPositions(uint32_t seed) {
  std::vector<int32_t> positions = {
      0,      1,      4095,
      4096,   100000, 1000000,
      131071, 7,      static_cast<int32_t>(kMaxRopePosition - 1)};
  std::mt19937 rng(seed);
  for (int i = 0; i < 3; ++i)
    positions.push_back(static_cast<int32_t>(rng() % 4096));
  for (int i = 0; i < 3; ++i) {
    positions.push_back(static_cast<int32_t>(rng() % (1u << 21)));
  }
  return positions;
}

// Rotates heads of several tokens laid out with a gap between tokens, at an
// odd float offset (unaligned rows), and checks every head and every byte of
// the gaps.
void CheckRotation(const RopeConfig& c, const RopeTable& table,
                   const std::vector<int32_t>& positions, size_t num_heads,
                   uint32_t seed) {
  const size_t num_tokens = positions.size();
  const size_t token_stride = num_heads * c.head_dim + 5;
  const size_t offset = 1;  // floats: rows start off any vector alignment
  const std::vector<float> original =
      test::RandomValues(offset + num_tokens * token_stride, seed);
  std::vector<float> x = original;
  const Status status = ApplyRope(table, x.data() + offset, num_tokens,
                                  num_heads, token_stride, positions.data());
  ASSERT_TRUE(status.ok()) << status.message();
  for (size_t t = 0; t < num_tokens; ++t) {
    for (size_t h = 0; h < num_heads; ++h) {
      const size_t at = offset + t * token_stride + h * c.head_dim;
      ASSERT_TRUE(HeadMatchesReference(c, positions[t], original.data() + at,
                                       x.data() + at))
          << "token " << t << " head " << h << " on " << ActiveTargetName();
    }
    const size_t gap = offset + t * token_stride + num_heads * c.head_dim;
    ASSERT_EQ(memcmp(x.data() + gap, original.data() + gap,
                     (token_stride - num_heads * c.head_dim) * sizeof(float)),
              0)
        << "bytes between tokens changed";
  }
  ASSERT_EQ(x[0], original[0]) << "value before the first row changed";
}

class RopeTest : public test::PerTarget {};

TEST_P(RopeTest, MatchesReferenceForLayoutsAndPartialDims) {
  uint32_t seed = 1;
  for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kGptJ}) {
    for (size_t head_dim : {64, 80, 128}) {
      std::vector<size_t> rotary = {head_dim, head_dim / 2};
      if (head_dim / 2 != 32) rotary.push_back(32);
      for (size_t rotary_dim : rotary) {
        const double theta = head_dim == 128 ? 500000.0 : 10000.0;
        const RopeConfig c = MakeConfig(layout, head_dim, rotary_dim, theta);
        SCOPED_TRACE(Describe(c));
        CheckRotation(c, CachedTable(c, 4096), TestPositions(seed), 3, seed);
        ++seed;
      }
    }
  }
}

// Shapes that leave remainders on every vector width, down to one pair.
TEST_P(RopeTest, MatchesReferenceForSmallAndOddShapes) {
  const size_t shapes[][2] = {{2, 2},   {6, 2},   {10, 6},   {18, 18},
                              {96, 96}, {96, 24}, {256, 64}, {256, 256}};
  uint32_t seed = 100;
  for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kGptJ}) {
    for (const auto& shape : shapes) {
      const RopeConfig c = MakeConfig(layout, shape[0], shape[1], 10000.0);
      SCOPED_TRACE(Describe(c));
      CheckRotation(c, CachedTable(c, 256), {0, 1, 255, 256, 99999}, 2, seed++);
    }
  }
}

TEST_P(RopeTest, ScalingVariantsMatchReference) {
  const RopeConfig configs[] = {
      // Llama 3.1 8B and Llama 3.2 1B.
      MakeConfig(RopeLayout::kNeox, 128, 128, 500000.0,
                 RopeScaling::Llama3(8.0, 1.0, 4.0, 8192.0)),
      MakeConfig(RopeLayout::kGptJ, 64, 64, 500000.0,
                 RopeScaling::Llama3(32.0, 1.0, 4.0, 8192.0)),
      // YaRN: Qwen-style factor 4 over 32k, default and explicit mscale,
      // partial rotary, no truncation.
      MakeConfig(RopeLayout::kNeox, 128, 128, 1000000.0,
                 RopeScaling::Yarn(4.0, 32768.0)),
      MakeConfig(RopeLayout::kGptJ, 64, 32, 10000.0,
                 RopeScaling::Yarn(16.0, 4096.0, 32.0, 1.0, 1.2)),
      [] {
        RopeConfig c = MakeConfig(RopeLayout::kNeox, 80, 80, 150000.0,
                                  RopeScaling::Yarn(32.0, 4096.0));
        c.scaling.yarn_truncate = false;
        return c;
      }(),
      MakeConfig(RopeLayout::kNeox, 80, 40, 10000.0, RopeScaling::Linear(2.0)),
  };
  uint32_t seed = 200;
  for (const RopeConfig& c : configs) {
    SCOPED_TRACE(Describe(c));
    CheckRotation(c, CachedTable(c, 4096), TestPositions(seed), 2, seed);
    ++seed;
  }
}

// The table and the on-the-fly path produce the same bits for a position.
TEST_P(RopeTest, TableAndOnTheFlyAgreeBitForBit) {
  for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kGptJ}) {
    const RopeConfig c =
        MakeConfig(layout, 64, 48, 10000.0, RopeScaling::Yarn(8.0, 2048.0));
    const RopeTable& tabulated = CachedTable(c, 8192);
    const RopeTable& computed = CachedTable(c, 0);
    const std::vector<int32_t> positions = {0, 1, 17, 4095, 4096, 8191};
    const size_t heads = 4;
    const std::vector<float> original =
        test::RandomValues(positions.size() * heads * 64, 300);
    std::vector<float> a = original, b = original;
    ASSERT_TRUE(ApplyRope(tabulated, a.data(), positions.size(), heads,
                          heads * 64, positions.data())
                    .ok());
    ASSERT_TRUE(ApplyRope(computed, b.data(), positions.size(), heads,
                          heads * 64, positions.data())
                    .ok());
    EXPECT_EQ(memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
        << Describe(c);
  }
}

// ApplyRopeConsecutive is ApplyRope with positions first, first + 1, ...
TEST_P(RopeTest, ConsecutiveMatchesExplicitPositions) {
  const RopeConfig c = MakeConfig(RopeLayout::kNeox, 64, 64, 100000.0);
  const RopeTable& table = CachedTable(c, 4096);
  for (int32_t first : {0, 4090, 200000}) {
    const size_t tokens = 9, heads = 3;
    std::vector<int32_t> positions(tokens);
    for (size_t t = 0; t < tokens; ++t)
      positions[t] = first + static_cast<int32_t>(t);
    const std::vector<float> original =
        test::RandomValues(tokens * heads * 64, 7);
    std::vector<float> a = original, b = original;
    ASSERT_TRUE(
        ApplyRope(table, a.data(), tokens, heads, heads * 64, positions.data())
            .ok());
    ASSERT_TRUE(
        ApplyRopeConsecutive(table, b.data(), tokens, heads, heads * 64, first)
            .ok());
    EXPECT_EQ(memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
        << "first position " << first;
  }
}

// RopeAndWriteK stores exactly what ApplyRope followed by WriteKV stores, in
// every cache format, and leaves its inputs alone.
TEST_P(RopeTest, FusedKWriteMatchesRotateThenWrite) {
  const RopeConfig configs[] = {
      MakeConfig(RopeLayout::kNeox, 64, 64, 100000.0),
      MakeConfig(RopeLayout::kGptJ, 64, 32, 500000.0,
                 RopeScaling::Llama3(32.0, 1.0, 4.0, 8192.0)),
  };
  for (KvFormat format : kAllKvFormats) {
    for (const RopeConfig& rc : configs) {
      SCOPED_TRACE(std::string(GetKvFormatInfo(format).name) + " " +
                   Describe(rc));
      const RopeTable& table = CachedTable(rc, 64);
      KvCacheConfig kc;
      kc.num_layers = 2;
      kc.num_kv_heads = 3;
      kc.head_dim = 64;
      kc.block_tokens = 16;
      kc.format = format;
      kc.memory_budget_bytes = size_t{4} << 20;
      PagedKvCache cache;
      ASSERT_TRUE(PagedKvCache::Create(kc, &cache).ok());
      ASSERT_TRUE(cache.AddSequence(5).ok());
      const size_t tokens = 20;
      ASSERT_TRUE(cache.ReserveTokens(5, tokens).ok());
      const size_t row = cache.RowFloats();
      std::vector<float> scratch(row);
      for (size_t pos = 0; pos < tokens; ++pos) {
        for (size_t layer = 0; layer < 2; ++layer) {
          const uint32_t seed = static_cast<uint32_t>(1000 + pos * 2 + layer);
          const std::vector<float> k = test::RandomValues(row, seed);
          const std::vector<float> v = test::RandomValues(row, seed + 7777);
          std::vector<float> k_in = k, v_in = v;
          // Half the tokens use a position past the table and an offset.
          const int64_t rope_pos = pos % 2 == 0
                                       ? static_cast<int64_t>(pos)
                                       : static_cast<int64_t>(pos) + 100000;
          const Status status =
              RopeAndWriteK(table, &cache, 5, layer, pos, rope_pos, k_in.data(),
                            v_in.data(), layer == 1 ? scratch.data() : nullptr);
          ASSERT_TRUE(status.ok()) << status.message();
          ASSERT_EQ(k_in, k);
          ASSERT_EQ(v_in, v);

          std::vector<float> rotated = k;
          const int32_t p32 = static_cast<int32_t>(rope_pos);
          ASSERT_TRUE(
              ApplyRope(table, rotated.data(), 1, kc.num_kv_heads, row, &p32)
                  .ok());
          std::vector<float> read_k(row), read_v(row);
          ASSERT_TRUE(
              cache.ReadKV(5, layer, pos, read_k.data(), read_v.data()).ok());
          for (size_t h = 0; h < kc.num_kv_heads; ++h) {
            for (int part = 0; part < 2; ++part) {
              const float* src =
                  (part == 0 ? rotated.data() : v.data()) + h * 64;
              std::vector<uint8_t> bytes(64 * 4);
              float scale = 0.0f;
              ASSERT_EQ(EncodeKvRow(format, src, 64, bytes.data(), &scale),
                        64u);
              std::vector<float> expected(64);
              DecodeKvRow(format, bytes.data(), &scale, 64, expected.data());
              const float* got =
                  (part == 0 ? read_k.data() : read_v.data()) + h * 64;
              ASSERT_EQ(memcmp(got, expected.data(), 64 * sizeof(float)), 0)
                  << (part == 0 ? "K" : "V") << " head " << h << " position "
                  << pos << " layer " << layer << " on " << ActiveTargetName();
            }
          }
        }
      }
      ASSERT_TRUE(cache.CommitTokens(5, tokens).ok());
    }
  }
}

// The single-pass path stores exactly the bytes of ApplyRope + WriteKV (the
// two-pass path), values and int8 scales, for every format, layout, partial
// rotary dim, odd head sizes and positions past the table.
TEST_P(RopeTest, FusedKWriteBytesEqualTwoPass) {
  struct Shape {
    RopeLayout layout;
    size_t head_dim, rotary_dim, kv_heads;
  };
  const Shape shapes[] = {
      {RopeLayout::kNeox, 64, 64, 3}, {RopeLayout::kGptJ, 64, 64, 2},
      {RopeLayout::kNeox, 80, 48, 2}, {RopeLayout::kGptJ, 96, 40, 1},
      {RopeLayout::kNeox, 6, 6, 5},   {RopeLayout::kNeox, 128, 128, 8},
      {RopeLayout::kGptJ, 34, 30, 3}, {RopeLayout::kNeox, 256, 200, 1},
  };
  for (KvFormat format : kAllKvFormats) {
    for (const Shape& sh : shapes) {
      const RopeConfig rc =
          MakeConfig(sh.layout, sh.head_dim, sh.rotary_dim, 10000.0);
      SCOPED_TRACE(std::string(GetKvFormatInfo(format).name) + " " +
                   Describe(rc) + " on " + ActiveTargetName());
      RopeTable table;
      ASSERT_TRUE(RopeTable::Create(rc, 8, &table).ok());
      KvCacheConfig kc;
      kc.num_layers = 2;
      kc.num_kv_heads = sh.kv_heads;
      kc.head_dim = sh.head_dim;
      kc.block_tokens = 4;
      kc.format = format;
      kc.memory_budget_bytes = size_t{2} << 20;
      PagedKvCache fused, two_pass;
      ASSERT_TRUE(PagedKvCache::Create(kc, &fused).ok());
      ASSERT_TRUE(PagedKvCache::Create(kc, &two_pass).ok());
      const size_t tokens = 11;
      for (PagedKvCache* cache : {&fused, &two_pass}) {
        ASSERT_TRUE(cache->AddSequence(3).ok());
        ASSERT_TRUE(cache->ReserveTokens(3, tokens).ok());
      }
      const size_t row = fused.RowFloats();
      for (size_t pos = 0; pos < tokens; ++pos) {
        for (size_t layer = 0; layer < 2; ++layer) {
          const uint32_t seed = static_cast<uint32_t>(77 + pos * 2 + layer);
          std::vector<float> k = test::RandomValues(row, seed, 0.05f);
          const std::vector<float> v = test::RandomValues(row, seed + 99);
          // Ties, zeros and tiny values exercise the rounding paths.
          k[0] = 0.0f;
          if (row > 3) k[3] = 1e-30f;
          // Past the 8-position table, with an offset.
          const int64_t rope_pos = static_cast<int64_t>(pos) * 997;
          ASSERT_TRUE(RopeAndWriteK(table, &fused, 3, layer, pos, rope_pos,
                                    k.data(), v.data())
                          .ok());
          std::vector<float> rotated = k;
          const int32_t p32 = static_cast<int32_t>(rope_pos);
          ASSERT_TRUE(
              ApplyRope(table, rotated.data(), 1, sh.kv_heads, row, &p32).ok());
          ASSERT_TRUE(
              two_pass.WriteKV(3, layer, pos, rotated.data(), v.data()).ok());
        }
      }
      for (PagedKvCache* cache : {&fused, &two_pass}) {
        ASSERT_TRUE(cache->CommitTokens(3, tokens).ok());
      }
      KvBlockTable a, b;
      ASSERT_TRUE(fused.BlockTable(3, &a).ok());
      ASSERT_TRUE(two_pass.BlockTable(3, &b).ok());
      ASSERT_EQ(a.size, b.size);
      const KvBlockLayout& layout = fused.layout();
      for (size_t pos = 0; pos < tokens; ++pos) {
        const uint8_t* block_a = fused.BlockData(a[pos / 4]);
        const uint8_t* block_b = two_pass.BlockData(b[pos / 4]);
        for (size_t layer = 0; layer < 2; ++layer) {
          for (size_t h = 0; h < sh.kv_heads; ++h) {
            for (KvPart part : {KvPart::kK, KvPart::kV}) {
              // The row's values, gathered (f32 and f16 K are dim-major).
              const size_t off = layout.RowOffset(layer, h, part, pos % 4);
              const size_t element =
                  GetKvFormatInfo(layout.format()).element_bytes;
              std::vector<uint8_t> row_a(layout.RowBytes());
              std::vector<uint8_t> row_b(layout.RowBytes());
              GatherKvValues(block_a + off, layout.ValueStride(part),
                             layout.head_dim(), element, row_a.data());
              GatherKvValues(block_b + off, layout.ValueStride(part),
                             layout.head_dim(), element, row_b.data());
              ASSERT_EQ(row_a, row_b)
                  << "position " << pos << " layer " << layer << " head " << h
                  << (part == KvPart::kK ? " K" : " V");
              if (layout.has_row_scales()) {
                const size_t so = layout.ScaleOffset(layer, h, part, pos % 4);
                ASSERT_EQ(memcmp(block_a + so, block_b + so, sizeof(float)), 0)
                    << "scale of position " << pos << " head " << h;
              }
            }
          }
        }
      }
    }
  }
}

QKERN_INSTANTIATE_PER_TARGET(RopeTest);

// --- Frequencies and scaling formulas (target-independent) -----------------

TEST(RopeFormulaTest, TableFrequenciesMatchReference) {
  const RopeConfig configs[] = {
      MakeConfig(RopeLayout::kNeox, 128, 128, 500000.0),
      MakeConfig(RopeLayout::kNeox, 64, 64, 500000.0,
                 RopeScaling::Llama3(32.0, 1.0, 4.0, 8192.0)),
      MakeConfig(RopeLayout::kGptJ, 128, 128, 10000.0,
                 RopeScaling::Yarn(4.0, 4096.0)),
      MakeConfig(RopeLayout::kNeox, 80, 40, 10000.0, RopeScaling::Linear(4.0)),
  };
  for (const RopeConfig& c : configs) {
    RopeTable table;
    ASSERT_TRUE(RopeTable::Create(c, 0, &table).ok());
    EXPECT_DOUBLE_EQ(table.attention_factor(), ref::RopeAttentionFactor(c));
    for (size_t i = 0; i < c.rotary_dim / 2; ++i) {
      const double want = ref::RopeFrequency(c, i);
      EXPECT_NEAR(table.inverse_frequencies()[i], want, 1e-14 * want)
          << Describe(c) << " pair " << i;
    }
  }
}

// Published Llama 3.1 rule on Llama 3.2 1B's numbers (theta 500000, dim 64,
// factor 32, L = 8192): wavelengths below 2048 keep their frequency (pairs
// 0..14), above 8192 are divided by 32 (pairs 18..31), in between blend.
TEST(RopeFormulaTest, Llama3Bands) {
  const RopeConfig c = MakeConfig(RopeLayout::kNeox, 64, 64, 500000.0,
                                  RopeScaling::Llama3(32.0, 1.0, 4.0, 8192.0));
  RopeTable table;
  ASSERT_TRUE(RopeTable::Create(c, 0, &table).ok());
  for (size_t i = 0; i < 32; ++i) {
    const double base = pow(500000.0, -static_cast<double>(i) / 32.0);
    const double f = table.inverse_frequencies()[i];
    if (i <= 14) {
      EXPECT_NEAR(f, base, 1e-15 * base) << i;
    } else if (i >= 18) {
      EXPECT_NEAR(f, base / 32.0, 1e-15 * base) << i;
    } else {
      EXPECT_GT(f, base / 32.0) << i;
      EXPECT_LT(f, base) << i;
      // Pair 15: wavelength 2948.30 -> blend (8192 / 2948.30 - 1) / 3.
      if (i == 15) {
        const double blend = (8192.0 / 2948.3026167007256 - 1.0) / 3.0;
        EXPECT_NEAR(f, base * (blend + (1.0 - blend) / 32.0), 1e-9 * base);
      }
    }
  }
  EXPECT_EQ(table.attention_factor(), 1.0);
}

// YaRN with theta 10000, dim 128, L = 4096: dim(32 turns) = 20.94 -> 20,
// dim(1 turn) = 45.03 -> 46. Pairs <= 20 keep f, >= 46 get f / 4, pair 33 is
// half way; mscale = 1 + 0.1 ln 4.
TEST(RopeFormulaTest, YarnRampAndMscale) {
  const RopeConfig c = MakeConfig(RopeLayout::kNeox, 128, 128, 10000.0,
                                  RopeScaling::Yarn(4.0, 4096.0));
  RopeTable table;
  ASSERT_TRUE(RopeTable::Create(c, 0, &table).ok());
  for (size_t i = 0; i < 64; ++i) {
    const double base = pow(10000.0, -static_cast<double>(i) / 64.0);
    const double f = table.inverse_frequencies()[i];
    if (i <= 20) {
      EXPECT_NEAR(f, base, 1e-15 * base) << i;
    } else if (i >= 46) {
      EXPECT_NEAR(f, base / 4.0, 1e-15 * base) << i;
    } else if (i == 33) {
      EXPECT_NEAR(f, base * (0.5 / 4.0 + 0.5), 1e-15 * base);
    }
  }
  EXPECT_NEAR(table.attention_factor(), 1.1386294361119891, 1e-15);
  // Factor <= 1 has no mscale; an explicit one wins.
  RopeTable t2;
  ASSERT_TRUE(RopeTable::Create(MakeConfig(RopeLayout::kNeox, 64, 64, 1e4,
                                           RopeScaling::Yarn(1.0, 4096.0)),
                                0, &t2)
                  .ok());
  EXPECT_EQ(t2.attention_factor(), 1.0);
  ASSERT_TRUE(RopeTable::Create(
                  MakeConfig(RopeLayout::kNeox, 64, 64, 1e4,
                             RopeScaling::Yarn(4.0, 4096.0, 32.0, 1.0, 0.75)),
                  0, &t2)
                  .ok());
  EXPECT_EQ(t2.attention_factor(), 0.75);
}

// The sign convention, by hand: (1, 0) at angle 1 becomes (cos 1, sin 1).
TEST(RopeFormulaTest, UnitVectorTurnsCounterClockwise) {
  for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kGptJ}) {
    const RopeConfig c = MakeConfig(layout, 8, 8, 10000.0);
    RopeTable table;
    ASSERT_TRUE(RopeTable::Create(c, 4, &table).ok());
    float x[8] = {};
    x[0] = 1.0f;
    const int32_t position = 1;
    ASSERT_TRUE(ApplyRope(table, x, 1, 1, 8, &position).ok());
    const size_t second = layout == RopeLayout::kGptJ ? 1 : 4;
    EXPECT_NEAR(x[0], 0.5403023058681398, 1e-7);
    EXPECT_NEAR(x[second], 0.8414709848078965, 1e-7);
  }
}

TEST(RopeFormulaTest, ComputeRowMatchesTableRows) {
  for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kGptJ}) {
    const RopeConfig c =
        MakeConfig(layout, 64, 64, 10000.0, RopeScaling::Yarn(4.0, 1024.0));
    const RopeTable& table = CachedTable(c, 512);
    const size_t row = table.RowFloats();
    EXPECT_EQ(row, layout == RopeLayout::kGptJ ? 64u : 32u);
    std::vector<float> cos_row(row), sin_row(row);
    for (size_t p : {0, 1, 300, 511}) {
      table.ComputeRow(static_cast<int64_t>(p), cos_row.data(), sin_row.data());
      EXPECT_EQ(memcmp(cos_row.data(), table.CosRow(p), row * 4), 0) << p;
      EXPECT_EQ(memcmp(sin_row.data(), table.SinRow(p), row * 4), 0) << p;
    }
    EXPECT_EQ(table.CosRow(512), nullptr);
    EXPECT_EQ(table.SinRow(512), nullptr);
  }
}

// --- Errors ----------------------------------------------------------------

::testing::AssertionResult IsError(const Status& status, StatusCode code,
                                   const std::string& mention) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "code " << static_cast<int>(status.code()) << " (\""
           << status.message() << "\"), want " << static_cast<int>(code);
  }
  if (status.message().find(mention) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message \"" << status.message() << "\" does not mention \""
           << mention << "\"";
  }
  return ::testing::AssertionSuccess();
}

TEST(RopeErrorTest, BadConfigs) {
  const StatusCode kBad = StatusCode::kInvalidArgument;
  RopeTable table;
  auto create = [&](RopeConfig c) { return RopeTable::Create(c, 16, &table); };
  const RopeConfig good = MakeConfig(RopeLayout::kNeox, 128, 128, 10000.0);
  RopeConfig c = good;
  c.rotary_dim = 63;
  EXPECT_TRUE(IsError(create(c), kBad, "rotary_dim = 63"));
  c.rotary_dim = 130;
  EXPECT_TRUE(IsError(create(c), kBad, "rotary_dim = 130"));
  c.rotary_dim = 0;
  EXPECT_TRUE(IsError(create(c), kBad, "rotary_dim = 0"));
  c = good;
  c.head_dim = 0;
  EXPECT_TRUE(IsError(create(c), kBad, "head_dim = 0"));
  c.head_dim = kMaxRopeHeadDim + 2;
  c.rotary_dim = 2;
  EXPECT_TRUE(IsError(create(c), kBad, "head_dim = 1026"));
  c = good;
  c.theta_base = 1.0;
  EXPECT_TRUE(IsError(create(c), kBad, "theta_base = 1"));
  c.theta_base = NAN;
  EXPECT_TRUE(IsError(create(c), kBad, "theta_base = nan"));
  c = good;
  c.layout = static_cast<RopeLayout>(7);
  EXPECT_TRUE(IsError(create(c), kBad, "unknown layout 7"));
  c = good;
  c.scaling.type = static_cast<RopeScalingType>(9);
  EXPECT_TRUE(IsError(create(c), kBad, "unknown scaling type 9"));
  c = good;
  c.scaling = RopeScaling::Linear(0.0);
  EXPECT_TRUE(IsError(create(c), kBad, "factor = 0"));
  c.scaling = RopeScaling::Llama3(8.0, 4.0, 4.0, 8192.0);
  EXPECT_TRUE(IsError(create(c), kBad, "low_freq_factor = 4"));
  c.scaling = RopeScaling::Llama3(8.0, 1.0, 4.0, 0.0);
  EXPECT_TRUE(IsError(create(c), kBad, "original_max_position = 0"));
  c.scaling = RopeScaling::Yarn(4.0, 4096.0, 1.0, 32.0);
  EXPECT_TRUE(IsError(create(c), kBad, "beta_fast = 1"));
  c.scaling = RopeScaling::Yarn(4.0, 4096.0, 32.0, 1.0, -1.0);
  EXPECT_TRUE(IsError(create(c), kBad, "attention_factor = -1"));
  EXPECT_TRUE(table.empty()) << "a failed Create must leave the table alone";
  EXPECT_TRUE(IsError(RopeTable::Create(good, 16, nullptr), kBad, "null"));
  EXPECT_TRUE(IsError(RopeTable::Create(good, kMaxRopePosition + 1, &table),
                      kBad, "max_positions = 134217729"));
}

TEST(RopeErrorTest, BadApplyRopeCalls) {
  const RopeConfig c = MakeConfig(RopeLayout::kNeox, 64, 64, 10000.0);
  RopeTable table;
  ASSERT_TRUE(RopeTable::Create(c, 16, &table).ok());
  std::vector<float> x = test::RandomValues(4 * 2 * 64, 1);
  const std::vector<float> original = x;
  int32_t positions[4] = {0, 1, 2, 3};

  EXPECT_TRUE(IsError(ApplyRope(RopeTable(), x.data(), 4, 2, 128, positions),
                      StatusCode::kInvalidArgument, "RopeTable is empty"));
  EXPECT_TRUE(IsError(ApplyRope(table, nullptr, 4, 2, 128, positions),
                      StatusCode::kInvalidArgument, "x is null"));
  EXPECT_TRUE(IsError(ApplyRope(table, x.data(), 4, 2, 128, nullptr),
                      StatusCode::kInvalidArgument, "positions is null"));
  EXPECT_TRUE(IsError(ApplyRope(table, x.data(), 4, 2, 127, positions),
                      StatusCode::kInvalidArgument, "token_stride = 127"));
  EXPECT_TRUE(
      IsError(ApplyRope(table, x.data(), SIZE_MAX / 2, 2, 128, positions),
              StatusCode::kOutOfRange, "overflow"));
  positions[2] = -1;
  EXPECT_TRUE(IsError(ApplyRope(table, x.data(), 4, 2, 128, positions),
                      StatusCode::kOutOfRange, "positions[2] = -1"));
  positions[2] = static_cast<int32_t>(kMaxRopePosition);
  EXPECT_TRUE(IsError(ApplyRope(table, x.data(), 4, 2, 128, positions),
                      StatusCode::kOutOfRange, "positions[2] = 134217728"));
  EXPECT_EQ(x, original) << "a rejected call must not touch x";
  positions[2] = static_cast<int32_t>(kMaxRopePosition - 1);
  EXPECT_TRUE(ApplyRope(table, x.data(), 4, 2, 128, positions).ok());
  // Nothing to do: no pointer is needed.
  EXPECT_TRUE(ApplyRope(table, nullptr, 0, 2, 128, nullptr).ok());
  EXPECT_TRUE(ApplyRope(table, nullptr, 4, 0, 128, nullptr).ok());

  EXPECT_TRUE(IsError(ApplyRopeConsecutive(table, x.data(), 4, 2, 128, -5),
                      StatusCode::kOutOfRange, "first_position = -5"));
  EXPECT_TRUE(IsError(
      ApplyRopeConsecutive(table, x.data(), 4, 2, 128, kMaxRopePosition - 3),
      StatusCode::kOutOfRange, "reach past"));
  EXPECT_TRUE(
      ApplyRopeConsecutive(table, x.data(), 4, 2, 128, kMaxRopePosition - 4)
          .ok());
}

TEST(RopeErrorTest, BadFusedWrites) {
  const RopeConfig c = MakeConfig(RopeLayout::kNeox, 64, 64, 10000.0);
  RopeTable table;
  ASSERT_TRUE(RopeTable::Create(c, 16, &table).ok());
  KvCacheConfig kc;
  kc.num_layers = 1;
  kc.num_kv_heads = 2;
  kc.head_dim = 64;
  kc.format = KvFormat::kInt8;
  kc.memory_budget_bytes = size_t{1} << 20;
  PagedKvCache cache;
  ASSERT_TRUE(PagedKvCache::Create(kc, &cache).ok());
  ASSERT_TRUE(cache.AddSequence(1).ok());
  ASSERT_TRUE(cache.ReserveTokens(1, 1).ok());
  std::vector<float> k = test::RandomValues(128, 2),
                     v = test::RandomValues(128, 3);
  const StatusCode kBad = StatusCode::kInvalidArgument;

  EXPECT_TRUE(IsError(
      RopeAndWriteK(RopeTable(), &cache, 1, 0, 0, 0, k.data(), v.data()), kBad,
      "RopeTable is empty"));
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, nullptr, 1, 0, 0, 0, k.data(), v.data()),
              kBad, "cache is null"));
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 1, 0, 0, 0, nullptr, v.data()), kBad,
              "k is null"));
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 1, 0, 0, 0, k.data(), nullptr), kBad,
              "v is null"));
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 1, 0, 0, -1, k.data(), v.data()),
              StatusCode::kOutOfRange, "rope_position = -1"));
  // The cache's own checks come through unchanged.
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 1, 0, 1, 1, k.data(), v.data()),
              StatusCode::kOutOfRange, "ReserveTokens"));
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 9, 0, 0, 0, k.data(), v.data()),
              kBad, "unknown sequence id 9"));
  std::vector<float> bad_k = k;
  bad_k[70] = INFINITY;
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 1, 0, 0, 0, bad_k.data(), v.data()),
              kBad, "k[70]"));
  // A failed write leaves the position unwritten, even after a good one.
  ASSERT_TRUE(
      RopeAndWriteK(table, &cache, 1, 0, 0, 0, k.data(), v.data()).ok());
  std::vector<float> bad_v = v;
  bad_v[127] = NAN;
  EXPECT_TRUE(
      IsError(RopeAndWriteK(table, &cache, 1, 0, 0, 0, k.data(), bad_v.data()),
              kBad, "v[127]"));
  EXPECT_TRUE(IsError(cache.CommitTokens(1, 1), kBad, "never written"));

  // A table for another head size.
  RopeTable other;
  ASSERT_TRUE(RopeTable::Create(MakeConfig(RopeLayout::kNeox, 128, 128, 1e4),
                                16, &other)
                  .ok());
  EXPECT_TRUE(
      IsError(RopeAndWriteK(other, &cache, 1, 0, 0, 0, k.data(), v.data()),
              kBad, "built for head_dim = 128"));

  // Rows of any size are written without scratch (nothing is staged).
  kc.num_kv_heads = 40;
  kc.head_dim = 128;
  kc.format = KvFormat::kF16;
  kc.memory_budget_bytes = size_t{4} << 20;
  PagedKvCache big;
  ASSERT_TRUE(PagedKvCache::Create(kc, &big).ok());
  ASSERT_TRUE(big.AddSequence(1).ok());
  ASSERT_TRUE(big.ReserveTokens(1, 1).ok());
  std::vector<float> big_k = test::RandomValues(40 * 128, 4);
  std::vector<float> big_v = test::RandomValues(40 * 128, 5);
  const Status ok =
      RopeAndWriteK(other, &big, 1, 0, 0, 0, big_k.data(), big_v.data());
  EXPECT_TRUE(ok.ok()) << ok.message();
}

}  // namespace
}  // namespace qkern
