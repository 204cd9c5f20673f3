// Prefill matmul on Intel AMX-INT8 (AVX3_DL target, CPUs with AMX: Sapphire
// Rapids and later), on the same 4-byte-quad panels as the VNNI kernel
// (matmul-inl.h), so weights packed for VNNI need no repacking.
//
// A quad panel's 32-value sub-block is 8 quads x R rows x 4 bytes: for the
// panel's first 16 rows, 8 lines of 64 bytes 128 bytes apart, which is
// exactly an AMX B tile (K/4 rows of N = 16 columns x 4 bytes); the next 16
// rows are the same 64 bytes further. Per chunk of 16 blocks the sub-blocks
// are copied to an L1 buffer in that layout, 4-bit codes unpacked to a byte,
// and codes of symmetric formats shifted to signed (u - sym_offset), so
// TDPBSSD gives the exact int32 dot with the true weights and no zero-point
// term is needed; formats with a min keep unsigned codes (TDPBSUD) and add
// m * dx * sum(x) per block. The A tile is 16 activation rows x 32 codes,
// 512 contiguous bytes of the workspace, which the AMX path fills tile by
// tile (AmxTileCodes), with the 16 rows' scales of a block side by side
// (AmxTileScales).
//
// The epilogue of a 16 x 16 result tile is, per output vector, a convert,
// a multiply by the row's activation scale and an FMA with the column
// scales into an accumulator that stays in a register across the chunk.
// It rounds differently from the VNNI kernel (d * (dx * acc) there is
// d * (dx * acc + offset * dx * sum(x))); both are within the test bound.
//
// What bounds it (measured on a 2-vCPU Xeon VM with AMX, 2026-12-05, per
// 16 x 32 x 32 job of Llama-3.2-1B ffn_down at M = 512): tile loads,
// products and stores ~27 ns, the f32 epilogue ~23 ns, the chunk
// preparation ~12 ns (Q4_0); they barely overlap, whatever the order of the
// tile store and the scaling in the loop. Tried and no faster: chunks of 32
// blocks, 128-row tasks, scaling block j - 2 before issuing block j. The
// earlier design (B tiles held across row tiles, partial sums in memory)
// was 0.75x (Q4_0) and 0.8x (Q8_0) of this one.
// The last 16-row tile of a call may run past row M: the workspace holds
// zeroed pad rows (codes, scales and sums), and only rows below M are stored.
//
// Tile registers (one configuration per task): tmm0 and tmm1 16 x 16 int32
// results (block j computes in one while block j - 1 is stored from the
// other and block j - 2 scaled), tmm2 the A tile, tmm3 the B tile. The
// instructions are inline asm (Highway 1.0.3 and the AVX3_DL target
// attributes know nothing of AMX).

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

// Blocks of K whose weights one pass over the task's row tiles shares: the
// chunk's B tiles (1 KiB per block), scales and mins stay in L1.
constexpr size_t kAmxChunkBlocks = 16;

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
  cfg.bytes_per_row[2] = kQuantBlock;  // 16 rows x 32 codes
  cfg.rows[2] = 16;
  cfg.bytes_per_row[3] = 64;  // 8 quads x 16 columns x 4 bytes
  cfg.rows[3] = kQuantBlock / 4;
  asm volatile("ldtilecfg %0" : : "m"(cfg));
}

HWY_INLINE void AmxRelease() { asm volatile("tilerelease" ::: "memory"); }

// Result tile `kC` (tmm0 or tmm1) = the int32 dots of the A tile at `a`
// (16 rows x 32 codes, AmxTileCodes) with the B tile at `b` (8 quads of 16
// columns, 128 bytes apart). Signed weights use TDPBSSD, unsigned TDPBSUD.
template <int kC, bool kSignedB>
HWY_INLINE void AmxDotTile(const int8_t* a, const uint8_t* b) {
  static_assert(kC == 0 || kC == 1, "two result tiles");
#define QKERN_AMX_DOT(C, OP)                                               \
  asm volatile("tilezero %%tmm" #C "\n\t"                                  \
               "tileloadd (%0,%1,1), %%tmm2\n\t"                           \
               "tileloadd (%2,%3,1), %%tmm3\n\t" OP                        \
               " %%tmm3, %%tmm2, %%tmm" #C                                 \
               :                                                           \
               : "r"(a), "r"(size_t{kQuantBlock}), "r"(b), "r"(size_t{128}) \
               : "memory")
  if constexpr (kC == 0 && kSignedB) QKERN_AMX_DOT(0, "tdpbssd");
  if constexpr (kC == 0 && !kSignedB) QKERN_AMX_DOT(0, "tdpbsud");
  if constexpr (kC == 1 && kSignedB) QKERN_AMX_DOT(1, "tdpbssd");
  if constexpr (kC == 1 && !kSignedB) QKERN_AMX_DOT(1, "tdpbsud");
#undef QKERN_AMX_DOT
}

// c[0, 256) = result tile `kC` (16 rows x 16 int32).
template <int kC>
HWY_INLINE void AmxStoreTile(int32_t* c) {
  if constexpr (kC == 0) {
    asm volatile("tilestored %%tmm0, (%0,%1,1)"
                 :
                 : "r"(c), "r"(size_t{64})
                 : "memory");
  } else {
    asm volatile("tilestored %%tmm1, (%0,%1,1)"
                 :
                 : "r"(c), "r"(size_t{64})
                 : "memory");
  }
}

// One sub-block (32 codes of the panel's R = 32 rows) in the 8-bit quad
// layout at `out` (8 lines of 128 bytes): 4-bit codes unpacked (their input
// is 4 vectors of 128 bytes: low nibbles quads 0-3, high nibbles quads
// 4-7), and for signed tiles shifted by `shift` (-sym_offset) into int8.
HWY_INLINE void PrepareSubBlockB(const uint8_t* HWY_RESTRICT q, uint32_t bits,
                                 bool signed_b, int8_t shift,
                                 uint8_t* HWY_RESTRICT out) {
  const __m512i add = _mm512_set1_epi8(signed_b ? shift : 0);
  if (bits == 4) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (size_t v = 0; v < 4; ++v) {
      for (size_t half = 0; half < 2; ++half) {
        const __m512i w = _mm512_loadu_si512(q + v * 128 + half * 64);
        const __m512i lo = _mm512_and_si512(w, low);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
        _mm512_store_si512(out + v * 128 + half * 64, _mm512_add_epi8(lo, add));
        _mm512_store_si512(out + (v + 4) * 128 + half * 64,
                           _mm512_add_epi8(hi, add));
      }
    }
  } else {
    for (size_t i = 0; i < 8 * 128; i += 64) {
      _mm512_store_si512(
          out + i, _mm512_add_epi8(_mm512_loadu_si512(q + i), add));
    }
  }
}

// Rows [m_begin, m_end) x panels [p_begin, p_end) of Y. Per panel, K goes in
// chunks of kAmxChunkBlocks blocks; a chunk's weights are prepared once
// (B tiles, f32 scales and mins) and then serve every 16-row tile of the
// task. For one row tile and one 16-column half of the panel, the 16 output
// vectors stay in registers across the chunk, so the f32 epilogue of a block
// is a convert, a multiply by the row's activation scale and an FMA with
// the column scales per output vector, with no loads or stores of partial
// sums. The blocks form a pipeline: block j computes while block j - 1 is
// stored and block j - 2 scaled.
template <bool kSignedB>
HWY_INLINE void AmxTaskTilesT(const PackedWeights& w, const ActivationBlocks& a,
                              size_t m_begin, size_t m_end, size_t p_begin,
                              size_t p_end, const MatMulCall& call) {
  constexpr size_t L = 16;
  constexpr size_t R = 2 * L;
  constexpr size_t kB = kAmxChunkBlocks;
  HWY_ALIGN float acc[kRowsPerTask * R];
  alignas(64) int32_t dots[2][16 * 16];
  alignas(64) uint8_t b_tiles[kB][8 * 128];
  alignas(64) float d_table[kB][R];
  alignas(64) float m_table[kB][R];
  const size_t k = a.k;
  const PanelWalk walk(w, k);
  const size_t blocks = walk.blocks_per_row;
  const size_t subs = walk.subs_per_group;
  const size_t rows = m_end - m_begin;
  // The row tiles of the task (the last may run into the zeroed pad rows).
  const size_t tiles = (rows + kAmxTileRows - 1) / kAmxTileRows;
  const int8_t shift = static_cast<int8_t>(-w.sym_offset);

  AmxConfigure();
  for (size_t p = p_begin; p < p_end; ++p) {
    const uint8_t* panel = w.Panel(p);
    for (size_t c0 = 0; c0 < blocks; c0 += kB) {
      const size_t nb = HWY_MIN(kB, blocks - c0);
      for (size_t i = 0; i < nb; ++i) {
        const size_t blk = c0 + i;
        const uint8_t* group = panel + (blk / subs) * walk.group_bytes;
        PrepareSubBlockB(group + (blk % subs) * walk.sub_bytes, w.bits,
                         kSignedB, shift, b_tiles[i]);
        const uint16_t* dm =
            reinterpret_cast<const uint16_t*>(group + subs * walk.sub_bytes);
        for (size_t h = 0; h < 2; ++h) {
          const __m256i d16 = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(dm + h * L));
          _mm512_store_ps(&d_table[i][h * L], _mm512_cvtph_ps(d16));
          if (walk.has_min) {
            const __m256i m16 = _mm256_loadu_si256(
                reinterpret_cast<const __m256i*>(dm + R + h * L));
            _mm512_store_ps(&m_table[i][h * L], _mm512_cvtph_ps(m16));
          }
        }
      }
      // The steps below pull in the next chunk (past the panel's last one,
      // the next panel's first: panels are contiguous), so the preparation
      // of the next chunk does not wait on memory.
      PrefetchSlice next;
      next.begin = panel + (c0 + nb) / subs * walk.group_bytes;
      next.lines = kB / subs * walk.group_bytes / 64;
      TilePrefetcher prefetch(false, next, tiles * 2 * nb);
      for (size_t t = 0; t < tiles; ++t) {
        const size_t m0 = m_begin + t * kAmxTileRows;
        const int8_t* a_tiles = AmxTileCodes(a.codes, k, m0, c0);
        // The 16 rows' scales (and scaled sums) of block c0 + i, side by side.
        const float* dx = AmxTileScales(a.scale, blocks, m0, c0);
        const float* sx = AmxTileScales(a.scaled_sum, blocks, m0, c0);
        for (size_t h = 0; h < 2; ++h) {
          float* acc_tile = acc + t * kAmxTileRows * R + h * L;
          __m512 y[16];
#pragma GCC unroll 16
          for (size_t r = 0; r < 16; ++r) {
            y[r] = c0 == 0 ? _mm512_setzero_ps()
                           : _mm512_load_ps(acc_tile + r * R);
          }
          auto scale_block = [&](size_t i, const int32_t* c) {
            const __m512 d = _mm512_load_ps(&d_table[i][h * L]);
            const float* dxi = dx + i * kAmxTileRows;
#pragma GCC unroll 16
            for (size_t r = 0; r < 16; ++r) {
              const __m512 v = _mm512_mul_ps(
                  _mm512_cvtepi32_ps(_mm512_load_si512(c + r * L)),
                  _mm512_set1_ps(dxi[r]));
              y[r] = _mm512_fmadd_ps(v, d, y[r]);
            }
            if (!kSignedB) {
              // Formats with a min: y += m * dx * sum(x) per sub-block.
              const __m512 mv = _mm512_load_ps(&m_table[i][h * L]);
              const float* sxi = sx + i * kAmxTileRows;
#pragma GCC unroll 16
              for (size_t r = 0; r < 16; ++r) {
                y[r] = _mm512_fmadd_ps(mv, _mm512_set1_ps(sxi[r]), y[r]);
              }
            }
          };
          for (size_t i = 0; i < nb; ++i) {
            const int8_t* a_tile = a_tiles + i * kAmxTileCodes;
            const uint8_t* b_tile = b_tiles[i] + h * 64;
            prefetch.BeforeSubBlock(nullptr, 0);
            if (i % 2 == 0) {
              AmxDotTile<0, kSignedB>(a_tile, b_tile);
              if (i >= 1) AmxStoreTile<1>(dots[1]);
            } else {
              AmxDotTile<1, kSignedB>(a_tile, b_tile);
              AmxStoreTile<0>(dots[0]);
            }
            if (i >= 2) scale_block(i - 2, dots[i % 2]);
          }
          // Drain: the last two blocks.
          if (nb >= 2) scale_block(nb - 2, dots[nb % 2]);
          if (nb % 2 == 1) {
            AmxStoreTile<0>(dots[0]);
          } else {
            AmxStoreTile<1>(dots[1]);
          }
          scale_block(nb - 1, dots[(nb - 1) % 2]);
#pragma GCC unroll 16
          for (size_t r = 0; r < 16; ++r) _mm512_store_ps(acc_tile + r * R, y[r]);
        }
      }
    }
    const size_t n0 = p * R;
    StoreTile(acc, rows, R, n0, HWY_MIN(R, w.rows - n0), w.row_scales,
              call.bias, call.y + m_begin * call.ldy, call.ldy);
  }
  AmxRelease();
}

HWY_INLINE void AmxTaskTiles(const PackedWeights& w, const ActivationBlocks& a,
                             size_t m_begin, size_t m_end, size_t p_begin,
                             size_t p_end, const MatMulCall& call) {
  // Symmetric formats: signed codes (u - sym_offset) need no zero-point term.
  if (w.has_min) {
    AmxTaskTilesT<false>(w, a, m_begin, m_end, p_begin, p_end, call);
  } else {
    AmxTaskTilesT<true>(w, a, m_begin, m_end, p_begin, p_end, call);
  }
}

#endif  // QKERN_HAVE_AMX_PATH

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
