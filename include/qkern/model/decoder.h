// The forward pass of a Llama-family model over a paged KV cache.
//
//   Decoder decoder;
//   QKERN_RETURN_IF_ERROR(Decoder::Create(model, DecoderOptions(), &decoder));
//   decoder.AddSequence(0);
//   decoder.Eval(0, prompt.data(), prompt.size(), logits);   // prefill
//   decoder.Eval(0, &next, 1, logits);                       // decode
//
// Eval appends tokens to a sequence: prefill runs in chunks of max_batch
// tokens through the GEMM path and prefill attention; one token runs the GEMV
// path and split-KV decode attention. Several sequences live in one cache and
// may share a prefix (Fork), e.g. a fixed system prompt computed once.
//
// Per layer:  h = RMSNorm(x);  [q|k|v] = h Wqkv (+b);  RoPE(q, k);
//             cache <- k, v;   a = Attention(q);  x += a Wo;
//             h = RMSNorm(x);  [g|u] = h Wgu;  x += (silu(g) * u) Wdown.
// Logits = RMSNorm(x) Wout.
//
// A Decoder is used by one thread at a time; it runs its own thread pool (or
// the caller's ParallelRunner).
#ifndef QKERN_MODEL_DECODER_H_
#define QKERN_MODEL_DECODER_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <memory>
#include <vector>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/status.h"
#include "qkern/kernels/attention.h"
#include "qkern/kernels/matmul.h"
#include "qkern/kernels/ops.h"
#include "qkern/kernels/rope.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/model/model.h"
#include "qkern/threading/parallel.h"
#include "qkern/threading/thread_pool.h"

namespace qkern {

struct DecoderOptions {
  // Threads of the Decoder's own pool; 0 = ThreadPool::DefaultNumThreads()
  // (the physical performance cores). Ignored when `runner` is given.
  size_t num_threads = 0;
  const ParallelRunner* runner = nullptr;
  KvFormat kv_format = KvFormat::kF16;
  // Longest sequence, in tokens; 0 = the model's trained context.
  size_t context_length = 0;
  // KV cache memory; 0 = exactly one sequence of context_length.
  size_t kv_budget_bytes = 0;
  size_t kv_block_tokens = 16;
  // Tokens per prefill step: larger amortises weight reads, smaller bounds
  // the activation buffers (max_batch x (2 ffn + ...) floats).
  size_t max_batch = 128;
};

class Decoder {
 public:
  Decoder() = default;
  Decoder(Decoder&&) = default;
  Decoder& operator=(Decoder&&) = default;

  // `model` must outlive the Decoder.
  static Status Create(const Model& model, const DecoderOptions& options,
                       Decoder* out) {
    if (out == nullptr || !model.loaded()) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Decoder::Create: %s",
                        out == nullptr ? "out is null" : "the model is not loaded");
    }
    const ModelConfig& c = model.config();
    auto s = std::make_unique<State>();
    s->model = &model;
    s->options = options;
    if (s->options.max_batch == 0) s->options.max_batch = 1;
    s->context = options.context_length != 0 ? options.context_length
                                             : c.context_length;
    if (s->context > static_cast<size_t>(kMaxRopePosition)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Decoder: context_length %zu is too large", s->context);
    }
    if (options.runner != nullptr) {
      s->runner = *options.runner;
    } else {
      const size_t threads = options.num_threads != 0
                                 ? options.num_threads
                                 : ThreadPool::DefaultNumThreads();
      s->pool = std::make_unique<ThreadPool>(threads);
      s->runner = s->pool->Runner();
    }

    KvCacheConfig kv;
    kv.num_layers = c.num_layers;
    kv.num_kv_heads = c.num_kv_heads;
    kv.head_dim = c.head_dim;
    kv.block_tokens = options.kv_block_tokens;
    kv.format = options.kv_format;
    KvBlockLayout layout;
    QKERN_RETURN_IF_ERROR(KvBlockLayout::Compute(kv.num_layers, kv.num_kv_heads,
                                                 kv.head_dim, kv.block_tokens,
                                                 kv.format, &layout));
    const size_t blocks_per_seq =
        (s->context + kv.block_tokens - 1) / kv.block_tokens;
    kv.memory_budget_bytes = options.kv_budget_bytes != 0
                                 ? options.kv_budget_bytes
                                 : blocks_per_seq * layout.BlockBytes();
    QKERN_RETURN_IF_ERROR(PagedKvCache::Create(kv, &s->cache));

    // RoPE rows for every position of the context (a few MB at most).
    const size_t table_positions = s->context < 65536 ? s->context : 65536;
    QKERN_RETURN_IF_ERROR(RopeTable::Create(c.rope, table_positions, &s->rope));

    s->attention.num_q_heads = c.num_q_heads;
    s->attention.num_kv_heads = c.num_kv_heads;
    s->attention.head_dim = c.head_dim;
    s->attention.q_stride = c.q_dim() + 2 * c.kv_dim();

    const size_t b = s->options.max_batch;
    const size_t qkv = s->attention.q_stride;
    const size_t widest = c.dim > c.q_dim() ? c.dim : c.q_dim();
    if (!s->x.Allocate(b * c.dim * sizeof(float)) ||
        !s->h.Allocate(b * widest * sizeof(float)) ||
        !s->qkv.Allocate(b * qkv * sizeof(float)) ||
        !s->attn.Allocate(b * c.q_dim() * sizeof(float)) ||
        !s->gate_up.Allocate(b * 2 * c.ffn_dim * sizeof(float)) ||
        !s->act.Allocate(b * c.ffn_dim * sizeof(float))) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "Decoder: cannot allocate activations for max_batch %zu",
                        b);
    }
    *out = Decoder();
    out->s_ = std::move(s);
    return Status::Ok();
  }

  const Model& model() const { return *s_->model; }
  const ModelConfig& config() const { return s_->model->config(); }
  size_t context_length() const { return s_->context; }
  size_t vocab_size() const { return config().vocab_size; }
  size_t num_threads() const { return NumWorkers(&s_->runner); }
  const PagedKvCache& cache() const { return s_->cache; }

  // --- Sequences (thin wrappers over the cache) ---
  Status AddSequence(KvSeqId seq) { return s_->cache.AddSequence(seq); }
  Status Fork(KvSeqId src, KvSeqId dst) { return s_->cache.Fork(src, dst); }
  Status FreeSequence(KvSeqId seq) { return s_->cache.Free(seq); }
  Status Truncate(KvSeqId seq, size_t length) {
    return s_->cache.Truncate(seq, length);
  }
  Status Length(KvSeqId seq, size_t* length) const {
    return s_->cache.Length(seq, length);
  }

  // Appends `n` tokens to `seq` and writes the logits of the last one
  // (vocab_size floats) to `logits`, or of all n (n x vocab_size) when
  // `all_logits`; `logits` may be null to only fill the cache. On error the
  // sequence is rolled back to its length before the call.
  Status Eval(KvSeqId seq, const int32_t* tokens, size_t n, float* logits,
              bool all_logits = false) {
    if (s_ == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Decoder: not created (use Decoder::Create)");
    }
    if (n == 0) return Status::Ok();
    if (tokens == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "Eval: tokens is null");
    }
    size_t start = 0;
    QKERN_RETURN_IF_ERROR(s_->cache.Length(seq, &start));
    if (n > s_->context || start > s_->context - n) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "context full: sequence %llu holds %zu tokens and %zu "
                        "more would pass the context length %zu",
                        static_cast<unsigned long long>(seq), start, n,
                        s_->context);
    }
    const size_t vocab = config().vocab_size;
    for (size_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || static_cast<size_t>(tokens[i]) >= vocab) {
        return MakeStatus(StatusCode::kOutOfRange,
                          "Eval: token %zu = %d is outside the vocabulary [0, "
                          "%zu)",
                          i, tokens[i], vocab);
      }
    }
    for (size_t done = 0; done < n;) {
      const size_t m = n - done < s_->options.max_batch
                           ? n - done : s_->options.max_batch;
      const bool last = done + m == n;
      float* out = nullptr;
      if (logits != nullptr && all_logits) out = logits + done * vocab;
      if (logits != nullptr && !all_logits && last) out = logits;
      const Status status =
          EvalChunk(seq, tokens + done, m, start + done, out, all_logits);
      if (!status.ok()) {
        (void)s_->cache.Truncate(seq, start);
        return status;
      }
      done += m;
    }
    return Status::Ok();
  }

 private:
  struct State {
    const Model* model = nullptr;
    DecoderOptions options;
    size_t context = 0;
    std::unique_ptr<ThreadPool> pool;
    ParallelRunner runner;
    PagedKvCache cache;
    RopeTable rope;
    AttentionParams attention;
    MatMulWorkspace matmul_ws;
    AttentionWorkspace attention_ws;
    AlignedBuffer x, h, qkv, attn, gate_up, act;
  };

  // y[m x proj.out_features] = x[m x K] * W^T (+ bias), part by part.
  Status Project(const Projection& proj, const float* x, size_t m, size_t ldx,
                 float* y, size_t ldy) {
    for (const ProjectionPart& part : proj.parts) {
      QKERN_RETURN_IF_ERROR(MatMul(part.weights, x, m, ldx, y + part.column,
                                   ldy, part.bias.empty() ? nullptr
                                                          : part.bias.data(),
                                   &s_->matmul_ws, &s_->runner));
    }
    return Status::Ok();
  }

  // Runs fn(row) for rows [0, m) on the pool when there are enough of them.
  template <class Fn>
  void ForRows(size_t m, const Fn& fn) {
    if (m < 8) {
      for (size_t r = 0; r < m; ++r) fn(r);
      return;
    }
    ParallelFor(&s_->runner, m, [&](size_t r, size_t) { fn(r); });
  }

  Status EvalChunk(KvSeqId seq, const int32_t* tokens, size_t m, size_t pos,
                   float* logits, bool all_logits) {
    State& s = *s_;
    const ModelConfig& c = s.model->config();
    const ModelWeights& w = s.model->weights();
    QKERN_RETURN_IF_ERROR(s.cache.ReserveTokens(seq, m));
    float* x = s.x.as<float>();
    float* h = s.h.as<float>();
    float* qkv = s.qkv.as<float>();
    float* attn = s.attn.as<float>();
    float* gu = s.gate_up.as<float>();
    float* act = s.act.as<float>();
    const size_t dim = c.dim, ffn = c.ffn_dim;
    const size_t qkv_stride = s.attention.q_stride;

    for (size_t t = 0; t < m; ++t) {
      QKERN_RETURN_IF_ERROR(GatherEmbedding(w.embedding, tokens[t], x + t * dim));
    }
    for (size_t layer = 0; layer < c.num_layers; ++layer) {
      const LayerWeights& l = w.layers[layer];
      QKERN_RETURN_IF_ERROR(RmsNormRows(x, dim, l.attn_norm.data(), c.rms_eps,
                                        m, dim, h, dim));
      QKERN_RETURN_IF_ERROR(Project(l.qkv, h, m, dim, qkv, qkv_stride));
      // q and k heads are adjacent in each row: one RoPE call rotates both.
      QKERN_RETURN_IF_ERROR(ApplyRopeConsecutive(
          s.rope, qkv, m, c.num_q_heads + c.num_kv_heads, qkv_stride,
          static_cast<int64_t>(pos)));
      for (size_t t = 0; t < m; ++t) {
        const float* row = qkv + t * qkv_stride;
        QKERN_RETURN_IF_ERROR(s.cache.WriteKV(seq, layer, pos + t,
                                              row + c.q_dim(),
                                              row + c.q_dim() + c.kv_dim()));
      }
      QKERN_RETURN_IF_ERROR(Attention(s.cache, seq, layer, qkv, m, pos, attn,
                                      s.attention, &s.attention_ws, &s.runner));
      QKERN_RETURN_IF_ERROR(Project(l.attn_output, attn, m, c.q_dim(), h, dim));
      QKERN_RETURN_IF_ERROR(AddInPlace(x, h, m * dim));
      QKERN_RETURN_IF_ERROR(RmsNormRows(x, dim, l.ffn_norm.data(), c.rms_eps,
                                        m, dim, h, dim));
      QKERN_RETURN_IF_ERROR(Project(l.gate_up, h, m, dim, gu, 2 * ffn));
      ForRows(m, [&](size_t r) {
        (void)SwiGlu(gu + r * 2 * ffn, gu + r * 2 * ffn + ffn, ffn,
                     act + r * ffn);
      });
      QKERN_RETURN_IF_ERROR(Project(l.down, act, m, ffn, h, dim));
      QKERN_RETURN_IF_ERROR(AddInPlace(x, h, m * dim));
    }
    if (logits != nullptr) {
      const size_t first = all_logits ? 0 : m - 1;
      const size_t rows = m - first;
      QKERN_RETURN_IF_ERROR(RmsNormRows(x + first * dim, dim,
                                        w.output_norm.data(), c.rms_eps, rows,
                                        dim, h, dim));
      QKERN_RETURN_IF_ERROR(Project(w.output, h, rows, dim, logits, c.vocab_size));
    }
    return s.cache.CommitTokens(seq, m);
  }

  std::unique_ptr<State> s_;
};

}  // namespace qkern

#endif  // QKERN_MODEL_DECODER_H_
