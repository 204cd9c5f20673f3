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

#define QKERN_INSTANTIATE_PER_TARGET(suite)                                 \
  INSTANTIATE_TEST_SUITE_P(AllTargets, suite,                               \
                           ::testing::ValuesIn(::qkern::AvailableTargets()), \
                           ::qkern::test::TargetParamName)

// True under qemu (set by the aarch64 ctest registration): tests shrink the
// largest shapes a little there, never the set of cases.
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
