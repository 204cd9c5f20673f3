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
// Per tile: raw dots q.k (K is dim-major in the pages, so a vector holds one
// dim of N positions and q's values are broadcast, up to 4 query rows per
// register block: see DotTileDimMajor and the integer path below), then per
// row
// scale, soft-cap, causal/window mask, new max, p = exp(s - m) with
// ExpNonPositive, rescale of acc and l by exp(m_old - m_new) when the
// max grew, and acc += p * V (up to 4 rows x 2 vectors of head_dim). The
// K rows of the next tile are prefetched while the q.k dots run, its V rows
// while p.v runs (on the integer path, during q.k instead).
// K and V are read in place: f16 widened with PromoteTo, int8 codes widened
// to f32; the int8 row scale factors out of both products (score = scale_k *
// q.codes, acc += (p * scale_v) * codes), so it is applied once per token.
// On AVX3_DL (VNNI) and AVX2, int8 K and V skip the widening: q and the
// weights are rounded to 15-bit integers and both products run as integer
// dot products (vpdpbusd / vpdpwssd, or vpmaddwd on AVX2; see "Integer q.k"
// and "Integer p.v" below for the layouts and the error bounds;
// AttentionInt8IntegerDots says when).
//
// Decode has one query, so a single sequence would give only num_kv_heads
// tasks; the plan then splits each task's KV range across tasks (whole
// blocks each), and a second pass merges the per-split (m, l, acc) with the
// log-sum-exp rescale.
//
// Exp: ExpNonPositive (exp_nonpositive-inl.h), within 2u relative (1.29u
// with FMA) for arguments in [-87, 0]; ours are <= 0, and it returns exactly
// 0 below about -87.68 (terms < e^-87 of the largest weight) and for masked
// (-inf) logits. The per-tile rescale factors and the split merge use
// std::exp (one call per row per tile). Soft-capping uses Highway's Tanh
// (documented <= 4 ulp).
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
// ... and twice that where a query tile attends to this many positions or
// more. Decode of Llama-3.2-1B (8 kv heads) on 2 workers otherwise runs 8
// whole-range tasks; split in two, it measured 1.1-1.4x faster at 8K and 32K
// positions (f16 and int8, Xeon VM, alternating runs, 2026-12-06), while at
// 512 and 2K the extra splits and merge were 5-15% slower. SmolLM2 (3 kv
// heads, already split 4 ways) measured the same with 6 splits at 8K+.
constexpr size_t kAttnLongSpanTokens = 4096;
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
  size_t qcode_floats = 0;   // per-worker int8 query codes (integer q.k)
  size_t worker_floats = 0;  // per-worker logits, query codes and a state
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
  // Per row: head_dim / 16 chunks of 2 x 64 bytes (hi and lo codes, see
  // QuantizeQueryRow), then an int32 offset correction and a float step.
  plan.qcode_floats = AttnRoundUp16(plan.rows * (2 * p.head_dim + 2));
  plan.worker_floats = AttnRoundUp16(plan.rows * kAttnScoreStride) +
                       plan.qcode_floats + plan.state_floats;
  plan.workers = std::max<size_t>(workers, 1);

  // Positions one query tile attends to, at most.
  size_t span = q_start_pos + num_queries;
  if (p.sliding_window != 0) {
    span = std::min(span, p.sliding_window + plan.q_tile - 1);
  }
  const size_t base_tasks = p.num_kv_heads * plan.q_tiles;
  // Splits for `per_worker` tasks per worker.
  auto splits_wanted = [&](size_t per_worker) {
    if (plan.workers == 1 || base_tasks >= per_worker * plan.workers) {
      return size_t{1};
    }
    size_t want = (per_worker * plan.workers + base_tasks - 1) / base_tasks;
    // Equal task counts per worker (decode tasks are equally long): e.g.
    // 3 kv heads on 2 workers take 4 splits (12 tasks), not 3 (5 + 4).
    for (size_t extra = 0; extra < plan.workers; ++extra) {
      if (base_tasks * (want + extra) % plan.workers == 0) return want + extra;
    }
    return want;
  };
  const size_t want =
      splits_wanted(span >= kAttnLongSpanTokens ? 2 * kAttnTasksPerWorker
                                                : kAttnTasksPerWorker);
  plan.splits = std::max<size_t>(1, std::min(want, span / kAttnMinSplitTokens));
  plan.num_tasks = base_tasks * plan.splits;
  // Room for the long-span splits whatever the span, so that the workspace
  // does not depend on kv_len.
  const size_t most = std::max(splits_wanted(kAttnTasksPerWorker),
                               splits_wanted(2 * kAttnTasksPerWorker));
  plan.partial_tasks = most > 1 ? base_tasks * most : 0;
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
#include "qkern/base/prefetch.h"
#include "qkern/kernels/exp_nonpositive-inl.h"

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

#define QKERN_ATTN_FOR_ROWS(X) X(0) X(1) X(2) X(3)

// Prefetches the lines of the next tile's dim-major K segment (from
// `k_ahead`, `dim` dim rows `dim_stride` apart, `bytes` bytes each) into L2,
// spread over `steps` calls to Step() rather than in one burst (which fills
// the miss queue). A null `k_ahead` prefetches nothing.
class SpreadPrefetcher {
 public:
  SpreadPrefetcher(const uint8_t* k_ahead, size_t dim, size_t dim_stride,
                   size_t bytes, size_t steps) {
    if (k_ahead == nullptr) return;
    next_ = reinterpret_cast<uintptr_t>(k_ahead) & ~uintptr_t{63};
    end_ =
        reinterpret_cast<uintptr_t>(k_ahead) + (dim - 1) * dim_stride + bytes;
    const size_t lines = (end_ - next_ + 63) / 64;
    per_step_ = (lines + steps - 1) / steps;
  }
  HWY_INLINE void Step() {
    for (size_t j = 0; j < per_step_ && next_ < end_; ++j, next_ += 64) {
      PrefetchToL2(reinterpret_cast<const void*>(next_));
    }
  }

 private:
  uintptr_t next_ = 0, end_ = 0;
  size_t per_step_ = 0;
};

// scores[r * kAttnScoreStride + t] = q_r . k_t (unscaled: int8 codes) for
// kRows query rows and `n` positions of dim-major K (see KvBlockLayout):
// value d of position t at kt + d * dim_stride + t * element bytes. A vector
// holds N positions of one dim, so each (dim, row) is one FMA with q_r[d]
// broadcast and the sums come out in position order: no sums across lanes
// (on token-major rows those cost about as many instructions as the FMAs at
// head_dim 64). Two accumulators per row (even and odd dims) keep
// 2 * kRows FMA chains in flight. Writes up to N - 1 floats past column
// n - 1 and reads up to N - 1 values past the last dim's n positions (inside
// the block: kKvMaxOverreadBytes). Unless null, `k_ahead` is the same
// segment a tile later; its lines are prefetched a few per dim pair.
template <KvFormat kFormat, size_t kRows>
HWY_INLINE void DotTileDimMajor(const float* const* q, size_t dim,
                                const uint8_t* kt, size_t dim_stride, size_t n,
                                float* scores, const uint8_t* k_ahead) {
  static_assert(kRows >= 1 && kRows <= 4, "1..4 rows per register block");
  using Load = KvLoad<kFormat>;
  const DAttn d;
  const size_t N = hn::Lanes(d);
  constexpr size_t S = detail::kAttnScoreStride;
  constexpr size_t kElement = kFormat == KvFormat::kF32   ? 4
                              : kFormat == KvFormat::kF16 ? 2
                                                          : 1;
  const float* HWY_RESTRICT q0 = q[0];
  const float* HWY_RESTRICT q1 = q[kRows > 1 ? 1 : 0];
  const float* HWY_RESTRICT q2 = q[kRows > 2 ? 2 : 0];
  const float* HWY_RESTRICT q3 = q[kRows > 3 ? 3 : 0];
  // Spread over the first pass's dim pairs.
  SpreadPrefetcher prefetcher(k_ahead, dim, dim_stride, n * kElement,
                              (dim + 1) / 2);
  // Two vectors of positions per pass while the segment has them: each
  // broadcast q value then feeds two FMAs (one per vector) rather than one.
  // Two dims per iteration; the first pass also issues the prefetches (a
  // separate loop: the test inside it cost ~20% more instructions). With
  // AccumulateTile's loop below, warm f16 decode on AVX2 (Zen 3 VM,
  // 2026-12-06, context 2048, 1 thread, best call of three alternating
  // runs) went SmolLM2 15.9 -> 17.0 GB/s and Llama 13.9 -> 15.0.
  auto pass2 = [&](size_t t, auto prefetch) HWY_ATTR {
#define QKERN_ATTN_ZERO(r) auto a##r = hn::Zero(d), b##r = hn::Zero(d);
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_ZERO)
#undef QKERN_ATTN_ZERO
    const uint8_t* kd = kt;
    size_t i = 0;
    for (; i + 2 <= dim; i += 2, kd += 2 * dim_stride) {
      if constexpr (decltype(prefetch)::value) prefetcher.Step();
      const VAttn k0 = Load::Vec(kd, t);
      const VAttn k1 = Load::Vec(kd, t + N);
      const VAttn k2 = Load::Vec(kd + dim_stride, t);
      const VAttn k3 = Load::Vec(kd + dim_stride, t + N);
#define QKERN_ATTN_FMA_POSITIONS(r)              \
  if constexpr (kRows > r) {                     \
    const VAttn q_even = hn::Set(d, q##r[i]);    \
    a##r = hn::MulAdd(q_even, k0, a##r);         \
    b##r = hn::MulAdd(q_even, k1, b##r);         \
    const VAttn q_odd = hn::Set(d, q##r[i + 1]); \
    a##r = hn::MulAdd(q_odd, k2, a##r);          \
    b##r = hn::MulAdd(q_odd, k3, b##r);          \
  }
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA_POSITIONS)
#undef QKERN_ATTN_FMA_POSITIONS
    }
    if (i < dim) {  // odd head_dim
      const VAttn k0 = Load::Vec(kd, t);
      const VAttn k1 = Load::Vec(kd, t + N);
#define QKERN_ATTN_FMA_LAST2(r)               \
  if constexpr (kRows > r) {                  \
    const VAttn q_last = hn::Set(d, q##r[i]); \
    a##r = hn::MulAdd(q_last, k0, a##r);      \
    b##r = hn::MulAdd(q_last, k1, b##r);      \
  }
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA_LAST2)
#undef QKERN_ATTN_FMA_LAST2
    }
#define QKERN_ATTN_STORE_POSITIONS(r)            \
  if constexpr (kRows > r) {                     \
    hn::StoreU(a##r, d, scores + r * S + t);     \
    hn::StoreU(b##r, d, scores + r * S + t + N); \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_STORE_POSITIONS)
#undef QKERN_ATTN_STORE_POSITIONS
  };
  size_t t = 0;
  if (2 * N <= n) {
    pass2(t, std::true_type());
    for (t = 2 * N; t + 2 * N <= n; t += 2 * N) pass2(t, std::false_type());
  }
  // One vector per pass: two accumulators per row (even and odd dims).
  for (; t < n; t += N) {
#define QKERN_ATTN_ZERO(r) auto a##r = hn::Zero(d), b##r = hn::Zero(d);
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_ZERO)
#undef QKERN_ATTN_ZERO
    const uint8_t* kd = kt;
    size_t i = 0;
    for (; i + 2 <= dim; i += 2, kd += 2 * dim_stride) {
      if (t == 0) prefetcher.Step();
      const VAttn k0 = Load::Vec(kd, t);
      const VAttn k1 = Load::Vec(kd + dim_stride, t);
#define QKERN_ATTN_FMA_DIMS(r)                            \
  if constexpr (kRows > r) {                              \
    a##r = hn::MulAdd(hn::Set(d, q##r[i]), k0, a##r);     \
    b##r = hn::MulAdd(hn::Set(d, q##r[i + 1]), k1, b##r); \
  }
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA_DIMS)
#undef QKERN_ATTN_FMA_DIMS
    }
    if (i < dim) {  // odd head_dim
      const VAttn k0 = Load::Vec(kd, t);
#define QKERN_ATTN_FMA_LAST(r) \
  if constexpr (kRows > r) a##r = hn::MulAdd(hn::Set(d, q##r[i]), k0, a##r);
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_FMA_LAST)
#undef QKERN_ATTN_FMA_LAST
    }
#define QKERN_ATTN_STORE_DIMS(r) \
  if constexpr (kRows > r)       \
    hn::StoreU(hn::Add(a##r, b##r), d, scores + r * S + t);
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_STORE_DIMS)
#undef QKERN_ATTN_STORE_DIMS
  }
}

// acc_r += sum_t p[r * kAttnScoreStride + t] * v_t for kRows rows and `n` V
// rows. Two vectors of head_dim per pass give 2 * kRows FMA chains; each V
// vector is widened once and used by every row. Unless null, `v_ahead` is the
// V rows a tile later (same stride), prefetched one row per position.
template <KvFormat kFormat, size_t kRows>
HWY_INLINE void AccumulateTile(const float* p, size_t n, const uint8_t* v,
                               size_t v_stride, size_t dim, float* acc,
                               size_t acc_stride, const uint8_t* v_ahead) {
  static_assert(kRows >= 1 && kRows <= 4, "1..4 rows per register block");
  using Load = KvLoad<kFormat>;
  const DAttn d;
  const size_t N = hn::Lanes(d);
  constexpr size_t S = detail::kAttnScoreStride;
  float* HWY_RESTRICT acc0 = acc;
  float* HWY_RESTRICT acc1 = acc + (kRows > 1 ? 1 : 0) * acc_stride;
  float* HWY_RESTRICT acc2 = acc + (kRows > 2 ? 2 : 0) * acc_stride;
  float* HWY_RESTRICT acc3 = acc + (kRows > 3 ? 3 : 0) * acc_stride;
  // 2 N dims of every row over the tile's positions, two positions per
  // iteration; the first chunk also prefetches the V rows a tile later (a
  // separate loop: the test inside it cost instructions per position).
  auto chunk2 = [&](size_t i, auto prefetch) HWY_ATTR {
#define QKERN_ATTN_LOAD2(r)                          \
  auto a##r##0 = hn::Zero(d), a##r##1 = hn::Zero(d); \
  if constexpr (kRows > r) {                         \
    a##r##0 = hn::LoadU(d, acc##r + i);              \
    a##r##1 = hn::LoadU(d, acc##r + i + N);          \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_LOAD2)
#undef QKERN_ATTN_LOAD2
#define QKERN_ATTN_FMA2(r, t)                    \
  if constexpr (kRows > r) {                     \
    const VAttn pr = hn::Set(d, p[r * S + (t)]); \
    a##r##0 = hn::MulAdd(pr, v0, a##r##0);       \
    a##r##1 = hn::MulAdd(pr, v1, a##r##1);       \
  }
#define QKERN_ATTN_POSITION(t)                                        \
  {                                                                   \
    const uint8_t* vt = v + (t)*v_stride;                             \
    if constexpr (decltype(prefetch)::value) {                        \
      for (size_t off = 0; off < v_stride; off += 64) {               \
        PrefetchToL2(v_ahead + (t)*v_stride + off);                   \
      }                                                               \
    }                                                                 \
    const VAttn v0 = Load::Vec(vt, i);                                \
    const VAttn v1 = Load::Vec(vt, i + N);                            \
    QKERN_ATTN_FMA2(0, t)                                             \
    QKERN_ATTN_FMA2(1, t) QKERN_ATTN_FMA2(2, t) QKERN_ATTN_FMA2(3, t) \
  }
    size_t t = 0;
    for (; t + 2 <= n; t += 2) {
      QKERN_ATTN_POSITION(t)
      QKERN_ATTN_POSITION(t + 1)
    }
    if (t < n) QKERN_ATTN_POSITION(t)
#undef QKERN_ATTN_POSITION
#undef QKERN_ATTN_FMA2
#define QKERN_ATTN_STORE2(r)                \
  if constexpr (kRows > r) {                \
    hn::StoreU(a##r##0, d, acc##r + i);     \
    hn::StoreU(a##r##1, d, acc##r + i + N); \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_STORE2)
#undef QKERN_ATTN_STORE2
  };
  size_t i = 0;
  for (; i + 2 * N <= dim; i += 2 * N) {
    if (i == 0 && v_ahead != nullptr) {
      chunk2(i, std::true_type());
    } else {
      chunk2(i, std::false_type());
    }
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

// Dispatch DotTileDimMajor / AccumulateTile on the (1..4) rows of a block.
template <KvFormat kFormat>
HWY_INLINE void DotRowsDimMajor(size_t rows, const float* const* q, size_t dim,
                                const uint8_t* kt, size_t dim_stride, size_t n,
                                float* scores, const uint8_t* k_ahead) {
  switch (rows) {
    case 1:
      return DotTileDimMajor<kFormat, 1>(q, dim, kt, dim_stride, n, scores,
                                         k_ahead);
    case 2:
      return DotTileDimMajor<kFormat, 2>(q, dim, kt, dim_stride, n, scores,
                                         k_ahead);
    case 3:
      return DotTileDimMajor<kFormat, 3>(q, dim, kt, dim_stride, n, scores,
                                         k_ahead);
    default:
      return DotTileDimMajor<kFormat, 4>(q, dim, kt, dim_stride, n, scores,
                                         k_ahead);
  }
}

template <KvFormat kFormat>
HWY_INLINE void AccumulateRows(size_t rows, const float* p, size_t n,
                               const uint8_t* v, size_t v_stride, size_t dim,
                               float* acc, size_t acc_stride,
                               const uint8_t* v_ahead) {
  switch (rows) {
    case 1:
      return AccumulateTile<kFormat, 1>(p, n, v, v_stride, dim, acc, acc_stride,
                                        v_ahead);
    case 2:
      return AccumulateTile<kFormat, 2>(p, n, v, v_stride, dim, acc, acc_stride,
                                        v_ahead);
    case 3:
      return AccumulateTile<kFormat, 3>(p, n, v, v_stride, dim, acc, acc_stride,
                                        v_ahead);
    default:
      return AccumulateTile<kFormat, 4>(p, n, v, v_stride, dim, acc, acc_stride,
                                        v_ahead);
  }
}

// Integer q.k for int8 K (AVX3_DL): vpdpbusd multiplies 64 code pairs per
// instruction where the f32 path needs 4 widenings and 4 FMAs, and decode
// at long context is bound by that arithmetic, not by the bytes.
//
// q is quantized per softmax row in two int8 parts: with x = q * 127 / amax,
// hi = round(x), lo = round(128 (x - hi)) in [-64, 64], and q is taken as
// (amax / (127 * 128)) (128 hi + lo). x - hi and 128 (x - hi) are exact, so
// |q~ - q| <= amax / 32512 plus a few ulps of q: the logit error is that
// times |scale| * sum_d |k_d| (tests/attention_test.cc checks the bound).
// vpdpbusd wants unsigned by signed bytes: K codes are flipped to k + 128
// and 128 * (128 sum(hi) + sum(lo)) is subtracted from each dot. Sums wrap
// in int32 but the final value fits (|dot| <= 127 * 16320 * head_dim), so
// the wrapping cancels out.
//
// Layout: K is dim-major in the pages, so the 16 positions of 4 consecutive
// dims are four 16-byte runs; one byte permute turns them into a vector of
// 16 lanes, one per position, each holding its 4 dims: vpdpbusd against the
// row's 4 q codes of those dims, broadcast from memory, adds each position's
// partial dot in its own lane. No sums across lanes, and the K vector is
// shared by all rows of the register block (the q heads of a GQA group).
#undef QKERN_ATTN_INT_DOTS
#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX2
#define QKERN_ATTN_INT_DOTS 1
#else
#define QKERN_ATTN_INT_DOTS 0
#endif
constexpr bool kAttnInt8IntegerDot = QKERN_ATTN_INT_DOTS;
// Largest head_dim the integer path takes (and the int32 sums allow).
constexpr size_t kAttnIntDotMaxDim = 512;

HWY_INLINE bool UseInt8IntegerDot(KvFormat format, size_t dim) {
  return kAttnInt8IntegerDot && format == KvFormat::kInt8 && dim % 64 == 0 &&
         dim <= kAttnIntDotMaxDim;
}

// Bytes of query codes per softmax row (see QuantizeQueryRow).
HWY_INLINE size_t QueryCodeBytes(size_t dim) { return dim * 2; }

#if HWY_TARGET == HWY_AVX3_DL

// Writes the codes of q[0, dim): hi at codes[0, dim), lo at
// codes[dim, 2 dim); and the correction and step the dot kernel applies. A
// row with amax below 2^-100 is taken as zero (its logits are below
// 2^-100 |scale| sum |k|). dim % 16 == 0.
HWY_INLINE void QuantizeQueryRow(const float* HWY_RESTRICT q, size_t dim,
                                 uint8_t* HWY_RESTRICT codes, int32_t* corr,
                                 float* step) {
  __m512 vmax = _mm512_setzero_ps();
  for (size_t d = 0; d < dim; d += 16) {
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(q + d)));
  }
  const float amax = _mm512_reduce_max_ps(vmax);
  const bool zero = !(amax >= 0x1p-100f);
  const __m512 inv = _mm512_set1_ps(zero ? 0.0f : 127.0f / amax);
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  __m512i sums = _mm512_setzero_si512();
  for (size_t d = 0; d < dim; d += 16) {
    const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(q + d), inv);
    const __m512 hi = _mm512_roundscale_ps(x, kNearest);
    // x - hi and its product by 128 are exact.
    const __m512 lo = _mm512_roundscale_ps(
        _mm512_mul_ps(_mm512_sub_ps(x, hi), _mm512_set1_ps(128.0f)), kNearest);
    const __m512i hi32 = _mm512_cvtps_epi32(hi);
    const __m512i lo32 = _mm512_cvtps_epi32(lo);
    sums = _mm512_add_epi32(sums,
                            _mm512_add_epi32(_mm512_slli_epi32(hi32, 7), lo32));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + d),
                     _mm512_cvtepi32_epi8(hi32));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + dim + d),
                     _mm512_cvtepi32_epi8(lo32));
  }
  *corr = 128 * _mm512_reduce_add_epi32(sums);
  *step = zero ? 0.0f : amax / (127.0f * 128.0f);
}

// acc += (u8 k) . (s8 q) per 4-byte group, q's 4 bytes at `q` broadcast to
// every lane (a broadcast load; vpdpbusd's embedded-broadcast memory form
// measured ~8% slower on Zen 4). Highway 1.0.3 has no such op and its
// AVX3_DL target does not enable avx512vnni for the intrinsic, hence the asm
// (as in int8_dot-inl.h).
HWY_INLINE __m512i DpBusdBroadcast(__m512i acc, __m512i k, const uint8_t* q) {
  int32_t word;
  memcpy(&word, q, 4);
  const __m512i qv = _mm512_set1_epi32(word);
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(k), "v"(qv));
  return acc;
}

// 16 positions from `k` (dim-major, dim_stride bytes between dims) of dims
// 4g..4g+3, as 4-byte groups per position, flipped to k + 128. Reads 16
// bytes of each dim (past the segment's positions: see DotTileDimMajor).
HWY_INLINE __m512i LoadKQuadsVnni(const uint8_t* k, size_t dim_stride,
                                  __m512i transpose, __m512i flip) {
  __m512i v;
  if (dim_stride == 16) {  // 16-token blocks: the 4 runs are adjacent
    v = _mm512_loadu_si512(k);
  } else {
    v = _mm512_castsi128_si512(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(k)));
    v = _mm512_inserti32x4(
        v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(k + dim_stride)),
        1);
    v = _mm512_inserti32x4(
        v,
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(k + 2 * dim_stride)),
        2);
    v = _mm512_inserti32x4(
        v,
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(k + 3 * dim_stride)),
        3);
  }
  return _mm512_xor_si512(_mm512_permutexvar_epi8(transpose, v), flip);
}

// scores[r * kAttnScoreStride + t] = q~_r . k_t * k_mult[t] (the logit:
// k_mult holds row scale times attention scale) for kRows rows and `n`
// positions of dim-major int8 K, 16 per pass; may write up to 15 floats
// past column n - 1 (reading k_mult that far) and reads K as
// DotTileDimMajor does. Row r's codes at qc[r] (QuantizeQueryRow).
// Prefetches `k_ahead` as DotTileDimMajor does, and v_ahead_bytes of V rows
// from `v_ahead` (null: none) over the same steps.
template <size_t kRows>
HWY_NOINLINE void DotTileInt8(const uint8_t* const* qc, const int32_t* corr,
                              const float* step, const float* k_mult,
                              size_t dim, const uint8_t* kt, size_t dim_stride,
                              size_t n, float* scores, const uint8_t* k_ahead,
                              const uint8_t* v_ahead, size_t v_ahead_bytes) {
  constexpr size_t S = detail::kAttnScoreStride;
  // Byte 4 p + j of the result is byte p of 128-bit block j (dim j's
  // position p).
  alignas(64) static constexpr uint8_t kTranspose[64] = {
      0,  16, 32, 48, 1,  17, 33, 49, 2,  18, 34, 50, 3,  19, 35, 51,
      4,  20, 36, 52, 5,  21, 37, 53, 6,  22, 38, 54, 7,  23, 39, 55,
      8,  24, 40, 56, 9,  25, 41, 57, 10, 26, 42, 58, 11, 27, 43, 59,
      12, 28, 44, 60, 13, 29, 45, 61, 14, 30, 46, 62, 15, 31, 47, 63};
  const __m512i transpose = _mm512_load_si512(kTranspose);
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  // Spread over the first pass's quads of dims.
  SpreadPrefetcher prefetcher(k_ahead, dim, dim_stride, n, dim / 4);
  // The same positions' V rows, one contiguous run, over the same steps.
  SpreadPrefetcher v_prefetcher(v_ahead, 1, 0, v_ahead_bytes, dim / 4);
  for (size_t t = 0; t < n; t += 16) {
    const __m512i z = _mm512_setzero_si512();
    __m512i h0 = z, l0 = z, h1 = z, l1 = z, h2 = z, l2 = z, h3 = z, l3 = z;
    for (size_t g = 0; g < dim; g += 4) {
      if (t == 0) {
        prefetcher.Step();
        v_prefetcher.Step();
      }
      const __m512i k =
          LoadKQuadsVnni(kt + g * dim_stride + t, dim_stride, transpose, flip);
#define QKERN_ATTN_VNNI_ROW(r)                        \
  if constexpr (kRows > r) {                          \
    h##r = DpBusdBroadcast(h##r, k, qc[r] + g);       \
    l##r = DpBusdBroadcast(l##r, k, qc[r] + dim + g); \
  }
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_VNNI_ROW)
#undef QKERN_ATTN_VNNI_ROW
    }
#define QKERN_ATTN_VNNI_STORE(r)                                             \
  if constexpr (kRows > r) {                                                 \
    const __m512i sums =                                                     \
        _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(h##r, 7), l##r), \
                         _mm512_set1_epi32(corr[r]));                        \
    const __m512 dots =                                                      \
        _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_set1_ps(step[r]));    \
    _mm512_storeu_ps(scores + r * S + t,                                     \
                     _mm512_mul_ps(dots, _mm512_loadu_ps(k_mult + t)));      \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_VNNI_STORE)
#undef QKERN_ATTN_VNNI_STORE
  }
}

// Integer p.v for int8 V (AVX3_DL), the same trade as q.k: per (row, tile)
// the weights w_t = p_t * v_scale_t (in [0, max v_scale]) are rounded to
// int16 codes c_t = round(w_t * 32767 / M), M = the tile's largest w, and
// vpdpwssd adds c_t v_t + c_t+1 v_t+1 into int32 lanes (exact: |sum| <=
// 64 * 32767 * 127 < 2^31), scaled by M / 32767 once per tile. A weight
// moves by <= M / 65534 + 2.01 u M (the reciprocal and the product are
// rounded); summed over a tile of <= 64 positions, an output element moves
// by <= 1.01 (64 / 65534) sum_t pi_t max_d |v_td| (each M is one of the
// tile's w, and 127 v_scale_t = max_d |v_td|; tests/attention_test.cc checks
// it).

// acc += v . w per 32-bit lane (int16 pairs).
HWY_INLINE __m512i DpWssd(__m512i acc, __m512i v, __m512i w) {
  asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(v), "v"(w));
  return acc;
}

// acc_r[0, dim) += step_r * sum_t c_rt v_t for kRows rows; codes of row r at
// codes + r * 2 kAttnScoreStride (int16), v[t] the V row of position t.
// dim is a multiple of 64. Lanes hold dims in the order unpacklo/hi leave
// them; a permute per 16 dims restores it once per tile. (The next tile's V
// rows were prefetched during q.k: DotTileInt8.)
template <size_t kRows>
HWY_NOINLINE void AccumulateTileInt8(const int16_t* codes, const float* step,
                                     size_t n, const uint8_t* const* v,
                                     size_t dim, float* acc,
                                     size_t acc_stride) {
  constexpr size_t CS = 2 * detail::kAttnScoreStride;
  const __m512i idx_lo =
      _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i idx_hi = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27,
                                          26, 25, 24, 11, 10, 9, 8);
  for (size_t g = 0; g < dim; g += 64) {
    const __m512i z = _mm512_setzero_si512();
    __m512i a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;
    __m512i c0 = z, c1 = z, c2 = z, c3 = z, e0 = z, e1 = z, e2 = z, e3 = z;
    for (size_t t = 0; t < n; t += 2) {
      // An odd n pairs the last row with itself; its partner code is 0.
      const uint8_t* v0 = v[t] + g;
      const uint8_t* v1 = v[std::min(t + 1, n - 1)] + g;
      const __m512i x0 = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v0)));
      const __m512i y0 = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v1)));
      const __m512i x1 = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v0 + 32)));
      const __m512i y1 = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v1 + 32)));
      const __m512i l0 = _mm512_unpacklo_epi16(x0, y0);
      const __m512i h0 = _mm512_unpackhi_epi16(x0, y0);
      const __m512i l1 = _mm512_unpacklo_epi16(x1, y1);
      const __m512i h1 = _mm512_unpackhi_epi16(x1, y1);
      // The pair (c_t, c_t+1) is broadcast once per row, for 4 products.
#define QKERN_ATTN_PV_ROW(r, A)                \
  if constexpr (kRows > r) {                   \
    int32_t pair;                              \
    memcpy(&pair, codes + r * CS + t, 4);      \
    const __m512i w = _mm512_set1_epi32(pair); \
    A##0 = DpWssd(A##0, l0, w);                \
    A##1 = DpWssd(A##1, h0, w);                \
    A##2 = DpWssd(A##2, l1, w);                \
    A##3 = DpWssd(A##3, h1, w);                \
  }
      QKERN_ATTN_PV_ROW(0, a)
      QKERN_ATTN_PV_ROW(1, b)
      QKERN_ATTN_PV_ROW(2, c)
      QKERN_ATTN_PV_ROW(3, e)
#undef QKERN_ATTN_PV_ROW
    }
    auto flush = [&](size_t r, __m512i s0, __m512i s1, __m512i s2, __m512i s3) {
      float* out = acc + r * acc_stride + g;
      const __m512 f = _mm512_set1_ps(step[r]);
      auto add = [&](float* o, __m512i sums) {
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), f,
                                            _mm512_loadu_ps(o)));
      };
      add(out, _mm512_permutex2var_epi32(s0, idx_lo, s1));
      add(out + 16, _mm512_permutex2var_epi32(s0, idx_hi, s1));
      add(out + 32, _mm512_permutex2var_epi32(s2, idx_lo, s3));
      add(out + 48, _mm512_permutex2var_epi32(s2, idx_hi, s3));
    };
    flush(0, a0, a1, a2, a3);
    if constexpr (kRows > 1) flush(1, b0, b1, b2, b3);
    if constexpr (kRows > 2) flush(2, c0, c1, c2, c3);
    if constexpr (kRows > 3) flush(3, e0, e1, e2, e3);
  }
}

#elif HWY_TARGET == HWY_AVX2

// The integer paths on AVX2, which has no VNNI: vpmaddwd multiplies int16
// pairs and adds each pair's two products into an int32 lane, so it takes
// the place of both vpdpbusd (q.k) and vpdpwssd (p.v) at 8 lanes. Against
// the f32 path it needs half the multiplies (one vpmaddwd does 16 products,
// an FMA 8) and no int-to-float conversion of the codes, but a vpaddd per
// vpmaddwd and a shuffle of the codes, so the instruction count falls
// little: warm decode (context 2048, 1 thread, Zen 3 VM, 2026-12-06, best
// call of three alternating runs) went Llama 7.3 -> 7.8 GB/s and SmolLM2
// 8.7 -> 9.3 against the f32 path.
//
// q.k: q is one int16 code per dim, 128 hi + lo = round(128 x) with x and
// hi, lo as in the VNNI path above (the same values, so the same step and
// error bound), and K codes stay signed: no flip and no correction. A K
// vector holds 8 positions, each with its codes of dims d and d + 1 side by
// side (two 16-byte runs of dim-major K interleaved, then sign-extended);
// vpmaddwd against the row's broadcast code pair (q_d, q_d+1) adds both
// products into the position's lane. |dot| <= 16256 * 127 * head_dim < 2^31.
//
// p.v: the weights' int16 codes exactly as in the VNNI path; a V vector
// holds 8 dims of two positions t, t + 1 side by side, against the
// broadcast code pair (c_t, c_t+1).

// Writes q[0, dim)'s int16 codes at codes[0, 2 dim) and the step; *corr = 0
// (signed K needs none). dim % 16 == 0.
HWY_INLINE void QuantizeQueryRow(const float* HWY_RESTRICT q, size_t dim,
                                 uint8_t* HWY_RESTRICT codes, int32_t* corr,
                                 float* step) {
  const DAttn df;
  VAttn vmax = hn::Zero(df);
  for (size_t d = 0; d < dim; d += hn::Lanes(df)) {
    vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, q + d)));
  }
  const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
  const bool zero = !(amax >= 0x1p-100f);
  const VAttn inv = hn::Set(df, zero ? 0.0f : 127.0f / amax);
  const VAttn c128 = hn::Set(df, 128.0f);
  const hn::Rebind<int16_t, DAttn> d16;
  int16_t* codes16 = reinterpret_cast<int16_t*>(codes);
  for (size_t d = 0; d < dim; d += hn::Lanes(df)) {
    // x * 128 is exact, so one rounding gives 128 hi + lo.
    const VAttn x = hn::Mul(hn::LoadU(df, q + d), inv);
    hn::StoreU(hn::DemoteTo(d16, hn::NearestInt(hn::Mul(x, c128))), d16,
               codes16 + d);
  }
  *corr = 0;
  *step = zero ? 0.0f : amax / (127.0f * 128.0f);
}

// The 16 bytes at x and at y interleaved (x0 y0 x1 y1 ...) and
// sign-extended to int16: pairs 0-7 in lo, 8-15 in hi.
struct WidenedPairs {
  __m256i lo, hi;
};
HWY_INLINE WidenedPairs InterleaveWiden(const uint8_t* x, const uint8_t* y) {
  const __m128i vx = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  const __m128i vy = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y));
  return {_mm256_cvtepi8_epi16(_mm_unpacklo_epi8(vx, vy)),
          _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(vx, vy))};
}

// acc + x . w per int16 pair, w the int16 pair at `pair` broadcast.
HWY_INLINE __m256i MaddBroadcastPair(__m256i acc, __m256i x, const void* pair) {
  int32_t word;
  memcpy(&word, pair, 4);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(x, _mm256_set1_epi32(word)));
}

// Row r of a kernel's register block: a##r += lo . w and b##r += hi . w, w
// the int16 pair at `pair` (both kernels below keep lo / hi and a / b).
#define QKERN_ATTN_AVX2_MADD_ROW(r, pair)     \
  if constexpr (kRows > r) {                  \
    a##r = MaddBroadcastPair(a##r, lo, pair); \
    b##r = MaddBroadcastPair(b##r, hi, pair); \
  }

// scores[r * kAttnScoreStride + t] = q~_r . k_t * k_mult[t] as in the VNNI
// DotTileInt8 (same arguments and reads; corr unused), 16 positions per
// pass as two vectors of 8.
template <size_t kRows>
HWY_NOINLINE void DotTileInt8(const uint8_t* const* qc, const int32_t* corr,
                              const float* step, const float* k_mult,
                              size_t dim, const uint8_t* kt, size_t dim_stride,
                              size_t n, float* scores, const uint8_t* k_ahead,
                              const uint8_t* v_ahead, size_t v_ahead_bytes) {
  (void)corr;
  constexpr size_t S = detail::kAttnScoreStride;
  // Spread over the first pass's pairs of dims.
  SpreadPrefetcher prefetcher(k_ahead, dim, dim_stride, n, dim / 2);
  SpreadPrefetcher v_prefetcher(v_ahead, 1, 0, v_ahead_bytes, dim / 2);
  // One pass of 16 positions; the first also issues the prefetches (a
  // separate loop: a test inside it cost the register allocation).
  auto pass = [&](size_t t, auto prefetch) HWY_ATTR {
    // Row r: positions t..t+7 in a##r, t+8..t+15 in b##r.
    const __m256i z = _mm256_setzero_si256();
    __m256i a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
    const uint8_t* k = kt + t;
    for (size_t d = 0; d < dim; d += 2, k += 2 * dim_stride) {
      if constexpr (decltype(prefetch)::value) {
        prefetcher.Step();
        v_prefetcher.Step();
      }
      const WidenedPairs kp = InterleaveWiden(k, k + dim_stride);
      const __m256i lo = kp.lo, hi = kp.hi;
#define QKERN_ATTN_AVX2_QK_ROW(r) QKERN_ATTN_AVX2_MADD_ROW(r, qc[r] + 2 * d)
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_AVX2_QK_ROW)
#undef QKERN_ATTN_AVX2_QK_ROW
    }
#define QKERN_ATTN_AVX2_QK_STORE(r)                                            \
  if constexpr (kRows > r) {                                                   \
    const __m256 f = _mm256_set1_ps(step[r]);                                  \
    float* out = scores + r * S + t;                                           \
    _mm256_storeu_ps(out,                                                      \
                     _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a##r), f), \
                                   _mm256_loadu_ps(k_mult + t)));              \
    _mm256_storeu_ps(out + 8,                                                  \
                     _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(b##r), f), \
                                   _mm256_loadu_ps(k_mult + t + 8)));          \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_AVX2_QK_STORE)
#undef QKERN_ATTN_AVX2_QK_STORE
  };
  for (size_t t = 0; t < n; t += 16) {
    if (t == 0) {
      pass(t, std::true_type());
    } else {
      pass(t, std::false_type());
    }
  }
}

// acc_r[0, dim) += step_r * sum_t c_rt v_t as the VNNI AccumulateTileInt8
// (same arguments), 16 dims per pass over the tile's positions.
template <size_t kRows>
HWY_NOINLINE void AccumulateTileInt8(const int16_t* codes, const float* step,
                                     size_t n, const uint8_t* const* v,
                                     size_t dim, float* acc,
                                     size_t acc_stride) {
  constexpr size_t CS = 2 * detail::kAttnScoreStride;
  for (size_t g = 0; g < dim; g += 16) {
    // Row r: dims g..g+7 in a##r, g+8..g+15 in b##r.
    const __m256i z = _mm256_setzero_si256();
    __m256i a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
    for (size_t t = 0; t < n; t += 2) {
      // An odd n pairs the last row with itself; its partner code is 0.
      const WidenedPairs vp =
          InterleaveWiden(v[t] + g, v[std::min(t + 1, n - 1)] + g);
      const __m256i lo = vp.lo, hi = vp.hi;
#define QKERN_ATTN_AVX2_PV_ROW(r) \
  QKERN_ATTN_AVX2_MADD_ROW(r, codes + r * CS + t)
      QKERN_ATTN_FOR_ROWS(QKERN_ATTN_AVX2_PV_ROW)
#undef QKERN_ATTN_AVX2_PV_ROW
    }
#define QKERN_ATTN_AVX2_PV_FLUSH(r)                                        \
  if constexpr (kRows > r) {                                               \
    const __m256 f = _mm256_set1_ps(step[r]);                              \
    float* out = acc + r * acc_stride + g;                                 \
    _mm256_storeu_ps(out, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r), f,     \
                                          _mm256_loadu_ps(out)));          \
    _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(b##r), f, \
                                              _mm256_loadu_ps(out + 8)));  \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_AVX2_PV_FLUSH)
#undef QKERN_ATTN_AVX2_PV_FLUSH
  }
}

#undef QKERN_ATTN_AVX2_MADD_ROW

#endif  // HWY_TARGET == HWY_AVX3_DL / HWY_AVX2

#if QKERN_ATTN_INT_DOTS

// The largest of s[0, n rounded up to a vector) (weights >= 0).
HWY_INLINE float WeightsRowMax(const float* s, size_t n) {
  const DAttn d;
  VAttn vmax = hn::Zero(d);
  for (size_t j = 0; j < n; j += hn::Lanes(d)) {
    vmax = hn::Max(vmax, hn::LoadU(d, s + j));
  }
  return hn::GetLane(hn::MaxOfLanes(d, vmax));
}

// Rounds s[0, n) (weights >= 0, zero past n up to the vector end; wmax their
// largest) in place to int16 codes at ((int16_t*)s)[0, n rounded up to a
// vector); returns the step.
HWY_INLINE float QuantizeWeightsRow(float* s, size_t n, float wmax) {
  // Below 2^-110 (where 32767 / wmax would near FLT_MAX) the tile is dropped:
  // it moves an output by < 64 * 2^-110 * max |v| relative to the row's
  // largest weight (1), like the terms Exp flushes.
  const float inv = wmax >= 0x1p-110f ? 32767.0f / wmax : 0.0f;
  const DAttn d;
  const hn::Rebind<int16_t, DAttn> d16;
  const size_t N = hn::Lanes(d);
  const VAttn v_inv = hn::Set(d, inv);
  int16_t* codes = reinterpret_cast<int16_t*>(s);
  // Forward in place: the codes of floats [j, j + N) land in bytes
  // [2 j, 2 j + 2 N), below the floats not read yet.
  for (size_t j = 0; j < n; j += N) {
    const auto c = hn::NearestInt(hn::Mul(hn::LoadU(d, s + j), v_inv));
    hn::StoreU(hn::DemoteTo(d16, c), d16, codes + j);
  }
  return inv == 0.0f ? 0.0f : wmax / 32767.0f;
}

HWY_INLINE void DotRowsInt8(size_t rows, const uint8_t* const* qc,
                            const int32_t* corr, const float* step,
                            const float* k_mult, size_t dim, const uint8_t* kt,
                            size_t dim_stride, size_t n, float* scores,
                            const uint8_t* k_ahead, const uint8_t* v_ahead,
                            size_t v_ahead_bytes) {
  switch (rows) {
    case 1:
      return DotTileInt8<1>(qc, corr, step, k_mult, dim, kt, dim_stride, n,
                            scores, k_ahead, v_ahead, v_ahead_bytes);
    case 2:
      return DotTileInt8<2>(qc, corr, step, k_mult, dim, kt, dim_stride, n,
                            scores, k_ahead, v_ahead, v_ahead_bytes);
    case 3:
      return DotTileInt8<3>(qc, corr, step, k_mult, dim, kt, dim_stride, n,
                            scores, k_ahead, v_ahead, v_ahead_bytes);
    default:
      return DotTileInt8<4>(qc, corr, step, k_mult, dim, kt, dim_stride, n,
                            scores, k_ahead, v_ahead, v_ahead_bytes);
  }
}

HWY_INLINE void AccumulateRowsInt8(size_t rows, const int16_t* codes,
                                   const float* step, size_t n,
                                   const uint8_t* const* v, size_t dim,
                                   float* acc, size_t acc_stride) {
  switch (rows) {
    case 1:
      return AccumulateTileInt8<1>(codes, step, n, v, dim, acc, acc_stride);
    case 2:
      return AccumulateTileInt8<2>(codes, step, n, v, dim, acc, acc_stride);
    case 3:
      return AccumulateTileInt8<3>(codes, step, n, v, dim, acc, acc_stride);
    default:
      return AccumulateTileInt8<4>(codes, step, n, v, dim, acc, acc_stride);
  }
}

#endif  // QKERN_ATTN_INT_DOTS

// Online-softmax step of one row over one tile, in two halves (the caller
// updates m, l and the row's acc in between).
//
// SoftmaxTileLogits: on entry s[0, n) holds raw dots; `k_mult` (padded, or
// null for the uniform `scale`) scales them, unless `prescaled`. Positions
// outside [begin, end) are masked to -inf (the mask work is skipped when the
// whole tile is valid). Returns the tile's largest logit; when all are
// masked or -inf, -inf with s = 0 through the last vector (weights of a row
// that skips the tile).
HWY_INLINE float SoftmaxTileLogits(float* HWY_RESTRICT s, size_t n,
                                   size_t begin, size_t end,
                                   const float* k_mult, float scale,
                                   bool prescaled, float softcap) {
  const DAttn d;
  const size_t N = hn::Lanes(d);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // No position of the tile has weight: zero weights through the last vector
  // (the integer p.v reads whole vectors), which the caller then skips.
  auto no_weights = [&] {
    for (size_t j = 0; j < (n + N - 1) / N * N; ++j) s[j] = 0.0f;
    return neg_inf;
  };
  if (begin >= end) return no_weights();
  const VAttn v_neg_inf = hn::Set(d, neg_inf);
  const VAttn v_begin = hn::Set(d, static_cast<float>(begin));
  const VAttn v_end = hn::Set(d, static_cast<float>(end));
  const VAttn v_scale = hn::Set(d, scale);
  const VAttn v_cap = hn::Set(d, softcap);
  const VAttn v_inv_cap = hn::Set(d, softcap > 0.0f ? 1.0f / softcap : 0.0f);
  // Columns past n hold leftovers of the dot kernels: a full tile still
  // masks its last partial vector.
  const bool full = begin == 0 && end == n && n % N == 0;
  // Logits the dot kernel already finished need no store back.
  const bool unchanged = full && prescaled && !(softcap > 0.0f);
  VAttn v_max = v_neg_inf;
  for (size_t j = 0; j < n; j += N) {
    VAttn x = hn::LoadU(d, s + j);
    if (!prescaled) {
      x = hn::Mul(x, k_mult != nullptr ? hn::LoadU(d, k_mult + j) : v_scale);
    }
    if (softcap > 0.0f) x = hn::Mul(v_cap, hn::Tanh(d, hn::Mul(x, v_inv_cap)));
    if (!full) {
      const VAttn index = hn::Iota(d, static_cast<float>(j));
      const auto valid = hn::And(hn::Ge(index, v_begin), hn::Lt(index, v_end));
      x = hn::IfThenElse(valid, x, v_neg_inf);
    }
    if (!unchanged) hn::StoreU(x, d, s + j);
    v_max = hn::Max(v_max, x);
  }
  const float tile_max = hn::GetLane(hn::MaxOfLanes(d, v_max));
  // Every logit -inf (|q.k| overflowed f32): the -inf logits must not reach
  // p.v as weights (-inf * v, and NaN once quantized). A NaN max (NaN in q)
  // still propagates.
  return tile_max == neg_inf ? no_weights() : tile_max;
}

// Second half: s[0, n) = p = exp(logit - m_new), times `v_mult` when given
// (int8 V scales). Returns the sum of p (before v_mult). Masked positions
// give exactly 0.
HWY_INLINE float SoftmaxTileWeights(float* HWY_RESTRICT s, size_t n,
                                    float m_new, const float* v_mult) {
  const DAttn d;
  const size_t N = hn::Lanes(d);
  const VAttn v_m = hn::Set(d, m_new);
  VAttn v_sum = hn::Zero(d);
  for (size_t j = 0; j < n; j += N) {
    // Masked lanes (-inf) come out exactly 0.
    const VAttn e = ExpNonPositive(d, hn::Sub(hn::LoadU(d, s + j), v_m));
    v_sum = hn::Add(v_sum, e);
    hn::StoreU(v_mult != nullptr ? hn::Mul(e, hn::LoadU(d, v_mult + j)) : e, d,
               s + j);
  }
  return SumLanes(v_sum);
}

// Both halves at once for kRows (<= 4) rows, S floats apart from s, when
// every row attends to the whole tile, n is a multiple of the vector length
// and there is no soft-cap. Row by row, each row's chain of lane reductions
// (max, then sum, then the int8 weights' max) and scalar steps waits on the
// previous row's; interleaved, the rows overlap, and the int8 weights' max
// comes out of the exp pass instead of another pass over the tile (Llama
// int8 decode 4-7% faster on Zen 4, warm).
// Scales the logits as SoftmaxTileLogits does, then updates m[r] and l[r] and
// writes alpha[r] = exp(m_old - m_new) (the caller rescales acc by it) and,
// unless w_max is null, w_max[r] = the row's largest weight (after v_mult).
// Returns false, with the logits scaled and stored but nothing else changed,
// when a row's tile max is not above -inf; the caller then goes row by row.
template <size_t kRows>
HWY_INLINE bool SoftmaxTileRowsFull(float* HWY_RESTRICT s, size_t n,
                                    const float* k_mult, float scale,
                                    bool prescaled, const float* v_mult,
                                    float* m, float* l, float* alpha,
                                    float* w_max) {
  constexpr size_t S = detail::kAttnScoreStride;
  const DAttn d;
  const size_t N = hn::Lanes(d);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const VAttn v_scale = hn::Set(d, scale);
  VAttn x0 = hn::Set(d, neg_inf), x1 = x0, x2 = x0, x3 = x0;
  for (size_t j = 0; j < n; j += N) {
    const VAttn mult =
        prescaled || k_mult == nullptr ? v_scale : hn::LoadU(d, k_mult + j);
#define QKERN_ATTN_MAX_ROW(r)              \
  if constexpr (kRows > r) {               \
    VAttn y = hn::LoadU(d, s + r * S + j); \
    if (!prescaled) {                      \
      y = hn::Mul(y, mult);                \
      hn::StoreU(y, d, s + r * S + j);     \
    }                                      \
    x##r = hn::Max(x##r, y);               \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_MAX_ROW)
#undef QKERN_ATTN_MAX_ROW
  }
  float m_new[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  bool finite = true;
#define QKERN_ATTN_NEW_MAX(r)                                    \
  if constexpr (kRows > r) {                                     \
    const float tile_max = hn::GetLane(hn::MaxOfLanes(d, x##r)); \
    finite = finite && tile_max > neg_inf;                       \
    m_new[r] = std::max(m[r], tile_max);                         \
  }
  QKERN_ATTN_FOR_ROWS(QKERN_ATTN_NEW_MAX)
#undef QKERN_ATTN_NEW_MAX
  if (!finite) return false;
  const VAttn m0 = hn::Set(d, m_new[0]), m1 = hn::Set(d, m_new[1]),
              m2 = hn::Set(d, m_new[2]), m3 = hn::Set(d, m_new[3]);
  const VAttn zero = hn::Zero(d);
  VAttn sum0 = zero, sum1 = zero, sum2 = zero, sum3 = zero;
  VAttn w0 = zero, w1 = zero, w2 = zero, w3 = zero;
  for (size_t j = 0; j < n; j += N) {
    const VAttn vm = v_mult != nullptr ? hn::LoadU(d, v_mult + j) : zero;
#define QKERN_ATTN_EXP_ROW(r)                                                \
  if constexpr (kRows > r) {                                                 \
    VAttn e = ExpNonPositive(d, hn::Sub(hn::LoadU(d, s + r * S + j), m##r)); \
    sum##r = hn::Add(sum##r, e);                                             \
    if (v_mult != nullptr) e = hn::Mul(e, vm);                               \
    w##r = hn::Max(w##r, e);                                                 \
    hn::StoreU(e, d, s + r * S + j);                                         \
  }
    QKERN_ATTN_FOR_ROWS(QKERN_ATTN_EXP_ROW)
#undef QKERN_ATTN_EXP_ROW
  }
#define QKERN_ATTN_ROW_STATE(r)                                            \
  if constexpr (kRows > r) {                                               \
    /* exp(-inf) = 0 for a row's first tile; exactly 1 when the max stayed \
       (the usual case once a row has seen its largest logits). */         \
    alpha[r] = m_new[r] == m[r] ? 1.0f : std::exp(m[r] - m_new[r]);        \
    l[r] = l[r] * alpha[r] + SumLanes(sum##r);                             \
    m[r] = m_new[r];                                                       \
    if (w_max != nullptr) w_max[r] = hn::GetLane(hn::MaxOfLanes(d, w##r)); \
  }
  QKERN_ATTN_FOR_ROWS(QKERN_ATTN_ROW_STATE)
#undef QKERN_ATTN_ROW_STATE
  return true;
}

#undef QKERN_ATTN_FOR_ROWS

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
// `split`. `scores` holds plan.rows * kAttnScoreStride floats, `qcodes`
// plan.qcode_floats, `state` plan.state_floats (acc rows, then m, then l).
// With `finalize` the normalised rows go to out; otherwise the state is left
// for the merge.
template <KvFormat kFormat>
HWY_NOINLINE void AttentionTask(const detail::AttentionCall& c, size_t kv_head,
                                size_t q_tile_index, size_t split,
                                float* HWY_RESTRICT scores,
                                float* HWY_RESTRICT qcodes,
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

  // Integer q.k: the rows' query codes, then their corrections and steps.
  const bool int_dot = UseInt8IntegerDot(kFormat, dim);
#if QKERN_ATTN_INT_DOTS
  uint8_t* q_codes = reinterpret_cast<uint8_t*>(qcodes);
  int32_t* q_corr =
      reinterpret_cast<int32_t*>(q_codes + plan.rows * QueryCodeBytes(dim));
  float* q_step = reinterpret_cast<float*>(q_corr + plan.rows);
  if (int_dot) {
    for (size_t r = 0; r < rows; ++r) {
      QuantizeQueryRow(q_row(r), dim, q_codes + r * QueryCodeBytes(dim),
                       q_corr + r, q_step + r);
    }
  }
#else
  (void)qcodes;
#endif

  const VAttn v_attn_scale = hn::Set(DAttn(), p.scale);
  // Integer p.v: the V row of each position of the tile.
  const uint8_t* v_ptrs[detail::kAttnTileTokens];
  // At each segment's first column: its V rows a tile later (null where
  // they do not lie in one block), for the p.v of the f32 / f16 / int8
  // FMA paths.
  const uint8_t* v_ahead_at[detail::kAttnTileTokens];
  HWY_ALIGN float k_mult[S];
  HWY_ALIGN float v_mult[S];
  if constexpr (kScaled) {
    std::fill(k_mult, k_mult + S, 0.0f);
    std::fill(v_mult, v_mult + S, 0.0f);
  }
  // V rows are token-major, row_bytes apart; K is dim-major, its dims
  // k_dim_stride bytes apart.
  const size_t row_bytes = layout.TokenStride(KvPart::kV);
  const size_t k_token_stride = layout.TokenStride(KvPart::kK);
  const size_t k_dim_stride = layout.ValueStride(KvPart::kK);
  // This task's parts inside a block, taken from the layout once: per
  // segment only `slot * stride` is added.
  const size_t k_values = layout.ValuesOffset(c.layer, kv_head, KvPart::kK);
  const size_t v_values = layout.ValuesOffset(c.layer, kv_head, KvPart::kV);
  const size_t k_scales =
      kScaled ? layout.ScaleOffset(c.layer, kv_head, KvPart::kK, 0) : 0;
  const size_t v_scales =
      kScaled ? layout.ScaleOffset(c.layer, kv_head, KvPart::kV, 0) : 0;
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
  // Prefetch distance: one tile. Two tiles measured no faster on Zen 4
  // (SmolLM2 f16 a little faster, Llama int8 slower). Spreading the lines
  // over the dot loops (K over q.k's dim pairs, V over p.v's positions)
  // beat issuing each segment's lines in one burst: f16 decode ~1.4x.
  constexpr size_t kPrefetchTokens = kTile;
  for (size_t t0 = lo; t0 < hi;) {
    const size_t t1 = std::min(hi, (t0 / kTile + 1) * kTile);
    const size_t n = t1 - t0;
    for_each_segment(
        t0, t1,
        [&](const uint8_t* block, size_t slot, size_t col, size_t count) {
          if constexpr (kScaled) {
            // k_mult = row scale * attention scale (one product, as before).
            const DAttn d;
            const size_t N = hn::Lanes(d);
            const float* k_scale_f = reinterpret_cast<const float*>(
                block + k_scales + slot * sizeof(float));
            size_t j = 0;
            for (; j + N <= count; j += N) {
              hn::StoreU(hn::Mul(hn::LoadU(d, k_scale_f + j), v_attn_scale), d,
                         k_mult + col + j);
            }
            for (; j < count; ++j) k_mult[col + j] = k_scale_f[j] * p.scale;
            memcpy(v_mult + col, block + v_scales + slot * sizeof(float),
                   count * sizeof(float));
          }
          const uint8_t* k_rows = block + k_values + slot * k_token_stride;
          if (int_dot) {
            const uint8_t* v_seg = block + v_values + slot * row_bytes;
            for (size_t j = 0; j < count; ++j) {
              v_ptrs[col + j] = v_seg + j * row_bytes;
            }
          }
          // The same positions one tile later, when they are needed and lie in
          // one block.
          const uint8_t* k_ahead = nullptr;
          const uint8_t* v_ahead = nullptr;
          const size_t ahead = t0 + col + kPrefetchTokens;
          const size_t ahead_b = ahead / bt;
          if (ahead + count <= hi && ahead_b == (ahead + count - 1) / bt) {
            const uint8_t* ahead_block =
                c.cache->BlockData(c.block_table[ahead_b]);
            const size_t ahead_slot = ahead - ahead_b * bt;
            k_ahead = ahead_block + k_values + ahead_slot * k_token_stride;
            v_ahead = ahead_block + v_values + ahead_slot * row_bytes;
            if constexpr (kScaled) {
              // The scales sit in their own lines after the codes, and are
              // read before any dot of the block: without this each block
              // would start with two demand misses. (Neutral on Zen 5, where
              // int8 decode is compute-bound; it matters where it is not.)
              PrefetchToL2(ahead_block + k_scales + ahead_slot * sizeof(float));
              PrefetchToL2(ahead_block + v_scales + ahead_slot * sizeof(float));
            }
          }
          // The FMA paths prefetch V during p.v, spreading the misses over
          // the tile; the integer path, whose p.v is short, during q.k
          // beside K (Zen 4, alternating runs at 8K and 32K: 2 threads 0-15%
          // faster, mostly 3-11%, than during its p.v; 1 thread -3% to +9%).
          v_ahead_at[col] = v_ahead;
#if QKERN_ATTN_INT_DOTS
          if (int_dot) {
            for (size_t r0 = 0; r0 < rows; r0 += 4) {
              const size_t group_rows = std::min<size_t>(4, rows - r0);
              const uint8_t* qc[4];
              for (size_t j = 0; j < 4; ++j) {
                qc[j] = q_codes + (r0 + std::min(j, group_rows - 1)) *
                                      QueryCodeBytes(dim);
              }
              DotRowsInt8(group_rows, qc, q_corr + r0, q_step + r0,
                          k_mult + col, dim, k_rows, k_dim_stride, count,
                          scores + r0 * S + col, r0 == 0 ? k_ahead : nullptr,
                          r0 == 0 ? v_ahead : nullptr, count * row_bytes);
            }
            return;
          }
#endif
          for (size_t r0 = 0; r0 < rows; r0 += 4) {
            const size_t group_rows = std::min<size_t>(4, rows - r0);
            const float* q_ptrs[4];
            for (size_t j = 0; j < 4; ++j) {
              q_ptrs[j] = q_row(r0 + std::min(j, group_rows - 1));
            }
            DotRowsDimMajor<kFormat>(group_rows, q_ptrs, dim, k_rows,
                                     k_dim_stride, count, scores + r0 * S + col,
                                     r0 == 0 ? k_ahead : nullptr);
          }
        });
    // Rows whose mask leaves the whole tile in (all of decode's but the
    // partial tiles at a range's ends) go 4 at a time; the rest row by row.
    bool whole_tile = n % hn::Lanes(DAttn()) == 0 && !(p.softcap > 0.0f);
    for (size_t r = 0; r < rows && whole_tile; r += group) {
      const size_t pos = query_pos(r);
      whole_tile = AttentionWindowBegin(p, pos) <= t0 && pos + 1 >= t1;
    }
    const float* const logit_mult = kScaled ? k_mult : nullptr;
    const float* const weight_mult = kScaled ? v_mult : nullptr;
    for (size_t r0 = 0; r0 < rows; r0 += 4) {
      const size_t group_rows = std::min<size_t>(4, rows - r0);
      float alpha[4];
      float w_max[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // int8 weights (integer p.v)
      bool logits_scaled = int_dot;
      bool done = false;
      if (whole_tile) {
        float* const w_max_out = int_dot ? w_max : nullptr;
        switch (group_rows) {
          case 1:
            done = SoftmaxTileRowsFull<1>(scores + r0 * S, n, logit_mult,
                                          p.scale, int_dot, weight_mult, m + r0,
                                          l + r0, alpha, w_max_out);
            break;
          case 2:
            done = SoftmaxTileRowsFull<2>(scores + r0 * S, n, logit_mult,
                                          p.scale, int_dot, weight_mult, m + r0,
                                          l + r0, alpha, w_max_out);
            break;
          case 3:
            done = SoftmaxTileRowsFull<3>(scores + r0 * S, n, logit_mult,
                                          p.scale, int_dot, weight_mult, m + r0,
                                          l + r0, alpha, w_max_out);
            break;
          default:
            done = SoftmaxTileRowsFull<4>(scores + r0 * S, n, logit_mult,
                                          p.scale, int_dot, weight_mult, m + r0,
                                          l + r0, alpha, w_max_out);
        }
        logits_scaled = true;  // stored by the attempt either way
      }
      for (size_t i = 0; i < group_rows && !done; ++i) {
        const size_t r = r0 + i;
        const size_t pos = query_pos(r);
        const size_t first = AttentionWindowBegin(p, pos);
        const size_t begin = first > t0 ? first - t0 : 0;
        const size_t end = std::min(pos + 1 > t0 ? pos + 1 - t0 : 0, n);
        const float tile_max =
            SoftmaxTileLogits(scores + r * S, n, begin, end, logit_mult,
                              p.scale, logits_scaled, p.softcap);
        alpha[i] = 1.0f;
        if (tile_max == neg_inf) continue;  // weights are all 0
        const float m_old = m[r];
        const float m_new = std::max(m_old, tile_max);
        // exp(-inf) = 0 for a row's first tile; exactly 1 when the max stayed
        // (the usual case once a row has seen its largest logits).
        alpha[i] = m_new == m_old ? 1.0f : std::exp(m_old - m_new);
        const float sum =
            SoftmaxTileWeights(scores + r * S, n, m_new, weight_mult);
        l[r] = l[r] * alpha[i] + sum;
        m[r] = m_new;
#if QKERN_ATTN_INT_DOTS
        if (int_dot) w_max[i] = WeightsRowMax(scores + r * S, n);
#endif
      }
      for (size_t i = 0; i < group_rows; ++i) {
        if (alpha[i] != 1.0f) {
          ScaleRow(acc + (r0 + i) * acc_stride, dim, alpha[i]);
        }
      }
#if QKERN_ATTN_INT_DOTS
      if (int_dot) {
        float p_step[4];
        for (size_t i = 0; i < group_rows; ++i) {
          p_step[i] = QuantizeWeightsRow(scores + (r0 + i) * S, n, w_max[i]);
        }
        AccumulateRowsInt8(
            group_rows, reinterpret_cast<const int16_t*>(scores + r0 * S),
            p_step, n, v_ptrs, dim, acc + r0 * acc_stride, acc_stride);
      }
#endif
    }
    if (int_dot) {
      t0 = t1;
      continue;
    }
    for_each_segment(
        t0, t1,
        [&](const uint8_t* block, size_t slot, size_t col, size_t count) {
          const uint8_t* v_rows = block + v_values + slot * row_bytes;
          for (size_t r0 = 0; r0 < rows; r0 += 4) {
            AccumulateRows<kFormat>(
                std::min<size_t>(4, rows - r0), scores + r0 * S + col, count,
                v_rows, row_bytes, dim, acc + r0 * acc_stride, acc_stride,
                r0 == 0 ? v_ahead_at[col] : nullptr);
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
    float* qcodes =
        scratch + detail::AttnRoundUp16(plan.rows * detail::kAttnScoreStride);
    float* state = split ? partials + task * plan.state_floats
                         : scratch + (plan.worker_floats - plan.state_floats);
    AttentionTask<kFormat>(c, kv_head, q_tile, s, scores, qcodes, state,
                           !split);
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
