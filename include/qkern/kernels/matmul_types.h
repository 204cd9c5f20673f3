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

// Rows of activations one AMX tile covers.
constexpr size_t kAmxTileRows = 16;
// Bytes of one AMX A tile: 16 rows of one 32-block.
constexpr size_t kAmxTileCodes = kAmxTileRows * kQuantBlock;

// Prefill (m >= 16) may run 16-row tiles (AMX): the codes then get pad rows
// up to a multiple of 16, which the kernel zeroes and never stores.
inline size_t MatMulCodeRows(size_t m) {
  return m >= kAmxTileRows ? (m + kAmxTileRows - 1) / kAmxTileRows * kAmxTileRows
                           : m;
}

// Where block `blk` of row `r` starts when codes are laid out as AMX A tiles:
// per 16 rows, tile by tile along K (the same M*K bytes as rows).
inline int8_t* AmxTileCodes(int8_t* codes, size_t k, size_t r, size_t blk) {
  return codes + (r / kAmxTileRows) * kAmxTileRows * k + blk * kAmxTileCodes +
         (r % kAmxTileRows) * kQuantBlock;
}
inline const int8_t* AmxTileCodes(const int8_t* codes, size_t k, size_t r,
                                  size_t blk) {
  return AmxTileCodes(const_cast<int8_t*>(codes), k, r, blk);
}

inline size_t MatMulCodesBytes(size_t m, size_t k) {
  // Rounded up so the f32 arrays that follow are aligned.
  return (MatMulCodeRows(m) * k + 63) / 64 * 64;
}

// The same for a per-block f32 array (scales, scaled sums): 16 rows' values
// of a block side by side, so one tile's row scales are one vector.
inline float* AmxTileScales(float* v, size_t blocks, size_t r, size_t blk) {
  return v + (r / kAmxTileRows) * kAmxTileRows * blocks + blk * kAmxTileRows +
         r % kAmxTileRows;
}
inline const float* AmxTileScales(const float* v, size_t blocks, size_t r,
                                  size_t blk) {
  return AmxTileScales(const_cast<float*>(v), blocks, r, blk);
}

// Scratch for one call: int8 activation codes, per-block scales and sums
// (with the codes' pad rows).
inline size_t MatMulWorkspaceBytes(size_t m, size_t k) {
  return MatMulCodesBytes(m, k) +
         2 * MatMulCodeRows(m) * (k / kQuantBlock) * sizeof(float);
}

}  // namespace qkern

#endif  // QKERN_KERNELS_MATMUL_TYPES_H_
