// Causal multi-head attention: the parameters of the op and its plain
// reference, in double precision.
//
// The reference is the specification the fused kernel (attention-inl.h) is
// tested against: it builds the whole score matrix of a head, masks it, takes
// an ordinary softmax and multiplies by V. It reads K and V from dense float
// arrays (a test fills them from PagedKvCache::ReadKV), so it knows nothing
// of pages or storage formats.
#ifndef QKERN_KERNELS_ATTENTION_REF_H_
#define QKERN_KERNELS_ATTENTION_REF_H_

#include <math.h>
#include <stddef.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace qkern {

// What one attention call computes, besides its inputs. Query head h reads kv
// head h / (num_q_heads / num_kv_heads), so MQA is num_kv_heads == 1 and
// classic multi-head attention is num_q_heads == num_kv_heads.
struct AttentionParams {
  size_t num_q_heads = 0;
  size_t num_kv_heads = 0;
  size_t head_dim = 0;
  // Multiplies q.k; 0 selects 1 / sqrt(head_dim).
  float scale = 0.0f;
  // A query at position p sees positions (p - sliding_window, p]; 0 = all of
  // [0, p].
  size_t sliding_window = 0;
  // When > 0, logits become softcap * tanh(logits / softcap) (after scaling,
  // before masking), as Gemma 2 and Grok do.
  float softcap = 0.0f;
  // Null, or one logit per query head that joins the softmax denominator
  // with no value row ("attention sink", as in gpt-oss): it lets a head put
  // weight on nothing. Not scaled or soft-capped.
  const float* sinks = nullptr;
  // Floats between consecutive query tokens in q and out; 0 means dense
  // (num_q_heads * head_dim). A wider stride reads q straight out of a fused
  // QKV projection.
  size_t q_stride = 0;
  size_t out_stride = 0;
};

// The multiplier applied to q.k.
inline float AttentionScale(const AttentionParams& p) {
  if (p.scale != 0.0f) return p.scale;
  return 1.0f / sqrtf(static_cast<float>(p.head_dim));
}

inline size_t AttentionQStride(const AttentionParams& p) {
  return p.q_stride != 0 ? p.q_stride : p.num_q_heads * p.head_dim;
}
inline size_t AttentionOutStride(const AttentionParams& p) {
  return p.out_stride != 0 ? p.out_stride : p.num_q_heads * p.head_dim;
}

// First position a query at `pos` attends to.
inline size_t AttentionWindowBegin(const AttentionParams& p, size_t pos) {
  if (p.sliding_window == 0 || pos + 1 <= p.sliding_window) return 0;
  return pos + 1 - p.sliding_window;
}

namespace ref {

// Magnitudes from which a test derives the rounding bound of an f32 kernel.
struct AttentionTerms {
  // Per (query, q head): max over attended positions t of
  // |scale| * sum_d |q_d k_td|, the size of the terms of a logit.
  std::vector<double> dot_abs;
  // Per (query, q head): max |logit| over attended positions (after
  // soft-capping), and the sink if any.
  std::vector<double> logit_abs;
  // Per output element: sum_t p_t |v_td|, p the softmax weights.
  std::vector<double> out_abs;
  // Per (query, q head): sum_t p_t max_d |v_td|.
  std::vector<double> weighted_amax;
};

// q: num_queries x (row stride q_stride), head h at h * head_dim.
// k, v: kv_len = q_start_pos + num_queries positions, each num_kv_heads x
// head_dim floats (ReadKV's layout, positions one after another).
// out: num_queries x num_q_heads x head_dim, dense, in double.
inline void Attention(const AttentionParams& p, const float* q,
                      size_t num_queries, size_t q_start_pos, const float* k,
                      const float* v, double* out,
                      AttentionTerms* terms = nullptr) {
  const size_t dim = p.head_dim;
  const size_t group = p.num_q_heads / p.num_kv_heads;
  const size_t kv_len = q_start_pos + num_queries;
  const size_t kv_row = p.num_kv_heads * dim;
  const size_t q_stride = AttentionQStride(p);
  const double scale = AttentionScale(p);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (terms != nullptr) {
    terms->dot_abs.assign(num_queries * p.num_q_heads, 0.0);
    terms->logit_abs.assign(num_queries * p.num_q_heads, 0.0);
    terms->out_abs.assign(num_queries * p.num_q_heads * dim, 0.0);
    terms->weighted_amax.assign(num_queries * p.num_q_heads, 0.0);
  }
  std::vector<double> scores(num_queries * kv_len);
  for (size_t h = 0; h < p.num_q_heads; ++h) {
    const size_t kv_head = h / group;
    // The full (masked) score matrix of this head.
    for (size_t i = 0; i < num_queries; ++i) {
      const size_t pos = q_start_pos + i;
      const float* qi = q + i * q_stride + h * dim;
      double dot_abs = 0.0, logit_abs = 0.0;
      for (size_t t = 0; t < kv_len; ++t) {
        double& s = scores[i * kv_len + t];
        if (t > pos || t < AttentionWindowBegin(p, pos)) {
          s = neg_inf;
          continue;
        }
        const float* kt = k + t * kv_row + kv_head * dim;
        double dot = 0.0, abs_sum = 0.0;
        for (size_t d = 0; d < dim; ++d) {
          dot += static_cast<double>(qi[d]) * kt[d];
          abs_sum += fabs(static_cast<double>(qi[d]) * kt[d]);
        }
        s = scale * dot;
        if (p.softcap > 0.0f) s = p.softcap * tanh(s / p.softcap);
        dot_abs = std::max(dot_abs, fabs(scale) * abs_sum);
        logit_abs = std::max(logit_abs, fabs(s));
      }
      if (p.sinks != nullptr) {
        logit_abs = std::max(logit_abs, fabs(static_cast<double>(p.sinks[h])));
      }
      if (terms != nullptr) {
        terms->dot_abs[i * p.num_q_heads + h] = dot_abs;
        terms->logit_abs[i * p.num_q_heads + h] = logit_abs;
      }
    }
    // Softmax of each row (with the sink in the denominator), times V.
    for (size_t i = 0; i < num_queries; ++i) {
      const double* row = &scores[i * kv_len];
      double max = *std::max_element(row, row + kv_len);
      if (p.sinks != nullptr) max = std::max<double>(max, p.sinks[h]);
      double denom = p.sinks != nullptr ? exp(p.sinks[h] - max) : 0.0;
      for (size_t t = 0; t < kv_len; ++t) {
        if (row[t] != neg_inf) denom += exp(row[t] - max);
      }
      double* o = out + (i * p.num_q_heads + h) * dim;
      double* o_abs = terms != nullptr
                          ? &terms->out_abs[(i * p.num_q_heads + h) * dim]
                          : nullptr;
      std::fill(o, o + dim, 0.0);
      for (size_t t = 0; t < kv_len; ++t) {
        if (row[t] == neg_inf) continue;
        const double weight = exp(row[t] - max) / denom;
        const float* vt = v + t * kv_row + kv_head * dim;
        double amax = 0.0;
        for (size_t d = 0; d < dim; ++d) {
          o[d] += weight * vt[d];
          if (o_abs != nullptr) o_abs[d] += weight * fabs(vt[d]);
          amax = std::max(amax, fabs(static_cast<double>(vt[d])));
        }
        if (terms != nullptr) {
          terms->weighted_amax[i * p.num_q_heads + h] += weight * amax;
        }
      }
    }
  }
}

}  // namespace ref
}  // namespace qkern

#endif  // QKERN_KERNELS_ATTENTION_REF_H_
