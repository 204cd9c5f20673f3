// Dispatch, target forcing, and the MatMul / packing API's errors on bad
// input.
#include <stdint.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "qkern/qkern.h"
#include "status_matchers.h"
#include "test_util.h"

namespace qkern {
namespace {

TEST(DispatchTest, ActiveTargetIsAvailable) {
  const std::vector<int64_t> targets = AvailableTargets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(ActiveTargetName(), hwy::TargetName(targets.front()));
  EXPECT_FALSE(ActiveDotPath().empty());
  printf("active target %s, dot path %s, panel rows %zu, layout %s\n",
         ActiveTargetName().c_str(), ActiveDotPath().c_str(),
         PanelRowsForCurrentTarget(),
         PanelLayoutName(PanelLayoutForCurrentTarget()));
}

class PanelRowsTest : public test::PerTarget {};

// Two vectors of 32-bit lanes per panel (8 rows on the scalar fallback).
TEST_P(PanelRowsTest, MatchesVectorWidth) {
  const size_t rows = PanelRowsForCurrentTarget();
  EXPECT_EQ(rows % 4, 0u);
  const std::string name = ActiveTargetName();
  size_t expected = 0;
  if (name == "AVX3" || name == "AVX3_DL") expected = 32;
  if (name == "AVX2" || name == "SVE_256") expected = 16;
  if (name == "SSE4" || name == "SSSE3" || name == "NEON" || name == "SCALAR" ||
      name == "EMU128" || name == "SVE2_128") {
    expected = 8;
  }
  if (expected != 0) {
    EXPECT_EQ(rows, expected);
  }
  if (name == "AVX3_DL") {
    // "-amx" where the CPU and OS allow AMX tiles for prefill.
    EXPECT_TRUE(ActiveDotPath() == "avx512-vnni" ||
                ActiveDotPath() == "avx512-vnni-amx")
        << ActiveDotPath();
    SetDotPathMask(kDotPathAll & ~uint32_t{kDotPathX86Amx});
    EXPECT_EQ(ActiveDotPath(), "avx512-vnni");
    SetDotPathMask(kDotPathAll);
  }
  if (name == "AVX2") {
    EXPECT_EQ(ActiveDotPath(), "avx2-maddubs");
  }
  // The 8-byte-row layout is read only by the Arm i8mm (MMLA) paths.
  const bool mmla = ActiveDotPath().find("mmla") != std::string::npos;
  EXPECT_EQ(PanelLayoutForCurrentTarget(),
            mmla ? PanelLayout::kMmla8 : PanelLayout::kQuad4);
#if !HWY_ARCH_ARM_A64
  EXPECT_EQ(PanelLayoutForCurrentTarget(), PanelLayout::kQuad4);
#endif
}
QKERN_INSTANTIATE_PER_TARGET(PanelRowsTest);

// A small valid Q4_0 matrix for the error tests.
struct SmallQ4_0 {
  std::vector<BlockQ4_0> blocks;
  QuantizedWeights view;
  SmallQ4_0(size_t rows, size_t cols) : blocks(rows * cols / kQuantBlock) {
    const std::vector<float> v = test::RandomValues(rows * cols, 1);
    ref::QuantizeQ4_0(v.data(), v.size(), blocks.data());
    view.format = WeightFormat::kQ4_0;
    view.rows = rows;
    view.cols = cols;
    view.codes = blocks.data();
  }
};

using test::ExpectError;

TEST(PackErrorsTest, RejectsMalformedWeights) {
  SmallQ4_0 w(4, 64);
  PackedWeights p;
  QuantizedWeights bad = w.view;
  bad.cols = 48;
  ExpectError(PackWeightsForCurrentTarget(bad, &p), StatusCode::kInvalidArgument,
              "not a multiple of the block size");
  bad = w.view;
  bad.rows = 0;
  ExpectError(PackWeightsForCurrentTarget(bad, &p), StatusCode::kInvalidArgument,
              "empty");
  bad = w.view;
  bad.codes = nullptr;
  ExpectError(PackWeightsForCurrentTarget(bad, &p), StatusCode::kInvalidArgument,
              "codes is null");
  bad = w.view;
  bad.rows = size_t{1} << 40;
  bad.cols = size_t{1} << 30;
  ExpectError(PackWeightsForCurrentTarget(bad, &p), StatusCode::kOutOfRange,
              "too large");
  bad = w.view;
  bad.format = static_cast<WeightFormat>(99);
  ExpectError(PackWeightsForCurrentTarget(bad, &p), StatusCode::kUnsupported,
              "unknown weight format");
  ExpectError(PackWeights(w.view, 6, &p), StatusCode::kInvalidArgument,
              "panel_rows");

  // Groupwise formats need scales (and mins), and a group that divides K.
  std::vector<uint8_t> codes(4 * 64 / 2);
  std::vector<f16_t> scales(4 * 2);
  QuantizedWeights g;
  g.format = WeightFormat::kInt4Asym;
  g.rows = 4;
  g.cols = 64;
  g.group_size = 32;
  g.codes = codes.data();
  g.scales = scales.data();
  ExpectError(PackWeightsForCurrentTarget(g, &p), StatusCode::kInvalidArgument,
              "mins is null");
  g.format = WeightFormat::kInt4Sym;
  g.scales = nullptr;
  ExpectError(PackWeightsForCurrentTarget(g, &p), StatusCode::kInvalidArgument,
              "scales is null");
  g.scales = scales.data();
  g.group_size = 48;
  ExpectError(PackWeightsForCurrentTarget(g, &p), StatusCode::kInvalidArgument,
              "group size 48");
  g.group_size = 128;
  ExpectError(PackWeightsForCurrentTarget(g, &p), StatusCode::kInvalidArgument,
              "divides K");
}

TEST(MatMulErrorsTest, RejectsBadCalls) {
  SmallQ4_0 w(5, 64);
  PackedWeights p;
  ASSERT_TRUE(PackWeightsForCurrentTarget(w.view, &p).ok());
  std::vector<float> x(3 * 64, 1.0f), y(3 * 5);
  MatMulWorkspace ws;
  EXPECT_TRUE(MatMul(p, x.data(), 3, 64, y.data(), 5, nullptr, &ws).ok());
  // M = 0 is a no-op, even with null pointers.
  EXPECT_TRUE(MatMul(p, nullptr, 0, 64, nullptr, 5, nullptr, &ws).ok());

  ExpectError(MatMul(p, nullptr, 3, 64, y.data(), 5, nullptr, &ws),
              StatusCode::kInvalidArgument, "X is null");
  ExpectError(MatMul(p, x.data(), 3, 64, nullptr, 5, nullptr, &ws),
              StatusCode::kInvalidArgument, "Y is null");
  ExpectError(MatMul(p, x.data(), 3, 32, y.data(), 5, nullptr, &ws),
              StatusCode::kInvalidArgument, "ldx = 32 is smaller than K = 64");
  ExpectError(MatMul(p, x.data(), 3, 64, y.data(), 4, nullptr, &ws),
              StatusCode::kInvalidArgument, "ldy = 4 is smaller than N = 5");
  ExpectError(MatMul(p, x.data(), 3, 64, y.data(), 5, nullptr,
                     static_cast<void*>(nullptr), 0),
              StatusCode::kInvalidArgument, "workspace");
  std::vector<uint8_t> small(MatMulWorkspaceBytes(3, 64) - 1);
  ExpectError(MatMul(p, x.data(), 3, 64, y.data(), 5, nullptr, small.data(),
                     small.size()),
              StatusCode::kInvalidArgument, "need");
  ExpectError(MatMul(p, x.data(), size_t{1} << 62, 64, y.data(), 5, nullptr,
                     small.data(), small.size()),
              StatusCode::kOutOfRange, "overflow");
  PackedWeights empty;
  ExpectError(MatMul(empty, x.data(), 3, 64, y.data(), 5, nullptr, &ws),
              StatusCode::kInvalidArgument, "not packed");
}

// Weights packed for one target are refused (not misread) on a target whose
// panels are a different height.
TEST(MatMulErrorsTest, RejectsWeightsPackedForAnotherTarget) {
  SmallQ4_0 w(5, 64);
  std::vector<float> x(64, 1.0f), y(5);
  MatMulWorkspace ws;
  const std::vector<int64_t> targets = AvailableTargets();
  for (int64_t packed_for : targets) {
    ForceTarget(packed_for);
    PackedWeights p;
    ASSERT_TRUE(PackWeightsForCurrentTarget(w.view, &p).ok());
    for (int64_t run_on : targets) {
      ForceTarget(run_on);
      const Status s = MatMul(p, x.data(), 1, 64, y.data(), 5, nullptr, &ws);
      if (PanelRowsForCurrentTarget() == p.panel_rows &&
          PanelLayoutForCurrentTarget() == p.layout) {
        EXPECT_TRUE(s.ok()) << s.message();
      } else {
        ExpectError(s, StatusCode::kInvalidArgument, "PackWeightsForCurrentTarget");
      }
    }
  }
  ForceTarget(0);
}

// Weights in the other panel layout (4-byte quads vs 8-byte MMLA rows) have
// the right panel height but would be misread: refused, naming the layouts.
TEST(MatMulErrorsTest, RejectsWeightsPackedInAnotherLayout) {
  SmallQ4_0 w(5, 64);
  std::vector<float> x(64, 1.0f), y(5);
  MatMulWorkspace ws;
  for (int64_t target : AvailableTargets()) {
    ForceTarget(target);
    SCOPED_TRACE(ActiveTargetName());
    const PanelLayout here = PanelLayoutForCurrentTarget();
    const PanelLayout other = here == PanelLayout::kQuad4 ? PanelLayout::kMmla8
                                                          : PanelLayout::kQuad4;
    PackedWeights p;
    ASSERT_TRUE(PackWeights(w.view, PanelRowsForCurrentTarget(), other, &p).ok());
    const Status s = MatMul(p, x.data(), 1, 64, y.data(), 5, nullptr, &ws);
    ExpectError(s, StatusCode::kInvalidArgument, "PackWeightsForCurrentTarget");
    ExpectError(s, StatusCode::kInvalidArgument,
                std::string("packed in the ") + PanelLayoutName(other) +
                    " panel layout");
  }
  ForceTarget(0);
}

// On an Arm CPU with i8mm, the dot path mask chosen at pack time decides the
// layout; weights packed for MMLA are refused once MMLA is masked off.
TEST(MatMulErrorsTest, LayoutFollowsTheDotPathMask) {
  SmallQ4_0 w(5, 64);
  std::vector<float> x(64, 1.0f), y(5);
  MatMulWorkspace ws;
  for (int64_t target : AvailableTargets()) {
    ForceTarget(target);
    SCOPED_TRACE(ActiveTargetName());
    if (PanelLayoutForCurrentTarget() != PanelLayout::kMmla8) continue;
    PackedWeights mmla;
    EXPECT_TRUE(PackWeightsForCurrentTarget(w.view, &mmla).ok());
    EXPECT_EQ(mmla.layout, PanelLayout::kMmla8);
    SetDotPathMask(kDotPathAll & ~uint32_t{kDotPathArmMmla});
    EXPECT_EQ(PanelLayoutForCurrentTarget(), PanelLayout::kQuad4);
    EXPECT_EQ(ActiveDotPath().find("mmla"), std::string::npos);
    ExpectError(MatMul(mmla, x.data(), 1, 64, y.data(), 5, nullptr, &ws),
                StatusCode::kInvalidArgument, "mmla8 panel layout");
    PackedWeights quad;
    EXPECT_TRUE(PackWeightsForCurrentTarget(w.view, &quad).ok());
    EXPECT_EQ(quad.layout, PanelLayout::kQuad4);
    EXPECT_TRUE(MatMul(quad, x.data(), 1, 64, y.data(), 5, nullptr, &ws).ok());
    SetDotPathMask(kDotPathAll);
  }
  ForceTarget(0);
}

}  // namespace
}  // namespace qkern
