// Per-target fused attention over the paged KV cache (flash-attention style).
//
// A task owns one kv head, a tile of consecutive queries and a range of KV
// positions. Its softmax rows are (query, q head of the kv head's group), so
// every K and V row it loads from the pages serves all q heads sharing that
// kv head (what makes GQA cheap in bandwidth) and all queries of the tile
// (each KV block is read once per query tile in prefill). It walks its KV
// range once, in tiles of kAttnTileTokens positions (a tile may span several
// blocks; each block's rows are read in place), keeping per row a running
// max m, a running denominator l and an unnormalised output acc (the online
// softmax): a tile's logits live in a small buffer and the full score matrix
// is never formed.
//
// Per tile: raw dots q.k (up to 4 query rows x 4 K rows per register
// block, the 4 horizontal sums of a row reduced together), then per row
// scale, soft-cap, causal/window mask, new max, p = exp(s - m) with
// Highway's vector Exp, rescale of acc and l by exp(m_old - m_new) when the
// max grew, and acc += p * V (up to 4 rows x 2 vectors of head_dim). The
// rows of the next tile are prefetched while the dots run.
// K and V are read in place: f16 widened with PromoteTo, int8 codes widened
// to f32; the int8 row scale factors out of both products (score = scale_k *
// q.codes, acc += (p * scale_v) * codes), so it is applied once per token.
//
// Decode has one query, so a single sequence would give only num_kv_heads
// tasks; the plan then splits each task's KV range across tasks (whole
// blocks each), and a second pass merges the per-split (m, l, acc) with the
// log-sum-exp rescale.
//
// Exp: hwy/contrib/math Exp, documented at most 1 ulp for f32 inputs in
// [-FLT_MAX, 104]; our arguments are <= 0 and clamped to >= -128, where it
// returns 0 below -104 (terms < e^-104 of the largest weight). The per-tile
// rescale factors and the split merge use std::exp (one call per row per
// tile). Soft-capping uses Highway's Tanh (documented <= 4 ulp).
//
// Vectors are named variables, never arrays or members: SVE vectors are
// sizeless. All vector ops use at most kAttnMaxLanes f32 lanes, so the usual
// head dims (multiples of 16) need no tail on any target.

// Target-independent part: constants, the work plan and the call record,
// shared with the public API (attention.h). Plain C++, emitted once.
#ifndef QKERN_KERNELS_ATTENTION_PLAN_ONCE_
#define QKERN_KERNELS_ATTENTION_PLAN_ONCE_

#include <stddef.h>
#include <stdint.h>

#include <algorithm>

#include "qkern/kernels/attention_ref.h"
#include "qkern/kv/kv_format.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/threading/parallel.h"

namespace qkern {
namespace detail {

// KV positions per tile (tiles may span blocks): long enough to amortise the
// per-row softmax bookkeeping (a max and a sum across lanes, a scalar exp),
// short enough that a tile's logits and K/V rows stay in L1.
constexpr size_t kAttnTileTokens = 64;
// Widest f32 vector the kernel uses (512 bits, also on wider SVE).
constexpr size_t kAttnMaxLanes = 16;
// Floats per row of the logit buffer: a tile rounded up to whole vectors.
constexpr size_t kAttnScoreStride = kAttnTileTokens + kAttnMaxLanes;
// Softmax rows a prefill task aims for (queries x group heads): enough to
// reuse each K/V row many times from L1, few enough that the row states
// (head_dim floats each) stay in L1/L2.
constexpr size_t kAttnTargetRows = 16;
// With several workers, aim for this many tasks per worker so that uneven
// tasks (causal prefill, windows) balance through dynamic claiming.
constexpr size_t kAttnTasksPerWorker = 4;
// A KV split shorter than this costs more in task overhead and merging than
// it gains in parallelism.
constexpr size_t kAttnMinSplitTokens = 128;

// How a call is cut into tasks, and the workspace it needs.
struct AttentionPlan {
  size_t group = 0;   // q heads per kv head
  size_t q_tile = 0;  // queries per task
  size_t q_tiles = 0;
  size_t splits = 0;         // KV ranges per (kv head, query tile)
  size_t num_tasks = 0;      // num_kv_heads * q_tiles * splits
  size_t rows = 0;           // softmax rows per task: q_tile * group
  size_t acc_stride = 0;     // floats per row of acc
  size_t state_floats = 0;   // acc rows, then m and l per row
  size_t worker_floats = 0;  // per-worker logits buffer plus a state
  size_t workers = 0;
  size_t partial_tasks = 0;  // task states kept for the merge (workspace)
  size_t workspace_bytes = 0;
};

inline size_t AttnRoundUp16(size_t n) { return (n + 15) / 16 * 16; }

// `workers` is NumWorkers(runner). The workspace size depends on the shape
// and the worker count but not on kv_len, so a decoder's workspace reaches
// its final size on the first call.
inline AttentionPlan PlanAttention(const AttentionParams& p, size_t num_queries,
                                   size_t q_start_pos, size_t workers) {
  AttentionPlan plan;
  plan.group = p.num_q_heads / p.num_kv_heads;
  plan.q_tile = std::max<size_t>(1, kAttnTargetRows / plan.group);
  plan.q_tile = std::min(plan.q_tile, std::max<size_t>(num_queries, 1));
  plan.q_tiles = (num_queries + plan.q_tile - 1) / plan.q_tile;
  plan.rows = plan.q_tile * plan.group;
  plan.acc_stride = AttnRoundUp16(p.head_dim);
  plan.state_floats = AttnRoundUp16(plan.rows * (plan.acc_stride + 2));
  plan.worker_floats =
      AttnRoundUp16(plan.rows * kAttnScoreStride) + plan.state_floats;
  plan.workers = std::max<size_t>(workers, 1);

  const size_t base_tasks = p.num_kv_heads * plan.q_tiles;
  size_t want = 1;
  if (plan.workers > 1 && base_tasks < kAttnTasksPerWorker * plan.workers) {
    want = (kAttnTasksPerWorker * plan.workers + base_tasks - 1) / base_tasks;
  }
  // Positions one query tile attends to, at most.
  size_t span = q_start_pos + num_queries;
  if (p.sliding_window != 0) {
    span = std::min(span, p.sliding_window + plan.q_tile - 1);
  }
  plan.splits = std::max<size_t>(1, std::min(want, span / kAttnMinSplitTokens));
  plan.num_tasks = base_tasks * plan.splits;
  plan.partial_tasks = want > 1 ? base_tasks * want : 0;
  plan.workspace_bytes = (plan.workers * plan.worker_floats +
                          plan.partial_tasks * plan.state_floats) *
                         sizeof(float);
  return plan;
}

// Everything one attention call needs, validated by the public entry point.
struct AttentionCall {
  const PagedKvCache* cache;
  // Covers positions [0, q_start_pos + num_queries), entries validated.
  const uint32_t* block_table;
  size_t layer;
  const float* q;
  size_t q_stride;
  size_t num_queries;
  size_t q_start_pos;
  float* out;
  size_t out_stride;
  AttentionParams params;  // scale already resolved (non-zero)
  AttentionPlan plan;
  void* workspace;  // plan.workspace_bytes, 64-byte aligned
  const ParallelRunner* runner;
};

}  // namespace detail
}  // namespace qkern

#endif  // QKERN_KERNELS_ATTENTION_PLAN_ONCE_

#if defined(QKERN_KERNELS_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_ATTENTION_INL_H_
#undef QKERN_KERNELS_ATTENTION_INL_H_
#else
#define QKERN_KERNELS_ATTENTION_INL_H_
#endif

#include <hwy/cache_control.h>
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "qkern/base/f16.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DAttn = hn::CappedTag<float, detail::kAttnMaxLanes>;
using VAttn = hn::Vec<DAttn>;

// Loads stored K/V values as f32: a vector of Lanes(DAttn) values at
// element i of a row, or one value (row tails).
template <KvFormat kFormat>
struct KvLoad;

template <>
struct KvLoad<KvFormat::kF32> {
  static HWY_INLINE VAttn Vec(const uint8_t* row, size_t i) {
    return hn::LoadU(DAttn(), reinterpret_cast<const float*>(row) + i);
  }
  static HWY_INLINE float One(const uint8_t* row, size_t i) {
    float f;
    memcpy(&f, row + i * sizeof(float), sizeof(float));
    return f;
  }
};

template <>
struct KvLoad<KvFormat::kF16> {
  static HWY_INLINE VAttn Vec(const uint8_t* row, size_t i) {
    const hn::Rebind<hwy::float16_t, DAttn> dh;
    return hn::PromoteTo(
        DAttn(),
        hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
  }
  static HWY_INLINE float One(const uint8_t* row, size_t i) {
    f16_t h;
    memcpy(&h, row + i * sizeof(f16_t), sizeof(f16_t));
    return F32FromF16(h);
  }
};

template <>
struct KvLoad<KvFormat::kInt8> {
  static HWY_INLINE VAttn Vec(const uint8_t* row, size_t i) {
    const hn::Rebind<int8_t, DAttn> d8;
    const hn::Rebind<int32_t, DAttn> d32;
    return hn::ConvertTo(
        DAttn(),
        hn::PromoteTo(d32,
                      hn::LoadU(d8, reinterpret_cast<const int8_t*>(row) + i)));
  }
  static HWY_INLINE float One(const uint8_t* row, size_t i) {
    return static_cast<float>(static_cast<int8_t>(row[i]));
  }
};

HWY_INLINE float SumLanes(VAttn v) {
  return hn::GetLane(hn::SumOfLanes(DAttn(), v));
}

// Query rows per DotTile register block: 4 rows x 4 K rows of accumulators
// (16) plus 4 K vectors fit 32 vector registers; x86 targets below AVX-512
// have 16, so they take 2 rows.
#if HWY_ARCH_X86 && HWY_TARGET >= HWY_AVX2
constexpr size_t kDotRows = 2;
#else
constexpr size_t kDotRows = 4;
#endif

// out[0, 4) = the lane sums of a, b, c, e. Reducing four vectors together
// shares the shuffles: two interleave levels leave [sum a, sum b, sum c,
// sum e] in every 128-bit block, then the blocks are added. Four separate
// SumOfLanes cost about twice as many instructions, and decode computes one
// such sum per (q head, position).
#if HWY_TARGET == HWY_SCALAR
HWY_INLINE void StoreSums4(VAttn a, VAttn b, VAttn c, VAttn e,
                           float* HWY_RESTRICT out) {
  out[0] = hn::GetLane(a);
  out[1] = hn::GetLane(b);
  out[2] = hn::GetLane(c);
  out[3] = hn::GetLane(e);
}
#else
HWY_INLINE void StoreSums4(VAttn a, VAttn b, VAttn c, VAttn e,
                           float* HWY_RESTRICT out) {
  const DAttn d;
  const hn::Repartition<uint64_t, DAttn> d64;
  // Per block: [a0 + a2, b0 + b2, a1 + a3, b1 + b3], likewise for c, e.
  const VAttn ab =
      hn::Add(hn::InterleaveLower(d, a, b), hn::InterleaveUpper(d, a, b));
  const VAttn ce =
      hn::Add(hn::InterleaveLower(d, c, e), hn::InterleaveUpper(d, c, e));
  const auto ab64 = hn::BitCast(d64, ab);
  const auto ce64 = hn::BitCast(d64, ce);
  const VAttn sums =
      hn::Add(hn::BitCast(d, hn::InterleaveLower(d64, ab64, ce64)),
              hn::BitCast(d, hn::InterleaveUpper(d64, ab64, ce64)));
  const size_t N = hn::Lanes(d);
  if (N == 4) {
    hn::StoreU(sums, d, out);
    return;
  }
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  // Fold the 128-bit blocks in registers (an extract and an add per
  // halving): 5 instructions for 512 bits instead of the 9 of the round trip
  // through memory below; decode runs this once per (q head, 4 positions).
  if constexpr (hn::MaxLanes(DAttn()) == 16) {
    const hn::Half<DAttn> d8;
    const hn::Half<decltype(d8)> d4;
    const auto v8 = hn::Add(hn::LowerHalf(d8, sums), hn::UpperHalf(d8, sums));
    hn::StoreU(hn::Add(hn::LowerHalf(d4, v8), hn::UpperHalf(d4, v8)), d4, out);
    return;
  } else if constexpr (hn::MaxLanes(DAttn()) == 8) {
    const hn::Half<DAttn> d4;
    hn::StoreU(hn::Add(hn::LowerHalf(d4, sums), hn::UpperHalf(d4, sums)), d4,
               out);
    return;
  }
#endif
  const hn::CappedTag<float, 4> d4;
  HWY_ALIGN float blocks[detail::kAttnMaxLanes];
  hn::StoreU(sums, d, blocks);
  auto total = hn::LoadU(d4, blocks);
  for (size_t i = 4; i < N; i += 4)
    total = hn::Add(total, hn::LoadU(d4, blocks + i));
  hn::StoreU(total, d4, out);
}
#endif

#define QKERN_ATTN_FOR_ROWS(X) X(0) X(1) X(2) X(3)

// scores[r * kAttnScoreStride + t] = q_r . k_t (unscaled) for kRows query
// rows and `n` K rows `k_stride` bytes apart, 4 K rows per pass. May write
// up to 3 floats past column n - 1 (the buffer has room; the caller fills
// later columns afterwards or ignores them).
// Unless null, `k_ahead` and `v_ahead` are the K and V rows a tile later,
// prefetched a few lines per pass: blocks are scattered, so the hardware
// prefetcher loses the stream at every block boundary. Spreading the
// prefetches matters: one burst per tile measured no faster than none (the
// miss queue fills), these doubled cold-cache decode speed on Zen 5.
template <KvFormat kFormat, size_t kRows>
HWY_INLINE void DotTile(const float* const* q, size_t dim, const uint8_t* k,
                        size_t k_stride, size_t n, float* scores,
                        const uint8_t* k_ahead, const uint8_t* v_ahead) {
  static_assert(kRows >= 1 && kRows <= 4, "1..4 rows per register block");
  using Load = KvLoad<kFormat>;
  const DAttn d;
  const size_t N = hn::Lanes(d);
  const size_t full = dim / N * N;
  constexpr size_t S = detail::kAttnScoreStride;
  const float* HWY_RESTRICT q0 = q[0];
  const float* HWY_RESTRICT q1 = q[kRows > 1 ? 1 : 0];
  const float* HWY_RESTRICT q2 = q[kRows > 2 ? 2 : 0];
  const float* HWY_RESTRICT q3 = q[kRows > 3 ? 3 : 0];
  for (size_t t = 0; t < n; t += 4) {
    // Missing K rows of the last pass repeat row n - 1; their sums land in
    // columns past n - 1.
    const uint8_t* k0 = k + t * k_stride;
    const uint8_t* k1 = k + std::min(t + 1, n - 1) * k_stride;
    const uint8_t* k2 = k + std::min(t + 2, n - 1) * k_stride;
    const uint8_t* k3 = k + std::min(t + 3, n - 1) * k_stride;
    if (k_ahead != nullptr) {
      const size_t bytes = std::min<size_t>(4, n - t) * k_stride;
      for (size_t off = 0; off < bytes; off += 64) {
        hwy::Prefetch(k_ahead + t * k_stride + off);
        hwy::Prefetch(v_ahead + t * k_stride + off);
      }
    }
#define QKERN_ATTN_ZERO(r)                           \
  auto s##r##0 = hn::Zero(d), s##r##1 = hn::Zero(d); \
  auto s##r##2 = hn::Zero(d), s##r##3 = hn::Zero(d);
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_ZERO)
#undef QKERN_ATTN_ZERO
    for (size_t i = 0; i < full; i += N) {
      const VAttn kv0 = Load::Vec(k0, i);
      const VAttn kv1 = Load::Vec(k1, i);
      const VAttn kv2 = Load::Vec(k2, i);
      const VAttn kv3 = Load::Vec(k3, i);
#define QKERN_ATTN_DOT(r)                    \
  if constexpr (kRows > r) {                 \
    const VAttn qv = hn::LoadU(d, q##r + i); \
    s##r##0 = hn::MulAdd(qv, kv0, s##r##0);  \
    s##r##1 = hn::MulAdd(qv, kv1, s##r##1);  \
    s##r##2 = hn::MulAdd(qv, kv2, s##r##2);  \
    s##r##3 = hn::MulAdd(qv, kv3, s##r##3);  \
  }
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_DOT)
#undef QKERN_ATTN_DOT
    }
#define QKERN_ATTN_STORE(r)                              \
  if constexpr (kRows > r) {                             \
    float* out = scores + r * S + t;                     \
    StoreSums4(s##r##0, s##r##1, s##r##2, s##r##3, out); \
    for (size_t i = full; i < dim; ++i) {                \
      out[0] += q##r[i] * Load::One(k0, i);              \
      out[1] += q##r[i] * Load::One(k1, i);              \
      out[2] += q##r[i] * Load::One(k2, i);              \
      out[3] += q##r[i] * Load::One(k3, i);              \
    }                                                    \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_STORE)
#undef QKERN_ATTN_STORE
  }
}

// acc_r += sum_t p[r * kAttnScoreStride + t] * v_t for kRows rows and `n` V
// rows. Two vectors of head_dim per pass give 2 * kRows FMA chains; each V
// vector is widened once and used by every row.
template <KvFormat kFormat, size_t kRows>
HWY_INLINE void AccumulateTile(const float* p, size_t n, const uint8_t* v,
                               size_t v_stride, size_t dim, float* acc,
                               size_t acc_stride) {
  static_assert(kRows >= 1 && kRows <= 4, "1..4 rows per register block");
  using Load = KvLoad<kFormat>;
  const DAttn d;
  const size_t N = hn::Lanes(d);
  constexpr size_t S = detail::kAttnScoreStride;
  float* HWY_RESTRICT acc0 = acc;
  float* HWY_RESTRICT acc1 = acc + (kRows > 1 ? 1 : 0) * acc_stride;
  float* HWY_RESTRICT acc2 = acc + (kRows > 2 ? 2 : 0) * acc_stride;
  float* HWY_RESTRICT acc3 = acc + (kRows > 3 ? 3 : 0) * acc_stride;
  size_t i = 0;
  for (; i + 2 * N <= dim; i += 2 * N) {
#define QKERN_ATTN_LOAD2(r)                          \
  auto a##r##0 = hn::Zero(d), a##r##1 = hn::Zero(d); \
  if constexpr (kRows > r) {                         \
    a##r##0 = hn::LoadU(d, acc##r + i);              \
    a##r##1 = hn::LoadU(d, acc##r + i + N);          \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_LOAD2)
#undef QKERN_ATTN_LOAD2
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* vt = v + t * v_stride;
      const VAttn v0 = Load::Vec(vt, i);
      const VAttn v1 = Load::Vec(vt, i + N);
#define QKERN_ATTN_FMA2(r)                     \
  if constexpr (kRows > r) {                   \
    const VAttn pr = hn::Set(d, p[r * S + t]); \
    a##r##0 = hn::MulAdd(pr, v0, a##r##0);     \
    a##r##1 = hn::MulAdd(pr, v1, a##r##1);     \
  }
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA2)
#undef QKERN_ATTN_FMA2
    }
#define QKERN_ATTN_STORE2(r)                \
  if constexpr (kRows > r) {                \
    hn::StoreU(a##r##0, d, acc##r + i);     \
    hn::StoreU(a##r##1, d, acc##r + i + N); \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_STORE2)
#undef QKERN_ATTN_STORE2
  }
  for (; i + N <= dim; i += N) {
#define QKERN_ATTN_LOAD1(r) \
  auto a##r = hn::Zero(d);  \
  if constexpr (kRows > r) a##r = hn::LoadU(d, acc##r + i);
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_LOAD1)
#undef QKERN_ATTN_LOAD1
    for (size_t t = 0; t < n; ++t) {
      const VAttn v0 = Load::Vec(v + t * v_stride, i);
#define QKERN_ATTN_FMA1(r) \
  if constexpr (kRows > r) \
    a##r = hn::MulAdd(hn::Set(d, p[r * S + t]), v0, a##r);
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA1)
#undef QKERN_ATTN_FMA1
    }
#define QKERN_ATTN_STORE1(r) \
  if constexpr (kRows > r) hn::StoreU(a##r, d, acc##r + i);
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_STORE1)
#undef QKERN_ATTN_STORE1
  }
  for (; i < dim; ++i) {
    for (size_t t = 0; t < n; ++t) {
      const float vi = Load::One(v + t * v_stride, i);
#define QKERN_ATTN_FMA_TAIL(r) \
  if constexpr (kRows > r) acc##r[i] += p[r * S + t] * vi;
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA_TAIL)
#undef QKERN_ATTN_FMA_TAIL
    }
  }
}

#undef QKERN_ATTN_FOR_ROWS

// Dispatches DotTile / AccumulateTile on the (1..4) rows of one block.
template <KvFormat kFormat>
HWY_INLINE void DotRows(size_t rows, const float* const* q, size_t dim,
                        const uint8_t* k, size_t k_stride, size_t n,
                        float* scores, const uint8_t* k_ahead,
                        const uint8_t* v_ahead) {
  switch (rows) {
    case 1:
      return DotTile<kFormat, 1>(q, dim, k, k_stride, n, scores, k_ahead,
                                 v_ahead);
    case 2:
      return DotTile<kFormat, 2>(q, dim, k, k_stride, n, scores, k_ahead,
                                 v_ahead);
    case 3:
      return DotTile<kFormat, 3>(q, dim, k, k_stride, n, scores, k_ahead,
                                 v_ahead);
    default:
      return DotTile<kFormat, 4>(q, dim, k, k_stride, n, scores, k_ahead,
                                 v_ahead);
  }
}

template <KvFormat kFormat>
HWY_INLINE void AccumulateRows(size_t rows, const float* p, size_t n,
                               const uint8_t* v, size_t v_stride, size_t dim,
                               float* acc, size_t acc_stride) {
  switch (rows) {
    case 1:
      return AccumulateTile<kFormat, 1>(p, n, v, v_stride, dim, acc,
                                        acc_stride);
    case 2:
      return AccumulateTile<kFormat, 2>(p, n, v, v_stride, dim, acc,
                                        acc_stride);
    case 3:
      return AccumulateTile<kFormat, 3>(p, n, v, v_stride, dim, acc,
                                        acc_stride);
    default:
      return AccumulateTile<kFormat, 4>(p, n, v, v_stride, dim, acc,
                                        acc_stride);
  }
}

// Online-softmax step of one row over one tile. On entry s[0, n) holds raw
// dots; `k_mult` (padded, or null for the uniform `scale`) scales them.
// Positions outside [begin, end) are masked. On return s[0, n) holds the
// weights p = exp(logit - m_new), times `v_mult` when given (int8 V scales),
// m and l are updated, and the return value is the factor the row's acc
// must be multiplied by (exactly 1 when the max did not grow).
HWY_INLINE float SoftmaxTileRow(float* HWY_RESTRICT s, size_t n, size_t begin,
                                size_t end, const float* k_mult, float scale,
                                float softcap, const float* v_mult,
                                float* HWY_RESTRICT m, float* HWY_RESTRICT l) {
  const DAttn d;
  const size_t N = hn::Lanes(d);
  if (begin >= end) {
    for (size_t j = 0; j < n; ++j) s[j] = 0.0f;
    return 1.0f;
  }
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const VAttn v_neg_inf = hn::Set(d, neg_inf);
  const VAttn v_begin = hn::Set(d, static_cast<float>(begin));
  const VAttn v_end = hn::Set(d, static_cast<float>(end));
  const VAttn v_scale = hn::Set(d, scale);
  const VAttn v_cap = hn::Set(d, softcap);
  const VAttn v_inv_cap = hn::Set(d, softcap > 0.0f ? 1.0f / softcap : 0.0f);
  VAttn v_max = v_neg_inf;
  for (size_t j = 0; j < n; j += N) {
    VAttn x = hn::LoadU(d, s + j);
    x = hn::Mul(x, k_mult != nullptr ? hn::LoadU(d, k_mult + j) : v_scale);
    if (softcap > 0.0f) x = hn::Mul(v_cap, hn::Tanh(d, hn::Mul(x, v_inv_cap)));
    const VAttn index = hn::Iota(d, static_cast<float>(j));
    const auto valid = hn::And(hn::Ge(index, v_begin), hn::Lt(index, v_end));
    x = hn::IfThenElse(valid, x, v_neg_inf);
    hn::StoreU(x, d, s + j);
    v_max = hn::Max(v_max, x);
  }
  const float m_old = *m;
  const float m_new = std::max(m_old, hn::GetLane(hn::MaxOfLanes(d, v_max)));
  float alpha = 1.0f;
  if (m_old == neg_inf) {
    alpha = 0.0f;
  } else if (m_new != m_old) {
    alpha = std::exp(m_old - m_new);
  }
  const VAttn v_m = hn::Set(d, m_new);
  // Masked lanes become -128 here, which Exp maps to exactly 0.
  const VAttn v_floor = hn::Set(d, -128.0f);
  VAttn v_sum = hn::Zero(d);
  for (size_t j = 0; j < n; j += N) {
    const VAttn x = hn::Max(hn::Sub(hn::LoadU(d, s + j), v_m), v_floor);
    const VAttn e = hn::Exp(d, x);
    v_sum = hn::Add(v_sum, e);
    hn::StoreU(v_mult != nullptr ? hn::Mul(e, hn::LoadU(d, v_mult + j)) : e, d,
               s + j);
  }
  *l = *l * alpha + SumLanes(v_sum);
  *m = m_new;
  return alpha;
}

// x[0, n) *= factor.
HWY_INLINE void ScaleRow(float* HWY_RESTRICT x, size_t n, float factor) {
  const DAttn d;
  const size_t N = hn::Lanes(d);
  const VAttn f = hn::Set(d, factor);
  const size_t full = n / N * N;
  for (size_t i = 0; i < full; i += N) {
    hn::StoreU(hn::Mul(hn::LoadU(d, x + i), f), d, x + i);
  }
  for (size_t i = full; i < n; ++i) x[i] *= factor;
}

// out[0, n) (+)= factor * x[0, n).
HWY_INLINE void ScaledCopy(const float* HWY_RESTRICT x, size_t n, float factor,
                           bool add, float* HWY_RESTRICT out) {
  const DAttn d;
  const size_t N = hn::Lanes(d);
  const VAttn f = hn::Set(d, factor);
  const size_t full = n / N * N;
  for (size_t i = 0; i < full; i += N) {
    VAttn y = hn::Mul(hn::LoadU(d, x + i), f);
    if (add) y = hn::Add(y, hn::LoadU(d, out + i));
    hn::StoreU(y, d, out + i);
  }
  for (size_t i = full; i < n; ++i) {
    out[i] = add ? out[i] + factor * x[i] : factor * x[i];
  }
}

// Runs one task: kv head `kv_head`, query tile `q_tile_index`, KV split
// `split`. `scores` holds plan.rows * kAttnScoreStride floats, `state`
// plan.state_floats (acc rows, then m, then l). With `finalize` the
// normalised rows go to out; otherwise the state is left for the merge.
template <KvFormat kFormat>
HWY_NOINLINE void AttentionTask(const detail::AttentionCall& c, size_t kv_head,
                                size_t q_tile_index, size_t split,
                                float* HWY_RESTRICT scores,
                                float* HWY_RESTRICT state, bool finalize) {
  constexpr size_t S = detail::kAttnScoreStride;
  constexpr bool kScaled = kFormat == KvFormat::kInt8;
  const AttentionParams& p = c.params;
  const detail::AttentionPlan& plan = c.plan;
  const KvBlockLayout& layout = c.cache->layout();
  const size_t dim = p.head_dim;
  const size_t group = plan.group;
  const size_t bt = layout.block_tokens();
  const size_t q_begin = q_tile_index * plan.q_tile;
  const size_t q_end = std::min(c.num_queries, q_begin + plan.q_tile);
  const size_t rows = (q_end - q_begin) * group;
  const size_t acc_stride = plan.acc_stride;
  float* acc = state;
  float* m = state + plan.rows * acc_stride;
  float* l = m + plan.rows;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (size_t r = 0; r < rows; ++r) {
    std::fill(acc + r * acc_stride, acc + r * acc_stride + dim, 0.0f);
    m[r] = neg_inf;
    l[r] = 0.0f;
  }
  std::fill(scores, scores + rows * S, 0.0f);

  // Row r is query q_begin + r / group and q head kv_head * group + r % group.
  auto query_pos = [&](size_t r) {
    return c.q_start_pos + q_begin + r / group;
  };
  auto q_row = [&](size_t r) {
    return c.q + (q_begin + r / group) * c.q_stride +
           (kv_head * group + r % group) * dim;
  };

  // Positions any row of the tile attends to, cut to this split's blocks.
  size_t lo = AttentionWindowBegin(p, query_pos(0));
  size_t hi = query_pos(rows - 1) + 1;
  {
    const size_t first_block = lo / bt;
    const size_t blocks = (hi + bt - 1) / bt - first_block;
    const size_t per_split = (blocks + plan.splits - 1) / plan.splits;
    const size_t b0 = first_block + std::min(blocks, split * per_split);
    const size_t b1 = first_block + std::min(blocks, (split + 1) * per_split);
    lo = std::max(lo, b0 * bt);
    hi = std::min(hi, b1 * bt);
  }

  HWY_ALIGN float k_mult[S];
  HWY_ALIGN float v_mult[S];
  if constexpr (kScaled) {
    std::fill(k_mult, k_mult + S, 0.0f);
    std::fill(v_mult, v_mult + S, 0.0f);
  }
  const size_t row_bytes = layout.TokenStride();
  // A tile is aligned to kAttnTileTokens positions and may span blocks; a
  // segment is its part inside one block.
  auto for_each_segment = [&](size_t t0, size_t t1, const auto& func) {
    for (size_t seg = t0; seg < t1;) {
      const size_t b = seg / bt;
      const size_t seg_end = std::min(t1, (b + 1) * bt);
      func(c.cache->BlockData(c.block_table[b]), seg - b * bt, seg - t0,
           seg_end - seg);
      seg = seg_end;
    }
  };
  constexpr size_t kTile = detail::kAttnTileTokens;
  // Prefetch distance: one tile. 2 and 4 tiles measured no faster on Zen 5
  // (the misses the prefetches cannot hide were TLB misses; see
  // BlockPool's huge-page advice).
  constexpr size_t kPrefetchTokens = kTile;
  for (size_t t0 = lo; t0 < hi;) {
    const size_t t1 = std::min(hi, (t0 / kTile + 1) * kTile);
    const size_t n = t1 - t0;
    for_each_segment(
        t0, t1,
        [&](const uint8_t* block, size_t slot, size_t col, size_t count) {
          if constexpr (kScaled) {
            memcpy(
                k_mult + col,
                block + layout.ScaleOffset(c.layer, kv_head, KvPart::kK, slot),
                count * sizeof(float));
            memcpy(
                v_mult + col,
                block + layout.ScaleOffset(c.layer, kv_head, KvPart::kV, slot),
                count * sizeof(float));
          }
          const uint8_t* k_rows =
              block + layout.RowOffset(c.layer, kv_head, KvPart::kK, slot);
          // The same positions one tile later, when they are needed and lie in
          // one block.
          const uint8_t* k_ahead = nullptr;
          const uint8_t* v_ahead = nullptr;
          const size_t ahead = t0 + col + kPrefetchTokens;
          if (ahead + count <= hi && ahead / bt == (ahead + count - 1) / bt) {
            const uint8_t* ahead_block =
                c.cache->BlockData(c.block_table[ahead / bt]);
            k_ahead = ahead_block + layout.RowOffset(c.layer, kv_head,
                                                     KvPart::kK, ahead % bt);
            v_ahead = ahead_block + layout.RowOffset(c.layer, kv_head,
                                                     KvPart::kV, ahead % bt);
            if constexpr (kScaled) {
              // The scales sit in their own lines after the codes, and are
              // read before any dot of the block: without this each block
              // would start with two demand misses. (Neutral on Zen 5, where
              // int8 decode is compute-bound; it matters where it is not.)
              hwy::Prefetch(ahead_block + layout.ScaleOffset(c.layer, kv_head,
                                                             KvPart::kK,
                                                             ahead % bt));
              hwy::Prefetch(ahead_block + layout.ScaleOffset(c.layer, kv_head,
                                                             KvPart::kV,
                                                             ahead % bt));
            }
          }
          for (size_t r0 = 0; r0 < rows; r0 += kDotRows) {
            const size_t group_rows = std::min(kDotRows, rows - r0);
            const float* q_ptrs[4];
            for (size_t j = 0; j < 4; ++j) {
              q_ptrs[j] = q_row(r0 + std::min(j, group_rows - 1));
            }
            DotRows<kFormat>(group_rows, q_ptrs, dim, k_rows, row_bytes, count,
                             scores + r0 * S + col, r0 == 0 ? k_ahead : nullptr,
                             v_ahead);
          }
        });
    if constexpr (kScaled) {
      for (size_t j = 0; j < n; ++j) k_mult[j] *= p.scale;
    }
    for (size_t r = 0; r < rows; ++r) {
      const size_t pos = query_pos(r);
      const size_t first = AttentionWindowBegin(p, pos);
      const size_t begin = first > t0 ? first - t0 : 0;
      const size_t end = std::min(pos + 1 > t0 ? pos + 1 - t0 : 0, n);
      const float alpha = SoftmaxTileRow(
          scores + r * S, n, begin, end, kScaled ? k_mult : nullptr, p.scale,
          p.softcap, kScaled ? v_mult : nullptr, m + r, l + r);
      if (alpha != 1.0f) ScaleRow(acc + r * acc_stride, dim, alpha);
    }
    for_each_segment(
        t0, t1,
        [&](const uint8_t* block, size_t slot, size_t col, size_t count) {
          const uint8_t* v_rows =
              block + layout.RowOffset(c.layer, kv_head, KvPart::kV, slot);
          for (size_t r0 = 0; r0 < rows; r0 += 4) {
            AccumulateRows<kFormat>(
                std::min<size_t>(4, rows - r0), scores + r0 * S + col, count,
                v_rows, row_bytes, dim, acc + r0 * acc_stride, acc_stride);
          }
        });
    t0 = t1;
  }

  if (!finalize) return;
  for (size_t r = 0; r < rows; ++r) {
    const size_t h = kv_head * group + r % group;
    float factor = 1.0f / l[r];
    if (p.sinks != nullptr) {
      const float top = std::max(m[r], p.sinks[h]);
      const float keep = std::exp(m[r] - top);
      factor = keep / (l[r] * keep + std::exp(p.sinks[h] - top));
    }
    ScaledCopy(acc + r * acc_stride, dim, factor, /*add=*/false,
               c.out + (q_begin + r / group) * c.out_stride + h * dim);
  }
}

// Merges the split states of one (kv head, query tile) with the log-sum-exp
// rescale: out = sum_s e^(m_s - M) acc_s / (sum_s e^(m_s - M) l_s [+ sink]).
HWY_INLINE void MergeSplits(const detail::AttentionCall& c, size_t kv_head,
                            size_t q_tile_index, const float* states,
                            size_t first_task) {
  const AttentionParams& p = c.params;
  const detail::AttentionPlan& plan = c.plan;
  const size_t q_begin = q_tile_index * plan.q_tile;
  const size_t q_end = std::min(c.num_queries, q_begin + plan.q_tile);
  const size_t rows = (q_end - q_begin) * plan.group;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (size_t r = 0; r < rows; ++r) {
    const size_t h = kv_head * plan.group + r % plan.group;
    auto state = [&](size_t s) {
      return states + (first_task + s) * plan.state_floats;
    };
    auto m_of = [&](size_t s) {
      return state(s)[plan.rows * plan.acc_stride + r];
    };
    auto l_of = [&](size_t s) {
      return state(s)[plan.rows * plan.acc_stride + plan.rows + r];
    };
    float top = p.sinks != nullptr ? p.sinks[h] : neg_inf;
    for (size_t s = 0; s < plan.splits; ++s) top = std::max(top, m_of(s));
    float denom = p.sinks != nullptr ? std::exp(p.sinks[h] - top) : 0.0f;
    for (size_t s = 0; s < plan.splits; ++s) {
      if (m_of(s) != neg_inf) denom += l_of(s) * std::exp(m_of(s) - top);
    }
    float* out =
        c.out + (q_begin + r / plan.group) * c.out_stride + h * p.head_dim;
    bool written = false;
    for (size_t s = 0; s < plan.splits; ++s) {
      if (m_of(s) == neg_inf) continue;  // an empty split: acc is all zero
      ScaledCopy(state(s) + r * plan.acc_stride, p.head_dim,
                 std::exp(m_of(s) - top) / denom, written, out);
      written = true;
    }
  }
}

template <KvFormat kFormat>
HWY_INLINE void AttentionForFormat(const detail::AttentionCall& c) {
  const detail::AttentionPlan& plan = c.plan;
  const size_t kv_heads = c.params.num_kv_heads;
  float* worker_scratch = static_cast<float*>(c.workspace);
  float* partials = worker_scratch + plan.workers * plan.worker_floats;
  const bool split = plan.splits > 1;
  // Task order: the last (longest, under the causal mask) query tiles first,
  // so the tail of the parallel region holds the short ones.
  ParallelFor(c.runner, plan.num_tasks, [&](size_t task, size_t worker) {
    const size_t s = task % plan.splits;
    const size_t kv_head = (task / plan.splits) % kv_heads;
    const size_t q_tile = plan.q_tiles - 1 - task / (plan.splits * kv_heads);
    float* scratch = worker_scratch + worker * plan.worker_floats;
    float* scores = scratch;
    float* state = split ? partials + task * plan.state_floats
                         : scratch + (plan.worker_floats - plan.state_floats);
    AttentionTask<kFormat>(c, kv_head, q_tile, s, scores, state, !split);
  });
  if (!split) return;
  ParallelFor(c.runner, kv_heads * plan.q_tiles, [&](size_t i, size_t) {
    const size_t kv_head = i % kv_heads;
    const size_t q_tile = plan.q_tiles - 1 - i / kv_heads;
    MergeSplits(c, kv_head, q_tile, partials, i * plan.splits);
  });
}

HWY_INLINE void AttentionPaged(const detail::AttentionCall& c) {
  switch (c.cache->layout().format()) {
    case KvFormat::kF32:
      return AttentionForFormat<KvFormat::kF32>(c);
    case KvFormat::kF16:
      return AttentionForFormat<KvFormat::kF16>(c);
    case KvFormat::kInt8:
      return AttentionForFormat<KvFormat::kInt8>(c);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
