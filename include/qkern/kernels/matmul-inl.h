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
#include <type_traits>

#include <hwy/highway.h>

#include "qkern/kernels/int8_dot-inl.h"
#include "qkern/kernels/matmul_amx-inl.h"
#include "qkern/kernels/quantize_activations-inl.h"
#include "qkern/kernels/matmul_tiling-inl.h"
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

#if HWY_TARGET == HWY_SCALAR

template <class Dot, uint32_t kBits, size_t kMR>
HWY_NOINLINE void PanelTile(const PackedWeights& w, const uint8_t* HWY_RESTRICT panel,
                            const ActivationBlocks& a, size_t m0, size_t g_begin,
                            size_t g_end, bool accumulate,
                            bool /*stream_ahead*/, PrefetchSlice /*next*/,
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



#define QKERN_FOR_ROWS(X) X(0) X(1) X(2) X(3)

// Computes the kMR x R tile for activation rows [m0, m0 + kMR) and one panel
// over groups [g_begin, g_end) of K into tile[kMR][R] (row-major, stride R),
// adding to what tile holds if `accumulate`. It prefetches
// DecodePrefetchBytes() ahead of its own stream if `stream_ahead`, else the
// lines of `next`.
template <class Dot, uint32_t kBits, size_t kMR>
HWY_NOINLINE void PanelTile(const PackedWeights& w, const uint8_t* HWY_RESTRICT panel,
                            const ActivationBlocks& a, size_t m0, size_t g_begin,
                            size_t g_end, bool accumulate, bool stream_ahead,
                            PrefetchSlice next, float* HWY_RESTRICT tile) {
  static_assert(kMR >= 1 && kMR <= 4, "tile height 1..4");
  const DI32 d32;
  const hn::Repartition<float, DI32> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> df16;
  const hn::Repartition<uint16_t, DU8> du16;
  const DU8 du8;
  const size_t L = hn::Lanes(d32);
  const size_t R = 2 * L;
  const size_t k = a.k;
  const auto [blocks_per_row, subs_per_group, sub_bytes, group_bytes, offset,
              has_min] = PanelWalk(w, k);
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
      const size_t xo = blk * kQuantBlock;
      prefetcher.BeforeSubBlock(q, sub_bytes);
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
    const size_t ab = (m0 + m) * blocks_per_row + blk;                     \
    AddSubBlock(has_min, d_lo, d_hi, a.scale[ab], offset * a.scaled_sum[ab], \
                a##m##0, a##m##1, y##m##0, y##m##1);                       \
  }
      QKERN_FOR_ROWS(QKERN_SCALE)
#undef QKERN_SCALE
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
      QKERN_FOR_ROWS(QKERN_MIN)
#undef QKERN_MIN
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

template <class Dot>
HWY_INLINE void MatMulWithDot(const MatMulCall& call) {
  const PackedWeights& w = *call.weights;
  const size_t k = w.cols;
  const size_t blocks = k / kQuantBlock;
  bool amx = false;
#if QKERN_HAVE_AMX_PATH
  amx = UseAmx(call.m) && w.panel_rows == 2 * kAmxTileRows;
#endif
  ActivationBlocks a;
  a.k = k;
  {
    // Workspace layout: codes (M*K bytes), then scales and scaled sums.
    uint8_t* ws = static_cast<uint8_t*>(call.workspace);
    a.codes = reinterpret_cast<int8_t*>(ws);
    const size_t code_rows = MatMulCodeRows(call.m);
    float* scale = reinterpret_cast<float*>(ws + MatMulCodesBytes(call.m, k));
    float* scaled_sum = scale + code_rows * blocks;
    a.scale = scale;
    a.scaled_sum = scaled_sum;
    int8_t* codes = reinterpret_cast<int8_t*>(ws);
    // AMX reads codes as A tiles and scales as one vector per tile and block
    // (AmxTileCodes, AmxTileScales): a tile is 512 contiguous bytes, not 16
    // lines K apart (which share one L1 set when K is a multiple of 4096).
    // Its last tile reads the pad rows past row M: they are zeroed.
    const size_t full_rows = call.m / kAmxTileRows * kAmxTileRows;
    if (amx && full_rows < code_rows) {
      memset(codes + full_rows * k, 0, (code_rows - full_rows) * k);
      memset(scale + full_rows * blocks, 0,
             (code_rows - full_rows) * blocks * sizeof(float));
      memset(scaled_sum + full_rows * blocks, 0,
             (code_rows - full_rows) * blocks * sizeof(float));
    }
    ParallelFor(call.runner, (call.m + 15) / 16, [&](size_t task, size_t) {
      const size_t end = std::min(call.m, task * 16 + 16);
      for (size_t r = task * 16; r < end; ++r) {
        if (amx) {
          QuantizeActivationsRow(call.x + r * call.ldx, k,
                                 AmxTileCodes(codes, k, r, 0),
                                 AmxTileScales(scale, blocks, r, 0),
                                 AmxTileScales(scaled_sum, blocks, r, 0),
                                 kAmxTileCodes, kAmxTileRows);
        } else {
          QuantizeActivationsRow(call.x + r * call.ldx, k, codes + r * k,
                                 scale + r * blocks, scaled_sum + r * blocks);
        }
      }
    });
  }

#if QKERN_HAVE_AMX_PATH
  if (amx) {
    ForEachMatMulTask(call, [&](size_t m_begin, size_t m_end, size_t p_begin,
                                 size_t p_end) {
      AmxTaskTiles(w, a, m_begin, m_end, p_begin, p_end, call);
    });
    return;
  }
#endif
  ForEachMatMulTask(call, [&](size_t m_begin, size_t m_end, size_t p_begin,
                               size_t p_end) {
    auto run = [&](auto bits) {
      RunTaskTiles(w, m_begin, m_end, p_begin, p_end, call,
                   [&](auto rows, const uint8_t* panel, size_t m, size_t g0,
                       size_t g1, bool accumulate, bool stream_ahead,
                       PrefetchSlice next, float* acc) {
                     PanelTile<Dot, decltype(bits)::value, decltype(rows)::value>(
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

HWY_INLINE void MatMulPacked(const MatMulCall& call) {
  // Arm i8mm weights (8-byte rows): matmul_mmla-inl.h.
  if (call.weights->layout == PanelLayout::kMmla8) return MatMulMmla(call);
  WithBestDot([&](auto dot) { MatMulWithDot<decltype(dot)>(call); });
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
