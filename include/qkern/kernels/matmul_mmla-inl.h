// Per-target quantized matmul on the 8-byte-row panel layout
// (PanelLayout::kMmla8, see qkern/quant/packed_weights.h) with the Arm i8mm
// matrix multiply: USMMLA on NEON, svusmmla on SVE (MmlaNeon / MmlaSve in
// int8_dot-inl.h). Chosen at pack time on CPUs with i8mm; MatMulPacked
// (matmul-inl.h) hands kMmla8 weights here.
//
// One USMMLA multiplies, per 128 bits, 2 weight rows x 8 codes by 2
// activation rows x 8 codes into a 2x2 int32 tile: twice the multiply-adds
// of USDOT, and each weight vector load feeds two activation rows at once.
// Activation rows are therefore consumed in pairs: the quantized codes of
// rows 2i and 2i+1 are interleaved 8 bytes at a time in the workspace (see
// MmlaActivations), so one 16-byte replicating load (LoadDup128: ld1rq on
// SVE) is the whole activation operand. An odd last row (and M = 1, the
// decode GEMV) stays in row order and its 8 codes are loaded into both rows
// of the operand; the duplicate results are dropped. The GEMV still issues
// one MMLA per 16 weight bytes, like USDOT, and streams weights with the
// same prefetch as matmul-inl.h.
//
// After each 32-value sub-block, even / odd int32 lanes of the 2x2 tiles
// (ConcatEven / ConcatOdd) give each activation row's dot products in weight
// row order, so the f32 epilogue (d_row * dx_block scaling, zero-point or
// min term, per-channel row scale, bias) is the same arithmetic as
// matmul-inl.h and the int32 block sums are the same exact integers.
//
// Vectors are named variables, not arrays: SVE vectors are sizeless types.

#if defined(QKERN_KERNELS_MATMUL_MMLA_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_MATMUL_MMLA_INL_H_
#undef QKERN_KERNELS_MATMUL_MMLA_INL_H_
#else
#define QKERN_KERNELS_MATMUL_MMLA_INL_H_
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <type_traits>

#include <hwy/highway.h>

#include "qkern/kernels/int8_dot-inl.h"
#include "qkern/kernels/matmul_tiling-inl.h"
#include "qkern/kernels/matmul_types.h"
#include "qkern/kernels/quantize_activations-inl.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/threading/parallel.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Refuses (loudly) a call that ValidateMatMul should have stopped: kMmla8
// weights on a target or CPU without MMLA.
HWY_INLINE void MmlaFillNaN(const MatMulCall& call) {
  for (size_t i = 0; i < call.m; ++i) {
    for (size_t j = 0; j < call.weights->rows; ++j) {
      call.y[i * call.ldy + j] = NAN;
    }
  }
}

#if HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE || \
    HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 || \
    HWY_TARGET == HWY_SVE2_128

// Tiles, tasks, prefetching and the epilogue: matmul_tiling-inl.h.

// The activation operand after dynamic quantization, codes in row pairs:
// for rows 2i, 2i+1 (both < M) and block b, the 64 bytes at 2i*K + 64b are
// 4 runs c of 16 bytes: row 2i's codes k = 32b + 8c .. +7, then row 2i+1's.
// An odd last row M-1 keeps row order at (M-1)*K. Scales and scaled sums are
// row-major as in matmul-inl.h.
struct MmlaActivations {
  const int8_t* codes;
  const float* scale;       // rows x K/32
  const float* scaled_sum;  // rows x K/32
  size_t k;
};

// Quantizes X into the paired layout, bit-identical per block to
// QuantizeActivationsRow (each 32-block is quantized on its own).
HWY_INLINE MmlaActivations QuantizeActivationsPaired(const MatMulCall& call) {
  const size_t k = call.weights->cols;
  const size_t blocks = k / kQuantBlock;
  uint8_t* ws = static_cast<uint8_t*>(call.workspace);
  int8_t* codes = reinterpret_cast<int8_t*>(ws);
  float* scale = reinterpret_cast<float*>(ws + MatMulCodesBytes(call.m, k));
  float* scaled_sum = scale + call.m * blocks;
  const size_t pairs = (call.m + 1) / 2;
  constexpr size_t kPairsPerTask = 8;
  ParallelFor(call.runner, (pairs + kPairsPerTask - 1) / kPairsPerTask,
              [&](size_t task, size_t) {
    HWY_ALIGN int8_t tmp[2][kQuantBlock];
    const size_t end = std::min(pairs, task * kPairsPerTask + kPairsPerTask);
    for (size_t p = task * kPairsPerTask; p < end; ++p) {
      const size_t r0 = 2 * p;
      if (r0 + 1 == call.m) {
        QuantizeActivationsRow(call.x + r0 * call.ldx, k, codes + r0 * k,
                               scale + r0 * blocks, scaled_sum + r0 * blocks);
        continue;
      }
      int8_t* out = codes + r0 * k;
      for (size_t b = 0; b < blocks; ++b) {
        for (size_t i = 0; i < 2; ++i) {
          const size_t row = r0 + i;
          QuantizeActivationsRow(call.x + row * call.ldx + b * kQuantBlock,
                                 kQuantBlock, tmp[i], scale + row * blocks + b,
                                 scaled_sum + row * blocks + b);
        }
        for (size_t c = 0; c < 4; ++c) {
          memcpy(out + b * 64 + c * 16, tmp[0] + c * 8, 8);
          memcpy(out + b * 64 + c * 16 + 8, tmp[1] + c * 8, 8);
        }
      }
    }
  });
  MmlaActivations a;
  a.codes = codes;
  a.scale = scale;
  a.scaled_sum = scaled_sum;
  a.k = k;
  return a;
}

// The activation operand of one MMLA: run c (8 codes) of block `blk` for a
// row pair, replicated into every 128-bit segment; or of a single row, whose
// 8 codes then fill both rows of the operand.
template <bool kPair>
HWY_INLINE VI8 MmlaOperand(const int8_t* HWY_RESTRICT rows, size_t blk,
                           size_t c) {
  const DI8 di8;
  if constexpr (kPair) {
    return hn::LoadDup128(di8, rows + blk * 64 + c * 16);
  } else {
    const hn::Repartition<int64_t, DI8> di64;
    int64_t bits;
    memcpy(&bits, rows + blk * kQuantBlock + c * 8, sizeof(bits));
    return hn::BitCast(di8, hn::Set(di64, bits));
  }
}

#define QKERN_MMLA_FOR_ROWS(X) X(0) X(1) X(2) X(3)
#define QKERN_MMLA_FOR_VECS(X) X(0) X(1) X(2) X(3)

// Computes the kMR x R tile for activation rows [m0, m0 + kMR) (m0 even) and
// one panel over groups [g_begin, g_end) into tile[kMR][R] (row-major, stride
// R), adding to what tile holds if `accumulate`. Operand 0 is rows m0, m0+1
// (or m0 alone when kMR == 1), operand 1 rows m0+2, m0+3 (or m0+2 alone when
// kMR == 3). Accumulator c<o><v> is operand o x weight vector v: a vector
// holds L/2 row pairs of 2x2 tiles.
template <class Mmla, uint32_t kBits, size_t kMR>
HWY_NOINLINE void MmlaPanelTile(const PackedWeights& w,
                                const uint8_t* HWY_RESTRICT panel,
                                const MmlaActivations& a, size_t m0,
                                size_t g_begin, size_t g_end, bool accumulate,
                                bool stream_ahead, PrefetchSlice next,
                                float* HWY_RESTRICT tile) {
  static_assert(kMR >= 1 && kMR <= 4, "tile height 1..4");
  constexpr bool kPair0 = kMR >= 2;
  constexpr bool kHas1 = kMR >= 3;
  constexpr bool kPair1 = kMR == 4;
  const DI32 d32;
  const hn::Repartition<float, DI32> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> df16;
  const DU8 du8;
  const size_t L = hn::Lanes(d32);
  const size_t R = 2 * L;
  const size_t V = hn::Lanes(du8);  // bytes of one weight vector
  const size_t k = a.k;
  const auto [blocks_per_row, subs_per_group, sub_bytes, group_bytes, offset,
              has_min] = PanelWalk(w, k);
  const VU8 low_nibbles = hn::Set(du8, 0x0F);

  const int8_t* HWY_RESTRICT x0 = a.codes + m0 * k;
  const int8_t* HWY_RESTRICT x1 = a.codes + (kHas1 ? m0 + 2 : m0) * k;

#define QKERN_DECLARE_Y(m)                     \
  auto y##m##0 = hn::Zero(df);                 \
  auto y##m##1 = hn::Zero(df);                 \
  if (kMR > m && accumulate) {                 \
    y##m##0 = hn::LoadU(df, tile + m * R);     \
    y##m##1 = hn::LoadU(df, tile + m * R + L); \
  }
  QKERN_MMLA_FOR_ROWS(QKERN_DECLARE_Y)
#undef QKERN_DECLARE_Y

  TilePrefetcher prefetcher(stream_ahead, next, (g_end - g_begin) * subs_per_group);
  const uint8_t* HWY_RESTRICT group_ptr = panel + g_begin * group_bytes;
  for (size_t g = g_begin; g < g_end; ++g, group_ptr += group_bytes) {
    const hwy::float16_t* d_ptr = reinterpret_cast<const hwy::float16_t*>(
        group_ptr + subs_per_group * sub_bytes);
    const auto d_lo = hn::PromoteTo(df, hn::LoadU(df16, d_ptr));
    const auto d_hi = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + L));
    for (size_t s = 0; s < subs_per_group; ++s) {
      const size_t blk = g * subs_per_group + s;
      const uint8_t* HWY_RESTRICT q = group_ptr + s * sub_bytes;
      prefetcher.BeforeSubBlock(q, sub_bytes);
#define QKERN_DECLARE_ACC(v) \
  auto c0##v = hn::Zero(d32); \
  auto c1##v = hn::Zero(d32);
      QKERN_MMLA_FOR_VECS(QKERN_DECLARE_ACC)
#undef QKERN_DECLARE_ACC
      if constexpr (kBits == 8) {
        // Run c: k = 8c .. 8c+7 of all R rows, 4 vectors.
        for (size_t c = 0; c < 4; ++c) {
          const uint8_t* HWY_RESTRICT qc = q + c * 8 * R;
          const VI8 xa = MmlaOperand<kPair0>(x0, blk, c);
          const VI8 xb = kHas1 ? MmlaOperand<kPair1>(x1, blk, c) : xa;
#define QKERN_MMLA8(v)                                 \
  {                                                    \
    const VU8 wv = hn::LoadU(du8, qc + v * V);         \
    c0##v = Mmla::Acc(c0##v, wv, xa);                  \
    if constexpr (kHas1) c1##v = Mmla::Acc(c1##v, wv, xb); \
  }
          QKERN_MMLA_FOR_VECS(QKERN_MMLA8)
#undef QKERN_MMLA8
        }
      } else {
        // Run c: low nibbles k = 8c .. 8c+7, high nibbles k = 16 + 8c ...
        for (size_t c = 0; c < 2; ++c) {
          const uint8_t* HWY_RESTRICT qc = q + c * 8 * R;
          const VI8 xa_lo = MmlaOperand<kPair0>(x0, blk, c);
          const VI8 xa_hi = MmlaOperand<kPair0>(x0, blk, c + 2);
          const VI8 xb_lo = kHas1 ? MmlaOperand<kPair1>(x1, blk, c) : xa_lo;
          const VI8 xb_hi = kHas1 ? MmlaOperand<kPair1>(x1, blk, c + 2) : xa_hi;
#define QKERN_MMLA4(v)                                                   \
  {                                                                      \
    const VU8 wv = hn::LoadU(du8, qc + v * V);                           \
    const VU8 lo = hn::And(wv, low_nibbles);                             \
    const VU8 hi = hn::ShiftRight<4>(wv); /* Arm has 8-bit shifts */     \
    c0##v = Mmla::Acc(Mmla::Acc(c0##v, lo, xa_lo), hi, xa_hi);           \
    if constexpr (kHas1) {                                               \
      c1##v = Mmla::Acc(Mmla::Acc(c1##v, lo, xb_lo), hi, xb_hi);         \
    }                                                                    \
  }
          QKERN_MMLA_FOR_VECS(QKERN_MMLA4)
#undef QKERN_MMLA4
        }
      }
      // Even lanes of a 2x2 tile are the operand's first row, odd lanes its
      // second; vectors 0,1 hold weight rows [0, L), vectors 2,3 [L, 2L).
#define QKERN_MMLA_SCALE(m, o, Concat)                                    \
  if constexpr (kMR > m) {                                                \
    const size_t ab = (m0 + m) * blocks_per_row + blk;                    \
    AddSubBlock(has_min, d_lo, d_hi, a.scale[ab], offset * a.scaled_sum[ab], \
                hn::Concat(d32, c##o##1, c##o##0),                        \
                hn::Concat(d32, c##o##3, c##o##2), y##m##0, y##m##1);     \
  }
      QKERN_MMLA_SCALE(0, 0, ConcatEven)
      QKERN_MMLA_SCALE(1, 0, ConcatOdd)
      QKERN_MMLA_SCALE(2, 1, ConcatEven)
      QKERN_MMLA_SCALE(3, 1, ConcatOdd)
#undef QKERN_MMLA_SCALE
    }
    if (has_min) {
      // Zero-point term: m * sum over the group of dx * sum(codes).
      const float* ss_base = a.scaled_sum + g * subs_per_group;
      const auto m_lo = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + R));
      const auto m_hi = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + R + L));
#define QKERN_MIN(m)                                                     \
  if constexpr (kMR > m) {                                               \
    AddGroupMin(m_lo, m_hi, ss_base + (m0 + m) * blocks_per_row,         \
                subs_per_group, y##m##0, y##m##1);                       \
  }
      QKERN_MMLA_FOR_ROWS(QKERN_MIN)
#undef QKERN_MIN
    }
  }
#define QKERN_STORE(m)                         \
  if constexpr (kMR > m) {                     \
    hn::StoreU(y##m##0, df, tile + m * R);     \
    hn::StoreU(y##m##1, df, tile + m * R + L); \
  }
  QKERN_MMLA_FOR_ROWS(QKERN_STORE)
#undef QKERN_STORE
}

#undef QKERN_MMLA_FOR_ROWS
#undef QKERN_MMLA_FOR_VECS

HWY_INLINE void MatMulMmla(const MatMulCall& call) {
  const PackedWeights& w = *call.weights;
  if (!MmlaSupported() || w.layout != PanelLayout::kMmla8 ||
      w.panel_rows != 2 * hn::Lanes(DI32())) {
    return MmlaFillNaN(call);
  }
  const MmlaActivations a = QuantizeActivationsPaired(call);

  ForEachMatMulTask(call, [&](size_t m_begin, size_t m_end, size_t p_begin,
                               size_t p_end) {
    // Tiles start at even rows (tasks and tiles hold whole pairs): a tail of
    // 2 rows is a pair, 1 or 3 end in the odd last row of X.
    auto run = [&](auto bits) {
      RunTaskTiles(w, m_begin, m_end, p_begin, p_end, call,
                   [&](auto rows, const uint8_t* panel, size_t m, size_t g0,
                       size_t g1, bool accumulate, bool stream_ahead,
                       PrefetchSlice next, float* acc) {
                     MmlaPanelTile<MmlaOp, decltype(bits)::value,
                                   decltype(rows)::value>(
                         w, panel, a, m, g0, g1, accumulate, stream_ahead, next,
                         acc);
                   });
    };
    if (w.bits == 4) {
      run(std::integral_constant<uint32_t, 4>());
    } else {
      run(std::integral_constant<uint32_t, 8>());
    }
  });
}

#else  // no MMLA on this target

HWY_INLINE void MatMulMmla(const MatMulCall& call) { MmlaFillNaN(call); }

#endif

// The panel layout this target's matmul reads on the running CPU.
HWY_INLINE PanelLayout PanelLayoutHere() {
  return UseMmla() ? PanelLayout::kMmla8 : PanelLayout::kQuad4;
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
