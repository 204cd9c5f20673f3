// Prefill matmul on Intel AMX-INT8 (AVX3_DL target, CPUs with AMX: Sapphire
// Rapids and later), on the same 4-byte-quad panels as the VNNI kernel
// (matmul-inl.h), so weights packed for VNNI need no repacking.
//
// A quad panel's 32-value sub-block is 8 quads x R rows x 4 bytes: for the
// panel's first 16 rows, 8 lines of 64 bytes 128 bytes apart, which is
// exactly an AMX B tile (K/4 rows of N = 16 columns x 4 bytes); the next 16
// rows are the same 64 bytes further. 4-bit codes are first unpacked to one
// byte each in that layout. The A tile is 16 activation rows x 32 int8
// codes straight from the quantized workspace (row stride K). TDPBSUD
// (signed A, unsigned B) gives the exact int32 dot products of one 32-block
// for a 16 x 16 tile; they are stored and go through the same f32 epilogue
// as the VNNI kernel (AddSubBlock / AddGroupMin, matmul_tiling-inl.h), so
// both paths compute the same integers and round the same way.
//
// What bounds it (measured on a 2-vCPU Xeon VM with AMX, 2026-12-05): a
// tile instruction takes about as long at K = 32 as at K = 64 (~8 ns, so
// the 32-blocks halve AMX's peak), each 16 x 32 tile of a block needs ~19 ns
// of tile loads, products and stores, and its f32 epilogue (convert, two
// FMAs, load and store of the partial sums per 16 outputs) about as long
// again; they overlap only partly. Prefill runs ~1.2-1.3x faster than the
// VNNI tiles on Llama-3.2-1B ffn_down at M = 512. Tried and slower: keeping
// a tile's 16 output vectors in registers per panel half (twice the tile
// loads, 0.8x); storing tile j - 1 before issuing tile j (0.93x).
// The last 16-row tile of a call may run past row M: the workspace holds
// zeroed pad rows (MatMulCodesBytes), and only rows below M are stored.
//
// Tile registers (one configuration per task): tmm0, tmm1 and tmm5, tmm6
// two pairs of 16 x 16 int32 results (tile j computes while tile j - 1 is
// stored and tile j - 2 scaled), tmm2 the A tile, tmm3 and tmm4 the B tiles
// of the panel's two halves. The instructions are inline asm (Highway 1.0.3
// and the AVX3_DL target attributes know nothing of AMX).

#if defined(QKERN_KERNELS_MATMUL_AMX_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_MATMUL_AMX_INL_H_
#undef QKERN_KERNELS_MATMUL_AMX_INL_H_
#else
#define QKERN_KERNELS_MATMUL_AMX_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>

#include <hwy/highway.h>

#include "qkern/kernels/int8_dot-inl.h"
#include "qkern/kernels/matmul_tiling-inl.h"
#include "qkern/kernels/matmul_types.h"
#include "qkern/quant/packed_weights.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if QKERN_HAVE_AMX_PATH

// The tile palette: see the register roles in the file comment.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(AmxTileConfig) == 64, "LDTILECFG reads 64 bytes");

HWY_INLINE void AmxConfigure() {
  AmxTileConfig cfg;
  cfg.bytes_per_row[0] = cfg.bytes_per_row[1] = 64;  // 16 x int32
  cfg.rows[0] = cfg.rows[1] = 16;
  cfg.bytes_per_row[5] = cfg.bytes_per_row[6] = 64;  // second result pair
  cfg.rows[5] = cfg.rows[6] = 16;
  cfg.bytes_per_row[2] = kQuantBlock;  // 16 rows x 32 codes
  cfg.rows[2] = 16;
  cfg.bytes_per_row[3] = cfg.bytes_per_row[4] = 64;  // 8 quads x 16 x 4
  cfg.rows[3] = cfg.rows[4] = kQuantBlock / 4;
  asm volatile("ldtilecfg %0" : : "m"(cfg));
}

HWY_INLINE void AmxRelease() { asm volatile("tilerelease" ::: "memory"); }

// tmm3, tmm4 = the B tiles of one sub-block in quad layout (rows 0-15 at
// `b`, rows 16-31 at b + 64; quads 128 bytes apart).
HWY_INLINE void AmxLoadB(const uint8_t* b) {
  asm volatile(
      "tileloadd (%0,%1,1), %%tmm3\n\t"
      "tileloadd (%2,%1,1), %%tmm4"
      :
      : "r"(b), "r"(size_t{128}), "r"(b + 64)
      : "memory");
}

// Result pair `kPair` (0: tmm0/tmm1, 1: tmm5/tmm6) = the int32 dots of 16
// activation rows (32 codes each at `a`, lda apart) with the B tiles' panel
// rows 0-15 and 16-31.
template <int kPair>
HWY_INLINE void AmxDotTile(const int8_t* a, size_t lda) {
  if constexpr (kPair == 0) {
    asm volatile(
        "tilezero %%tmm0\n\t"
        "tilezero %%tmm1\n\t"
        "tileloadd (%0,%1,1), %%tmm2\n\t"
        "tdpbsud %%tmm3, %%tmm2, %%tmm0\n\t"
        "tdpbsud %%tmm4, %%tmm2, %%tmm1"
        :
        : "r"(a), "r"(lda)
        : "memory");
  } else {
    asm volatile(
        "tilezero %%tmm5\n\t"
        "tilezero %%tmm6\n\t"
        "tileloadd (%0,%1,1), %%tmm2\n\t"
        "tdpbsud %%tmm3, %%tmm2, %%tmm5\n\t"
        "tdpbsud %%tmm4, %%tmm2, %%tmm6"
        :
        : "r"(a), "r"(lda)
        : "memory");
  }
}

// c[0, 256) and c[256, 512) = result pair `kPair` (16 rows x 16 int32 each).
template <int kPair>
HWY_INLINE void AmxStoreTile(int32_t* c) {
  if constexpr (kPair == 0) {
    asm volatile(
        "tilestored %%tmm0, (%0,%1,1)\n\t"
        "tilestored %%tmm1, (%2,%1,1)"
        :
        : "r"(c), "r"(size_t{64}), "r"(c + 256)
        : "memory");
  } else {
    asm volatile(
        "tilestored %%tmm5, (%0,%1,1)\n\t"
        "tilestored %%tmm6, (%2,%1,1)"
        :
        : "r"(c), "r"(size_t{64}), "r"(c + 256)
        : "memory");
  }
}

// One 4-bit sub-block (4 vectors of 128 bytes: low nibbles quads 0-3, high
// nibbles quads 4-7) as one byte per code in the 8-bit quad layout.
HWY_INLINE void UnpackNibbleSubBlock(const uint8_t* HWY_RESTRICT q,
                                     uint8_t* HWY_RESTRICT out) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (size_t v = 0; v < 4; ++v) {
    for (size_t half = 0; half < 2; ++half) {
      const __m512i w = _mm512_loadu_si512(q + v * 128 + half * 64);
      _mm512_store_si512(out + v * 128 + half * 64, _mm512_and_si512(w, low));
      _mm512_store_si512(out + (v + 4) * 128 + half * 64,
                         _mm512_and_si512(_mm512_srli_epi16(w, 4), low));
    }
  }
}

// Rows [m_begin, m_end) x panels [p_begin, p_end) of Y, like RunTaskTiles
// with the VNNI tile: per panel and sub-block the B tiles are loaded once
// and serve every 16-row tile of the task; each tile's int32 block dots go
// through the f32 epilogue into acc (task rows x R floats). The tiles form
// one pipeline per panel: tile j computes while tile j - 1 is stored and
// tile j - 2 scaled, so the scaling overlaps the tile unit.
HWY_INLINE void AmxTaskTiles(const PackedWeights& w, const ActivationBlocks& a,
                             size_t m_begin, size_t m_end, size_t p_begin,
                             size_t p_end, const MatMulCall& call) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<hwy::float16_t, decltype(df)> df16;
  constexpr size_t L = 16;
  constexpr size_t R = 2 * L;
  HWY_ALIGN float acc[kRowsPerTask * R];
  alignas(64) int32_t dots[2][2 * 256];
  alignas(64) uint8_t unpacked[8 * 128];
  const size_t k = a.k;
  // Named copies, not a structured binding: the lambda below captures them.
  const PanelWalk walk(w, k);
  const size_t blocks_per_row = walk.blocks_per_row;
  const size_t subs_per_group = walk.subs_per_group;
  const size_t sub_bytes = walk.sub_bytes;
  const size_t group_bytes = walk.group_bytes;
  const size_t rows = m_end - m_begin;
  const size_t tiles = (rows + kAmxTileRows - 1) / kAmxTileRows;

  // Job j: sub-block j / tiles, rows from m_begin + (j % tiles) * 16.
  const uint8_t* panel = nullptr;
  auto scale_job = [&](size_t j, const int32_t* c) {
    const size_t blk = j / tiles;
    const size_t m0 = m_begin + (j % tiles) * kAmxTileRows;
    const size_t g = blk / subs_per_group;
    const hwy::float16_t* d_ptr = reinterpret_cast<const hwy::float16_t*>(
        panel + g * group_bytes + subs_per_group * sub_bytes);
    const auto d_lo = hn::PromoteTo(df, hn::LoadU(df16, d_ptr));
    const auto d_hi = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + L));
    // The zero-point term of formats with a min goes in after the group's
    // last sub-block, as in the VNNI tile.
    const bool add_min = walk.has_min && (blk + 1) % subs_per_group == 0;
    const size_t tile_rows = HWY_MIN(kAmxTileRows, m_end - m0);
    for (size_t r = 0; r < tile_rows; ++r) {
      const size_t ab = (m0 + r) * blocks_per_row + blk;
      float* y = acc + (m0 - m_begin + r) * R;
      auto y_lo = hn::Load(df, y);
      auto y_hi = hn::Load(df, y + L);
      AddSubBlock(walk.has_min, d_lo, d_hi, a.scale[ab],
                  walk.offset * a.scaled_sum[ab], hn::Load(di, c + r * L),
                  hn::Load(di, c + 256 + r * L), y_lo, y_hi);
      if (add_min) {
        const auto m_lo = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + R));
        const auto m_hi = hn::PromoteTo(df, hn::LoadU(df16, d_ptr + R + L));
        AddGroupMin(m_lo, m_hi,
                    a.scaled_sum + (m0 + r) * blocks_per_row + g * subs_per_group,
                    subs_per_group, y_lo, y_hi);
      }
      hn::Store(y_lo, df, y);
      hn::Store(y_hi, df, y + L);
    }
  };

  AmxConfigure();
  for (size_t p = p_begin; p < p_end; ++p) {
    panel = w.Panel(p);
    for (size_t i = 0; i < rows * R; ++i) acc[i] = 0.0f;
    const size_t jobs = blocks_per_row * tiles;
    for (size_t j = 0; j < jobs; ++j) {
      const size_t blk = j / tiles;
      const size_t tile = j % tiles;
      if (tile == 0) {
        const uint8_t* q = panel + (blk / subs_per_group) * group_bytes +
                           (blk % subs_per_group) * sub_bytes;
        if (w.bits == 4) {
          UnpackNibbleSubBlock(q, unpacked);
          q = unpacked;
        }
        AmxLoadB(q);
      }
      const int8_t* a_tile =
          a.codes + (m_begin + tile * kAmxTileRows) * k + blk * kQuantBlock;
      if (j % 2 == 0) {
        AmxDotTile<0>(a_tile, k);
        if (j >= 1) AmxStoreTile<1>(dots[1]);
      } else {
        AmxDotTile<1>(a_tile, k);
        AmxStoreTile<0>(dots[0]);
      }
      if (j >= 2) scale_job(j - 2, dots[j % 2]);
    }
    // Drain: the last two jobs.
    if (jobs >= 2) scale_job(jobs - 2, dots[jobs % 2]);
    if (jobs % 2 == 1) {
      AmxStoreTile<0>(dots[0]);
    } else {
      AmxStoreTile<1>(dots[1]);
    }
    scale_job(jobs - 1, dots[(jobs - 1) % 2]);
    const size_t n0 = p * R;
    StoreTile(acc, rows, R, n0, HWY_MIN(R, w.rows - n0), w.row_scales,
              call.bias, call.y + m_begin * call.ldy, call.ldy);
  }
  AmxRelease();
}

#endif  // QKERN_HAVE_AMX_PATH

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
