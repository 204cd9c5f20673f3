// Scalar references for the ops in qkern/kernels/ops.h (RMSNorm,
// activations, softmax, elementwise, embedding rows), in double precision
// from the same f32 inputs. Loops a reader can check by eye; used by tests
// and nothing else.
#ifndef QKERN_KERNELS_OPS_REF_H_
#define QKERN_KERNELS_OPS_REF_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <limits>

#include "qkern/base/f16.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/quantize_ref.h"

namespace qkern {
namespace ref {

// y = x / sqrt(mean(x^2) + eps) * weight; a zero row with eps = 0 gives 0.
inline void RmsNorm(const float* x, const float* weight, double eps, size_t n,
                    double* y) {
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const double mean = sum / static_cast<double>(n) + eps;
  const double scale = mean > 0.0 ? 1.0 / sqrt(mean) : 0.0;
  for (size_t i = 0; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

inline double Sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

inline double Silu(double x) { return x * Sigmoid(x); }

// The argument of the sigmoid in the tanh GELU: 0.5 (1 + tanh(w)) =
// sigmoid(2w), w = sqrt(2/pi) (x + 0.044715 x^3).
inline double GeluTanhArgument(double x) {
  const double pi = 3.141592653589793238462643;
  return 2.0 * sqrt(2.0 / pi) * (x + 0.044715 * x * x * x);
}

// 0.5 x (1 + tanh(w)) as x * sigmoid(2w) (the same function: 1 + tanh(w) =
// 2 / (1 + exp(-2w))), since 1 + tanh(w) cancels to 0 in double already for
// w < -19, i.e. x < -7.4.
inline double GeluTanh(double x) { return x * Sigmoid(GeluTanhArgument(x)); }

// x * Phi(x), written with erfc so that negative x keeps relative accuracy.
inline double GeluErf(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }

// Softmax of s * x, in double; -inf entries get 0, a row without a finite
// entry all zeros.
inline void Softmax(const float* x, size_t n, double s, double* p) {
  double max = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) max = std::max(max, static_cast<double>(x[i]));
  if (max == -std::numeric_limits<double>::infinity()) {
    for (size_t i = 0; i < n; ++i) p[i] = 0.0;
    return;
  }
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    p[i] = exp(s * (x[i] - max));
    sum += p[i];
  }
  for (size_t i = 0; i < n; ++i) p[i] /= sum;
}

// Row `row` of a GGUF-block table (cols a multiple of 32) to f32.
inline void DequantizeQ4_0Row(const void* table, size_t cols, size_t row,
                              float* out) {
  const BlockQ4_0* blocks = static_cast<const BlockQ4_0*>(table);
  DequantizeQ4_0(blocks + row * (cols / kQuantBlock), cols, out);
}
inline void DequantizeQ4_1Row(const void* table, size_t cols, size_t row,
                              float* out) {
  const BlockQ4_1* blocks = static_cast<const BlockQ4_1*>(table);
  DequantizeQ4_1(blocks + row * (cols / kQuantBlock), cols, out);
}
inline void DequantizeQ8_0Row(const void* table, size_t cols, size_t row,
                              float* out) {
  const BlockQ8_0* blocks = static_cast<const BlockQ8_0*>(table);
  DequantizeQ8_0(blocks + row * (cols / kQuantBlock), cols, out);
}

// Exact value (double) of element j of a Q4_1 row: d * q + m, no rounding.
inline double Q4_1ExactValue(const void* table, size_t cols, size_t row,
                             size_t j) {
  const BlockQ4_1& b = static_cast<const BlockQ4_1*>(
      table)[row * (cols / kQuantBlock) + j / kQuantBlock];
  const size_t k = j % kQuantBlock;
  const int q = k < kQuantBlock / 2 ? (b.qs[k] & 15) : (b.qs[k - 16] >> 4);
  return static_cast<double>(F32FromF16(b.d)) * q + F32FromF16(b.m);
}

}  // namespace ref
}  // namespace qkern

#endif  // QKERN_KERNELS_OPS_REF_H_
