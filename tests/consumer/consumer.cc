// Smallest useful qkern program: pack a Q8_0 matrix, run a GEMV on a thread
// pool, check one output against the scalar reference.
#include <math.h>
#include <stdio.h>

#include <vector>

#include <qkern/qkern.h>

int main() {
  const size_t n = 40, k = 128;
  std::vector<float> w(n * k), x(k);
  for (size_t i = 0; i < w.size(); ++i) w[i] = sinf(0.37f * i);
  for (size_t i = 0; i < k; ++i) x[i] = cosf(0.11f * i);
  std::vector<qkern::BlockQ8_0> blocks(n * k / qkern::kQuantBlock);
  qkern::ref::QuantizeQ8_0(w.data(), w.size(), blocks.data());
  qkern::QuantizedWeights view;
  view.format = qkern::WeightFormat::kQ8_0;
  view.rows = n;
  view.cols = k;
  view.codes = blocks.data();
  qkern::PackedWeights packed;
  qkern::Status s = qkern::PackWeightsForCurrentTarget(view, &packed);
  if (!s.ok()) { fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
  qkern::ThreadPool pool(2);
  const qkern::ParallelRunner runner = pool.Runner();
  qkern::MatMulWorkspace ws;
  std::vector<float> y(n);
  s = qkern::MatMul(packed, x.data(), 1, k, y.data(), n, nullptr, &ws, &runner);
  if (!s.ok()) { fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
  std::vector<float> row(k);
  qkern::ref::DequantizeRow(view, 7, row.data());
  // Activations are rounded to int8 per block of 32 (step amax/127), so each
  // x moves by at most half a step: |err| <= sum_j |w_j| * amax_b / 254,
  // plus f32 accumulation (covered by the 1e-4 slack).
  double expect = 0, bound = 1e-4;
  for (size_t b = 0; b < k / 32; ++b) {
    float amax = 0;
    for (size_t i = b * 32; i < b * 32 + 32; ++i) amax = fmaxf(amax, fabsf(x[i]));
    for (size_t i = b * 32; i < b * 32 + 32; ++i) {
      expect += row[i] * x[i];
      bound += fabs(row[i]) * amax / 254.0;
    }
  }
  if (fabs(y[7] - expect) > bound) {
    fprintf(stderr, "consumer: y[7] = %f, expected %f +- %f\n", y[7], expect, bound);
    return 1;
  }
  printf("consumer OK on %s (%s): y[7] = %.4f\n",
         qkern::ActiveTargetName().c_str(), qkern::ActiveDotPath().c_str(), y[7]);
  return 0;
}
