// qkern built in static-dispatch mode (one target picked by the compiler
// flags, as in an Android build): the same API, the same results.
#include <vector>

#include <gtest/gtest.h>

#include "qkern/kernels/matmul_ref.h"
#include "qkern/qkern.h"
#include "test_util.h"

#if !defined(QKERN_STATIC_DISPATCH)
#error "this test must be compiled with QKERN_STATIC_DISPATCH"
#endif

namespace qkern {
namespace {

TEST(StaticDispatchTest, MatMulMatchesExactReference) {
  printf("static target %s (dot path %s)\n", hwy::TargetName(HWY_STATIC_TARGET),
         ActiveDotPath().c_str());
  const size_t m = 3, n = 21, k = 256;
  const std::vector<float> wv = test::RandomValues(n * k, 5);
  std::vector<BlockQ8_0> blocks(n * k / kQuantBlock);
  ref::QuantizeQ8_0(wv.data(), wv.size(), blocks.data());
  QuantizedWeights view;
  view.format = WeightFormat::kQ8_0;
  view.rows = n;
  view.cols = k;
  view.codes = blocks.data();
  PackedWeights packed;
  ASSERT_TRUE(PackWeightsForCurrentTarget(view, &packed).ok());
  const std::vector<float> x = test::RandomValues(m * k, 6);
  std::vector<float> y(m * n);
  MatMulWorkspace ws;
  ASSERT_TRUE(MatMul(packed, x.data(), m, k, y.data(), n, nullptr, &ws).ok());
  std::vector<int8_t> codes(k);
  std::vector<float> scale(k / kQuantBlock), scaled_sum(k / kQuantBlock);
  for (size_t i = 0; i < m; ++i) {
    ref::QuantizeActivationsRow(x.data() + i * k, k, codes.data(), scale.data(),
                                scaled_sum.data());
    for (size_t j = 0; j < n; ++j) {
      const ref::ExactDot e = ref::QuantizedDotExact(view, j, codes.data(), scale.data());
      // f32 rounding bound, as derived in matmul_test.cc.
      const double bound = (2.0 * (k / kQuantBlock) + 8.0) * ldexp(1.0, -24) * e.magnitude;
      EXPECT_NEAR(y[i * n + j], e.value, bound) << i << "," << j;
    }
  }
}

}  // namespace
}  // namespace qkern
