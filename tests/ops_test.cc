// RMSNorm, activations, softmax, elementwise ops and embedding rows on every
// compiled SIMD target against the double-precision references in
// qkern/kernels/ops_ref.h. Every tolerance is the error bound stated in the
// kernel's header, restated here next to its check.
#include "qkern/kernels/ops.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "qkern/kernels/ops_ref.h"
#include "qkern/quant/quantize_ref.h"
#include "test_util.h"

namespace qkern {
namespace {

// Unit roundoff of f32 (half an ulp of 1).
constexpr double kU = 1.0 / 16777216.0;
// An ulp of the subnormal range: results that leave the normal range keep an
// absolute, not a relative, error of a few of these.
constexpr double kSubnormalUlp = 1.4012984643248171e-45;  // 2^-149
constexpr float kInf = std::numeric_limits<float>::infinity();

// Odd sizes, every tail length around vector widths, and the model widths
// (SmolLM2 576 / 1536, Llama-3.2-1B 2048 / 8192, SmolLM2 vocab 49152).
constexpr size_t kSizes[] = {1,  2,   3,    7,    31,   32,   33,
                             64, 576, 1536, 2048, 8192, 49152};

// Float storage whose data() sits `offset` floats past a 64-byte boundary,
// so kernels see every misalignment relative to their vectors.
class FloatBuffer {
 public:
  FloatBuffer(size_t n, size_t offset, float fill = NAN)
      : storage_(n + offset + 32, fill) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(storage_.data());
    const size_t skip = ((64 - base % 64) % 64) / sizeof(float);
    data_ = storage_.data() + skip + offset;
    n_ = n;
  }
  float* data() { return data_; }
  float& operator[](size_t i) { return data_[i]; }
  void Assign(const std::vector<float>& v) {
    std::copy(v.begin(), v.begin() + n_, data_);
  }

 private:
  std::vector<float> storage_;
  float* data_;
  size_t n_;
};

// Compares got[i] with want[i] within tol(i) and reports the first failures.
// An exact result beyond the f32 range must come out as the infinity of its
// sign (the f32 product overflows, as it should).
template <class Tol>
void ExpectClose(const std::string& what, size_t n, const float* got,
                 const double* want, const float* input, Tol tol) {
  size_t failures = 0;
  for (size_t i = 0; i < n; ++i) {
    const double bound = tol(i);
    const double err = fabs(static_cast<double>(got[i]) - want[i]);
    const bool overflow = fabs(want[i]) > std::numeric_limits<float>::max() &&
                          isinf(got[i]) && (got[i] > 0) == (want[i] > 0);
    if (!(err <= bound) && !overflow && ++failures <= 5) {
      ADD_FAILURE() << what << " [" << i << "]: input " << input[i] << " got "
                    << got[i] << " want " << want[i] << " err " << err
                    << " > bound " << bound;
    }
  }
}

// Inputs that stress the kernels' ranges: signed zeros, subnormals, the
// Exp cut-offs around +-87 and +-104, large magnitudes and values whose
// squares overflow f32. Placed at the front of random data.
std::vector<float> SpecialValues() {
  return {0.0f,    -0.0f,    1e-40f,  -1e-40f, 1e-30f,  -1e-30f, 0.5f,
          -0.5f,   1.0f,     -1.0f,   3.0f,    -3.0f,   10.0f,   -10.0f,
          20.0f,   -20.0f,   30.0f,   -30.0f,  87.0f,   -87.0f,  89.0f,
          -89.0f,  100.0f,   -100.0f, 104.0f,  -104.0f, 105.0f,  -105.0f,
          1000.0f, -1000.0f, 1e30f,   -1e30f,  3e38f,   -3e38f};
}

std::vector<float> ActivationInputs(size_t n, uint32_t seed) {
  std::vector<float> v = test::RandomValues(n, seed);
  for (float& x : v) x *= 3.0f;
  const std::vector<float> special = SpecialValues();
  for (size_t i = 0; i < std::min(n, special.size()); ++i) v[i] = special[i];
  return v;
}

class OpsTest : public test::PerTarget {};

// ---------------------------------------------------------------------------
// RMSNorm

// The bound of norm-inl.h: the sum of squares in f64 is off by at most
// n 2^-53 relative; the f32 scale, x * scale and * weight round 3 times.
// Below the normal range the last product keeps an absolute error of 2^-150.
double RmsNormBound(double want, size_t n) {
  return (3.0 * kU + (n + 4) * ldexp(1.0, -53)) * fabs(want) + kSubnormalUlp;
}

void CheckRmsNorm(const std::vector<float>& values, size_t n, float eps,
                  size_t offset, const std::string& what) {
  FloatBuffer x(n, offset), w(n, (offset + 1) % 4), y(n, (offset + 2) % 4);
  x.Assign(values);
  const std::vector<float> weights = test::RandomValues(n, 99, 0.0f);
  for (size_t i = 0; i < n; ++i) w[i] = 1.0f + 0.25f * weights[i];
  std::vector<double> want(n);
  ref::RmsNorm(x.data(), w.data(), eps, n, want.data());

  ASSERT_TRUE(RmsNorm(x.data(), w.data(), eps, n, y.data()).ok());
  ExpectClose(what, n, y.data(), want.data(), x.data(),
              [&](size_t i) { return RmsNormBound(want[i], n); });
  EXPECT_TRUE(isnan(y.data()[n])) << what << ": wrote past the end";

  // In place gives the identical result.
  std::vector<float> out_of_place(y.data(), y.data() + n);
  ASSERT_TRUE(RmsNorm(x.data(), w.data(), eps, n, x.data()).ok());
  EXPECT_EQ(0, memcmp(out_of_place.data(), x.data(), n * sizeof(float)))
      << what << ": in place differs";
}

TEST_P(OpsTest, RmsNormAllSizes) {
  for (size_t i = 0; i < std::size(kSizes); ++i) {
    const size_t n = kSizes[i];
    const std::string what = "RmsNorm n=" + std::to_string(n);
    CheckRmsNorm(test::RandomValues(n, 10 + i), n, 1e-5f, i % 4, what);
    // Large magnitudes: x^2 up to 1e76 overflows f32 but not the f64 sum.
    std::vector<float> big = test::RandomValues(n, 20 + i);
    for (float& v : big) v *= 1e30f;
    CheckRmsNorm(big, n, 1e-6f, (i + 1) % 4, what + " x1e30");
    std::vector<float> tiny = test::RandomValues(n, 30 + i);
    for (float& v : tiny) v *= 1e-20f;
    CheckRmsNorm(tiny, n, 0.0f, (i + 3) % 4, what + " x1e-20 eps=0");
    if (HasFatalFailure()) return;
  }
}

TEST_P(OpsTest, RmsNormZerosGiveZeros) {
  for (float eps : {1e-6f, 0.0f}) {
    std::vector<float> x(33, 0.0f), w(33, 2.0f), y(33, NAN);
    ASSERT_TRUE(RmsNorm(x.data(), w.data(), eps, 33, y.data()).ok());
    for (float v : y) EXPECT_EQ(v, 0.0f) << "eps=" << eps;
  }
}

TEST_P(OpsTest, RmsNormRowsWithStrides) {
  const size_t rows = 5, n = 33, x_stride = 40, y_stride = 37;
  const std::vector<float> values = test::RandomValues(rows * x_stride, 5);
  std::vector<float> w(n, 0.5f);
  std::vector<float> y(rows * y_stride, NAN);
  ASSERT_TRUE(RmsNormRows(values.data(), x_stride, w.data(), 1e-5f, rows, n,
                          y.data(), y_stride)
                  .ok());
  std::vector<double> want(n);
  for (size_t r = 0; r < rows; ++r) {
    ref::RmsNorm(values.data() + r * x_stride, w.data(), 1e-5, n, want.data());
    ExpectClose("RmsNormRows row " + std::to_string(r), n,
                y.data() + r * y_stride, want.data(),
                values.data() + r * x_stride,
                [&](size_t i) { return RmsNormBound(want[i], n); });
    for (size_t j = n; j < y_stride && r + 1 < rows; ++j) {
      EXPECT_TRUE(isnan(y[r * y_stride + j])) << "wrote into the row gap";
    }
  }
}

// ---------------------------------------------------------------------------
// Activations. Bounds from activations-inl.h, u = 2^-24; below the normal
// range every step keeps an absolute error of <= 2^-149, times |x| at most,
// hence the (|x| + 1) 2^-148 floor.

double Floor(double x) { return (fabs(x) + 1.0) * 2.0 * kSubnormalUlp; }

// SiLU: x >= 0: 4.5u, x < 0: 7.5u relative (Exp 3u, 1 + e, the division,
// the product with x).
double SiluBound(double x) {
  return (x >= 0 ? 4.5 : 7.5) * kU * fabs(ref::Silu(x)) + Floor(x);
}

// GELU (tanh): 7.5u + 5u |v| (1 - sigmoid(v)) relative: the sigmoid's 7.5u,
// and the f32 rounding of its argument v (<= 5u) moving sigmoid(v).
double GeluTanhBound(double x) {
  const double v = ref::GeluTanhArgument(x);
  const double s = ref::Sigmoid(v);
  return 7.5 * kU * fabs(ref::GeluTanh(x)) +
         5.0 * kU * fabs(x) * s * (1.0 - s) * fabs(v) + Floor(x);
}

// GELU (erf): |x| erfc(z) (18 + 2 z^2) u / 2 + 2u |gelu|, z = |x| / sqrt 2.
double GeluErfBound(double x) {
  const double z2 = x * x / 2.0;
  const double erfc_z = erfc(fabs(x) / sqrt(2.0));
  return fabs(x) * erfc_z * (18.0 + 2.0 * z2) * kU / 2.0 +
         2.0 * kU * fabs(ref::GeluErf(x)) + Floor(x);
}

struct UnaryCase {
  const char* name;
  Status (*run)(const float*, size_t, float*);
  double (*want)(double);
  double (*bound)(double);
};

Status RunSilu(const float* x, size_t n, float* y) { return Silu(x, n, y); }
Status RunGeluTanh(const float* x, size_t n, float* y) {
  return Gelu(x, n, y, GeluApproximation::kTanh);
}
Status RunGeluErf(const float* x, size_t n, float* y) {
  return Gelu(x, n, y, GeluApproximation::kErf);
}

constexpr UnaryCase kUnaryCases[] = {
    {"Silu", RunSilu, ref::Silu, SiluBound},
    {"GeluTanh", RunGeluTanh, ref::GeluTanh, GeluTanhBound},
    {"GeluErf", RunGeluErf, ref::GeluErf, GeluErfBound},
};

TEST_P(OpsTest, ActivationsAllSizes) {
  for (const UnaryCase& c : kUnaryCases) {
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      const size_t n = kSizes[i];
      const std::string what = std::string(c.name) + " n=" + std::to_string(n);
      FloatBuffer x(n, i % 4), y(n, (i + 1) % 4);
      x.Assign(ActivationInputs(n, 40 + i));
      ASSERT_TRUE(c.run(x.data(), n, y.data()).ok());
      std::vector<double> want(n);
      for (size_t j = 0; j < n; ++j) want[j] = c.want(x[j]);
      ExpectClose(what, n, y.data(), want.data(), x.data(),
                  [&](size_t j) { return c.bound(x[j]); });
      EXPECT_TRUE(isnan(y.data()[n])) << what << ": wrote past the end";

      std::vector<float> out_of_place(y.data(), y.data() + n);
      ASSERT_TRUE(c.run(x.data(), n, x.data()).ok());
      EXPECT_EQ(0, memcmp(out_of_place.data(), x.data(), n * sizeof(float)))
          << what << ": in place differs";
    }
  }
}

// A dense sweep of the activations' interesting range, on odd lengths so
// that every value also goes through the tail path on some target.
TEST_P(OpsTest, ActivationsDenseSweep) {
  const size_t n = 40001;
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; ++i) x[i] = -20.0f + 40.0f * i / (n - 1);
  for (const UnaryCase& c : kUnaryCases) {
    ASSERT_TRUE(c.run(x.data(), n, y.data()).ok());
    std::vector<double> want(n);
    for (size_t j = 0; j < n; ++j) want[j] = c.want(x[j]);
    ExpectClose(std::string(c.name) + " sweep", n, y.data(), want.data(),
                x.data(), [&](size_t j) { return c.bound(x[j]); });
  }
}

// The attention softmax's exp (kernels/exp_nonpositive-inl.h), stated there
// within 2u relative on [-87, 0] (1.29u with FMA, 1.66u without, measured over
// every float), exactly 1 at 0 and exactly 0 at -88 and below (masked logits
// must carry no weight). Between -88 and -87 results may be subnormal or 0:
// an absolute 2^-126 on top. Every 2^8-th f32 of [-90, 0] (2^14-th under
// emulation), in an odd count so the row's tail runs too, and special values.
TEST_P(OpsTest, ExpNonPositiveSweep) {
  std::vector<float> x = {0.0f,      -0.0f,   -1e-45f, -1e-30f, -0.34657f,
                          -0.34658f, -87.0f,  -87.68f, -87.7f,  -88.0f,
                          -100.0f,   -128.0f, -129.0f, -1e30f,  -kInf};
  const uint32_t stride = test::UnderEmulation() ? 1u << 14 : 1u << 8;
  for (uint32_t bits = 0x80000001u;; bits += stride) {
    float v;
    memcpy(&v, &bits, sizeof(v));
    if (v < -90.0f) break;
    x.push_back(v);
  }
  if (x.size() % 2 == 0) x.push_back(-2.5f);
  std::vector<float> y(x.size() + 1, NAN);
  detail::DispatchExpNonPositive(x.data(), x.size(), y.data());
  EXPECT_TRUE(isnan(y[x.size()])) << "wrote past the end";
  size_t failures = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = exp(static_cast<double>(x[i]));
    double bound = 2.0 * kU * want;
    if (x[i] < -87.0f) bound += ldexp(1.0, -126);
    if (x[i] <= -88.0f) bound = 0.0;
    if (x[i] == 0.0f) bound = 0.0;
    const double err = fabs(static_cast<double>(y[i]) - want);
    const bool exact_zero_ok = x[i] <= -88.0f && y[i] == 0.0f;
    if (!(err <= bound || exact_zero_ok) && ++failures <= 5) {
      ADD_FAILURE() << "x " << x[i] << " got " << y[i] << " want " << want
                    << " err " << err << " > bound " << bound;
    }
  }
  EXPECT_EQ(failures, 0u);
}

struct GatedCase {
  const char* name;
  Status (*run)(const float*, const float*, size_t, float*);
  double (*act)(double);
  double (*bound)(double);
};

Status RunSwiGlu(const float* g, const float* u, size_t n, float* out) {
  return SwiGlu(g, u, n, out);
}
Status RunGeGluTanh(const float* g, const float* u, size_t n, float* out) {
  return GeGlu(g, u, n, out, GeluApproximation::kTanh);
}
Status RunGeGluErf(const float* g, const float* u, size_t n, float* out) {
  return GeGlu(g, u, n, out, GeluApproximation::kErf);
}

constexpr GatedCase kGatedCases[] = {
    {"SwiGlu", RunSwiGlu, ref::Silu, SiluBound},
    {"GeGluTanh", RunGeGluTanh, ref::GeluTanh, GeluTanhBound},
    {"GeGluErf", RunGeGluErf, ref::GeluErf, GeluErfBound},
};

// out = act(gate) * up: the activation's bound scaled by |up|, plus the
// product's rounding u |out|.
TEST_P(OpsTest, GatedAllSizesAndAliasing) {
  for (const GatedCase& c : kGatedCases) {
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      const size_t n = kSizes[i];
      const std::string what = std::string(c.name) + " n=" + std::to_string(n);
      FloatBuffer gate(n, i % 4), up(n, (i + 1) % 4), out(n, (i + 2) % 4);
      gate.Assign(ActivationInputs(n, 50 + i));
      up.Assign(test::RandomValues(n, 60 + i));
      ASSERT_TRUE(c.run(gate.data(), up.data(), n, out.data()).ok());
      std::vector<double> want(n);
      for (size_t j = 0; j < n; ++j) want[j] = c.act(gate[j]) * up[j];
      ExpectClose(what, n, out.data(), want.data(), gate.data(), [&](size_t j) {
        return c.bound(gate[j]) * fabs(up[j]) + kU * fabs(want[j]) +
               kSubnormalUlp;
      });
      EXPECT_TRUE(isnan(out.data()[n])) << what << ": wrote past the end";

      // out == gate and out == up give the identical result.
      const std::vector<float> expected(out.data(), out.data() + n);
      std::vector<float> g(gate.data(), gate.data() + n);
      std::vector<float> u(up.data(), up.data() + n);
      ASSERT_TRUE(c.run(g.data(), u.data(), n, g.data()).ok());
      EXPECT_EQ(0, memcmp(expected.data(), g.data(), n * sizeof(float)))
          << what << ": out == gate differs";
      g.assign(gate.data(), gate.data() + n);
      ASSERT_TRUE(c.run(g.data(), u.data(), n, u.data()).ok());
      EXPECT_EQ(0, memcmp(expected.data(), u.data(), n * sizeof(float)))
          << what << ": out == up differs";
    }
  }
}

// ---------------------------------------------------------------------------
// Softmax. Bound from softmax-inl.h: p_i within (2 |a_i| + 2 W + 10) u
// relative, a_i = s (x_i - max), W = sum_j p_j |a_j|, plus the Kahan sum's
// n u^2; the product of the (1 + delta) factors adds at most the square of
// the first-order sum. Exps below the normal range keep an absolute error of
// about 2^-149 each, times 1 / sum <= 1.

// Per-element bounds for the softmax of scale * x[0, n), given the exact
// result `want`.
std::vector<double> SoftmaxBounds(const float* x, size_t n, float scale,
                                  const double* want) {
  double max = -kInf;
  for (size_t i = 0; i < n; ++i) max = std::max(max, static_cast<double>(x[i]));
  std::vector<double> a(n);
  double w = 0.0;
  for (size_t i = 0; i < n; ++i) {
    a[i] = x[i] == -kInf ? 0.0 : static_cast<double>(scale) * (x[i] - max);
    w += want[i] * fabs(a[i]);
  }
  std::vector<double> bound(n);
  for (size_t i = 0; i < n; ++i) {
    const double first = (2.0 * fabs(a[i]) + 2.0 * w + 10.0) * kU + n * kU * kU;
    bound[i] = want[i] * (first + first * first) + 2.0 * kSubnormalUlp;
  }
  return bound;
}

void CheckSoftmax(const std::vector<float>& logits, size_t n, float scale,
                  size_t offset, const std::string& what) {
  FloatBuffer x(n, offset);
  x.Assign(logits);
  const std::vector<float> input(x.data(), x.data() + n);
  std::vector<double> want(n);
  ref::Softmax(input.data(), n, scale, want.data());
  const std::vector<double> bound =
      SoftmaxBounds(input.data(), n, scale, want.data());
  ASSERT_TRUE(Softmax(x.data(), n, scale).ok());
  ExpectClose(what, n, x.data(), want.data(), input.data(),
              [&](size_t i) { return bound[i]; });
  // The probabilities sum to 1 within the sum of their bounds.
  double total = 0.0, total_bound = 0.0;
  for (size_t i = 0; i < n; ++i) {
    total += x[i];
    total_bound += bound[i];
  }
  EXPECT_LE(fabs(total - 1.0), total_bound) << what << ": sum " << total;
  EXPECT_TRUE(isnan(x.data()[n])) << what << ": wrote past the end";
}

TEST_P(OpsTest, SoftmaxAllSizes) {
  for (size_t i = 0; i < std::size(kSizes); ++i) {
    const size_t n = kSizes[i];
    const std::string size = " n=" + std::to_string(n);
    std::vector<float> logits = test::RandomValues(n, 70 + i);
    for (float& v : logits) v *= 4.0f;
    for (float scale : {1.0f, 0.5f, 1.0f / 0.7f}) {
      CheckSoftmax(logits, n, scale, i % 4,
                   "Softmax random scale=" + std::to_string(scale) + size);
    }
    // Values of +-1000: exp of the raw logits overflows / underflows f32.
    std::vector<float> large(n);
    for (size_t j = 0; j < n; ++j)
      large[j] = (j % 2 ? 1000.0f : -1000.0f) + j % 7;
    CheckSoftmax(large, n, 1.0f, (i + 1) % 4, "Softmax +-1000" + size);
    // All equal: exactly uniform in exact arithmetic.
    CheckSoftmax(std::vector<float>(n, 3.5f), n, 1.0f, (i + 2) % 4,
                 "Softmax equal" + size);
    // Masked positions (-inf) next to finite ones.
    std::vector<float> masked = test::RandomValues(n, 80 + i);
    for (size_t j = 1; j < n; j += 3) masked[j] = -kInf;
    CheckSoftmax(masked, n, 1.0f, (i + 3) % 4, "Softmax masked" + size);
    if (HasFatalFailure()) return;
  }
}

TEST_P(OpsTest, SoftmaxEdgeRows) {
  float one = -1e30f;
  ASSERT_TRUE(Softmax(&one, 1).ok());
  EXPECT_EQ(one, 1.0f);
  // No finite logit: no distribution, zeros.
  std::vector<float> masked(37, -kInf);
  ASSERT_TRUE(Softmax(masked.data(), masked.size()).ok());
  for (float v : masked) EXPECT_EQ(v, 0.0f);
  // One dominant logit: exactly 1 and exact zeros (exp underflows to 0).
  std::vector<float> spike(100, -500.0f);
  spike[42] = 500.0f;
  ASSERT_TRUE(Softmax(spike.data(), spike.size()).ok());
  for (size_t i = 0; i < spike.size(); ++i) {
    EXPECT_EQ(spike[i], i == 42 ? 1.0f : 0.0f) << i;
  }
}

TEST_P(OpsTest, SoftmaxRowsWithStride) {
  const size_t rows = 4, n = 33, stride = 35;
  std::vector<float> x = test::RandomValues(rows * stride, 9);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = n; j < stride; ++j) x[r * stride + j] = NAN;
  }
  const std::vector<float> input = x;
  ASSERT_TRUE(SoftmaxRows(x.data(), rows, n, stride, 0.8f).ok());
  std::vector<double> want(n);
  for (size_t r = 0; r < rows; ++r) {
    const float* in = input.data() + r * stride;
    ref::Softmax(in, n, 0.8f, want.data());
    const std::vector<double> bound = SoftmaxBounds(in, n, 0.8f, want.data());
    ExpectClose("SoftmaxRows row " + std::to_string(r), n,
                x.data() + r * stride, want.data(), in,
                [&](size_t i) { return bound[i]; });
    for (size_t j = n; j < stride && r + 1 < rows; ++j) {
      EXPECT_TRUE(isnan(x[r * stride + j])) << "wrote into the row gap";
    }
  }
}

// ---------------------------------------------------------------------------
// Elementwise: one f32 rounding per element, so bit-identical to scalar f32
// arithmetic (AddScaledInPlace: fused or not, see elementwise-inl.h).

TEST_P(OpsTest, ElementwiseAllSizes) {
  for (size_t i = 0; i < std::size(kSizes); ++i) {
    const size_t n = kSizes[i];
    const std::string what = " n=" + std::to_string(n);
    const std::vector<float> xs = ActivationInputs(n, 90 + i);
    const std::vector<float> ys = test::RandomValues(n, 95 + i);
    FloatBuffer x(n, i % 4), y(n, (i + 1) % 4), out(n, (i + 2) % 4);
    x.Assign(xs);

    y.Assign(ys);
    ASSERT_TRUE(AddInPlace(y.data(), x.data(), n).ok());
    for (size_t j = 0; j < n; ++j) {
      const float want = ys[j] + xs[j];
      ASSERT_EQ(0, memcmp(&want, &y[j], 4)) << "AddInPlace" << what << " [" << j
                                            << "] " << y[j] << " vs " << want;
    }
    EXPECT_TRUE(isnan(y.data()[n]));
    // y += y.
    y.Assign(ys);
    ASSERT_TRUE(AddInPlace(y.data(), y.data(), n).ok());
    for (size_t j = 0; j < n; ++j) ASSERT_EQ(y[j], 2.0f * ys[j]) << j;

    const float s = -0.3f;
    ASSERT_TRUE(Scale(x.data(), s, n, out.data()).ok());
    for (size_t j = 0; j < n; ++j) {
      const float want = xs[j] * s;
      ASSERT_EQ(0, memcmp(&want, &out[j], 4))
          << "Scale" << what << " [" << j << "] " << out[j] << " vs " << want;
    }
    EXPECT_TRUE(isnan(out.data()[n]));
    ASSERT_TRUE(Scale(x.data(), s, n, x.data()).ok());
    EXPECT_EQ(0, memcmp(out.data(), x.data(), n * sizeof(float)));

    // y += a x: <= u |a x| (the product, unfused) + u |result| (the sum).
    x.Assign(xs);
    y.Assign(ys);
    const float a = 0.37f;
    ASSERT_TRUE(AddScaledInPlace(y.data(), a, x.data(), n).ok());
    std::vector<double> want(n);
    for (size_t j = 0; j < n; ++j)
      want[j] = ys[j] + static_cast<double>(a) * xs[j];
    ExpectClose("AddScaledInPlace" + what, n, y.data(), want.data(), x.data(),
                [&](size_t j) {
                  return kU * fabs(static_cast<double>(a) * xs[j]) * (1 + kU) +
                         kU * fabs(want[j]) + kSubnormalUlp;
                });
  }
}

// ---------------------------------------------------------------------------
// Embedding rows

// A rows x cols table in `format`, built from random values with the
// reference quantizers: `data` starts `misalign` bytes past a 64-byte
// boundary (GGUF blocks have no alignment) and is what the kernels read;
// `aligned` holds the same bytes for the references, whose block structs
// need their natural alignment.
struct Table {
  std::vector<uint8_t> aligned;
  std::vector<uint8_t> storage;
  uint8_t* data;
};

Table MakeTable(EmbeddingFormat format, size_t rows, size_t cols,
                size_t misalign, uint32_t seed) {
  const std::vector<float> values = test::RandomValues(rows * cols, seed);
  const size_t bytes = rows * EmbeddingRowBytes(format, cols);
  Table t;
  t.aligned.resize(bytes + 64);  // new[]: aligned for any block struct
  uint8_t* a = t.aligned.data();
  switch (format) {
    case EmbeddingFormat::kF32:
      memcpy(a, values.data(), bytes);
      break;
    case EmbeddingFormat::kF16:
    case EmbeddingFormat::kBF16:
      for (size_t i = 0; i < rows * cols; ++i) {
        const uint16_t h = format == EmbeddingFormat::kF16
                               ? F16FromF32(values[i])
                               : BF16FromF32(values[i]);
        memcpy(a + 2 * i, &h, 2);
      }
      break;
    case EmbeddingFormat::kQ4_0:
      ref::QuantizeQ4_0(values.data(), rows * cols,
                        reinterpret_cast<BlockQ4_0*>(a));
      break;
    case EmbeddingFormat::kQ4_1:
      ref::QuantizeQ4_1(values.data(), rows * cols,
                        reinterpret_cast<BlockQ4_1*>(a));
      break;
    case EmbeddingFormat::kQ8_0:
      ref::QuantizeQ8_0(values.data(), rows * cols,
                        reinterpret_cast<BlockQ8_0*>(a));
      break;
  }
  t.storage.resize(bytes + 64 + misalign);
  const uintptr_t base = reinterpret_cast<uintptr_t>(t.storage.data());
  t.data = t.storage.data() + (64 - base % 64) % 64 + misalign;
  memcpy(t.data, a, bytes);
  return t;
}

// The reference's row, element by element.
void ReferenceRow(const uint8_t* table, EmbeddingFormat format, size_t cols,
                  size_t row, float* out) {
  const uint8_t* src = table + row * EmbeddingRowBytes(format, cols);
  for (size_t j = 0; j < cols; ++j) {
    uint16_t h;
    switch (format) {
      case EmbeddingFormat::kF32:
        memcpy(out + j, src + 4 * j, 4);
        break;
      case EmbeddingFormat::kF16:
        memcpy(&h, src + 2 * j, 2);
        out[j] = F32FromF16(h);
        break;
      case EmbeddingFormat::kBF16:
        memcpy(&h, src + 2 * j, 2);
        out[j] = F32FromBF16(h);
        break;
      default:
        break;
    }
  }
  if (format == EmbeddingFormat::kQ4_0)
    ref::DequantizeQ4_0Row(table, cols, row, out);
  if (format == EmbeddingFormat::kQ4_1)
    ref::DequantizeQ4_1Row(table, cols, row, out);
  if (format == EmbeddingFormat::kQ8_0)
    ref::DequantizeQ8_0Row(table, cols, row, out);
}

constexpr EmbeddingFormat kEmbeddingFormats[] = {
    EmbeddingFormat::kF32,  EmbeddingFormat::kF16,  EmbeddingFormat::kBF16,
    EmbeddingFormat::kQ4_0, EmbeddingFormat::kQ4_1, EmbeddingFormat::kQ8_0};

bool IsBlockFormat(EmbeddingFormat f) {
  return f == EmbeddingFormat::kQ4_0 || f == EmbeddingFormat::kQ4_1 ||
         f == EmbeddingFormat::kQ8_0;
}

// Q4_0, Q8_0, f16, bf16 and f32 are bit-identical to the reference (one
// rounding, or none). Q4_1's d q + m: fused or not, within u |d q| (1 + u)
// + u |exact| of the exact value.
void CheckEmbeddingRow(const Table& t, EmbeddingFormat format, size_t rows,
                       size_t cols, size_t row, size_t out_offset,
                       const std::string& what) {
  FloatBuffer out(cols, out_offset);
  const Status s = EmbeddingRow(t.data, format, rows, cols, row, out.data());
  ASSERT_TRUE(s.ok()) << what << ": " << s.message();
  EXPECT_TRUE(isnan(out.data()[cols])) << what << ": wrote past the end";
  std::vector<float> want(cols);
  ReferenceRow(t.aligned.data(), format, cols, row, want.data());
  size_t failures = 0;
  for (size_t j = 0; j < cols; ++j) {
    bool ok;
    if (format == EmbeddingFormat::kQ4_1) {
      const double exact = ref::Q4_1ExactValue(t.aligned.data(), cols, row, j);
      const BlockQ4_1* b =
          reinterpret_cast<const BlockQ4_1*>(t.aligned.data()) +
          row * (cols / kQuantBlock) + j / kQuantBlock;
      const double dq = exact - F32FromF16(b->m);
      ok = fabs(out[j] - exact) <= kU * fabs(dq) * (1 + kU) + kU * fabs(exact);
    } else {
      ok = memcmp(&want[j], &out[j], 4) == 0 ||
           (isnan(want[j]) && isnan(out[j]));
    }
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << what << " [" << j << "]: got " << out[j] << " want "
                    << want[j];
    }
  }
}

TEST_P(OpsTest, EmbeddingRowAllFormatsAndSizes) {
  const size_t rows = 3;
  for (EmbeddingFormat format : kEmbeddingFormats) {
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      const size_t cols = kSizes[i];
      if (IsBlockFormat(format) && cols % kQuantBlock != 0) continue;
      // Unaligned blocks; f16/bf16/f32 tables at their element alignment
      // but off any vector boundary.
      const size_t misalign = IsBlockFormat(format)
                                  ? 1 + i % 3
                                  : (format == EmbeddingFormat::kF32 ? 4 : 2);
      const Table t = MakeTable(format, rows, cols, misalign, 100 + i);
      for (size_t row = 0; row < rows; ++row) {
        CheckEmbeddingRow(t, format, rows, cols, row, (i + row) % 4,
                          std::string(EmbeddingFormatName(format)) +
                              " cols=" + std::to_string(cols) +
                              " row=" + std::to_string(row));
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Every f16 bit pattern: zeros, subnormals, normals, Inf and NaN (the
// portable path of embedding-inl.h handles what Highway's emulated
// PromoteTo does not).
TEST_P(OpsTest, EmbeddingEveryF16Pattern) {
  std::vector<uint16_t> table(65536 + 3);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<uint16_t>(i);
  std::vector<float> out(table.size());
  ASSERT_TRUE(EmbeddingRow(table.data(), EmbeddingFormat::kF16, 1, table.size(),
                           0, out.data())
                  .ok());
  for (size_t i = 0; i < table.size(); ++i) {
    const float want = F32FromF16(table[i]);
    if (isnan(want)) {
      ASSERT_TRUE(isnan(out[i])) << std::hex << i;
    } else {
      ASSERT_EQ(0, memcmp(&want, &out[i], 4))
          << std::hex << i << ": " << out[i] << " vs " << want;
    }
  }
  // Every bf16 pattern too (a shift, but through the same walker).
  ASSERT_TRUE(EmbeddingRow(table.data(), EmbeddingFormat::kBF16, 1,
                           table.size(), 0, out.data())
                  .ok());
  for (size_t i = 0; i < table.size(); ++i) {
    const float want = F32FromBF16(table[i]);
    ASSERT_TRUE(memcmp(&want, &out[i], 4) == 0 ||
                (isnan(want) && isnan(out[i])))
        << std::hex << i;
  }
}

TEST_P(OpsTest, EmbeddingRowsGather) {
  const size_t rows = 7, cols = 64, stride = 70;
  const Table t = MakeTable(EmbeddingFormat::kQ8_0, rows, cols, 1, 7);
  const int32_t ids[] = {6, 0, 3, 3};
  std::vector<float> out(4 * stride, NAN);
  ASSERT_TRUE(EmbeddingRows(t.data, EmbeddingFormat::kQ8_0, rows, cols, ids, 4,
                            out.data(), stride)
                  .ok());
  std::vector<float> want(cols);
  for (size_t i = 0; i < 4; ++i) {
    ReferenceRow(t.aligned.data(), EmbeddingFormat::kQ8_0, cols, ids[i],
                 want.data());
    EXPECT_EQ(0, memcmp(want.data(), out.data() + i * stride, cols * 4)) << i;
    if (i < 3) {
      EXPECT_TRUE(isnan(out[i * stride + cols]));
    }
  }
  // WeightFormat spelling of the same table.
  std::vector<float> row(cols);
  ASSERT_TRUE(
      EmbeddingRow(t.data, WeightFormat::kQ8_0, rows, cols, 6, row.data())
          .ok());
  EXPECT_EQ(0, memcmp(row.data(), out.data(), cols * 4));
}

// ---------------------------------------------------------------------------
// Bad input: a Status whose message names the value.

void ExpectError(const Status& s, StatusCode code, const std::string& needle) {
  EXPECT_FALSE(s.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_EQ(static_cast<int>(s.code()), static_cast<int>(code)) << s.message();
  EXPECT_NE(s.message().find(needle), std::string::npos)
      << "'" << s.message() << "' does not mention '" << needle << "'";
}

TEST_P(OpsTest, BadInputIsReported) {
  std::vector<float> x(64, 1.0f), w(64, 1.0f), y(64);
  const StatusCode kInvalid = StatusCode::kInvalidArgument;
  ExpectError(RmsNorm(x.data(), w.data(), -1.0f, 64, y.data()), kInvalid,
              "eps = -1");
  ExpectError(RmsNorm(x.data(), w.data(), NAN, 64, y.data()), kInvalid,
              "eps = nan");
  ExpectError(RmsNorm(x.data(), w.data(), 1e-5f, 0, y.data()), kInvalid,
              "n = 0");
  ExpectError(RmsNorm(nullptr, w.data(), 1e-5f, 64, y.data()), kInvalid,
              "x is null");
  ExpectError(RmsNorm(x.data(), nullptr, 1e-5f, 64, y.data()), kInvalid,
              "weight is null");
  ExpectError(RmsNorm(x.data(), w.data(), 1e-5f, 64, nullptr), kInvalid,
              "y is null");
  ExpectError(RmsNorm(x.data(), w.data(), 1e-5f, 32, x.data() + 1), kInvalid,
              "overlaps");
  ExpectError(RmsNorm(x.data(), w.data(), 1e-5f, 64, w.data()), kInvalid,
              "overlaps weight");
  ExpectError(RmsNormRows(x.data(), 10, w.data(), 1e-5f, 2, 16, y.data(), 16),
              kInvalid, "x_stride = 10");
  ExpectError(RmsNormRows(x.data(), 16, w.data(), 1e-5f, 2, 16, x.data(), 20),
              kInvalid, "x_stride = 16 != y_stride = 20");
  ExpectError(RmsNormRows(x.data(), size_t{1} << 62, w.data(), 1e-5f, 8, 16,
                          y.data(), 16),
              StatusCode::kOutOfRange, "overflow");

  ExpectError(Softmax(x.data(), 0), kInvalid, "n = 0");
  ExpectError(Softmax(x.data(), 8, 0.0f), kInvalid, "scale = 0");
  ExpectError(Softmax(x.data(), 8, -2.0f), kInvalid, "scale = -2");
  ExpectError(Softmax(x.data(), 8, kInf), kInvalid, "scale = inf");
  ExpectError(Softmax(nullptr, 8), kInvalid, "x is null");
  ExpectError(SoftmaxRows(x.data(), 2, 16, 8), kInvalid, "x_stride = 8");

  ExpectError(Silu(nullptr, 8, y.data()), kInvalid, "x is null");
  ExpectError(Silu(x.data(), 8, nullptr), kInvalid, "y is null");
  ExpectError(Silu(x.data(), 8, x.data() + 2), kInvalid, "overlaps");
  EXPECT_TRUE(Silu(nullptr, 0, nullptr).ok());
  ExpectError(Gelu(x.data(), 8, y.data(), static_cast<GeluApproximation>(7)),
              kInvalid, "approximation 7");
  ExpectError(SwiGlu(x.data(), w.data(), 8, w.data() + 1), kInvalid,
              "out overlaps up");
  ExpectError(GeGlu(x.data(), nullptr, 8, y.data(), GeluApproximation::kErf),
              kInvalid, "up is null");
  ExpectError(AddInPlace(x.data() + 1, x.data(), 8), kInvalid, "overlaps");
  ExpectError(AddInPlace(nullptr, x.data(), 8), kInvalid, "y is null");
  ExpectError(Scale(x.data(), 2.0f, 8, nullptr), kInvalid, "y is null");
  ExpectError(AddScaledInPlace(y.data(), 2.0f, nullptr, 8), kInvalid,
              "x is null");

  const Table t = MakeTable(EmbeddingFormat::kQ4_0, 3, 64, 0, 1);
  ExpectError(EmbeddingRow(t.data, EmbeddingFormat::kQ4_0, 3, 64, 3, y.data()),
              StatusCode::kOutOfRange, "row = 3 is out of range for 3 rows");
  ExpectError(EmbeddingRow(t.data, EmbeddingFormat::kQ4_0, 3, 48, 0, y.data()),
              kInvalid, "cols = 48");
  ExpectError(EmbeddingRow(t.data, EmbeddingFormat::kF16, 3, 0, 0, y.data()),
              kInvalid, "cols = 0");
  ExpectError(EmbeddingRow(nullptr, EmbeddingFormat::kQ4_0, 3, 64, 0, y.data()),
              kInvalid, "table is null");
  ExpectError(EmbeddingRow(t.data, EmbeddingFormat::kQ4_0, 3, 64, 0, nullptr),
              kInvalid, "out is null");
  ExpectError(
      EmbeddingRow(t.data, static_cast<EmbeddingFormat>(9), 3, 64, 0, y.data()),
      StatusCode::kUnsupported, "unknown format 9");
  ExpectError(
      EmbeddingRow(t.data + 1, EmbeddingFormat::kF16, 3, 64, 0, y.data()),
      kInvalid, "not 2-byte aligned");
  ExpectError(EmbeddingRow(t.data, WeightFormat::kInt4Sym, 3, 64, 0, y.data()),
              StatusCode::kUnsupported, "INT4_SYM");
  ExpectError(EmbeddingRow(t.data, EmbeddingFormat::kQ4_0, size_t{1} << 62,
                           1 << 20, 0, y.data()),
              StatusCode::kOutOfRange, "overflows");
  const int32_t bad_ids[] = {0, -1};
  ExpectError(EmbeddingRows(t.data, EmbeddingFormat::kQ4_0, 3, 64, bad_ids, 2,
                            y.data(), 64),
              StatusCode::kOutOfRange, "ids[1] = -1");
  const int32_t far_ids[] = {3};
  ExpectError(EmbeddingRows(t.data, EmbeddingFormat::kQ4_0, 3, 64, far_ids, 1,
                            y.data(), 64),
              StatusCode::kOutOfRange, "ids[0] = 3 is out of range for 3 rows");
}

QKERN_INSTANTIATE_PER_TARGET(OpsTest);

}  // namespace
}  // namespace qkern
