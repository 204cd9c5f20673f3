// MatMul on every compiled SIMD target against the scalar references.
#include "qkern/kernels/matmul.h"

#include <math.h>

#include <algorithm>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "qkern/kernels/matmul_ref.h"
#include "qkern/quant/quantize_ref.h"
#include "qkern/threading/thread_pool.h"
#include "test_util.h"

namespace qkern {
namespace {

// A quantized weight matrix in any format, owning its storage.
struct TestWeights {
  QuantizedWeights view;
  std::vector<uint8_t> codes;
  std::vector<uint8_t> scales;
  std::vector<uint8_t> mins;
};

TestWeights MakeWeights(WeightFormat format, size_t rows, size_t cols,
                        size_t group, uint32_t seed) {
  const std::vector<float> values = test::RandomValues(rows * cols, seed, 0.002f);
  TestWeights t;
  t.view.format = format;
  t.view.rows = rows;
  t.view.cols = cols;
  t.view.group_size = group;
  const size_t blocks = rows * cols / kQuantBlock;
  switch (format) {
    case WeightFormat::kQ4_0:
      t.codes.resize(blocks * sizeof(BlockQ4_0));
      ref::QuantizeQ4_0(values.data(), rows * cols,
                        reinterpret_cast<BlockQ4_0*>(t.codes.data()));
      break;
    case WeightFormat::kQ4_1:
      t.codes.resize(blocks * sizeof(BlockQ4_1));
      ref::QuantizeQ4_1(values.data(), rows * cols,
                        reinterpret_cast<BlockQ4_1*>(t.codes.data()));
      break;
    case WeightFormat::kQ8_0:
      t.codes.resize(blocks * sizeof(BlockQ8_0));
      ref::QuantizeQ8_0(values.data(), rows * cols,
                        reinterpret_cast<BlockQ8_0*>(t.codes.data()));
      break;
    case WeightFormat::kInt4Sym:
    case WeightFormat::kInt4Asym: {
      const size_t groups = cols / group;
      t.codes.resize(rows * cols / 2);
      t.scales.resize(rows * groups * sizeof(f16_t));
      t.mins.resize(rows * groups * sizeof(f16_t));
      for (size_t r = 0; r < rows; ++r) {
        ref::QuantizeInt4GroupRow(
            values.data() + r * cols, cols, group,
            format == WeightFormat::kInt4Asym, t.codes.data() + r * cols / 2,
            reinterpret_cast<f16_t*>(t.scales.data()) + r * groups,
            reinterpret_cast<f16_t*>(t.mins.data()) + r * groups);
      }
      break;
    }
    case WeightFormat::kInt8PerChannel:
      t.codes.resize(rows * cols);
      t.scales.resize(rows * sizeof(float));
      for (size_t r = 0; r < rows; ++r) {
        ref::QuantizeInt8Row(values.data() + r * cols, cols,
                             reinterpret_cast<int8_t*>(t.codes.data()) + r * cols,
                             reinterpret_cast<float*>(t.scales.data()) + r);
      }
      break;
  }
  t.view.codes = t.codes.data();
  t.view.scales = t.scales.empty() ? nullptr : t.scales.data();
  t.view.mins = t.mins.empty() ? nullptr : t.mins.data();
  return t;
}

struct Shape {
  size_t m, n, k;
};

// Shapes: every tile height and its tails, N = 1 and odd N (partial panels),
// K from one block to 16K, and prefill sizes larger than a task's row block.
std::vector<Shape> TestShapes() {
  std::vector<Shape> shapes;
  for (size_t m : {1, 2, 3, 4, 5, 7, 8, 16, 17, 64, 127}) shapes.push_back({m, 37, 96});
  for (size_t n : {1, 2, 7, 31, 33, 65, 129}) {
    shapes.push_back({1, n, 64});
    shapes.push_back({5, n, 128});
  }
  for (size_t k : {32, 256, 2048, 16384}) {
    shapes.push_back({1, 17, k});
    shapes.push_back({3, 9, k});
  }
  shapes.push_back({127, 67, 512});
  shapes.push_back({66, 130, 1024});
  // Prefill (16-row tiles, K in chunks of 16 blocks on AMX): K of one block,
  // a last chunk of one block, and a long K.
  shapes.push_back({20, 33, 32});
  shapes.push_back({33, 40, 544});
  shapes.push_back({17, 9, 16384});
  return shapes;
}

// Largest supported group size dividing K, cycling through 32/64/128.
size_t GroupFor(size_t k, size_t variant) {
  const size_t candidates[3] = {128, 64, 32};
  for (size_t i = 0; i < 3; ++i) {
    const size_t g = candidates[(variant + i) % 3];
    if (k % g == 0) return g;
  }
  return 32;
}

// One parameter per (target, int8 dot sub-path): on an Arm CPU with i8mm the
// NEON target runs its USMMLA, USDOT, SDOT and plain paths and the SVE
// targets svusmmla and svdot, each on the full test set, by masking the
// better paths off (SetDotPathMask) before packing. The name says both, e.g.
// NEON_neon_i8mm_usmmla or SVE2_sve_sdot. On x86 with AMX, AVX3_DL runs
// its AMX prefill tiles and, masked, the VNNI ones.
struct TargetAndPath {
  int64_t target;
  uint32_t mask;
  std::string path;  // ActiveDotPath() under `mask`
};

// gtest prints parameters (--gtest_list_tests, failures) with this.
void PrintTo(const TargetAndPath& p, std::ostream* os) {
  *os << hwy::TargetName(p.target) << " " << p.path;
}

std::string ParamName(const ::testing::TestParamInfo<TargetAndPath>& info) {
  std::string name =
      std::string(hwy::TargetName(info.param.target)) + "_" + info.param.path;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

std::vector<TargetAndPath> TargetsAndPaths() {
  // Better first: each mask drops one more optional sub-path.
  const uint32_t masks[] = {
      kDotPathAll, kDotPathAll & ~uint32_t{kDotPathX86Amx},
      kDotPathAll & ~uint32_t{kDotPathArmMmla},
      kDotPathAll & ~uint32_t{kDotPathArmMmla | kDotPathArmI8mm},
      kDotPathAll &
          ~uint32_t{kDotPathArmMmla | kDotPathArmI8mm | kDotPathArmDotprod}};
  std::vector<TargetAndPath> params;
  for (int64_t target : test::TargetsUnderTest()) {
    ForceTarget(target);
    std::vector<std::string> seen;
    for (uint32_t mask : masks) {
      SetDotPathMask(mask);
      const std::string path = ActiveDotPath();
      if (std::find(seen.begin(), seen.end(), path) != seen.end()) continue;
      seen.push_back(path);
      params.push_back({target, mask, path});
    }
  }
  SetDotPathMask(kDotPathAll);
  ForceTarget(0);
  return params;
}

class MatMulTest : public ::testing::TestWithParam<TargetAndPath> {
 protected:
  void SetUp() override {
    ForceTarget(GetParam().target);
    SetDotPathMask(GetParam().mask);
    ASSERT_EQ(ActiveTargetName(), hwy::TargetName(GetParam().target));
  }
  void TearDown() override {
    SetDotPathMask(kDotPathAll);
    ForceTarget(0);
  }
};

// The two references of one output (see CheckCase).
struct ReferenceOutput {
  double exact;       // (1), bias included
  double fp_bound;    // its f32 rounding bound
  double float_y;     // (2), bias included
  double act_bound;   // activation rounding bound of (2), fp_bound excluded
};

// The references of one case, row-major M x N. They depend only on the case
// parameters (weights, X and bias come from the seed), not on the target, and
// are most of this test's time under qemu (every double operation is a
// soft-float call there), so each case's are computed once per process and
// reused by every target and sub-path.
const std::vector<ReferenceOutput>& CaseReference(
    WeightFormat format, const Shape& s, size_t group, uint32_t seed,
    bool with_bias, size_t pad, const TestWeights& tw, const float* x,
    size_t ldx, const std::vector<float>& bias) {
  using Key = std::tuple<int, size_t, size_t, size_t, size_t, uint32_t, bool,
                         size_t>;
  static std::map<Key, std::vector<ReferenceOutput>>* cases =
      new std::map<Key, std::vector<ReferenceOutput>>();
  const Key key{static_cast<int>(format), s.m, s.n, s.k, group, seed,
                with_bias, pad};
  auto found = cases->find(key);
  if (found != cases->end()) return found->second;

  std::vector<ReferenceOutput>& out = (*cases)[key];
  out.resize(s.m * s.n);
  std::vector<int8_t> codes(s.k);
  std::vector<float> scale(s.k / kQuantBlock), scaled_sum(s.k / kQuantBlock);
  std::vector<double> y_float(s.m * s.n);
  ref::MatMulFloat(tw.view, x, s.m, ldx, y_float.data());
  std::vector<float> wrow(s.k);
  const double blocks = static_cast<double>(s.k / kQuantBlock);
  for (size_t i = 0; i < s.m; ++i) {
    ref::QuantizeActivationsRow(x + i * ldx, s.k, codes.data(), scale.data(),
                                scaled_sum.data());
    for (size_t n = 0; n < s.n; ++n) {
      ref::ExactDot exact =
          ref::QuantizedDotExact(tw.view, n, codes.data(), scale.data());
      if (with_bias) {
        exact.value += bias[n];
        exact.magnitude += fabs(bias[n]);
      }
      ReferenceOutput& r = out[i * s.n + n];
      r.exact = exact.value;
      r.fp_bound =
          (2.0 * blocks + 8.0) * ldexp(1.0, -24) * exact.magnitude + 1e-30;
      ref::DequantizeRow(tw.view, n, wrow.data());
      r.act_bound = 0.0;
      for (size_t j = 0; j < s.k; ++j) {
        r.act_bound += fabs(wrow[j]) * (scale[j / kQuantBlock] * 0.5 +
                                        ldexp(fabs(x[i * ldx + j]), -22));
      }
      r.float_y = y_float[i * s.n + n] + (with_bias ? bias[n] : 0.0);
    }
  }
  return out;
}

// Runs one case and compares every output with two references:
//  (1) the exact (double) result of the kernel's own decomposition on the
//      same int8 activation codes. The kernel rounds only in f32: each block
//      term passes through at most (blocks + blocks-per-group + 3) roundings
//      (product d*dx, one FMA per later block, the zero-point sum, row scale,
//      bias), so |err| <= (2 * blocks + 8) * 2^-24 * sum|terms|.
//  (2) the float product of dequantized weights and unquantized X. Activation
//      rounding moves each x by at most dx/2 (plus 2 ulp for the f32
//      reciprocal), so |err| <= sum_j |w_j| (dx_b / 2 + 2^-22 |x_j|) + (1).
void CheckCase(WeightFormat format, const Shape& s, size_t group, uint32_t seed,
               const ParallelRunner* runner, bool with_bias, size_t pad) {
  SCOPED_TRACE(std::string(FormatInfo(format).name) + " M=" + std::to_string(s.m) +
               " N=" + std::to_string(s.n) + " K=" + std::to_string(s.k) +
               " G=" + std::to_string(group) + " seed=" + std::to_string(seed) +
               " pad=" + std::to_string(pad));
  TestWeights tw = MakeWeights(format, s.n, s.k, group, seed);
  PackedWeights packed;
  ASSERT_TRUE(PackWeightsForCurrentTarget(tw.view, &packed).ok());

  // Unaligned X and Y (offset by `pad` floats) with strides wider than K / N.
  const size_t ldx = s.k + pad, ldy = s.n + pad;
  std::vector<float> x_store(s.m * ldx + pad + 1);
  float* x = x_store.data() + pad;
  const std::vector<float> values = test::RandomValues(s.m * ldx, seed + 7);
  std::copy(values.begin(), values.end(), x);
  std::vector<float> bias = test::RandomValues(s.n, seed + 11);
  std::vector<float> y_store(s.m * ldy + pad + 1, NAN);
  float* y = y_store.data() + pad;

  MatMulWorkspace ws;
  const Status status =
      MatMul(packed, x, s.m, ldx, y, ldy, with_bias ? bias.data() : nullptr, &ws,
             runner);
  ASSERT_TRUE(status.ok()) << status.message();

  const std::vector<ReferenceOutput>& reference =
      CaseReference(format, s, group, seed, with_bias, pad, tw, x, ldx, bias);
  size_t failures = 0;
  for (size_t i = 0; i < s.m; ++i) {
    for (size_t n = 0; n < s.n; ++n) {
      const ReferenceOutput& r = reference[i * s.n + n];
      const double got = y[i * ldy + n];
      const double err = fabs(got - r.exact);
      const double err_float = fabs(got - r.float_y);
      if ((!(err <= r.fp_bound) || !(err_float <= r.act_bound + r.fp_bound)) &&
          ++failures <= 5) {
        ADD_FAILURE() << "row " << i << " col " << n << ": got " << got
                      << ", exact " << r.exact << " (err " << err
                      << " > bound " << r.fp_bound << "?), float " << r.float_y
                      << " (err " << err_float << " > bound "
                      << r.act_bound + r.fp_bound << "?)";
      }
    }
  }
  // Nothing outside the M x N output (padding between rows) was written.
  for (size_t i = 0; i < s.m; ++i) {
    for (size_t j = s.n; j < ldy && i * ldy + j < s.m * ldy; ++j) {
      if (!isnan(y[i * ldy + j])) {
        ADD_FAILURE() << "wrote outside the output at row " << i << " col " << j;
        return;
      }
    }
  }
  EXPECT_TRUE(isnan(y_store[0]) || pad == 0) << "wrote before the output";
}

TEST_P(MatMulTest, AllFormatsAllShapes) {
  const std::vector<Shape> shapes = TestShapes();
  // Natively every format runs every shape. Under qemu (several SVE profiles,
  // 3-5x slower on some CI hosts) each shape runs 2 of the 6 formats in
  // rotation, so every format still meets every sweep (M, N, K, the large
  // tiles) on every target, with a third of the double-precision references.
  const bool rotate = test::UnderEmulation();
  size_t format_index = 0;
  for (WeightFormat format : kAllWeightFormats) {
    const size_t fi = format_index++;
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (rotate && (fi + i) % 3 != 0) continue;
      const Shape& s = shapes[i];
      const size_t group = GroupFor(s.k, i);
      CheckCase(format, s, group, /*seed=*/static_cast<uint32_t>(1000 + i),
                nullptr, /*with_bias=*/i % 2 == 0, /*pad=*/i % 3);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(MatMulTest, MultiThreadedMatchesReference) {
  ThreadPool pool(3);
  const ParallelRunner runner = pool.Runner();
  for (WeightFormat format : kAllWeightFormats) {
    for (const Shape& s : {Shape{1, 300, 256}, Shape{70, 45, 128}, Shape{9, 1, 64}}) {
      CheckCase(format, s, GroupFor(s.k, 0), 77, &runner, true, 1);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(MatMulTest, SeveralSeeds) {
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    for (WeightFormat format : kAllWeightFormats) {
      CheckCase(format, Shape{3, 21, 192}, GroupFor(192, seed), seed, nullptr,
                seed % 2, seed % 2);
      if (HasFatalFailure()) return;
    }
  }
}

// Zero activations and zero weights give exact zeros (no NaN from 0 * inf
// reciprocals).
TEST_P(MatMulTest, ZeroInputsGiveZero) {
  std::vector<float> zeros(64 * 3, 0.0f);
  BlockQ4_0 blocks[2 * 5];
  std::vector<float> w = test::RandomValues(64 * 5, 3);
  std::fill(w.begin(), w.begin() + 64, 0.0f);  // row 0 all zero
  ref::QuantizeQ4_0(w.data(), w.size(), blocks);
  QuantizedWeights view;
  view.format = WeightFormat::kQ4_0;
  view.rows = 5;
  view.cols = 64;
  view.codes = blocks;
  PackedWeights packed;
  ASSERT_TRUE(PackWeightsForCurrentTarget(view, &packed).ok());
  std::vector<float> y(3 * 5, 1.0f);
  MatMulWorkspace ws;
  ASSERT_TRUE(MatMul(packed, zeros.data(), 3, 64, y.data(), 5, nullptr, &ws).ok());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

// The SIMD activation quantizer is bit-identical to the scalar reference
// (the exact check in CheckCase depends on it), including all-zero blocks and
// values at rounding ties.
TEST_P(MatMulTest, ActivationQuantizerMatchesReference) {
  const size_t k = 32 * 37;
  std::vector<float> x = test::RandomValues(k, 9);
  std::fill(x.begin(), x.begin() + 32, 0.0f);           // zero block
  for (size_t j = 32; j < 64; ++j) x[j] = 0.5f * (j - 48);  // ties of x/d
  std::vector<int8_t> codes(k), ref_codes(k);
  std::vector<float> scale(k / 32), ref_scale(k / 32), sum(k / 32), ref_sum(k / 32);
  detail::DispatchQuantizeActivations(x.data(), k, codes.data(), scale.data(),
                                      sum.data());
  ref::QuantizeActivationsRow(x.data(), k, ref_codes.data(), ref_scale.data(),
                              ref_sum.data());
  EXPECT_EQ(codes, ref_codes);
  EXPECT_EQ(scale, ref_scale);
  EXPECT_EQ(sum, ref_sum);
}

// The parameter's sub-path really runs, and packing picks the layout it
// reads: 8-byte rows for MMLA, 4-byte quads for every dot product.
TEST_P(MatMulTest, PacksTheLayoutOfTheDotPath) {
  const std::string path = ActiveDotPath();
  EXPECT_EQ(path, GetParam().path);
  const bool mmla = path.find("mmla") != std::string::npos;
  EXPECT_EQ(PanelLayoutForCurrentTarget(),
            mmla ? PanelLayout::kMmla8 : PanelLayout::kQuad4);
  std::vector<BlockQ8_0> blocks(3 * 2);
  const std::vector<float> v = test::RandomValues(3 * 64, 2);
  ref::QuantizeQ8_0(v.data(), v.size(), blocks.data());
  QuantizedWeights view;
  view.format = WeightFormat::kQ8_0;
  view.rows = 3;
  view.cols = 64;
  view.codes = blocks.data();
  PackedWeights packed;
  ASSERT_TRUE(PackWeightsForCurrentTarget(view, &packed).ok());
  EXPECT_EQ(packed.layout, PanelLayoutForCurrentTarget());
  EXPECT_EQ(packed.panel_rows, PanelRowsForCurrentTarget());
}

INSTANTIATE_TEST_SUITE_P(AllTargets, MatMulTest,
                         ::testing::ValuesIn(TargetsAndPaths()), ParamName);

}  // namespace
}  // namespace qkern
