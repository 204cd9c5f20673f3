// Per-target quantized matmul Y[M x N] = X[M x K] * W^T on packed weights
// (see qkern/quant/packed_weights.h for the layout and the unified
// value = d * u + m form).
//
// The micro-tile is kMR activation rows x one panel (R = 2 vectors of 32-bit
// lanes, one lane per weight row). Per 32-value sub-block the int32
// accumulators collect exact integer dot products; they are then scaled by
// d_row * dx_block into f32 accumulators. The zero-point term m * sum(x) is
// added once per group from the precomputed dx * sum(codes). M = 1 is the
// decode GEMV (bandwidth bound: each weight byte is loaded once); M > 1 reuses
// every unpacked weight vector kMR times (compute bound prefill).
//
// Vectors are named variables, not arrays: SVE vectors are sizeless types.

#if defined(QKERN_KERNELS_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_MATMUL_INL_H_
#undef QKERN_KERNELS_MATMUL_INL_H_
#else
#define QKERN_KERNELS_MATMUL_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "qkern/kernels/int8_dot-inl.h"
#include "qkern/kernels/quantize_activations-inl.h"
#include "qkern/kernels/matmul_types.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/threading/parallel.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
// Plain C++ tile (Highway's one-lane vectors cannot hold a 4-byte quad).
HWY_INLINE size_t PanelRows() { return 8; }
#else
// Rows per weight panel on this target: two vectors of 32-bit lanes.
HWY_INLINE size_t PanelRows() { return 2 * hn::Lanes(DI32()); }
#endif

// The activation operand after dynamic quantization.
struct ActivationBlocks {
  const int8_t* codes;       // rows x K
  const float* scale;        // rows x K/32
  const float* scaled_sum;   // rows x K/32
  size_t k;
};

#if HWY_TARGET == HWY_SCALAR

template <class Dot, uint32_t kBits, size_t kMR>
HWY_NOINLINE void PanelTile(const PackedWeights& w, const uint8_t* HWY_RESTRICT panel,
                            const ActivationBlocks& a, size_t m0, size_t g_begin,
                            size_t g_end, bool accumulate,
                            float* HWY_RESTRICT tile) {
  const size_t R = w.panel_rows;
  const size_t k = a.k;
  const size_t blocks_per_row = k / kQuantBlock;
  const size_t subs_per_group = w.group_size / kQuantBlock;
  const float offset = -static_cast<float>(w.sym_offset);
  if (!accumulate) {
    for (size_t i = 0; i < kMR * R; ++i) tile[i] = 0.0f;
  }
  const uint8_t* group_ptr = panel + g_begin * w.GroupBytes();
  for (size_t g = g_begin; g < g_end; ++g, group_ptr += w.GroupBytes()) {
    const uint8_t* scales = group_ptr + subs_per_group * w.SubBlockBytes();
    for (size_t m = 0; m < kMR; ++m) {
      const int8_t* x = a.codes + (m0 + m) * k;
      float sum = 0.0f;
      for (size_t s = 0; s < subs_per_group; ++s) {
        sum += a.scaled_sum[(m0 + m) * blocks_per_row + g * subs_per_group + s];
      }
      for (size_t r = 0; r < R; ++r) {
        f16_t d_bits, m_bits = 0;
        memcpy(&d_bits, scales + 2 * r, 2);
        if (w.has_min) memcpy(&m_bits, scales + 2 * (R + r), 2);
        const float d = F32FromF16(d_bits);
        float y = tile[m * R + r];
        for (size_t s = 0; s < subs_per_group; ++s) {
          const size_t blk = g * subs_per_group + s;
          const uint8_t* q = group_ptr + s * w.SubBlockBytes();
          int32_t acc = 0;
          for (size_t j = 0; j < kQuantBlock; ++j) {
            const size_t quad = j / 4, byte = j % 4;
            int u;
            if (kBits == 8) {
              u = q[quad * 4 * R + 4 * r + byte];
            } else {
              const uint8_t packed = q[(quad % 4) * 4 * R + 4 * r + byte];
              u = quad < 4 ? (packed & 15) : (packed >> 4);
            }
            acc += u * x[blk * kQuantBlock + j];
          }
          y += static_cast<float>(acc) *
               (d * a.scale[(m0 + m) * blocks_per_row + blk]);
        }
        y += w.has_min ? F32FromF16(m_bits) * sum : d * (offset * sum);
        tile[m * R + r] = y;
      }
    }
  }
}

#else  // HWY_TARGET != HWY_SCALAR

// How far ahead of the current sub-block the weight stream is prefetched.
// Decode reads each weight byte once, and the hardware prefetchers alone let
// the GEMV reach ~83% of the read roof on Zen 5; 8 KiB ahead (a few memory
// latencies of bytes at full bandwidth) brings it to ~95%.
#ifndef QKERN_PREFETCH_BYTES
#define QKERN_PREFETCH_BYTES 8192
#endif
constexpr size_t kPrefetchBytes = QKERN_PREFETCH_BYTES;

#define QKERN_FOR_ROWS(X) X(0) X(1) X(2) X(3)

// Computes the kMR x R tile for activation rows [m0, m0 + kMR) and one panel
// over groups [g_begin, g_end) of K into tile[kMR][R] (row-major, stride R),
// adding to what tile holds if `accumulate`.
template <class Dot, uint32_t kBits, size_t kMR>
HWY_NOINLINE void PanelTile(const PackedWeights& w, const uint8_t* HWY_RESTRICT panel,
                            const ActivationBlocks& a, size_t m0, size_t g_begin,
                            size_t g_end, bool accumulate,
                            float* HWY_RESTRICT tile) {
  static_assert(kMR >= 1 && kMR <= 4, "tile height 1..4");
  const DI32 d32;
  const hn::Repartition<float, DI32> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> df16;
  const hn::Repartition<uint16_t, DU8> du16;
  const DU8 du8;
  const size_t L = hn::Lanes(d32);
  const size_t R = 2 * L;
  const size_t k = a.k;
  const size_t blocks_per_row = k / kQuantBlock;
  const size_t subs_per_group = w.group_size / kQuantBlock;
  const size_t sub_bytes = w.SubBlockBytes();
  const size_t group_bytes = w.GroupBytes();
  const float offset = -static_cast<float>(w.sym_offset);
  const VU8 low_nibbles = hn::Set(du8, 0x0F);

  const int8_t* HWY_RESTRICT x0 = a.codes + (m0 + 0) * k;
  const int8_t* HWY_RESTRICT x1 = a.codes + (m0 + (kMR > 1 ? 1 : 0)) * k;
  const int8_t* HWY_RESTRICT x2 = a.codes + (m0 + (kMR > 2 ? 2 : 0)) * k;
  const int8_t* HWY_RESTRICT x3 = a.codes + (m0 + (kMR > 3 ? 3 : 0)) * k;

#define QKERN_DECLARE_Y(m)                                                  \
  auto y##m##0 = hn::Zero(df);                                              \
  auto y##m##1 = hn::Zero(df);                                              \
  if (kMR > m && accumulate) {                                              \
    y##m##0 = hn::LoadU(df, tile + m * R);                                  \
    y##m##1 = hn::LoadU(df, tile + m * R + L);                              \
  }
  QKERN_FOR_ROWS(QKERN_DECLARE_Y)
#undef QKERN_DECLARE_Y

  const uint8_t* HWY_RESTRICT group_ptr = panel + g_begin * group_bytes;
  for (size_t g = g_begin; g < g_end; ++g, group_ptr += group_bytes) {
    const hwy::float16_t* d_ptr = reinterpret_cast<const hwy::float16_t*>(
        group_ptr + subs_per_group * sub_bytes);
    const auto d_lo = hn::PromoteTo(df, hn::LoadU(df16, d_ptr));
    const auto d_hi = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + L));
    for (size_t s = 0; s < subs_per_group; ++s) {
      const size_t blk = g * subs_per_group + s;
      const uint8_t* HWY_RESTRICT q = group_ptr + s * sub_bytes;
      const size_t xo = blk * kQuantBlock;
      if (kPrefetchBytes != 0) {
        for (size_t line = 0; line < sub_bytes; line += 64) {
          hwy::Prefetch(q + kPrefetchBytes + line);
        }
      }
#define QKERN_DECLARE_ACC(m) auto a##m##0 = hn::Zero(d32); auto a##m##1 = hn::Zero(d32);
      QKERN_FOR_ROWS(QKERN_DECLARE_ACC)
#undef QKERN_DECLARE_ACC
      if constexpr (kBits == 4) {
        for (size_t v = 0; v < 4; ++v) {
          const VU8 w0 = hn::LoadU(du8, q + v * 4 * R);
          const VU8 w1 = hn::LoadU(du8, q + v * 4 * R + 4 * L);
          const VU8 lo0 = hn::And(w0, low_nibbles);
          const VU8 lo1 = hn::And(w1, low_nibbles);
          const VU8 hi0 = hn::And(
              hn::BitCast(du8, hn::ShiftRight<4>(hn::BitCast(du16, w0))),
              low_nibbles);
          const VU8 hi1 = hn::And(
              hn::BitCast(du8, hn::ShiftRight<4>(hn::BitCast(du16, w1))),
              low_nibbles);
#define QKERN_DOT4(m)                                          \
  if constexpr (kMR > m) {                                     \
    const VI8 xl = BroadcastQuad(x##m + xo + 4 * v);           \
    const VI8 xh = BroadcastQuad(x##m + xo + 16 + 4 * v);      \
    a##m##0 = Dot::U4(Dot::U4(a##m##0, lo0, xl), hi0, xh);     \
    a##m##1 = Dot::U4(Dot::U4(a##m##1, lo1, xl), hi1, xh);     \
  }
          QKERN_FOR_ROWS(QKERN_DOT4)
#undef QKERN_DOT4
        }
      } else {
        for (size_t v = 0; v < 8; ++v) {
          const VU8 w0 = hn::LoadU(du8, q + v * 4 * R);
          const VU8 w1 = hn::LoadU(du8, q + v * 4 * R + 4 * L);
#define QKERN_DOT8(m)                               \
  if constexpr (kMR > m) {                          \
    const VI8 xq = BroadcastQuad(x##m + xo + 4 * v); \
    a##m##0 = Dot::U8(a##m##0, w0, xq);             \
    a##m##1 = Dot::U8(a##m##1, w1, xq);             \
  }
          QKERN_FOR_ROWS(QKERN_DOT8)
#undef QKERN_DOT8
        }
      }
#define QKERN_SCALE(m)                                                     \
  if constexpr (kMR > m) {                                                 \
    const auto dx = hn::Set(df, a.scale[(m0 + m) * blocks_per_row + blk]); \
    y##m##0 = hn::MulAdd(hn::ConvertTo(df, a##m##0), hn::Mul(d_lo, dx), y##m##0); \
    y##m##1 = hn::MulAdd(hn::ConvertTo(df, a##m##1), hn::Mul(d_hi, dx), y##m##1); \
  }
      QKERN_FOR_ROWS(QKERN_SCALE)
#undef QKERN_SCALE
    }
    // Zero-point term: m * sum over the group of dx * sum(codes).
    const float* ss_base = a.scaled_sum + g * subs_per_group;
    if (w.has_min) {
      const auto m_lo = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + R));
      const auto m_hi = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + R + L));
#define QKERN_MIN(m)                                                  \
  if constexpr (kMR > m) {                                            \
    const float* ss = ss_base + (m0 + m) * blocks_per_row;            \
    float sum = 0.0f;                                                 \
    for (size_t s = 0; s < subs_per_group; ++s) sum += ss[s];         \
    y##m##0 = hn::MulAdd(m_lo, hn::Set(df, sum), y##m##0);            \
    y##m##1 = hn::MulAdd(m_hi, hn::Set(df, sum), y##m##1);            \
  }
      QKERN_FOR_ROWS(QKERN_MIN)
#undef QKERN_MIN
    } else {
#define QKERN_OFFSET(m)                                               \
  if constexpr (kMR > m) {                                            \
    const float* ss = ss_base + (m0 + m) * blocks_per_row;            \
    float sum = 0.0f;                                                 \
    for (size_t s = 0; s < subs_per_group; ++s) sum += ss[s];         \
    const auto term = hn::Set(df, offset * sum);                      \
    y##m##0 = hn::MulAdd(d_lo, term, y##m##0);                        \
    y##m##1 = hn::MulAdd(d_hi, term, y##m##1);                        \
  }
      QKERN_FOR_ROWS(QKERN_OFFSET)
#undef QKERN_OFFSET
    }
  }
#define QKERN_STORE(m)                             \
  if constexpr (kMR > m) {                         \
    hn::StoreU(y##m##0, df, tile + m * R);         \
    hn::StoreU(y##m##1, df, tile + m * R + L);     \
  }
  QKERN_FOR_ROWS(QKERN_STORE)
#undef QKERN_STORE
}

#undef QKERN_FOR_ROWS

#endif  // HWY_TARGET == HWY_SCALAR

// Copies a computed tile to Y, applying the per-channel row scale and bias.
HWY_INLINE void StoreTile(const float* HWY_RESTRICT tile, size_t rows,
                          size_t R, size_t n0, size_t n_valid,
                          const float* row_scales, const float* bias,
                          float* y, size_t ldy) {
  for (size_t m = 0; m < rows; ++m) {
    const float* t = tile + m * R;
    float* out = y + m * ldy + n0;
    for (size_t j = 0; j < n_valid; ++j) {
      float v = t[j];
      if (row_scales != nullptr) v *= row_scales[n0 + j];
      if (bias != nullptr) v += bias[n0 + j];
      out[j] = v;
    }
  }
}

// Upper bound of PanelRows() over all targets of this build.
constexpr size_t kMaxPanelRows = HWY_MAX(8, 2 * HWY_MAX_BYTES / 4);

// Tile heights: 4 rows reuse each unpacked weight vector four times while
// keeping 8 int32 + 8 f32 accumulators in registers on every target.
constexpr size_t kTileRows = 4;
// Activation rows per task in prefill: their codes (K bytes each) stay in L2
// while a task walks its panels.
constexpr size_t kRowsPerTask = 64;
// Prefill walks K in chunks of about this many bytes of one panel, so the
// chunk stays in L1 while every row tile of the task reuses it (without it,
// each 4-row tile would stream the whole panel from L2 again).
constexpr size_t kChunkBytes = 16 * 1024;

template <class Dot, uint32_t kBits>
HWY_INLINE void RunTiles(const PackedWeights& w, const ActivationBlocks& a,
                         size_t m_begin, size_t m_end, size_t p_begin,
                         size_t p_end, const MatMulCall& call) {
  // Partial sums of all rows of the task for one panel.
  HWY_ALIGN float acc[kRowsPerTask * kMaxPanelRows];
  const size_t R = w.panel_rows;
  const size_t groups = w.cols / w.group_size;
  const size_t rows = m_end - m_begin;
  // Decode reads each weight once: no reuse, so no chunking.
  const size_t chunk = rows <= 1 ? groups
                                 : HWY_MIN(groups, HWY_MAX(size_t{1},
                                                           kChunkBytes / w.GroupBytes()));
  for (size_t p = p_begin; p < p_end; ++p) {
    const uint8_t* panel = w.Panel(p);
    for (size_t g0 = 0; g0 < groups; g0 += chunk) {
      const size_t g1 = HWY_MIN(groups, g0 + chunk);
      const bool accumulate = g0 != 0;
      size_t m = m_begin;
      for (; m + kTileRows <= m_end; m += kTileRows) {
        PanelTile<Dot, kBits, kTileRows>(w, panel, a, m, g0, g1, accumulate,
                                        acc + (m - m_begin) * R);
      }
      float* rest_acc = acc + (m - m_begin) * R;
      switch (m_end - m) {
        case 1: PanelTile<Dot, kBits, 1>(w, panel, a, m, g0, g1, accumulate, rest_acc); break;
        case 2: PanelTile<Dot, kBits, 2>(w, panel, a, m, g0, g1, accumulate, rest_acc); break;
        case 3: PanelTile<Dot, kBits, 3>(w, panel, a, m, g0, g1, accumulate, rest_acc); break;
        default: break;
      }
    }
    const size_t n0 = p * R;
    StoreTile(acc, rows, R, n0, HWY_MIN(R, w.rows - n0), w.row_scales,
              call.bias, call.y + m_begin * call.ldy, call.ldy);
  }
}

template <class Dot>
HWY_INLINE void MatMulWithDot(const MatMulCall& call) {
  const PackedWeights& w = *call.weights;
  const size_t k = w.cols;
  const size_t blocks = k / kQuantBlock;
  ActivationBlocks a;
  a.k = k;
  {
    // Workspace layout: codes (M*K bytes), then scales and scaled sums.
    uint8_t* ws = static_cast<uint8_t*>(call.workspace);
    a.codes = reinterpret_cast<int8_t*>(ws);
    float* scale = reinterpret_cast<float*>(ws + MatMulCodesBytes(call.m, k));
    float* scaled_sum = scale + call.m * blocks;
    a.scale = scale;
    a.scaled_sum = scaled_sum;
    int8_t* codes = reinterpret_cast<int8_t*>(ws);
    ParallelFor(call.runner, (call.m + 15) / 16, [&](size_t task, size_t) {
      const size_t end = std::min(call.m, task * 16 + 16);
      for (size_t r = task * 16; r < end; ++r) {
        QuantizeActivationsRow(call.x + r * call.ldx, k, codes + r * k,
                               scale + r * blocks, scaled_sum + r * blocks);
      }
    });
  }

  // Tasks: (row block) x (panel chunk). Enough chunks per worker to balance
  // uneven panel counts, but each chunk long enough to stream well.
  const size_t workers = NumWorkers(call.runner);
  const size_t row_blocks = (call.m + kRowsPerTask - 1) / kRowsPerTask;
  size_t chunks = 1;
  if (workers > 1) {
    const size_t want = (4 * workers + row_blocks - 1) / row_blocks;
    chunks = std::max<size_t>(1, std::min(w.num_panels, want));
  }
  const size_t panels_per_chunk = (w.num_panels + chunks - 1) / chunks;
  chunks = (w.num_panels + panels_per_chunk - 1) / panels_per_chunk;
  ParallelFor(call.runner, row_blocks * chunks, [&](size_t task, size_t) {
    const size_t rb = task / chunks;
    const size_t chunk = task % chunks;
    const size_t m_begin = rb * kRowsPerTask;
    const size_t m_end = std::min(call.m, m_begin + kRowsPerTask);
    const size_t p_begin = chunk * panels_per_chunk;
    const size_t p_end = std::min(w.num_panels, p_begin + panels_per_chunk);
    if (w.bits == 4) {
      RunTiles<Dot, 4>(w, a, m_begin, m_end, p_begin, p_end, call);
    } else {
      RunTiles<Dot, 8>(w, a, m_begin, m_end, p_begin, p_end, call);
    }
  });
}

HWY_INLINE void MatMulPacked(const MatMulCall& call) {
  WithBestDot([&](auto dot) { MatMulWithDot<decltype(dot)>(call); });
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
