// Shared helpers for qkern tests: target parameterisation and test data.
#ifndef QKERN_TESTS_TEST_UTIL_H_
#define QKERN_TESTS_TEST_UTIL_H_

#include <stdint.h>
#include <stdlib.h>

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "qkern/target.h"

namespace qkern {
namespace test {

// Every Highway target compiled in and supported here becomes one gtest
// parameter, named after the target, so a log shows what ran where.
class PerTarget : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    ForceTarget(GetParam());
    // Dispatch really runs the target under test.
    ASSERT_EQ(ActiveTargetName(), hwy::TargetName(GetParam()));
  }
  void TearDown() override { ForceTarget(0); }
};

inline std::string TargetParamName(const ::testing::TestParamInfo<int64_t>& info) {
  return hwy::TargetName(info.param);
}

// The targets to test: all available ones, minus those named in the
// comma-separated QKERN_TEST_SKIP_TARGETS (the qemu SVE profiles skip NEON
// and SCALAR, which the Cortex-A53/A76 profiles already cover).
inline std::vector<int64_t> TargetsUnderTest() {
  const char* skip = getenv("QKERN_TEST_SKIP_TARGETS");
  std::vector<int64_t> targets;
  for (int64_t t : AvailableTargets()) {
    const std::string name = hwy::TargetName(t);
    const std::string list = skip != nullptr ? "," + std::string(skip) + "," : "";
    if (list.find("," + name + ",") == std::string::npos) targets.push_back(t);
  }
  return targets;
}

#define QKERN_INSTANTIATE_PER_TARGET(suite)                                  \
  INSTANTIATE_TEST_SUITE_P(AllTargets, suite,                                \
                           ::testing::ValuesIn(::qkern::test::TargetsUnderTest()), \
                           ::qkern::test::TargetParamName)

// True under qemu (set by the aarch64 ctest registration): tests shrink
// their largest shapes and draw counts there, and say how in place.
inline bool UnderEmulation() { return getenv("QKERN_UNDER_EMULATION") != nullptr; }

// Gaussian values with occasional large outliers, like real activations.
inline std::vector<float> RandomValues(size_t n, uint32_t seed,
                                       float outlier_rate = 0.01f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = normal(rng);
    if (uniform(rng) < outlier_rate) x *= 30.0f;
  }
  return v;
}

}  // namespace test
}  // namespace qkern

#endif  // QKERN_TESTS_TEST_UTIL_H_
