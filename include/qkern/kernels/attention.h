// Fused causal attention reading K and V straight from the paged KV cache
// (f32, f16 or int8 pages, no dequantized copy), with GQA/MQA, sliding
// window, logit soft-capping, attention sinks and a custom scale.
//
//   AttentionParams params;
//   params.num_q_heads = 32; params.num_kv_heads = 8; params.head_dim = 64;
//   AttentionWorkspace ws;                       // reused across calls
//   // after WriteKV of this layer for positions [pos, pos + n):
//   Attention(cache, seq, layer, q, n, /*q_start_pos=*/pos, out, params, &ws,
//             &runner);
//
// Query i (position q_start_pos + i) attends to positions
// [max(0, q_start_pos + i + 1 - sliding_window), q_start_pos + i] of the
// sequence; all of [0, q_start_pos + num_queries) must be written for
// `layer` (committed, or reserved and written by WriteKV). n = 1 is decode;
// larger n is (chunked) prefill. q and out are num_queries rows of
// num_q_heads * head_dim floats (strides in AttentionParams, which
// attention_ref.h defines next to the reference that specifies the op); out
// must not overlap q. Positions a sequence reserved but did not write for
// `layer` are read as whatever the page holds (never out of bounds).
//
// Threads: with a runner, decode splits each head's KV range across workers
// and merges the parts, so one long sequence uses every core. The cache may
// be read by several Attention calls at once; a workspace serves one call at
// a time.
#ifndef QKERN_KERNELS_ATTENTION_H_
#define QKERN_KERNELS_ATTENTION_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/status.h"
#include "qkern/dispatch.h"
#include "qkern/kernels/attention_ref.h"
#include "qkern/kv/kv_format.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/threading/parallel.h"

namespace qkern {

// Query heads per call, at most: far above any model, and it keeps a task's
// scratch (one row state per q head of a group) bounded.
constexpr size_t kMaxAttentionQHeads = 4096;

// Reusable scratch for Attention: per-worker logit buffers and row states,
// plus the partial results of a split KV range. Its size depends on the head
// shape, the number of queries and the workers, not on the context length,
// so a decoder allocates once and never again.
class AttentionWorkspace {
 public:
  Status Reserve(size_t bytes) {
    if (!buffer_.Reserve(bytes)) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "Attention workspace: cannot allocate %zu bytes",
                        bytes);
    }
    return Status::Ok();
  }
  void* data() { return buffer_.data(); }
  size_t size() const { return buffer_.size(); }

 private:
  AlignedBuffer buffer_;
};

// Workspace bytes a call with this shape needs on `runner`.
inline size_t AttentionWorkspaceBytes(const AttentionParams& params,
                                      size_t num_queries, size_t q_start_pos,
                                      const ParallelRunner* runner) {
  if (params.num_kv_heads == 0 || params.num_q_heads < params.num_kv_heads) {
    return 0;  // not a valid shape; Attention rejects it
  }
  return detail::PlanAttention(params, num_queries, q_start_pos,
                               NumWorkers(runner))
      .workspace_bytes;
}

namespace detail {

inline Status ValidateAttentionParams(const KvCacheConfig& config,
                                      const AttentionParams& p) {
  if (p.num_kv_heads != config.num_kv_heads) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: num_kv_heads = %zu but the KV cache has %zu",
                      p.num_kv_heads, config.num_kv_heads);
  }
  if (p.head_dim != config.head_dim) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: head_dim = %zu but the KV cache has %zu",
                      p.head_dim, config.head_dim);
  }
  if (p.num_q_heads == 0 || p.num_q_heads > kMaxAttentionQHeads) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: num_q_heads = %zu, must be in [1, %zu]",
                      p.num_q_heads, kMaxAttentionQHeads);
  }
  if (p.num_q_heads % p.num_kv_heads != 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: num_q_heads = %zu is not a multiple of "
                      "num_kv_heads = %zu",
                      p.num_q_heads, p.num_kv_heads);
  }
  if (!isfinite(p.scale)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: scale = %g is not finite",
                      static_cast<double>(p.scale));
  }
  if (!(p.softcap >= 0.0f) || !isfinite(p.softcap)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: softcap = %g, must be finite and >= 0 "
                      "(0 = off)",
                      static_cast<double>(p.softcap));
  }
  const size_t row = p.num_q_heads * p.head_dim;
  if (p.q_stride != 0 && p.q_stride < row) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: q_stride = %zu is smaller than num_q_heads "
                      "* head_dim = %zu",
                      p.q_stride, row);
  }
  if (p.out_stride != 0 && p.out_stride < row) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: out_stride = %zu is smaller than "
                      "num_q_heads * head_dim = %zu",
                      p.out_stride, row);
  }
  if (p.sinks != nullptr) {
    for (size_t h = 0; h < p.num_q_heads; ++h) {
      if (!isfinite(p.sinks[h])) {
        return MakeStatus(StatusCode::kInvalidArgument,
                          "Attention: sinks[%zu] = %g is not finite", h,
                          static_cast<double>(p.sinks[h]));
      }
    }
  }
  return Status::Ok();
}

}  // namespace detail

// Whether Attention on the running target computes q.k for an int8 KV cache
// of this head_dim with integer dot products (AVX-512 VNNI or AVX2: head_dim
// a multiple of 64, at most 512). q is then rounded per (query, q head) to
// (max|q| / 16256) * (128 hi + lo) with int8 hi and lo (one int16 code on
// AVX2, the same value), and p.v runs on int16 weights: each element moves by
// at most max|q| / 32000, each logit by at most |scale| * max|q| / 32000 *
// sum_d |k_d| (attention-inl.h derives it; tests/attention_test.cc checks
// it). Otherwise q.k is f32 arithmetic on the widened codes.
inline bool AttentionInt8IntegerDots(size_t head_dim) {
  return detail::DispatchAttentionInt8IntegerDot(head_dim);
}

// Attention over positions named by a caller-provided block table (entry i
// holds positions [i * block_tokens, (i + 1) * block_tokens) of `cache`), for
// runtimes that keep their own tables. Every entry the call reads is checked
// against the pool first.
inline Status AttentionWithBlockTable(
    const PagedKvCache& cache, const uint32_t* block_table, size_t table_size,
    size_t layer, const float* q, size_t num_queries, size_t q_start_pos,
    float* out, const AttentionParams& params, AttentionWorkspace* workspace,
    const ParallelRunner* runner = nullptr) {
  if (cache.num_blocks() == 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: the KV cache is empty; make one with "
                      "PagedKvCache::Create");
  }
  const KvCacheConfig& config = cache.config();
  QKERN_RETURN_IF_ERROR(detail::ValidateAttentionParams(config, params));
  if (layer >= config.num_layers) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "Attention: layer %zu is out of range (num_layers %zu)",
                      layer, config.num_layers);
  }
  if (num_queries == 0) return Status::Ok();
  if (q == nullptr || out == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "Attention: %s is null",
                      q == nullptr ? "q" : "out");
  }
  if (workspace == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: workspace is null");
  }
  const size_t q_stride = AttentionQStride(params);
  const size_t out_stride = AttentionOutStride(params);
  size_t q_elems, out_elems;
  if (q_start_pos > SIZE_MAX - num_queries ||
      !detail::KvCheckedMul(num_queries, q_stride, &q_elems) ||
      !detail::KvCheckedMul(num_queries, out_stride, &out_elems) ||
      q_elems > (size_t{1} << 48) || out_elems > (size_t{1} << 48)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "Attention: %zu queries from position %zu with strides "
                      "%zu / %zu overflow",
                      num_queries, q_start_pos, q_stride, out_stride);
  }
  const size_t kv_len = q_start_pos + num_queries;
  const Status table_status =
      cache.ValidateBlockTable(block_table, table_size, kv_len);
  if (!table_status.ok()) {
    return MakeStatus(table_status.code(), "Attention: positions [0, %zu): %s",
                      kv_len, table_status.message().c_str());
  }

  detail::AttentionCall call;
  call.cache = &cache;
  call.block_table = block_table;
  call.layer = layer;
  call.q = q;
  call.q_stride = q_stride;
  call.num_queries = num_queries;
  call.q_start_pos = q_start_pos;
  call.out = out;
  call.out_stride = out_stride;
  call.params = params;
  call.params.scale = AttentionScale(params);
  call.params.q_stride = q_stride;
  call.params.out_stride = out_stride;
  call.plan = detail::PlanAttention(params, num_queries, q_start_pos,
                                    NumWorkers(runner));
  QKERN_RETURN_IF_ERROR(workspace->Reserve(call.plan.workspace_bytes));
  call.workspace = workspace->data();
  call.runner = runner;
  detail::DispatchAttention(call);
  return Status::Ok();
}

// Attention of `num_queries` tokens at positions [q_start_pos, q_start_pos +
// num_queries) of sequence `seq`, layer `layer`, against that sequence's
// cached K and V. Those positions must lie within the sequence's reserved
// length and have been written for `layer`.
inline Status Attention(const PagedKvCache& cache, KvSeqId seq, size_t layer,
                        const float* q, size_t num_queries, size_t q_start_pos,
                        float* out, const AttentionParams& params,
                        AttentionWorkspace* workspace,
                        const ParallelRunner* runner = nullptr) {
  if (!cache.HasSequence(seq)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Attention: unknown sequence id %llu",
                      static_cast<unsigned long long>(seq));
  }
  size_t reserved = 0;
  QKERN_RETURN_IF_ERROR(cache.ReservedLength(seq, &reserved));
  if (q_start_pos > reserved || num_queries > reserved - q_start_pos) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "Attention: queries at positions [%zu, %zu + %zu) but "
                      "sequence %llu holds %zu positions (committed and "
                      "reserved)",
                      q_start_pos, q_start_pos, num_queries,
                      static_cast<unsigned long long>(seq), reserved);
  }
  KvBlockTable table;
  QKERN_RETURN_IF_ERROR(cache.BlockTable(seq, &table));
  return AttentionWithBlockTable(cache, table.data, table.size, layer, q,
                                 num_queries, q_start_pos, out, params,
                                 workspace, runner);
}

}  // namespace qkern

#endif  // QKERN_KERNELS_ATTENTION_H_
