// Rotary position embedding (RoPE) for q and k rows, with precomputed cos/sin
// tables, partial rotary dimension, Llama-3 and YaRN frequency scaling, and a
// path that rotates K and stores it into the paged KV cache.
//
//   RopeConfig config;
//   config.head_dim = config.rotary_dim = 64;
//   config.theta_base = 500000.0;
//   config.layout = RopeLayout::kNeox;
//   config.scaling = RopeScaling::Llama3(32.0, 1.0, 4.0, 8192.0);
//   RopeTable table;
//   RopeTable::Create(config, /*max_positions=*/4096, &table);  // at load
//   ApplyRope(table, q, num_tokens, num_q_heads, q_stride, positions);
//   RopeAndWriteK(table, &cache, seq, layer, pos, pos, k, v);
//
// Math. Pair i in [0, rotary_dim / 2) of a head is rotated by the angle
// position * f_i with f_i = theta_base^(-2i / rotary_dim), changed by the
// scaling (below), and cos and sin are multiplied by the attention factor
// (1 except YaRN):
//   (a, b) -> (a cos - b sin, b cos + a sin).
// Values past rotary_dim are left unchanged (partial rotary, e.g. Phi,
// StableLM, GPT-J).
//
// Layouts: which values form pair i.
//  - kNeox ("rotate half", HF Llama/Qwen/Mistral/SmolLM2 checkpoints):
//    (x[i], x[i + rotary_dim / 2]).
//  - kGptJ (interleaved, GPT-J; also llama.cpp's default "normal" mode, because
//    the GGUF converter permutes Llama q/k weights into this order):
//    (x[2i], x[2i + 1]).
//
// Scaling of f_i (published formulas; all in double at table build time):
//  - kLinear (position interpolation): f_i / factor.
//  - kLlama3 (Llama 3.1+): with wavelength w_i = 2 pi / f_i,
//    L = original_max_position: w_i < L / high_freq_factor keeps f_i,
//    w_i > L / low_freq_factor gives f_i / factor, and in between
//    s = (L / w_i - low_freq_factor) / (high_freq_factor - low_freq_factor),
//    f_i = (1 - s) f_i / factor + s f_i.
//  - kYarn: pair index where a frequency turns r times over L:
//    dim(r) = rotary_dim ln(L / (2 pi r)) / (2 ln theta_base); lo =
//    floor(dim(beta_fast)), hi = ceil(dim(beta_slow)) (no rounding when
//    yarn_truncate is false), clamped to [0, rotary_dim - 1], hi += 0.001 if
//    equal; ramp_i = clamp((i - lo) / (hi - lo), 0, 1);
//    f_i = ramp_i f_i / factor + (1 - ramp_i) f_i. The attention factor is
//    attention_factor if > 0, else 0.1 ln(factor) + 1 (1 for factor <= 1).
//
// Table: cos/sin rows for positions [0, max_positions), f32. Positions past
// the table are computed on the fly, per token and call (rotary_dim / 2
// double sin/cos: ~1 us for rotary_dim 64 on Zen 5, vs ~5 ns to rotate a
// head of 64), with bit-identical results, so a table that covers the usual
// context is enough. Memory: max_positions * rotary_dim * 4
// bytes for kNeox, twice that for kGptJ (its rows hold each value per lane;
// see rope-inl.h for why).
//
// Accuracy: every output is within
// attention_factor * (|a| + |b|) * (4 * 2^-24 + 2^-50 * |angle|) of the exact
// rotation of its pair (f32 rounding of cos/sin and of the three operations;
// derived in tests/rope_test.cc). Positions must be below kMaxRopePosition,
// where the double angle's own rounding reaches half an f32 ulp.
//
// Threads: a table is read-only after Create; any number of threads may call
// ApplyRope with it on disjoint rows. ApplyRope runs on the calling thread
// (it moves a few KiB per token; split tokens across threads if needed).
#ifndef QKERN_KERNELS_ROPE_H_
#define QKERN_KERNELS_ROPE_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <utility>
#include <vector>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/status.h"
#include "qkern/dispatch.h"
#include "qkern/kernels/rope_types.h"
#include "qkern/kv/paged_kv_cache.h"

namespace qkern {

enum class RopeLayout : uint32_t {
  kNeox = 0,  // pairs (x[i], x[i + rotary_dim / 2])
  kGptJ = 1,  // pairs (x[2i], x[2i + 1])
};

enum class RopeScalingType : uint32_t {
  kNone = 0,
  kLinear,
  kLlama3,
  kYarn,
};

// Frequency scaling; fields a type does not use are ignored. Build with the
// named constructors.
struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;                    // linear, llama3, yarn
  double original_max_position = 8192.0;  // llama3, yarn: the trained context
  double low_freq_factor = 1.0;           // llama3
  double high_freq_factor = 4.0;          // llama3
  double beta_fast = 32.0;                // yarn
  double beta_slow = 1.0;                 // yarn
  double attention_factor = 0.0;          // yarn; 0: 0.1 ln(factor) + 1
  bool yarn_truncate = true;              // yarn: floor/ceil the ramp ends

  static RopeScaling None() { return RopeScaling(); }
  static RopeScaling Linear(double factor) {
    RopeScaling s;
    s.type = RopeScalingType::kLinear;
    s.factor = factor;
    return s;
  }
  static RopeScaling Llama3(double factor, double low_freq_factor,
                            double high_freq_factor,
                            double original_max_position) {
    RopeScaling s;
    s.type = RopeScalingType::kLlama3;
    s.factor = factor;
    s.low_freq_factor = low_freq_factor;
    s.high_freq_factor = high_freq_factor;
    s.original_max_position = original_max_position;
    return s;
  }
  static RopeScaling Yarn(double factor, double original_max_position,
                          double beta_fast = 32.0, double beta_slow = 1.0,
                          double attention_factor = 0.0) {
    RopeScaling s;
    s.type = RopeScalingType::kYarn;
    s.factor = factor;
    s.original_max_position = original_max_position;
    s.beta_fast = beta_fast;
    s.beta_slow = beta_slow;
    s.attention_factor = attention_factor;
    return s;
  }
};

struct RopeConfig {
  size_t head_dim = 0;
  size_t rotary_dim = 0;  // even, in [2, head_dim]; head_dim for full rotary
  double theta_base = 10000.0;
  RopeLayout layout = RopeLayout::kNeox;
  RopeScaling scaling;
  // Empty, or rotary_dim / 2 divisors of f_i applied after `scaling`: GGUF
  // files of Llama 3.1+ store their frequency scaling this way (the
  // rope_freqs tensor) instead of as parameters.
  std::vector<float> frequency_divisors;
};

// Positions must be in [0, kMaxRopePosition). Past 2^27 the double product
// position * f_i (relative error ~2^-52, f_i <= 1 unless a scaling factor is
// below 1) is off by more than half an f32 ulp of cos/sin, so the accuracy
// stated above would no longer hold; no model comes near it.
constexpr int64_t kMaxRopePosition = int64_t{1} << 27;

namespace detail {

inline bool RopeFinitePositive(double v) { return isfinite(v) && v > 0.0; }

inline Status RopeConfigError(const char* format, double value) {
  return MakeStatus(StatusCode::kInvalidArgument, format, value);
}

}  // namespace detail

// Checks a config the way RopeTable::Create does.
inline Status ValidateRopeConfig(const RopeConfig& c) {
  if (c.head_dim < 2 || c.head_dim > kMaxRopeHeadDim) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RoPE: head_dim = %zu, must be in [2, %zu]", c.head_dim,
                      kMaxRopeHeadDim);
  }
  if (c.rotary_dim == 0 || c.rotary_dim % 2 != 0 || c.rotary_dim > c.head_dim) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RoPE: rotary_dim = %zu, must be even and in [2, "
                      "head_dim = %zu] (head_dim for full rotary)",
                      c.rotary_dim, c.head_dim);
  }
  if (!isfinite(c.theta_base) || !(c.theta_base > 1.0)) {
    return detail::RopeConfigError(
        "RoPE: theta_base = %g, must be finite and > 1", c.theta_base);
  }
  if (!c.frequency_divisors.empty()) {
    if (c.frequency_divisors.size() != c.rotary_dim / 2) {
      return detail::RopeConfigError(
          "RopeConfig: frequency_divisors has %g entries, expected "
          "rotary_dim / 2",
          static_cast<double>(c.frequency_divisors.size()));
    }
    for (float d : c.frequency_divisors) {
      if (!detail::RopeFinitePositive(d)) {
        return detail::RopeConfigError(
            "RopeConfig: frequency divisor %g is not finite and positive", d);
      }
    }
  }
  if (c.layout != RopeLayout::kNeox && c.layout != RopeLayout::kGptJ) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RoPE: unknown layout %u (0 = NeoX, 1 = GPT-J)",
                      static_cast<unsigned>(c.layout));
  }
  const RopeScaling& s = c.scaling;
  switch (s.type) {
    case RopeScalingType::kNone:
      return Status::Ok();
    case RopeScalingType::kLinear:
    case RopeScalingType::kLlama3:
    case RopeScalingType::kYarn:
      break;
    default:
      return MakeStatus(StatusCode::kInvalidArgument,
                        "RoPE: unknown scaling type %u (0 = none, 1 = linear, "
                        "2 = llama3, 3 = yarn)",
                        static_cast<unsigned>(s.type));
  }
  if (!detail::RopeFinitePositive(s.factor)) {
    return detail::RopeConfigError(
        "RoPE scaling: factor = %g, must be finite and > 0", s.factor);
  }
  if (s.type == RopeScalingType::kLinear) return Status::Ok();
  if (!detail::RopeFinitePositive(s.original_max_position)) {
    return detail::RopeConfigError(
        "RoPE scaling: original_max_position = %g, must be finite and > 0",
        s.original_max_position);
  }
  if (s.type == RopeScalingType::kLlama3) {
    if (!detail::RopeFinitePositive(s.low_freq_factor) ||
        !isfinite(s.high_freq_factor) ||
        !(s.high_freq_factor > s.low_freq_factor)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "RoPE llama3 scaling: low_freq_factor = %g and "
                        "high_freq_factor = %g, need 0 < low < high (finite)",
                        s.low_freq_factor, s.high_freq_factor);
    }
    return Status::Ok();
  }
  if (!detail::RopeFinitePositive(s.beta_slow) || !isfinite(s.beta_fast) ||
      !(s.beta_fast > s.beta_slow)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RoPE yarn scaling: beta_fast = %g and beta_slow = %g, "
                      "need beta_fast > beta_slow > 0 (finite)",
                      s.beta_fast, s.beta_slow);
  }
  if (!isfinite(s.attention_factor) || s.attention_factor < 0.0) {
    return detail::RopeConfigError(
        "RoPE yarn scaling: attention_factor = %g, must be finite and >= 0 "
        "(0: derived from factor)",
        s.attention_factor);
  }
  return Status::Ok();
}

namespace detail {

// f_i for every pair and the attention factor of a validated config.
inline void ComputeRopeFrequencies(const RopeConfig& c, double* inv_freq,
                                   double* attention_factor) {
  const RopeScaling& s = c.scaling;
  const size_t pairs = c.rotary_dim / 2;
  const double dim = static_cast<double>(c.rotary_dim);
  const double two_pi = 6.283185307179586476925286766559;
  for (size_t i = 0; i < pairs; ++i) {
    inv_freq[i] = pow(c.theta_base, -2.0 * static_cast<double>(i) / dim);
  }
  *attention_factor = 1.0;
  switch (s.type) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear:
      for (size_t i = 0; i < pairs; ++i) inv_freq[i] /= s.factor;
      break;
    case RopeScalingType::kLlama3: {
      const double high_freq_wavelength =
          s.original_max_position / s.high_freq_factor;
      const double low_freq_wavelength =
          s.original_max_position / s.low_freq_factor;
      for (size_t i = 0; i < pairs; ++i) {
        const double f = inv_freq[i];
        const double wavelength = two_pi / f;
        if (wavelength < high_freq_wavelength) continue;
        if (wavelength > low_freq_wavelength) {
          inv_freq[i] = f / s.factor;
          continue;
        }
        const double smooth =
            (s.original_max_position / wavelength - s.low_freq_factor) /
            (s.high_freq_factor - s.low_freq_factor);
        inv_freq[i] = (1.0 - smooth) * f / s.factor + smooth * f;
      }
      break;
    }
    case RopeScalingType::kYarn: {
      // Pair index at which a frequency completes `turns` rotations over the
      // original context.
      auto pair_for_turns = [&](double turns) {
        return dim * log(s.original_max_position / (turns * two_pi)) /
               (2.0 * log(c.theta_base));
      };
      double lo = pair_for_turns(s.beta_fast);
      double hi = pair_for_turns(s.beta_slow);
      if (s.yarn_truncate) {
        lo = floor(lo);
        hi = ceil(hi);
      }
      lo = lo < 0.0 ? 0.0 : lo;
      hi = hi > dim - 1.0 ? dim - 1.0 : hi;
      if (hi == lo) hi += 0.001;  // avoid 0 / 0 in the ramp
      for (size_t i = 0; i < pairs; ++i) {
        double ramp = (static_cast<double>(i) - lo) / (hi - lo);
        ramp = ramp < 0.0 ? 0.0 : (ramp > 1.0 ? 1.0 : ramp);
        inv_freq[i] =
            ramp * (inv_freq[i] / s.factor) + (1.0 - ramp) * inv_freq[i];
      }
      if (s.attention_factor > 0.0) {
        *attention_factor = s.attention_factor;
      } else if (s.factor > 1.0) {
        *attention_factor = 0.1 * log(s.factor) + 1.0;
      }
      break;
    }
  }
  if (!c.frequency_divisors.empty()) {
    for (size_t i = 0; i < pairs; ++i) inv_freq[i] /= c.frequency_divisors[i];
  }
}

}  // namespace detail

// Frequencies and cos/sin rows of one RopeConfig. Built once (allocates);
// read-only afterwards.
class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(RopeTable&&) = default;
  RopeTable& operator=(RopeTable&&) = default;

  // Validates `config` and precomputes positions [0, max_positions); 0 builds
  // no rows (every position on the fly). `*out` is unchanged on failure.
  static Status Create(const RopeConfig& config, size_t max_positions,
                       RopeTable* out) {
    if (out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "RopeTable::Create: output is null");
    }
    QKERN_RETURN_IF_ERROR(ValidateRopeConfig(config));
    if (max_positions > static_cast<size_t>(kMaxRopePosition)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "RopeTable::Create: max_positions = %zu, must be <= "
                        "%lld",
                        max_positions,
                        static_cast<long long>(kMaxRopePosition));
    }
    RopeTable t;
    t.config_ = config;
    t.max_positions_ = max_positions;
    const size_t pairs = config.rotary_dim / 2;
    const size_t row = t.RowFloats();
    // max_positions <= 2^27 and 2 * row <= 2^11 floats: no overflow in 64-bit;
    // on 32-bit size_t the check below catches it.
    const unsigned long long table_floats =
        static_cast<unsigned long long>(max_positions) * 2u * row;
    if (table_floats > SIZE_MAX / sizeof(float)) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "RopeTable::Create: %zu positions x %zu floats do not "
                        "fit in memory",
                        max_positions, 2 * row);
    }
    const size_t table_bytes =
        static_cast<size_t>(table_floats) * sizeof(float);
    if (!t.inv_freq_.Allocate(pairs * sizeof(double)) ||
        !t.table_.Allocate(table_bytes)) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "RopeTable::Create: cannot allocate %zu bytes for %zu "
                        "positions",
                        table_bytes, max_positions);
    }
    detail::ComputeRopeFrequencies(config, t.inv_freq_.as<double>(),
                                   &t.attention_factor_);
    for (size_t p = 0; p < max_positions; ++p) {
      float* cos_row = t.table_.as<float>() + p * 2 * row;
      t.ComputeRow(static_cast<int64_t>(p), cos_row, cos_row + row);
    }
    t.created_ = true;
    *out = std::move(t);
    return Status::Ok();
  }

  // True until Create succeeded.
  bool empty() const { return !created_; }
  const RopeConfig& config() const { return config_; }
  size_t head_dim() const { return config_.head_dim; }
  size_t rotary_dim() const { return config_.rotary_dim; }
  // Positions served from the table; the rest are computed per call.
  size_t max_positions() const { return max_positions_; }
  double attention_factor() const { return attention_factor_; }
  // f_i after scaling, rotary_dim / 2 values.
  const double* inverse_frequencies() const { return inv_freq_.as<double>(); }
  size_t TableBytes() const { return table_.size(); }

  // Floats in one cos (or sin) row: rotary_dim / 2 for kNeox; rotary_dim for
  // kGptJ, where cos[2i] = cos[2i + 1] = c_i and sin[2i] = -s_i,
  // sin[2i + 1] = s_i.
  size_t RowFloats() const {
    return RopeRowFloats(config_.rotary_dim,
                         config_.layout == RopeLayout::kGptJ);
  }
  // Rows of a tabulated position (< max_positions), else null.
  const float* CosRow(size_t position) const {
    if (position >= max_positions_) return nullptr;
    return table_.as<float>() + position * 2 * RowFloats();
  }
  const float* SinRow(size_t position) const {
    const float* c = CosRow(position);
    return c == nullptr ? nullptr : c + RowFloats();
  }
  // The rows of any position >= 0, exactly as the kernels use them.
  void ComputeRow(int64_t position, float* cos_row, float* sin_row) const {
    ComputeRopeRow(inv_freq_.as<double>(), config_.rotary_dim / 2,
                   attention_factor_, config_.layout == RopeLayout::kGptJ,
                   position, cos_row, sin_row);
  }

  // The table part of a kernel call (rows and heads left to fill in).
  RopeCall MakeCall() const {
    RopeCall call{};
    call.inv_freq = inv_freq_.as<double>();
    call.attention_factor = attention_factor_;
    call.table = table_.as<float>();
    call.table_positions = max_positions_;
    call.head_dim = config_.head_dim;
    call.rotary_dim = config_.rotary_dim;
    call.interleaved = config_.layout == RopeLayout::kGptJ;
    return call;
  }

 private:
  RopeConfig config_;
  size_t max_positions_ = 0;
  double attention_factor_ = 1.0;
  bool created_ = false;
  AlignedBuffer inv_freq_;
  AlignedBuffer table_;
};

namespace detail {

// `index` names the element of a positions array; SIZE_MAX for a scalar.
inline Status CheckRopePosition(const char* op, const char* what, size_t index,
                                int64_t position) {
  if (position >= 0 && position < kMaxRopePosition) return Status::Ok();
  const long long value = static_cast<long long>(position);
  const long long limit = static_cast<long long>(kMaxRopePosition);
  if (index == SIZE_MAX) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s: %s = %lld is out of range [0, %lld)", op, what,
                      value, limit);
  }
  return MakeStatus(StatusCode::kOutOfRange,
                    "%s: %s[%zu] = %lld is out of range [0, %lld)", op, what,
                    index, value, limit);
}

// Table, rows pointer and shape of a call over num_tokens x num_heads heads.
inline Status ValidateRopeRows(const char* op, const RopeTable& table,
                               const float* x, size_t num_tokens,
                               size_t num_heads, size_t token_stride) {
  if (table.empty()) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: the RopeTable is empty; build it with "
                      "RopeTable::Create",
                      op);
  }
  if (num_tokens == 0 || num_heads == 0) return Status::Ok();
  if (x == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "%s: x is null", op);
  }
  size_t row, last_row, total;
  if (__builtin_mul_overflow(num_heads, table.head_dim(), &row) ||
      __builtin_mul_overflow(num_tokens - 1, token_stride, &last_row) ||
      __builtin_add_overflow(last_row, row, &total) ||
      total > SIZE_MAX / sizeof(float)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s: %zu tokens x %zu heads of %zu with token_stride "
                      "%zu overflow",
                      op, num_tokens, num_heads, table.head_dim(),
                      token_stride);
  }
  if (token_stride < row && num_tokens > 1) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: token_stride = %zu is smaller than num_heads * "
                      "head_dim = %zu * %zu = %zu",
                      op, token_stride, num_heads, table.head_dim(), row);
  }
  return Status::Ok();
}

}  // namespace detail

// Rotates `num_heads` heads of `num_tokens` tokens in place: head h of token t
// is x[t * token_stride + h * head_dim, + head_dim), token t at position
// positions[t] (any order, repeats allowed, each in [0, kMaxRopePosition)).
// No alignment needed; nothing outside the heads is touched.
inline Status ApplyRope(const RopeTable& table, float* x, size_t num_tokens,
                        size_t num_heads, size_t token_stride,
                        const int32_t* positions) {
  QKERN_RETURN_IF_ERROR(detail::ValidateRopeRows(
      "ApplyRope", table, x, num_tokens, num_heads, token_stride));
  if (num_tokens == 0 || num_heads == 0) return Status::Ok();
  if (positions == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "ApplyRope: positions is null");
  }
  for (size_t t = 0; t < num_tokens; ++t) {
    QKERN_RETURN_IF_ERROR(
        detail::CheckRopePosition("ApplyRope", "positions", t, positions[t]));
  }
  RopeCall call = table.MakeCall();
  call.src = x;
  call.dst = x;
  call.num_tokens = num_tokens;
  call.num_heads = num_heads;
  call.src_stride = call.dst_stride = token_stride;
  call.positions = positions;
  detail::DispatchRope(call);
  return Status::Ok();
}

// As ApplyRope, for tokens at first_position, first_position + 1, ... (a
// prefill chunk or one decode step).
inline Status ApplyRopeConsecutive(const RopeTable& table, float* x,
                                   size_t num_tokens, size_t num_heads,
                                   size_t token_stride,
                                   int64_t first_position) {
  QKERN_RETURN_IF_ERROR(detail::ValidateRopeRows(
      "ApplyRopeConsecutive", table, x, num_tokens, num_heads, token_stride));
  if (num_tokens == 0 || num_heads == 0) return Status::Ok();
  QKERN_RETURN_IF_ERROR(detail::CheckRopePosition(
      "ApplyRopeConsecutive", "first_position", SIZE_MAX, first_position));
  if (num_tokens - 1 >=
      static_cast<size_t>(kMaxRopePosition - first_position)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "ApplyRopeConsecutive: positions %lld + [0, %zu) reach "
                      "past %lld",
                      static_cast<long long>(first_position), num_tokens,
                      static_cast<long long>(kMaxRopePosition));
  }
  RopeCall call = table.MakeCall();
  call.src = x;
  call.dst = x;
  call.num_tokens = num_tokens;
  call.num_heads = num_heads;
  call.src_stride = call.dst_stride = token_stride;
  call.positions = nullptr;
  call.first_position = first_position;
  detail::DispatchRope(call);
  return Status::Ok();
}

// Former bound of the K row RopeAndWriteK staged on the stack; rows of any
// size now go straight to the cache. Kept for source compatibility.
constexpr size_t kRopeFusedStackFloats = 4096;

// Rotates one token's K (cache->RowFloats() floats, [kv_head][head_dim]) at
// `rope_position` and stores it with V (unrotated) at cache position `pos` of
// `layer`, in the cache's format, as WriteKV does (same preconditions,
// errors and written mark), bit for bit the bytes of ApplyRope then WriteKV.
// `rope_position` is usually `pos`; they differ with position offsets (e.g.
// a prompt cache reused at another offset). `k` is not modified. `scratch`
// is unused (kept for source compatibility).
//
// One pass: each K head is rotated in registers and encoded straight into
// its page row (PagedKvCache::WritablePosition); int8 rotates twice (amax,
// then codes) rather than staging the row in memory. f32 and f16 K rows are
// dim-major in the page, so they are encoded into a stack row and then
// spread over the dims. On error the position
// is left unwritten for `layer`, as after a failed WriteKV.
inline Status RopeAndWriteK(const RopeTable& table, PagedKvCache* cache,
                            KvSeqId seq, size_t layer, size_t pos,
                            int64_t rope_position, const float* k,
                            const float* v, float* scratch = nullptr) {
  (void)scratch;
  if (table.empty()) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RopeAndWriteK: the RopeTable is empty; build it with "
                      "RopeTable::Create");
  }
  if (cache == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RopeAndWriteK: cache is null");
  }
  const KvCacheConfig& config = cache->config();
  if (config.head_dim != table.head_dim()) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "RopeAndWriteK: the cache has head_dim = %zu but the "
                      "RopeTable was built for head_dim = %zu",
                      config.head_dim, table.head_dim());
  }
  if (k == nullptr || v == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "RopeAndWriteK: %s is null",
                      k == nullptr ? "k" : "v");
  }
  QKERN_RETURN_IF_ERROR(detail::CheckRopePosition(
      "RopeAndWriteK", "rope_position", SIZE_MAX, rope_position));
  const RopeCall call = table.MakeCall();
  const size_t row_floats = RopeRowFloats(call.rotary_dim, call.interleaved);
  // The cos/sin row (not K): from the table, or computed for positions past
  // it exactly as RopeRows computes them.
  float computed[2 * kMaxRopeHeadDim];
  const float* cos_row;
  if (static_cast<uint64_t>(rope_position) < call.table_positions) {
    cos_row = call.table + static_cast<size_t>(rope_position) * 2 * row_floats;
  } else {
    ComputeRopeRow(call.inv_freq, call.rotary_dim / 2, call.attention_factor,
                   call.interleaved, rope_position, computed,
                   computed + row_floats);
    cos_row = computed;
  }
  RopeKvRowCall row_call;
  row_call.cos_row = cos_row;
  row_call.sin_row = cos_row + row_floats;
  row_call.head_dim = config.head_dim;
  row_call.rotary_dim = call.rotary_dim;
  row_call.interleaved = call.interleaved;
  row_call.format = config.format;
  const size_t dim = config.head_dim;
  const size_t element_bytes = GetKvFormatInfo(config.format).element_bytes;
  alignas(64) uint8_t staged_row[kMaxRopeHeadDim * sizeof(float)];
  KvPositionSlots rows;
  QKERN_RETURN_IF_ERROR(cache->WritablePosition(seq, layer, pos, &rows));
  for (size_t head = 0; head < config.num_kv_heads; ++head) {
    KvRowSlot slot = rows.Row(head, KvPart::kK);
    float bad = 0.0f;
    // Dim-major K (f32, f16): the rotated row is encoded here, then spread
    // over its dims (rotation pairs span the row, so it is not chunked).
    const bool staged = slot.value_stride != element_bytes;
    size_t stored = detail::DispatchRopeEncodeKvRow(
        row_call, k + head * dim, staged ? staged_row : slot.values, slot.scale,
        &bad);
    if (staged) {
      ScatterKvValues(staged_row, stored, element_bytes, slot.values,
                      slot.value_stride);
    }
    if (stored != dim) {
      return detail::KvUnstorableValue("RopeAndWriteK", KvPart::kK,
                                       head * dim + stored, bad, layer, pos,
                                       config.format);
    }
    slot = rows.Row(head, KvPart::kV);
    const float* v_head = v + head * dim;
    stored = EncodeKvRowToSlot(config.format, v_head, dim, slot);
    if (stored != dim) {
      return detail::KvUnstorableValue("RopeAndWriteK", KvPart::kV,
                                       head * dim + stored, v_head[stored],
                                       layer, pos, config.format);
    }
  }
  return cache->MarkKvWritten(seq, layer, pos);
}

}  // namespace qkern

#endif  // QKERN_KERNELS_ROPE_H_
