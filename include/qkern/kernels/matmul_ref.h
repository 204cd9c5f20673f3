// Scalar references for the quantized matmul, in double precision. Loops a
// reader can check by eye; used by tests and nothing else.
#ifndef QKERN_KERNELS_MATMUL_REF_H_
#define QKERN_KERNELS_MATMUL_REF_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <vector>

#include "qkern/base/f16.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/quant/quantize_ref.h"

namespace qkern {
namespace ref {

// The activation quantizer the kernels use: per block of 32, scale = amax/127,
// codes rounded to nearest even. Bit-identical to the SIMD version.
inline void QuantizeActivationsRow(const float* x, size_t k, int8_t* codes,
                                   float* scale, float* scaled_sum) {
  for (size_t b = 0; b < k / kQuantBlock; ++b) {
    float amax = 0.0f;
    for (size_t j = 0; j < kQuantBlock; ++j) {
      amax = std::max(amax, fabsf(x[b * kQuantBlock + j]));
    }
    const float d = amax / 127.0f;
    const float id = Reciprocal(d);
    int sum = 0;
    for (size_t j = 0; j < kQuantBlock; ++j) {
      const int q = static_cast<int>(nearbyintf(x[b * kQuantBlock + j] * id));
      codes[b * kQuantBlock + j] = static_cast<int8_t>(q);
      sum += q;
    }
    scale[b] = d;
    scaled_sum[b] = d * static_cast<float>(sum);
  }
}

// One output of the quantized-activation matmul, computed exactly (double) in
// the kernels' own decomposition, plus the sum of the magnitudes of the terms
// the kernel adds in f32, from which the f32 rounding bound follows.
struct ExactDot {
  double value = 0.0;
  double magnitude = 0.0;
};

inline ExactDot QuantizedDotExact(const QuantizedWeights& w, size_t row,
                                  const int8_t* codes, const float* scale) {
  const size_t blocks = w.cols / kQuantBlock;
  const bool sym = !FormatInfo(w.format).has_min;
  const double offset = FormatInfo(w.format).bits == 4 ? 8.0 : 128.0;
  double row_scale = 1.0;
  if (FormatInfo(w.format).per_channel) {
    row_scale = static_cast<const float*>(w.scales)[row];
  }
  ExactDot out;
  detail::SubBlockCodes sb;
  for (size_t b = 0; b < blocks; ++b) {
    detail::ReadSubBlock(w, row, b, &sb);
    const double d = F32FromF16(sb.d);
    const double m = sym ? -offset * d : static_cast<double>(F32FromF16(sb.m));
    long long dot = 0, sum = 0;
    for (size_t j = 0; j < kQuantBlock; ++j) {
      dot += static_cast<long long>(sb.u[j]) * codes[b * kQuantBlock + j];
      sum += codes[b * kQuantBlock + j];
    }
    const double dx = scale[b];
    const double scale_term = d * dx * static_cast<double>(dot);
    const double min_term = m * dx * static_cast<double>(sum);
    out.value += scale_term + min_term;
    out.magnitude += fabs(scale_term) + fabs(min_term);
  }
  out.value *= row_scale;
  out.magnitude *= fabs(row_scale);
  return out;
}

// Y = X * W^T in double from dequantized weights and unquantized X.
inline void MatMulFloat(const QuantizedWeights& w, const float* x, size_t m,
                        size_t ldx, double* y) {
  std::vector<float> wrow(w.cols);
  for (size_t n = 0; n < w.rows; ++n) {
    DequantizeRow(w, n, wrow.data());
    for (size_t i = 0; i < m; ++i) {
      double acc = 0.0;
      for (size_t j = 0; j < w.cols; ++j) {
        acc += static_cast<double>(wrow[j]) * x[i * ldx + j];
      }
      y[i * w.rows + n] = acc;
    }
  }
}

}  // namespace ref
}  // namespace qkern

#endif  // QKERN_KERNELS_MATMUL_REF_H_
