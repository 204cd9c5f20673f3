// Scalar reference for RoPE, in double precision: the formulas of
// qkern/kernels/rope.h written out per pair, with no table and no f32
// rounding. Loops a reader can check by eye; used by tests and nothing else.
#ifndef QKERN_KERNELS_ROPE_REF_H_
#define QKERN_KERNELS_ROPE_REF_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <algorithm>

#include "qkern/kernels/rope.h"

namespace qkern {
namespace ref {

constexpr double kRopePi = 3.14159265358979323846264338327950288;

// Unscaled frequency of pair i: theta_base^(-2i / rotary_dim).
inline double RopeBaseFrequency(const RopeConfig& c, size_t pair) {
  return 1.0 / pow(c.theta_base, static_cast<double>(2 * pair) /
                                     static_cast<double>(c.rotary_dim));
}

// Llama 3.1 rule for one frequency: keep short wavelengths, divide long ones
// by the factor, blend linearly in (L / wavelength) in between.
inline double Llama3Frequency(const RopeScaling& s, double freq) {
  const double wavelength = 2.0 * kRopePi / freq;
  const double context = s.original_max_position;
  if (wavelength < context / s.high_freq_factor) return freq;
  if (wavelength > context / s.low_freq_factor) return freq / s.factor;
  const double blend = (context / wavelength - s.low_freq_factor) /
                       (s.high_freq_factor - s.low_freq_factor);
  return blend * freq + (1.0 - blend) * (freq / s.factor);
}

// YaRN ("NTK-by-parts") for pair i: the share of interpolation ramps
// linearly in the pair index between the pair that turns beta_fast times
// over the original context and the one that turns beta_slow times.
inline double YarnFrequency(const RopeConfig& c, size_t pair) {
  const RopeScaling& s = c.scaling;
  const double dim = static_cast<double>(c.rotary_dim);
  // Solving L / (2 pi theta^(2i/dim)) = turns for i.
  auto pair_at = [&](double turns) {
    return dim * log(s.original_max_position / (2.0 * kRopePi * turns)) /
           (2.0 * log(c.theta_base));
  };
  double low = pair_at(s.beta_fast);
  double high = pair_at(s.beta_slow);
  if (s.yarn_truncate) {
    low = floor(low);
    high = ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;
  const double ramp = std::min(
      1.0, std::max(0.0, (static_cast<double>(pair) - low) / (high - low)));
  const double extrapolated = RopeBaseFrequency(c, pair);
  const double interpolated = extrapolated / s.factor;
  return interpolated * ramp + extrapolated * (1.0 - ramp);
}

// Scaled frequency of pair i.
inline double RopeFrequency(const RopeConfig& c, size_t pair) {
  const double base = RopeBaseFrequency(c, pair);
  switch (c.scaling.type) {
    case RopeScalingType::kNone:
      return base;
    case RopeScalingType::kLinear:
      return base / c.scaling.factor;
    case RopeScalingType::kLlama3:
      return Llama3Frequency(c.scaling, base);
    case RopeScalingType::kYarn:
      return YarnFrequency(c, pair);
  }
  return base;
}

// Multiplier of cos and sin: YaRN's mscale, else 1.
inline double RopeAttentionFactor(const RopeConfig& c) {
  const RopeScaling& s = c.scaling;
  if (s.type != RopeScalingType::kYarn) return 1.0;
  if (s.attention_factor > 0.0) return s.attention_factor;
  return s.factor <= 1.0 ? 1.0 : 1.0 + 0.1 * log(s.factor);
}

// Index pair (first, second) of rotary pair i.
inline void RopePairIndices(const RopeConfig& c, size_t pair, size_t* first,
                            size_t* second) {
  if (c.layout == RopeLayout::kGptJ) {
    *first = 2 * pair;
    *second = 2 * pair + 1;
  } else {
    *first = pair;
    *second = pair + c.rotary_dim / 2;
  }
}

// Rotates one head (head_dim values) at `position` into `out`.
inline void RopeHead(const RopeConfig& c, int64_t position, const float* in,
                     double* out) {
  for (size_t i = 0; i < c.head_dim; ++i) out[i] = in[i];
  const double m = RopeAttentionFactor(c);
  for (size_t pair = 0; pair < c.rotary_dim / 2; ++pair) {
    const double angle = static_cast<double>(position) * RopeFrequency(c, pair);
    size_t i, j;
    RopePairIndices(c, pair, &i, &j);
    const double a = in[i], b = in[j];
    out[i] = m * (a * cos(angle) - b * sin(angle));
    out[j] = m * (b * cos(angle) + a * sin(angle));
  }
}

}  // namespace ref
}  // namespace qkern

#endif  // QKERN_KERNELS_ROPE_REF_H_
