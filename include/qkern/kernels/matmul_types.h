// Plain types shared by the matmul's public API and its per-target code.
#ifndef QKERN_KERNELS_MATMUL_TYPES_H_
#define QKERN_KERNELS_MATMUL_TYPES_H_

#include <stddef.h>
#include <stdint.h>

#include "qkern/kernels/dot_path.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/threading/parallel.h"

namespace qkern {

// Everything one MatMul call needs, validated by the public entry point.
struct MatMulCall {
  const PackedWeights* weights;
  const float* x;   // m x K, row stride ldx
  size_t m;
  size_t ldx;
  float* y;         // m x N, row stride ldy
  size_t ldy;
  const float* bias;  // N or null
  void* workspace;    // MatMulWorkspaceBytes(m, K) bytes
  const ParallelRunner* runner;
};

// Prefill (m >= 16) may run 16-row tiles (AMX): the codes then get pad rows
// up to a multiple of 16, which the kernel zeroes and never stores.
inline size_t MatMulCodeRows(size_t m) { return m >= 16 ? (m + 15) / 16 * 16 : m; }

inline size_t MatMulCodesBytes(size_t m, size_t k) {
  // Rounded up so the f32 arrays that follow are aligned.
  return (MatMulCodeRows(m) * k + 63) / 64 * 64;
}

// Scratch for one call: int8 activation codes, per-block scales and sums.
inline size_t MatMulWorkspaceBytes(size_t m, size_t k) {
  return MatMulCodesBytes(m, k) + 2 * m * (k / kQuantBlock) * sizeof(float);
}

}  // namespace qkern

#endif  // QKERN_KERNELS_MATMUL_TYPES_H_
