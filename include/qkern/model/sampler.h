// Sampler: picks the next token from a row of logits.
//
// Filter chain, in this order:
//   repetition penalty -> top-k -> temperature -> softmax -> top-p -> min-p
//   -> draw.
// llama.cpp's default chain (common sampling params) is penalties, DRY,
// top-n-sigma, top-k, typical-p, top-p, min-p, XTC, temperature, dist: it
// scales by the temperature *last*, so its top-p / min-p see the T = 1
// distribution. Ours applies the temperature before the softmax, so top-p and
// min-p act on the distribution that is actually drawn from: with T < 1 the
// nucleus is smaller than llama.cpp's, with T > 1 larger. With T = 1 the two
// chains agree (DRY, typical-p, XTC and top-n-sigma are not implemented).
//
// Cost per call: one pass over the vocabulary, then work on the survivors
// only; the vocabulary is never sorted and nothing is allocated after
// Create().
//   top-k on (the default): a k-element min-heap, fed only from 32-logit
//     blocks whose maximum beats the heap's worst (a branch-free pass that
//     also screens for NaN/Inf); then k log k.
//   top-k off: max, one exp per token, then tokens are binned by log
//     probability and only the bins around the top-p edge are sorted.
//
// Logits: NaN or +Inf is an error (kInvalidArgument naming the token id).
// -Inf is accepted as "masked" (probability zero, the usual grammar-mask
// convention); a row with every logit -Inf is an error.
#ifndef QKERN_MODEL_SAMPLER_H_
#define QKERN_MODEL_SAMPLER_H_

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "qkern/base/status.h"

namespace qkern {

struct SamplerConfig {
  float temperature = 0.8f;     // 0 => greedy (argmax, lowest id wins ties)
  size_t top_k = 40;            // 0 => off; values >= vocab_size are off too
  float top_p = 0.95f;          // 1 => off
  float min_p = 0.05f;          // 0 => off; keeps p >= min_p * p_max
  float repeat_penalty = 1.0f;  // 1 => off; see ApplyRepeatPenalty
  size_t repeat_last_n = 64;    // window of recent tokens (0 => no penalty)
  uint64_t seed = 0;            // same seed => same token sequence
};

namespace detail {

// xoshiro256** seeded through splitmix64: small, fast, and bit-identical on
// every platform (std:: distributions are not specified bit for bit).
class SamplerRng {
 public:
  void Seed(uint64_t seed) {
    uint64_t x = seed;
    for (uint64_t& word : s_) word = SplitMix64(&x);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble() {
    return static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0);
  }

 private:
  static uint64_t SplitMix64(uint64_t* x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4] = {};
};

struct SamplerCandidate {
  float logit;
  int32_t id;
};

// Strict order used everywhere: higher logit first, lower id on ties, so
// every selection is deterministic.
inline bool CandidateBefore(const SamplerCandidate& a,
                            const SamplerCandidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

}  // namespace detail

// llama.cpp's repetition penalty: a positive logit is divided by the
// penalty, a negative one multiplied, so a penalty > 1 always lowers it.
inline float ApplyRepeatPenalty(float logit, float penalty) {
  return logit > 0.0f ? logit / penalty : logit * penalty;
}

class Sampler {
 public:
  // Upper bound on repeat_last_n: the window is preallocated.
  static constexpr size_t kMaxRepeatLastN = size_t{1} << 20;

  static Status Create(const SamplerConfig& config, size_t vocab_size,
                       Sampler* out) {
    const SamplerConfig& c = config;
    if (vocab_size == 0 ||
        vocab_size > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Sampler: vocab_size must be in [1, 2^31-1], got %zu",
                        vocab_size);
    }
    if (!(c.temperature >= 0.0f) || !std::isfinite(c.temperature)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Sampler: temperature must be finite and >= 0 "
                        "(0 = greedy), got %g",
                        static_cast<double>(c.temperature));
    }
    if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Sampler: top_p must be in (0, 1] (1 = off), got %g",
                        static_cast<double>(c.top_p));
    }
    if (!(c.min_p >= 0.0f && c.min_p <= 1.0f)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Sampler: min_p must be in [0, 1] (0 = off), got %g",
                        static_cast<double>(c.min_p));
    }
    if (!(c.repeat_penalty > 0.0f) || !std::isfinite(c.repeat_penalty)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Sampler: repeat_penalty must be finite and > 0 "
                        "(1 = off), got %g",
                        static_cast<double>(c.repeat_penalty));
    }
    if (c.repeat_last_n > kMaxRepeatLastN) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Sampler: repeat_last_n must be <= %zu, got %zu",
                        kMaxRepeatLastN, c.repeat_last_n);
    }
    Sampler s;
    s.config_ = c;
    s.vocab_size_ = vocab_size;
    s.top_k_ = c.top_k >= vocab_size ? 0 : c.top_k;
    s.penalize_ = c.repeat_penalty != 1.0f && c.repeat_last_n > 0;
    s.history_.assign(c.repeat_last_n, 0);
    if (s.penalize_) {
      s.penalized_ids_.resize(c.repeat_last_n);
      s.work_.resize(vocab_size);
    }
    // Full-vocabulary path (no top-k) may keep every token as a candidate.
    s.candidates_.reserve(s.top_k_ != 0 ? s.top_k_ : vocab_size);
    s.probs_.reserve(s.top_k_ != 0 ? s.top_k_ : vocab_size);
    if (s.top_k_ == 0) {
      s.sorted_.reserve(vocab_size);
      s.rel_probs_.resize(vocab_size);
    }
    s.Reset();
    *out = std::move(s);
    return Status::Ok();
  }

  size_t vocab_size() const { return vocab_size_; }
  const SamplerConfig& config() const { return config_; }

  // Picks the next token from `logits` (vocab_size floats, left unchanged)
  // and records it in the repetition window.
  Status Sample(const float* logits, int32_t* token) {
    if (logits == nullptr || token == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "Sampler: %s is null",
                        logits == nullptr ? "logits" : "token");
    }
    const float* row = logits;
    if (penalize_) {
      std::copy(logits, logits + vocab_size_, work_.begin());
      ApplyPenalties();
      row = work_.data();
    }
    int32_t picked = 0;
    Status status;
    if (config_.temperature == 0.0f) {
      status = Greedy(row, &picked);
    } else if (top_k_ != 0) {
      status = SampleTopK(row, &picked);
    } else {
      status = SampleFull(row, &picked);
    }
    QKERN_RETURN_IF_ERROR(status);
    Accept(picked);
    *token = picked;
    return Status::Ok();
  }

  // Adds a token (prompt or forced) to the repetition window.
  void Accept(int32_t token) {
    if (history_.empty()) return;
    history_[history_head_] = token;
    history_head_ = (history_head_ + 1) % history_.size();
    if (history_count_ < history_.size()) ++history_count_;
  }

  // Clears the window and reseeds, so the sampler behaves exactly as
  // freshly created.
  void Reset() {
    history_head_ = 0;
    history_count_ = 0;
    rng_.Seed(config_.seed);
  }

 private:
  static Status BadLogit(size_t i, float v) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Sampler: logits[%zu] is %s; logits must be finite "
                      "(or -inf to mask a token)",
                      i, std::isnan(v) ? "NaN" : "+inf");
  }
  static Status AllMasked() {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Sampler: every logit is -inf, nothing to sample");
  }
  static constexpr float kInf = std::numeric_limits<float>::infinity();

  // Each distinct token of the window is penalized once (llama.cpp counts
  // occurrences only for its frequency/presence penalties).
  void ApplyPenalties() {
    size_t n = 0;
    for (size_t i = 0; i < history_count_; ++i) {
      const int32_t t = history_[i];
      if (t >= 0 && static_cast<size_t>(t) < vocab_size_) {
        penalized_ids_[n++] = t;
      }
    }
    std::sort(penalized_ids_.begin(), penalized_ids_.begin() + n);
    const auto end =
        std::unique(penalized_ids_.begin(), penalized_ids_.begin() + n);
    for (auto it = penalized_ids_.begin(); it != end; ++it) {
      float& v = work_[static_cast<size_t>(*it)];
      v = ApplyRepeatPenalty(v, config_.repeat_penalty);
    }
  }

  Status Greedy(const float* row, int32_t* token) const {
    size_t best = 0;
    float best_v = -kInf;
    bool any = false;
    for (size_t i = 0; i < vocab_size_; ++i) {
      const float v = row[i];
      if (!(v < kInf)) return BadLogit(i, v);
      // Strict > keeps the lowest id among equal maxima.
      if (v > best_v) {
        best_v = v;
        best = i;
        any = true;
      }
    }
    if (!any) return AllMasked();
    *token = static_cast<int32_t>(best);
    return Status::Ok();
  }

  // Top-k by a min-heap of k candidates: on typical logits only O(k log n)
  // insertions happen, so this is essentially one pass of compares.
  Status SampleTopK(const float* row, int32_t* token) {
    auto& heap = candidates_;
    heap.clear();
    // With CandidateBefore as "less", the heap's front is its *worst*
    // element (std heaps put the greatest under `less` at the front).
    const auto worse_first = [](const detail::SamplerCandidate& a,
                                const detail::SamplerCandidate& b) {
      return detail::CandidateBefore(a, b);
    };
    const auto offer = [&](size_t i) {
      const float v = row[i];
      if (heap.size() < top_k_) {
        heap.push_back({v, static_cast<int32_t>(i)});
        std::push_heap(heap.begin(), heap.end(), worse_first);
      } else if (v > heap.front().logit) {
        // Ids come in increasing order, so equal logits never displace an
        // earlier (lower) id.
        std::pop_heap(heap.begin(), heap.end(), worse_first);
        heap.back() = {v, static_cast<int32_t>(i)};
        std::push_heap(heap.begin(), heap.end(), worse_first);
      }
    };
    // Blocks whose maximum can't enter the heap are skipped after one
    // branch-free (vectorizable) pass that also screens for NaN / +Inf.
    constexpr size_t kBlock = 32;
    size_t i = 0;
    for (; i + kBlock <= vocab_size_; i += kBlock) {
      float block_max = row[i];
      int bad = 0;
      for (size_t j = 0; j < kBlock; ++j) {
        const float v = row[i + j];
        block_max = v > block_max ? v : block_max;
        bad |= !(v < kInf);
      }
      if (bad) {
        for (size_t j = i; j < i + kBlock; ++j) {
          if (!(row[j] < kInf)) return BadLogit(j, row[j]);
        }
      }
      if (heap.size() < top_k_ || block_max > heap.front().logit) {
        for (size_t j = i; j < i + kBlock; ++j) offer(j);
      }
    }
    for (; i < vocab_size_; ++i) {
      if (!(row[i] < kInf)) return BadLogit(i, row[i]);
      offer(i);
    }
    std::sort(heap.begin(), heap.end(), detail::CandidateBefore);
    if (heap.front().logit == -kInf) return AllMasked();
    // Softmax over the k survivors, in double.
    const double inv_t = 1.0 / static_cast<double>(config_.temperature);
    const double max_logit = heap.front().logit;
    probs_.resize(heap.size());
    double sum = 0.0;
    for (size_t j = 0; j < heap.size(); ++j) {
      probs_[j] = std::exp((heap[j].logit - max_logit) * inv_t);
      sum += probs_[j];
    }
    const size_t kept = NucleusAndMinP(sum, probs_[0]);
    *token = heap[Draw(kept)].id;
    return Status::Ok();
  }

  // No top-k: the softmax runs over the whole vocabulary, and sorting it
  // is what we avoid. Tokens are binned by -log(p / p_max) in steps of
  // 1/kBinsPerNat nats; the bin where the cumulative mass crosses top_p
  // (bins are in decreasing-probability order) is the only one that needs
  // sorting: every token of an earlier bin is inside the nucleus, every
  // token of a later bin outside.
  static constexpr int kBinsPerNat = 4;
  static constexpr int kBins = 64 * kBinsPerNat + 1;  // last: p < e^-64

  Status SampleFull(const float* row, int32_t* token) {
    float max_logit = -kInf;
    for (size_t i = 0; i < vocab_size_; ++i) {
      const float v = row[i];
      if (!(v < kInf)) return BadLogit(i, v);
      max_logit = std::max(max_logit, v);
    }
    if (max_logit == -kInf) return AllMasked();
    // Relative probabilities p / p_max, in float (one expf per token).
    const float inv_t = 1.0f / config_.temperature;
    float* rel = rel_probs_.data();
    double sum = 0.0;
    for (size_t i = 0; i < vocab_size_; ++i) {
      rel[i] = std::exp((row[i] - max_logit) * inv_t);
      sum += rel[i];
    }
    const double top_p = config_.top_p;
    const float min_p = config_.min_p;
    if (top_p >= 1.0 && min_p == 0.0f) {
      // Nothing is cut: draw straight from the full distribution in id
      // order.
      const double target = rng_.NextDouble() * sum;
      double acc = 0.0;
      size_t last_nonzero = 0;
      for (size_t i = 0; i < vocab_size_; ++i) {
        if (rel[i] == 0.0f) continue;
        last_nonzero = i;
        acc += rel[i];
        if (acc > target) {
          *token = static_cast<int32_t>(i);
          return Status::Ok();
        }
      }
      *token = static_cast<int32_t>(last_nonzero);  // rounding at the end
      return Status::Ok();
    }
    // Bin index from the logit gap: a larger logit never lands in a later
    // bin.
    const float bins_per_logit = inv_t * kBinsPerNat;
    auto bin_of = [&](size_t i) {
      const float gap = (max_logit - row[i]) * bins_per_logit;
      return gap < static_cast<float>(kBins - 1) ? static_cast<int>(gap)
                                                 : kBins - 1;
    };
    // Bins [0, sure_end) are in the nucleus; [sure_end, sort_end) are sorted
    // and cut exactly; the rest is out.
    int sure_end = kBins;
    int sort_end = kBins;
    double mass_sure = 0.0;
    const double need = top_p * sum;
    if (top_p < 1.0) {
      double bin_mass[kBins] = {};
      for (size_t i = 0; i < vocab_size_; ++i) bin_mass[bin_of(i)] += rel[i];
      int crossing = kBins - 1;
      double acc = 0.0;
      for (int b = 0; b < kBins; ++b) {
        if (acc + bin_mass[b] >= need) {
          crossing = b;
          break;
        }
        acc += bin_mass[b];
      }
      // Bin sums and the final prefix sum round differently, so the exact
      // crossing may sit one bin either side: sort those too.
      sure_end = std::max(crossing - 1, 0);
      sort_end = std::min(crossing + 2, kBins);
      for (int b = 0; b < sure_end; ++b) mass_sure += bin_mass[b];
    }
    // Min-p keeps rel >= min_p. A min-p cut is a prefix of the sorted
    // order too, so dropping those tokens here leaves the intersection of
    // both prefixes, which is what top-p then min-p keeps.
    candidates_.clear();
    sorted_.clear();
    for (size_t i = 0; i < vocab_size_; ++i) {
      if (rel[i] < min_p || rel[i] == 0.0f) continue;
      const int b = bin_of(i);
      if (b < sure_end) {
        candidates_.push_back({row[i], static_cast<int32_t>(i)});
      } else if (b < sort_end) {
        sorted_.push_back({row[i], static_cast<int32_t>(i)});
      }
    }
    std::sort(sorted_.begin(), sorted_.end(), detail::CandidateBefore);
    size_t take = sorted_.size();
    if (top_p < 1.0) {
      double acc = mass_sure;
      take = 0;
      while (take < sorted_.size() && acc < need) {
        acc += rel[sorted_[take].id];
        ++take;
      }
    }
    for (size_t j = 0; j < take; ++j) candidates_.push_back(sorted_[j]);
    // The top token (rel = 1) survives min-p and is the nucleus' first
    // member, so this list is never empty.
    probs_.resize(candidates_.size());
    for (size_t j = 0; j < candidates_.size(); ++j) {
      probs_[j] = rel[candidates_[j].id];
    }
    *token = candidates_[Draw(candidates_.size())].id;
    return Status::Ok();
  }

  // probs_ holds unnormalized probabilities of sorted candidates; `total`
  // is their normalizer over every token still in play (after top-k). Keeps
  // the smallest prefix whose mass reaches top_p, then the tokens with
  // p >= min_p * p_max (renormalizing in between doesn't change that ratio).
  // Returns the number kept (>= 1); probs_ is left as is for the draw.
  size_t NucleusAndMinP(double total, double p_max) const {
    size_t kept = probs_.size();
    if (config_.top_p < 1.0f) {
      const double need = static_cast<double>(config_.top_p) * total;
      double acc = 0.0;
      for (size_t j = 0; j < probs_.size(); ++j) {
        acc += probs_[j];
        if (acc >= need) {
          kept = j + 1;
          break;
        }
      }
    }
    if (config_.min_p > 0.0f) {
      const double floor = static_cast<double>(config_.min_p) * p_max;
      size_t j = 1;  // the top token always survives
      while (j < kept && probs_[j] >= floor) ++j;
      kept = j;
    }
    return kept;
  }

  // Draws an index in [0, kept) proportional to probs_.
  size_t Draw(size_t kept) {
    double mass = 0.0;
    for (size_t j = 0; j < kept; ++j) mass += probs_[j];
    const double target = rng_.NextDouble() * mass;
    double acc = 0.0;
    for (size_t j = 0; j < kept; ++j) {
      acc += probs_[j];
      if (acc > target) return j;
    }
    // Only reachable through rounding: pick the last token with p > 0.
    size_t j = kept - 1;
    while (j > 0 && probs_[j] == 0.0) --j;
    return j;
  }

  SamplerConfig config_;
  size_t vocab_size_ = 0;
  size_t top_k_ = 0;  // 0 when off or >= vocab_size
  bool penalize_ = false;
  detail::SamplerRng rng_;
  std::vector<int32_t> history_;  // ring buffer of the last repeat_last_n
  size_t history_head_ = 0;
  size_t history_count_ = 0;
  // Scratch, sized in Create() so Sample() never allocates.
  std::vector<int32_t> penalized_ids_;
  std::vector<float> work_;
  std::vector<detail::SamplerCandidate> candidates_;
  std::vector<detail::SamplerCandidate> sorted_;  // full path: cut bins
  std::vector<float> rel_probs_;                  // full path: p / p_max
  std::vector<double> probs_;
};

}  // namespace qkern

#endif  // QKERN_MODEL_SAMPLER_H_
