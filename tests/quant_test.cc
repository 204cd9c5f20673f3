// Tests for qkern/quant: the reference quantizers against the `gguf` package
// (fixtures from tools/gen_quant_fixtures.py), derived round-trip error
// bounds for every weight format, and the format table.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/base/f16.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/quant/quantize_ref.h"

#ifndef QKERN_TEST_DATA_DIR
#error "QKERN_TEST_DATA_DIR must name the tests/data directory"
#endif

namespace qkern {
namespace {

// --- Fixture file (format documented in tools/gen_quant_fixtures.py) --------

constexpr uint32_t kGgmlQ4_0 = 2;
constexpr uint32_t kGgmlQ4_1 = 3;
constexpr uint32_t kGgmlQ8_0 = 8;

struct FixtureSection {
  uint32_t ggml_type = 0;
  uint32_t block_bytes = 0;
  std::vector<uint8_t> blocks;
  std::vector<float> dequant;
};

struct Fixtures {
  std::string error;  // empty when the file parsed
  size_t n_blocks = 0;
  std::vector<std::string> case_names;
  std::vector<uint8_t> case_of_block;
  std::vector<float> input;
  std::vector<FixtureSection> sections;

  const FixtureSection* Find(uint32_t ggml_type) const {
    for (const FixtureSection& s : sections) {
      if (s.ggml_type == ggml_type) return &s;
    }
    return nullptr;
  }
  std::string CaseName(size_t block) const {
    return case_names[case_of_block[block]];
  }
};

// Bounds-checked little-endian reader; the fixtures are LE and so are all
// hosts qkern targets (x86, aarch64 Linux/Android).
class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  bool Read(void* out, size_t n) {
    if (n > bytes_.size() - pos_) return false;
    if (n != 0) memcpy(out, bytes_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool ReadVector(size_t count, std::vector<T>* out) {
    if (count > (bytes_.size() - pos_) / sizeof(T)) return false;
    out->resize(count);
    return Read(out->data(), count * sizeof(T));
  }
  bool AtEnd() const { return pos_ == bytes_.size(); }
  size_t pos() const { return pos_; }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t pos_ = 0;
};

Fixtures LoadFixtures() {
  Fixtures f;
  const std::string path =
      std::string(QKERN_TEST_DATA_DIR) + "/quant_fixtures.bin";
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    f.error = "cannot open " + path +
              " (regenerate with python3 tools/gen_quant_fixtures.py)";
    return f;
  }
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)),
                                   std::istreambuf_iterator<char>());
  Reader r(bytes);
  char magic[8];
  uint32_t header[4];  // version, n_blocks, n_cases, n_types
  if (!r.Read(magic, 8) || memcmp(magic, "QKQFIX01", 8) != 0 ||
      !r.Read(header, sizeof(header)) || header[0] != 1) {
    f.error = path + ": bad magic or version";
    return f;
  }
  f.n_blocks = header[1];
  for (uint32_t i = 0; i < header[2]; ++i) {
    uint8_t len;
    std::vector<char> name;
    if (!r.Read(&len, 1) || !r.ReadVector(len, &name)) {
      f.error = path + ": truncated case names";
      return f;
    }
    f.case_names.emplace_back(name.begin(), name.end());
  }
  if (!r.ReadVector(f.n_blocks, &f.case_of_block) ||
      !r.ReadVector(f.n_blocks * kQuantBlock, &f.input)) {
    f.error = path + ": truncated inputs";
    return f;
  }
  for (uint8_t c : f.case_of_block) {
    if (c >= f.case_names.size()) {
      f.error = path + ": case index out of range";
      return f;
    }
  }
  for (uint32_t t = 0; t < header[3]; ++t) {
    FixtureSection s;
    if (!r.Read(&s.ggml_type, 4) || !r.Read(&s.block_bytes, 4) ||
        !r.ReadVector(f.n_blocks * s.block_bytes, &s.blocks) ||
        !r.ReadVector(f.n_blocks * kQuantBlock, &s.dequant)) {
      f.error = path + ": truncated section " + std::to_string(t);
      return f;
    }
    f.sections.push_back(std::move(s));
  }
  if (!r.AtEnd()) {
    f.error = path + ": " + std::to_string(bytes.size() - r.pos()) +
              " trailing bytes";
  }
  return f;
}

const Fixtures& GetFixtures() {
  static const Fixtures* fixtures = new Fixtures(LoadFixtures());
  return *fixtures;
}

// --- Failure messages that say enough to debug a single block --------------

std::string Hex(const uint8_t* p, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    snprintf(buf, sizeof(buf), "%02x", p[i]);
    s += buf;
    if (i + 1 < n) s += (i == 1 || i == 3) ? " | " : " ";
  }
  return s;
}

std::string Floats(const float* v, size_t n) {
  std::string s;
  char buf[48];
  for (size_t i = 0; i < n; ++i) {
    // %a is exact: a mismatch on the last bit stays visible.
    const char* sep = n == 1 ? "" : i % 4 == 0 ? "\n    " : "  ";
    snprintf(buf, sizeof(buf), "%s%.9g (%a)", sep, v[i], v[i]);
    s += buf;
  }
  return s;
}

bool SameFloat(float a, float b) {
  // Any NaN matches any NaN: the default NaN's sign differs between x86 and
  // Arm, and gguf's inf * 0 produces one.
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return BitsFromF32(a) == BitsFromF32(b);
}

constexpr int kMaxReports = 6;

// Quantizes all fixture inputs with `quantize` and dequantizes the fixture's
// blocks with `dequantize`; both must match the gguf package exactly.
template <typename Block, typename QuantizeFn, typename DequantizeFn>
void CheckAgainstGguf(uint32_t ggml_type, QuantizeFn quantize,
                      DequantizeFn dequantize) {
  const Fixtures& f = GetFixtures();
  ASSERT_EQ(f.error, "");
  const FixtureSection* s = f.Find(ggml_type);
  ASSERT_NE(s, nullptr) << "no section for ggml type " << ggml_type;
  ASSERT_EQ(s->block_bytes, sizeof(Block));
  const size_t n = f.n_blocks * kQuantBlock;

  std::vector<Block> ours(f.n_blocks);
  quantize(f.input.data(), n, ours.data());
  size_t bad_blocks = 0;
  for (size_t b = 0; b < f.n_blocks; ++b) {
    const uint8_t* want = s->blocks.data() + b * sizeof(Block);
    const uint8_t* got = reinterpret_cast<const uint8_t*>(&ours[b]);
    if (memcmp(want, got, sizeof(Block)) == 0) continue;
    if (++bad_blocks > kMaxReports) continue;
    ADD_FAILURE() << "quantize: block " << b << " (" << f.CaseName(b)
                  << ") differs from gguf\n  gguf: " << Hex(want, sizeof(Block))
                  << "\n  ours: " << Hex(got, sizeof(Block)) << "\n  input:"
                  << Floats(&f.input[b * kQuantBlock], kQuantBlock);
  }
  EXPECT_EQ(bad_blocks, 0u) << "of " << f.n_blocks << " blocks";

  // Dequantize gguf's blocks, not ours, so a quantizer bug cannot hide a
  // dequantizer bug.
  std::vector<Block> theirs(f.n_blocks);
  memcpy(theirs.data(), s->blocks.data(), s->blocks.size());
  std::vector<float> y(n);
  dequantize(theirs.data(), n, y.data());
  size_t bad_values = 0;
  for (size_t i = 0; i < n; ++i) {
    if (SameFloat(y[i], s->dequant[i])) continue;
    if (++bad_values > kMaxReports) continue;
    const size_t b = i / kQuantBlock;
    ADD_FAILURE() << "dequantize: block " << b << " (" << f.CaseName(b)
                  << ") element " << i % kQuantBlock << ": gguf "
                  << Floats(&s->dequant[i], 1) << "\n  ours "
                  << Floats(&y[i], 1) << "\n  block: "
                  << Hex(s->blocks.data() + b * sizeof(Block), sizeof(Block));
  }
  EXPECT_EQ(bad_values, 0u) << "of " << n << " values";
}

TEST(QuantFixturesTest, FileParsesAndCoversEveryCategory) {
  const Fixtures& f = GetFixtures();
  ASSERT_EQ(f.error, "");
  EXPECT_GT(f.n_blocks, 100u);
  EXPECT_EQ(f.sections.size(), 3u);
  std::vector<int> blocks_per_case(f.case_names.size());
  for (uint8_t c : f.case_of_block) ++blocks_per_case[c];
  for (size_t c = 0; c < f.case_names.size(); ++c) {
    EXPECT_GT(blocks_per_case[c], 0) << f.case_names[c];
  }
  for (float v : f.input) {
    // -0.0 is left out on purpose (see SignedZerosFollowGgml).
    EXPECT_FALSE(BitsFromF32(v) == 0x80000000u);
  }
}

TEST(QuantFixturesTest, Q4_0MatchesGguf) {
  CheckAgainstGguf<BlockQ4_0>(kGgmlQ4_0, ref::QuantizeQ4_0,
                              ref::DequantizeQ4_0);
}

TEST(QuantFixturesTest, Q4_1MatchesGguf) {
  CheckAgainstGguf<BlockQ4_1>(kGgmlQ4_1, ref::QuantizeQ4_1,
                              ref::DequantizeQ4_1);
}

TEST(QuantFixturesTest, Q8_0MatchesGguf) {
  CheckAgainstGguf<BlockQ8_0>(kGgmlQ8_0, ref::QuantizeQ8_0,
                              ref::DequantizeQ8_0);
}

// Where numpy and ggml disagree (the sign of a zero extreme), qkern follows
// ggml's scalar loops: Q4_0 starts from max = +0.0, so a zero block gets
// d = +0.0 / -8 = -0.0 whatever the signs of its zeros; Q4_1 keeps the first
// of equal minima.
TEST(QuantFixturesTest, SignedZerosFollowGgml) {
  float x[kQuantBlock];
  for (size_t j = 0; j < kQuantBlock; ++j) x[j] = -0.0f;
  BlockQ4_0 q4_0;
  ref::QuantizeQ4_0(x, kQuantBlock, &q4_0);
  EXPECT_EQ(q4_0.d, 0x8000);
  for (uint8_t byte : q4_0.qs) EXPECT_EQ(byte, 0x88);
  BlockQ4_1 q4_1;
  ref::QuantizeQ4_1(x, kQuantBlock, &q4_1);
  EXPECT_EQ(q4_1.d, 0x0000);  // -0 - -0 = +0
  EXPECT_EQ(q4_1.m, 0x8000);
  BlockQ8_0 q8_0;
  ref::QuantizeQ8_0(x, kQuantBlock, &q8_0);
  EXPECT_EQ(q8_0.d, 0x0000);
  for (int8_t q : q8_0.qs) EXPECT_EQ(q, 0);

  for (size_t j = 0; j < kQuantBlock; ++j) x[j] = j % 2 ? -0.0f : 0.0f;
  ref::QuantizeQ4_1(x, kQuantBlock, &q4_1);
  EXPECT_EQ(q4_1.m, 0x0000);
  x[0] = -0.0f;
  x[1] = 0.0f;
  ref::QuantizeQ4_1(x, kQuantBlock, &q4_1);
  EXPECT_EQ(q4_1.m, 0x8000);
}

// --- Round-trip error bounds -------------------------------------------------
//
// Notation: x an input, d the f32 scale the quantizer computes, D = f16(d)
// the stored scale (f32 for kInt8PerChannel, where D = d), q the code,
// t the exact x / d (or (x - min) / d), u = 2^-24 the f32 unit roundoff.
//
// Computing a code: id = fl(1 / d) and fl(x * id) are each within u relative,
// so fl(x * id) is within 2.01 * u * |t| of t; a following fl(. + c) for
// c = 8.5 or 0.5 and a result below 32 rounds by at most 2^-20. With
// |t| <= 127 (8-bit) or 15 (4-bit) that is below 2^-15 (8-bit), 2^-19
// (Q4_0), and 2^-17 (Q4_1, whose fl(x - min) adds a third u) in units of t.
//
// Dequantizing: q * D is exact in f32 (at most 8 + 11 significant bits), so
// only the stored scale's rounding, |q| * |d - D|, and for the asymmetric
// formats the stored minimum's |min - M| and the final add's u * |y| enter.
// A fused multiply-add (-ffp-contract=fast) can only drop that last term.
//
//   Q8_0, INT8:  |t| <= 127, q = round(t):
//     |x - y| <= d/2 + |q| * |d - D| + d * 2^-15   (+ u * |y| if D is f32,
//     where the product rounds)
//   Q4_0, INT4 symmetric: d = m / -8 with m the signed extreme, so
//     t in [-8, 8] but q - 8 in [-8, 7]. t = 8 happens when -m is also in the
//     group; t in [7.5, 8] is clipped to 7, a full step at most:
//     |x - y| <= |d| * (1/2 or 1 if q == 15) + |q - 8| * |d - D| + |d| * 2^-19
//   Q4_1, INT4 asymmetric: t in [0, 15], q = round(t):
//     |x - y| <= d/2 + q * |d - D| + |min - M| + d * 2^-17 + u * |y|

constexpr float kU = 1.0f / 16777216.0f;  // 2^-24

enum class Scheme { kSymmetric8, kSymmetric4, kAsymmetric4 };

struct GroupCheck {
  Scheme scheme;
  float d;           // the scale the quantizer computed, f32
  float stored_d;    // as dequantization sees it
  float min = 0.0f;  // kAsymmetric4
  float stored_min = 0.0f;
  bool f32_scale = false;  // product q * D may round
};

float Bound(const GroupCheck& g, int q, float y) {
  const float dd = std::fabs(g.d - g.stored_d);
  const float ad = std::fabs(g.d);
  switch (g.scheme) {
    case Scheme::kSymmetric8:
      return ad * (0.5f + 0x1p-15f) + static_cast<float>(std::abs(q)) * dd +
             (g.f32_scale ? kU * std::fabs(y) : 0.0f);
    case Scheme::kSymmetric4:
      return ad * ((q == 15 ? 1.0f : 0.5f) + 0x1p-19f) +
             static_cast<float>(std::abs(q - 8)) * dd;
    case Scheme::kAsymmetric4:
      return ad * (0.5f + 0x1p-17f) + static_cast<float>(q) * dd +
             std::fabs(g.min - g.stored_min) + kU * std::fabs(y);
  }
  return 0.0f;
}

// The scale (and minimum) of one group, as the quantizer defines them.
GroupCheck ComputeGroup(Scheme scheme, const float* x, size_t n) {
  GroupCheck g{scheme, 0.0f, 0.0f};
  if (scheme == Scheme::kAsymmetric4) {
    const auto mm = std::minmax_element(x, x + n);
    g.min = *mm.first;
    g.d = (*mm.second - *mm.first) / 15.0f;
  } else {
    float extreme = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
    }
    g.d = scheme == Scheme::kSymmetric8 ? std::fabs(extreme) / 127.0f
                                        : extreme / -8.0f;
  }
  return g;
}

struct BoundStats {
  size_t checked = 0;
  double worst_ratio = 0.0;  // max |x - y| / bound over normal f16 scales
};

// Checks y against x element by element; `code` and `group_of` describe the
// storage. Stops reporting after a few failures.
template <typename CodeFn, typename GroupFn>
void CheckBound(const char* what, const float* x, const float* y, size_t n,
                CodeFn code, GroupFn group_of, BoundStats* stats) {
  int reports = 0;
  for (size_t j = 0; j < n; ++j) {
    const GroupCheck& g = group_of(j);
    const int q = code(j);
    const float bound = Bound(g, q, y[j]);
    const float err = std::fabs(x[j] - y[j]);
    ++stats->checked;
    // Tightness is judged where the half step dominates: away from zero and
    // subnormal scales, where the stored parameters' rounding is the bound.
    if (g.d != 0.0f && std::fabs(g.stored_d) >= 0x1p-14f) {
      stats->worst_ratio =
          std::max(stats->worst_ratio, static_cast<double>(err) / bound);
    }
    if (!(err <= bound) && reports++ < kMaxReports) {
      ADD_FAILURE() << what << " element " << j << ": x = " << Floats(&x[j], 1)
                    << " y = " << Floats(&y[j], 1) << " q = " << q
                    << " |x - y| = " << err << " > bound " << bound
                    << " (d = " << g.d << ", stored " << g.stored_d
                    << ", min = " << g.min << ", stored " << g.stored_min
                    << ")";
    }
  }
}

// Rows shaped like real weights plus the awkward cases: outliers, one-signed
// rows, values whose f16 scales are subnormal, constant stretches.
std::vector<float> MakeRows(size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    float* row = &x[r * cols];
    const float scale = std::pow(10.0f, -3.0f + 4.0f * unit(rng));
    const int kind = static_cast<int>((r + seed) % 5);
    for (size_t j = 0; j < cols; ++j) {
      float v = normal(rng) * scale;
      switch (kind) {
        case 1:  // outliers
          if (unit(rng) < 0.01f) v *= 100.0f;
          break;
        case 2:  // negative-dominant
          v = -std::fabs(v) + 0.1f * scale;
          break;
        case 3:  // tiny: f16 scales become subnormal
          v *= 1e-5f;
          break;
        case 4:  // constant runs of 40 (straddling groups)
          v = ((j / 40) % 3 == 0) ? scale : v;
          break;
      }
      row[j] = v;
    }
  }
  return x;
}

struct Shape {
  size_t rows, cols;
};

std::vector<Shape> ShapesFor(size_t group) {
  std::vector<Shape> shapes;
  for (size_t rows : {1, 3, 7}) {
    for (size_t groups : {1, 3, 5, 17})
      shapes.push_back({rows, group * groups});
  }
  shapes.push_back({5, 4096});
  shapes.push_back({1, 4064 / group * group});  // not a power of two
  return shapes;
}

constexpr uint32_t kSeeds[] = {1, 7, 12345};

int Nibble(const uint8_t* qs, size_t j) {  // GGUF order within a block
  return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
}

template <typename Block, typename QuantizeFn>
void CheckGgufBound(WeightFormat format, Scheme scheme, QuantizeFn quantize) {
  BoundStats stats;
  for (uint32_t seed : kSeeds) {
    for (const Shape& s : ShapesFor(kQuantBlock)) {
      const std::vector<float> x = MakeRows(s.rows, s.cols, seed);
      std::vector<Block> blocks(x.size() / kQuantBlock);
      quantize(x.data(), x.size(), blocks.data());
      QuantizedWeights w;
      w.format = format;
      w.rows = s.rows;
      w.cols = s.cols;
      w.codes = blocks.data();
      std::vector<float> y(s.cols);
      for (size_t r = 0; r < s.rows; ++r) {
        ref::DequantizeRow(w, r, y.data());
        const float* xr = &x[r * s.cols];
        const Block* br = &blocks[r * s.cols / kQuantBlock];
        std::vector<GroupCheck> groups;
        for (size_t b = 0; b < s.cols / kQuantBlock; ++b) {
          GroupCheck g =
              ComputeGroup(scheme, xr + b * kQuantBlock, kQuantBlock);
          // The stored scale is the correctly rounded f16 of d.
          EXPECT_EQ(br[b].d, F16FromF32(g.d)) << "row " << r << " block " << b;
          g.stored_d = F32FromF16(br[b].d);
          if constexpr (sizeof(Block) == sizeof(BlockQ4_1)) {
            EXPECT_EQ(br[b].m, F16FromF32(g.min));
            g.stored_min = F32FromF16(br[b].m);
          }
          groups.push_back(g);
        }
        auto code = [&](size_t j) -> int {
          const Block& blk = br[j / kQuantBlock];
          if constexpr (sizeof(Block) == sizeof(BlockQ8_0)) {
            return blk.qs[j % kQuantBlock];
          } else {
            return Nibble(blk.qs, j % kQuantBlock);
          }
        };
        auto group_of = [&](size_t j) -> const GroupCheck& {
          return groups[j / kQuantBlock];
        };
        const std::string what =
            std::string(FormatInfo(format).name) + " seed " +
            std::to_string(seed) + " " + std::to_string(s.rows) + "x" +
            std::to_string(s.cols) + " row " + std::to_string(r);
        CheckBound(what.c_str(), xr, y.data(), s.cols, code, group_of, &stats);
      }
    }
  }
  printf("  %s: %zu elements within bound, worst |x - y| / bound = %.6f\n",
         FormatInfo(format).name, stats.checked, stats.worst_ratio);
  // The bound is attained (up to the slack terms), so it is not loose.
  EXPECT_GT(stats.worst_ratio, 0.9);
}

TEST(QuantRoundTripTest, Q4_0WithinBound) {
  CheckGgufBound<BlockQ4_0>(WeightFormat::kQ4_0, Scheme::kSymmetric4,
                            ref::QuantizeQ4_0);
}

TEST(QuantRoundTripTest, Q4_1WithinBound) {
  CheckGgufBound<BlockQ4_1>(WeightFormat::kQ4_1, Scheme::kAsymmetric4,
                            ref::QuantizeQ4_1);
}

TEST(QuantRoundTripTest, Q8_0WithinBound) {
  CheckGgufBound<BlockQ8_0>(WeightFormat::kQ8_0, Scheme::kSymmetric8,
                            ref::QuantizeQ8_0);
}

void CheckInt4Bound(bool with_min, size_t group) {
  const WeightFormat format =
      with_min ? WeightFormat::kInt4Asym : WeightFormat::kInt4Sym;
  const Scheme scheme = with_min ? Scheme::kAsymmetric4 : Scheme::kSymmetric4;
  BoundStats stats;
  for (uint32_t seed : kSeeds) {
    for (const Shape& s : ShapesFor(group)) {
      const std::vector<float> x = MakeRows(s.rows, s.cols, seed);
      const size_t groups_per_row = s.cols / group;
      std::vector<uint8_t> codes(s.rows * s.cols / 2);
      std::vector<f16_t> scales(s.rows * groups_per_row);
      std::vector<f16_t> mins(with_min ? scales.size() : 0);
      for (size_t r = 0; r < s.rows; ++r) {
        ref::QuantizeInt4GroupRow(
            &x[r * s.cols], s.cols, group, with_min, &codes[r * s.cols / 2],
            &scales[r * groups_per_row],
            with_min ? &mins[r * groups_per_row] : nullptr);
      }
      QuantizedWeights w;
      w.format = format;
      w.rows = s.rows;
      w.cols = s.cols;
      w.group_size = group;
      w.codes = codes.data();
      w.scales = scales.data();
      w.mins = with_min ? mins.data() : nullptr;
      EXPECT_EQ(w.EffectiveGroupSize(), group);
      std::vector<float> y(s.cols);
      for (size_t r = 0; r < s.rows; ++r) {
        ref::DequantizeRow(w, r, y.data());
        const float* xr = &x[r * s.cols];
        std::vector<GroupCheck> groups;
        for (size_t g = 0; g < groups_per_row; ++g) {
          GroupCheck c = ComputeGroup(scheme, xr + g * group, group);
          const size_t i = r * groups_per_row + g;
          EXPECT_EQ(scales[i], F16FromF32(c.d))
              << "row " << r << " group " << g;
          c.stored_d = F32FromF16(scales[i]);
          if (with_min) {
            EXPECT_EQ(mins[i], F16FromF32(c.min));
            c.stored_min = F32FromF16(mins[i]);
          }
          groups.push_back(c);
        }
        const uint8_t* row_codes = &codes[r * s.cols / 2];
        auto code = [&](size_t j) -> int {
          return (row_codes[j / 2] >> ((j & 1) * 4)) & 15;
        };
        auto group_of = [&](size_t j) -> const GroupCheck& {
          return groups[j / group];
        };
        const std::string what =
            std::string(FormatInfo(format).name) + "/g" +
            std::to_string(group) + " seed " + std::to_string(seed) + " " +
            std::to_string(s.rows) + "x" + std::to_string(s.cols) + " row " +
            std::to_string(r);
        CheckBound(what.c_str(), xr, y.data(), s.cols, code, group_of, &stats);
      }
    }
  }
  printf("  %s/g%zu: %zu elements within bound, worst |x - y| / bound = %.6f\n",
         FormatInfo(format).name, group, stats.checked, stats.worst_ratio);
  EXPECT_GT(stats.worst_ratio, 0.9);
}

TEST(QuantRoundTripTest, Int4SymWithinBound) {
  for (size_t group : {32, 64, 128}) CheckInt4Bound(false, group);
}

TEST(QuantRoundTripTest, Int4AsymWithinBound) {
  for (size_t group : {32, 64, 128}) CheckInt4Bound(true, group);
}

TEST(QuantRoundTripTest, Int8PerChannelWithinBound) {
  BoundStats stats;
  for (uint32_t seed : kSeeds) {
    for (const Shape& s : ShapesFor(kQuantBlock)) {
      const std::vector<float> x = MakeRows(s.rows, s.cols, seed);
      std::vector<int8_t> codes(x.size());
      std::vector<float> scales(s.rows);
      for (size_t r = 0; r < s.rows; ++r) {
        ref::QuantizeInt8Row(&x[r * s.cols], s.cols, &codes[r * s.cols],
                             &scales[r]);
      }
      QuantizedWeights w;
      w.format = WeightFormat::kInt8PerChannel;
      w.rows = s.rows;
      w.cols = s.cols;
      w.codes = codes.data();
      w.scales = scales.data();
      EXPECT_EQ(w.EffectiveGroupSize(), s.cols);
      std::vector<float> y(s.cols);
      for (size_t r = 0; r < s.rows; ++r) {
        ref::DequantizeRow(w, r, y.data());
        GroupCheck g =
            ComputeGroup(Scheme::kSymmetric8, &x[r * s.cols], s.cols);
        EXPECT_EQ(BitsFromF32(scales[r]), BitsFromF32(g.d));
        g.stored_d = scales[r];
        g.f32_scale = true;
        const int8_t* row_codes = &codes[r * s.cols];
        const std::string what =
            "INT8_PER_CHANNEL seed " + std::to_string(seed) + " " +
            std::to_string(s.rows) + "x" + std::to_string(s.cols) + " row " +
            std::to_string(r);
        CheckBound(
            what.c_str(), &x[r * s.cols], y.data(), s.cols,
            [&](size_t j) -> int { return row_codes[j]; },
            [&](size_t) -> const GroupCheck& { return g; }, &stats);
      }
    }
  }
  printf("  INT8_PER_CHANNEL: %zu elements within bound, worst ratio %.6f\n",
         stats.checked, stats.worst_ratio);
  EXPECT_GT(stats.worst_ratio, 0.9);
}

// The clipped end of Q4_0: with +a before -a in a block, d = a / -8 and -a
// maps to t = 8, stored as 7: exactly one step off, the bound's worst case.
TEST(QuantRoundTripTest, Q4_0ClipsOppositeExtremeByOneStep) {
  float x[kQuantBlock] = {};
  x[3] = 8.0f;
  x[20] = -8.0f;
  BlockQ4_0 b;
  ref::QuantizeQ4_0(x, kQuantBlock, &b);
  float y[kQuantBlock];
  ref::DequantizeQ4_0(&b, kQuantBlock, y);
  EXPECT_EQ(F32FromF16(b.d), -1.0f);
  EXPECT_EQ(y[3], 8.0f);
  EXPECT_EQ(y[20], -7.0f);
}

// --- Packed panel layouts (qkern/quant/packed_weights.h) ---------------------

// Source matrix with random codes and parameters in any format.
struct RandomSource {
  QuantizedWeights view;
  std::vector<uint8_t> codes, scales, mins;
};

RandomSource MakeRandomSource(WeightFormat format, size_t rows, size_t cols,
                              size_t group, uint32_t seed) {
  std::mt19937 rng(seed);
  const WeightFormatInfo& info = FormatInfo(format);
  RandomSource s;
  s.view.format = format;
  s.view.rows = rows;
  s.view.cols = cols;
  s.view.group_size = group;
  auto random_f16 = [&] {
    return F16FromF32(std::ldexp(static_cast<float>(rng() % 2000) - 1000.0f, -14));
  };
  if (info.is_gguf_block) {
    s.codes.resize(rows * cols / kQuantBlock * info.block_bytes);
    for (auto& b : s.codes) b = static_cast<uint8_t>(rng());
    for (size_t b = 0; b < rows * cols / kQuantBlock; ++b) {
      uint8_t* block = s.codes.data() + b * info.block_bytes;
      const f16_t d = random_f16(), m = random_f16();
      memcpy(block, &d, 2);
      if (info.has_min) memcpy(block + 2, &m, 2);
    }
  } else {
    s.codes.resize(rows * cols * info.bits / 8);
    for (auto& b : s.codes) b = static_cast<uint8_t>(rng());
    if (info.per_channel) {
      s.scales.resize(rows * sizeof(float));
      for (size_t r = 0; r < rows; ++r) {
        const float v = 0.001f * static_cast<float>(r + 1);
        memcpy(s.scales.data() + r * 4, &v, 4);
      }
    } else {
      const size_t groups = rows * (cols / group);
      s.scales.resize(groups * 2);
      s.mins.resize(groups * 2);
      for (size_t g = 0; g < groups; ++g) {
        const f16_t d = random_f16(), m = random_f16();
        memcpy(s.scales.data() + 2 * g, &d, 2);
        memcpy(s.mins.data() + 2 * g, &m, 2);
      }
    }
  }
  s.view.codes = s.codes.data();
  s.view.scales = s.scales.empty() ? nullptr : s.scales.data();
  s.view.mins = s.mins.empty() ? nullptr : s.mins.data();
  return s;
}

// The unified code u (value = d * u + m) of element (r, k), from each
// format's own definition.
uint32_t SourceCode(const RandomSource& s, size_t r, size_t k) {
  const QuantizedWeights& w = s.view;
  const size_t blk = (r * w.cols + k) / kQuantBlock, j = k % kQuantBlock;
  switch (w.format) {
    case WeightFormat::kQ4_0:
    case WeightFormat::kQ4_1: {
      const uint8_t* qs = w.format == WeightFormat::kQ4_0
                              ? static_cast<const BlockQ4_0*>(w.codes)[blk].qs
                              : static_cast<const BlockQ4_1*>(w.codes)[blk].qs;
      return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
    }
    case WeightFormat::kQ8_0:
      return static_cast<uint32_t>(static_cast<const BlockQ8_0*>(w.codes)[blk].qs[j] + 128);
    case WeightFormat::kInt4Sym:
    case WeightFormat::kInt4Asym: {
      const size_t i = r * w.cols + k;
      return (s.codes[i / 2] >> (4 * (i % 2))) & 15;
    }
    case WeightFormat::kInt8PerChannel:
      return static_cast<uint32_t>(
          static_cast<int8_t>(s.codes[r * w.cols + k]) + 128);
  }
  return 0;
}

// d and m (f16 bits) of the group holding (r, k); m = 0 without a min.
void SourceParams(const RandomSource& s, size_t r, size_t k, f16_t* d,
                  f16_t* m) {
  const QuantizedWeights& w = s.view;
  const WeightFormatInfo& info = FormatInfo(w.format);
  *m = 0;
  if (info.is_gguf_block) {
    const uint8_t* block =
        s.codes.data() + (r * w.cols + k) / kQuantBlock * info.block_bytes;
    memcpy(d, block, 2);
    if (info.has_min) memcpy(m, block + 2, 2);
  } else if (info.per_channel) {
    *d = F16FromF32(1.0f);
  } else {
    const size_t g = r * (w.cols / w.group_size) + k / w.group_size;
    memcpy(d, s.scales.data() + 2 * g, 2);
    if (info.has_min) memcpy(m, s.mins.data() + 2 * g, 2);
  }
}

// Reads code (r, k) back from a packed matrix with the formulas documented in
// packed_weights.h: run width W = 4 (kQuad4) or 8 (kMmla8);
//   8-bit: byte [q*W*R + W*r + j] = u[r][W*q + j]
//   4-bit: low nibble = u[r][W*q + j], high nibble = u[r][16 + W*q + j].
uint32_t PackedCode(const PackedWeights& p, size_t row, size_t k) {
  const size_t W = p.layout == PanelLayout::kMmla8 ? 8 : 4;
  const size_t R = p.panel_rows, r = row % R;
  const size_t g = k / p.group_size;
  const size_t sub = (k % p.group_size) / kQuantBlock;
  const size_t j = k % kQuantBlock;
  const uint8_t* codes =
      p.Panel(row / R) + g * p.GroupBytes() + sub * p.SubBlockBytes();
  if (p.bits == 8) return codes[j / W * W * R + W * r + j % W];
  const size_t jj = j % 16;
  const uint8_t byte = codes[jj / W * W * R + W * r + jj % W];
  return j < 16 ? byte & 15 : byte >> 4;
}

TEST(PackedWeightsTest, LayoutBytesFollowTheDocumentedFormula) {
  for (WeightFormat format : kAllWeightFormats) {
    for (PanelLayout layout : {PanelLayout::kQuad4, PanelLayout::kMmla8}) {
      for (size_t R : {4, 8, 16, 32}) {
        const size_t rows = 2 * R + 3, cols = 256, group = 64;
        SCOPED_TRACE(std::string(FormatInfo(format).name) + " " +
                     PanelLayoutName(layout) + " R=" + std::to_string(R));
        const RandomSource src =
            MakeRandomSource(format, rows, cols, group, static_cast<uint32_t>(R));
        PackedWeights p;
        ASSERT_TRUE(PackWeights(src.view, R, layout, &p).ok());
        EXPECT_EQ(p.layout, layout);
        EXPECT_EQ(p.panel_rows, R);
        ASSERT_EQ(p.num_panels, 3u);
        EXPECT_EQ(p.SubBlockBytes(), R * kQuantBlock * p.bits / 8);
        size_t bad = 0;
        for (size_t r = 0; r < p.num_panels * R; ++r) {
          for (size_t k = 0; k < cols; ++k) {
            const uint32_t want = r < rows ? SourceCode(src, r, k) : 0;
            if (PackedCode(p, r, k) != want && ++bad <= 5) {
              ADD_FAILURE() << "row " << r << " k " << k << ": packed "
                            << PackedCode(p, r, k) << ", source " << want;
            }
          }
          // Group footer: R f16 d, then R f16 m.
          for (size_t g = 0; g < cols / p.group_size; ++g) {
            const uint8_t* footer =
                p.Panel(r / R) + g * p.GroupBytes() +
                p.group_size / kQuantBlock * p.SubBlockBytes();
            f16_t d = 0, m = 0, want_d = 0, want_m = 0;
            memcpy(&d, footer + 2 * (r % R), 2);
            if (p.has_min) memcpy(&m, footer + 2 * (R + r % R), 2);
            if (r < rows) SourceParams(src, r, g * p.group_size, &want_d, &want_m);
            EXPECT_EQ(d, want_d) << "row " << r << " group " << g;
            EXPECT_EQ(m, want_m) << "row " << r << " group " << g;
          }
          if (p.row_scales != nullptr && r < rows) {
            float want;
            memcpy(&want, src.scales.data() + 4 * r, 4);
            EXPECT_EQ(p.row_scales[r], want);
          }
        }
        EXPECT_EQ(bad, 0u);
        // Both layouts take the same bytes: the layout only permutes codes.
        EXPECT_EQ(p.WeightBytes(), 3 * R * cols * p.bits / 8 +
                                       3 * R * (cols / p.group_size) * 2 *
                                           (p.has_min ? 2 : 1));
      }
    }
  }
}

// The two layouts differ exactly where documented: for 8-bit codes, byte 4
// of a sub-block is row 1's first code in kQuad4 and row 0's fifth in kMmla8.
TEST(PackedWeightsTest, MmlaRowsAreEightBytes) {
  std::vector<BlockQ8_0> blocks(2);
  for (size_t r = 0; r < 2; ++r) {
    blocks[r].d = F16FromF32(1.0f);
    for (size_t j = 0; j < kQuantBlock; ++j) {
      blocks[r].qs[j] = static_cast<int8_t>(r * 64 + j - 128);
    }
  }
  QuantizedWeights w;
  w.format = WeightFormat::kQ8_0;
  w.rows = 2;
  w.cols = 32;
  w.codes = blocks.data();
  PackedWeights quad, mmla;
  ASSERT_TRUE(PackWeights(w, 4, PanelLayout::kQuad4, &quad).ok());
  ASSERT_TRUE(PackWeights(w, 4, PanelLayout::kMmla8, &mmla).ok());
  // u = q + 128 = 64 r + j.
  const uint8_t quad_head[12] = {0, 1, 2, 3, 64, 65, 66, 67, 0, 0, 0, 0};
  const uint8_t mmla_head[20] = {0,  1,  2,  3,  4,  5,  6,  7,  64, 65,
                                 66, 67, 68, 69, 70, 71, 0,  0,  0,  0};
  EXPECT_EQ(0, memcmp(quad.Panel(0), quad_head, sizeof(quad_head)));
  EXPECT_EQ(0, memcmp(mmla.Panel(0), mmla_head, sizeof(mmla_head)));
  // Run 1 of kMmla8 (k = 8..15) starts after 8 R bytes.
  EXPECT_EQ(mmla.Panel(0)[8 * 4], 8);
  EXPECT_EQ(mmla.Panel(0)[8 * 4 + 8], 72);
  EXPECT_FALSE(PackWeights(w, 4, static_cast<PanelLayout>(7), &mmla).ok());
}

// --- Format table
// --------------------------------------------------------------

TEST(FormatInfoTest, TableIsConsistentWithTheStructs) {
  const char* const kNames[] = {"Q4_0",     "Q4_1",      "Q8_0",
                                "INT4_SYM", "INT4_ASYM", "INT8_PER_CHANNEL"};
  const size_t kBlockBytes[] = {
      sizeof(BlockQ4_0), sizeof(BlockQ4_1), sizeof(BlockQ8_0), 0, 0, 0};
  ASSERT_EQ(std::size(kAllWeightFormats), std::size(kNames));
  std::vector<std::string> seen;
  for (size_t i = 0; i < std::size(kAllWeightFormats); ++i) {
    const WeightFormat format = kAllWeightFormats[i];
    SCOPED_TRACE(kNames[i]);
    EXPECT_EQ(static_cast<size_t>(format), i);  // the table is indexed by it
    EXPECT_TRUE(IsKnownFormat(format));
    const WeightFormatInfo& info = FormatInfo(format);
    EXPECT_STREQ(info.name, kNames[i]);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), info.name), 0);
    seen.push_back(info.name);
    EXPECT_TRUE(info.bits == 4 || info.bits == 8);
    EXPECT_EQ(info.block_bytes, kBlockBytes[i]);
    if (info.is_gguf_block) {
      // f16 scale, f16 min if any, then 32 codes of `bits` bits.
      const size_t params = sizeof(f16_t) * (info.has_min ? 2 : 1);
      EXPECT_EQ(info.block_bytes, params + kQuantBlock * info.bits / 8);
      EXPECT_FALSE(info.per_channel);
    }
    if (info.per_channel) {
      EXPECT_FALSE(info.has_min);
      EXPECT_EQ(info.bits, 8u);
    }
    QuantizedWeights w;
    w.format = format;
    w.cols = 4096;
    w.group_size = 128;
    const size_t expected_group = info.is_gguf_block ? kQuantBlock
                                  : info.per_channel ? 4096
                                                     : 128;
    EXPECT_EQ(w.EffectiveGroupSize(), expected_group);
  }
  EXPECT_FALSE(IsKnownFormat(static_cast<WeightFormat>(std::size(kNames))));
  EXPECT_FALSE(IsKnownFormat(static_cast<WeightFormat>(0xFFFFFFFFu)));
}

}  // namespace
}  // namespace qkern
