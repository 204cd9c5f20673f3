// The blocking shared by the per-target matmul micro-kernels (matmul-inl.h
// on the 4-byte-quad panel layout, matmul_mmla-inl.h on Arm's 8-byte-row
// layout): the tile and task sizes, how weights are prefetched, how a call is
// cut into tasks for the thread pool, how one task walks its panels and K
// chunks, and the epilogue that writes a finished tile to Y. The kernels
// differ only in their tile function.

#if defined(QKERN_KERNELS_MATMUL_TILING_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_MATMUL_TILING_INL_H_
#undef QKERN_KERNELS_MATMUL_TILING_INL_H_
#else
#define QKERN_KERNELS_MATMUL_TILING_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <type_traits>

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "qkern/base/prefetch.h"
#include "qkern/kernels/matmul_types.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/threading/parallel.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {

// Upper bound of the panel height (two vectors of 32-bit lanes, or the
// scalar tile's 8) over all targets of this build.
constexpr size_t kMaxPanelRows = HWY_MAX(8, 2 * HWY_MAX_BYTES / 4);
// Tile height: 4 rows reuse each unpacked weight vector four times while
// keeping 8 int32 + 8 f32 accumulators in registers on every target.
constexpr size_t kTileRows = 4;
// Activation rows per task in prefill: their codes (K bytes each) stay in L2
// while a task walks its panels. Even, so Arm's row pairs never straddle two
// tasks.
constexpr size_t kRowsPerTask = 64;
static_assert(kRowsPerTask % 2 == 0 && kRowsPerTask % kTileRows == 0,
              "tasks hold whole row pairs and tiles");
// Prefill walks K in chunks of about this many bytes of one panel, so the
// chunk stays in L1 while every row tile of the task reuses it (without it,
// each 4-row tile would stream the whole panel from L2 again).
constexpr size_t kChunkBytes = 16 * 1024;

// The activation operand after dynamic quantization.
struct ActivationBlocks {
  const int8_t* codes;       // rows x K
  const float* scale;        // rows x K/32
  const float* scaled_sum;   // rows x K/32
  size_t k;
};

// The sizes a tile walks a panel by, and the zero-point convention
// (value = d * (u + offset) for formats without stored mins), for weights
// w and K = k. The tiles unpack it with a structured binding.
struct PanelWalk {
  PanelWalk(const PackedWeights& w, size_t k)
      : blocks_per_row(k / kQuantBlock),
        subs_per_group(w.group_size / kQuantBlock),
        sub_bytes(w.SubBlockBytes()),
        group_bytes(w.GroupBytes()),
        offset(-static_cast<float>(w.sym_offset)),
        has_min(w.has_min) {}
  size_t blocks_per_row;
  size_t subs_per_group;
  size_t sub_bytes;    // one 32-value sub-block of R rows
  size_t group_bytes;  // sub-blocks, then R scales (and R mins)
  float offset;
  bool has_min;
};

// Weight lines a prefill tile pulls towards L1 while it computes.
struct PrefetchSlice {
  const uint8_t* begin = nullptr;
  size_t lines = 0;
};

// What a tile prefetches before each sub-block at q (sub_bytes of codes):
// decode (`stream_ahead`) runs DecodePrefetchBytes() ahead of its own
// stream; prefill spreads the lines of `next` evenly over its sub-blocks.
class TilePrefetcher {
 public:
  TilePrefetcher(bool stream_ahead, PrefetchSlice next, size_t sub_blocks)
      : stream_ahead_(stream_ahead),
        ahead_(stream_ahead ? DecodePrefetchBytes() : 0),
        next_(next),
        lines_per_sub_(sub_blocks == 0
                           ? 0
                           : (next.lines + sub_blocks - 1) / sub_blocks) {}

  HWY_INLINE void BeforeSubBlock(const uint8_t* q, size_t sub_bytes) {
    if (stream_ahead_) {
      for (size_t line = 0; line < sub_bytes; line += 64) {
        hwy::Prefetch(q + ahead_ + line);
      }
      return;
    }
    for (size_t i = 0; i < lines_per_sub_ && next_.lines != 0; ++i) {
      hwy::Prefetch(next_.begin);
      next_.begin += 64;
      --next_.lines;
    }
  }

 private:
  bool stream_ahead_;
  size_t ahead_;
  PrefetchSlice next_;
  size_t lines_per_sub_;
};

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

#if HWY_TARGET != HWY_SCALAR
namespace hn = hwy::HWY_NAMESPACE;

// The f32 epilogue of one tile row, shared by both micro-kernels. A row's
// accumulators are two vectors (panel rows [0, L) and [L, 2L)); d and m the
// group's scales and mins of those rows. Vectors are passed by reference, not
// in arrays: SVE vectors are sizeless types.

// y += the int32 dot products of one 32-block, scaled by d * dx. Symmetric
// formats fold their zero-point term in: d * (acc * dx + offset * dx *
// sum(x)) is one FMA more than d * dx * acc, where a separate per-group term
// would cost two.
template <class VF, class VI>
HWY_INLINE void AddSubBlock(bool has_min, VF d_lo, VF d_hi, float dx,
                            float offset_term, VI acc_lo, VI acc_hi, VF& y_lo,
                            VF& y_hi) {
  const hn::DFromV<VF> df;
  const VF vdx = hn::Set(df, dx);
  if (has_min) {
    y_lo = hn::MulAdd(hn::ConvertTo(df, acc_lo), hn::Mul(d_lo, vdx), y_lo);
    y_hi = hn::MulAdd(hn::ConvertTo(df, acc_hi), hn::Mul(d_hi, vdx), y_hi);
  } else {
    const VF term = hn::Set(df, offset_term);
    y_lo = hn::MulAdd(hn::MulAdd(hn::ConvertTo(df, acc_lo), vdx, term), d_lo, y_lo);
    y_hi = hn::MulAdd(hn::MulAdd(hn::ConvertTo(df, acc_hi), vdx, term), d_hi, y_hi);
  }
}

// y += m * sum over the group's sub-blocks of dx * sum(x): the min term of
// formats that store one.
template <class VF>
HWY_INLINE void AddGroupMin(VF m_lo, VF m_hi, const float* scaled_sums,
                            size_t subs, VF& y_lo, VF& y_hi) {
  const hn::DFromV<VF> df;
  float sum = 0.0f;
  for (size_t s = 0; s < subs; ++s) sum += scaled_sums[s];
  y_lo = hn::MulAdd(m_lo, hn::Set(df, sum), y_lo);
  y_hi = hn::MulAdd(m_hi, hn::Set(df, sum), y_hi);
}
#endif  // HWY_TARGET != HWY_SCALAR

template <size_t kMR>
using TileRows = std::integral_constant<size_t, kMR>;

// Computes rows [m_begin, m_end) x panels [p_begin, p_end) of Y: per panel,
// K in chunks, each chunk through every row tile of the task, then the
// epilogue. `tile(TileRows<kMR>(), panel, m, g_begin, g_end, accumulate,
// stream_ahead, next, acc)` computes one kMR-row tile (kMR <= kTileRows) over
// groups [g_begin, g_end) into acc (stride R), adding to it if `accumulate`.
template <class Tile>
HWY_INLINE void RunTaskTiles(const PackedWeights& w, size_t m_begin,
                             size_t m_end, size_t p_begin, size_t p_end,
                             const MatMulCall& call, const Tile& tile) {
  // Partial sums of all rows of the task for one panel.
  HWY_ALIGN float acc[kRowsPerTask * kMaxPanelRows];
  const size_t R = w.panel_rows;
  const size_t groups = w.cols / w.group_size;
  const size_t rows = m_end - m_begin;
  const size_t tiles = (rows + kTileRows - 1) / kTileRows;
  // Decode reads each weight once: no reuse, so no chunking.
  const size_t chunk =
      rows <= 1 ? groups
                : HWY_MIN(groups, HWY_MAX(size_t{1}, kChunkBytes / w.GroupBytes()));
  // Decode streams ahead of itself (DecodePrefetchBytes()). In prefill the row
  // tiles reuse the chunk from L1, and each pulls in its share of the next
  // chunk (panels are contiguous, so past a panel's last chunk that is the
  // next panel's first), so no tile stalls on L3 at a chunk boundary.
  const bool stream_ahead = rows <= 1 && DecodePrefetchBytes() != 0;
  const size_t next_lines = chunk * w.GroupBytes() / 64;
  const size_t lines_per_tile = (next_lines + tiles - 1) / tiles;
  for (size_t p = p_begin; p < p_end; ++p) {
    const uint8_t* panel = w.Panel(p);
    for (size_t g0 = 0; g0 < groups; g0 += chunk) {
      const size_t g1 = HWY_MIN(groups, g0 + chunk);
      const bool accumulate = g0 != 0;
      const uint8_t* next_chunk = panel + g1 * w.GroupBytes();
      auto slice = [&](size_t t) {
        PrefetchSlice next;
        const size_t first = HWY_MIN(next_lines, t * lines_per_tile);
        next.begin = next_chunk + first * 64;
        next.lines = HWY_MIN(lines_per_tile, next_lines - first);
        return next;
      };
      size_t m = m_begin;
      for (; m + kTileRows <= m_end; m += kTileRows) {
        tile(TileRows<kTileRows>(), panel, m, g0, g1, accumulate, stream_ahead,
             slice((m - m_begin) / kTileRows), acc + (m - m_begin) * R);
      }
      float* rest = acc + (m - m_begin) * R;
      const PrefetchSlice rest_next = slice(tiles - 1);
      static_assert(kTileRows == 4, "the tails below are 1..3 rows");
      switch (m_end - m) {
        case 1: tile(TileRows<1>(), panel, m, g0, g1, accumulate, stream_ahead, rest_next, rest); break;
        case 2: tile(TileRows<2>(), panel, m, g0, g1, accumulate, stream_ahead, rest_next, rest); break;
        case 3: tile(TileRows<3>(), panel, m, g0, g1, accumulate, stream_ahead, rest_next, rest); break;
        default: break;
      }
    }
    const size_t n0 = p * R;
    StoreTile(acc, rows, R, n0, HWY_MIN(R, w.rows - n0), w.row_scales,
              call.bias, call.y + m_begin * call.ldy, call.ldy);
  }
}

// Cuts a call into tasks of (row block) x (panel chunk) and runs
// body(m_begin, m_end, p_begin, p_end) for each on call.runner. Enough
// panel chunks per worker to balance uneven panel counts, but each chunk
// long enough to stream well.
template <class Body>
HWY_INLINE void ForEachMatMulTask(const MatMulCall& call, const Body& body) {
  const PackedWeights& w = *call.weights;
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
    body(m_begin, m_end, p_begin, p_end);
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
