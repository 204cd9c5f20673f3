// Target-independent RoPE types and the cos/sin row function, shared by the
// public header (rope.h), the table builder and the per-target kernels
// (rope-inl.h).
#ifndef QKERN_KERNELS_ROPE_TYPES_H_
#define QKERN_KERNELS_ROPE_TYPES_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "qkern/kv/kv_format.h"

namespace qkern {

// Largest head_dim the RoPE kernels accept: bounds the on-the-fly cos/sin row
// kept on the stack (2 * 1024 floats), and is 4x the largest head of any
// current model.
constexpr size_t kMaxRopeHeadDim = 1024;

// Floats in one cos (or sin) row of the table for one position.
inline size_t RopeRowFloats(size_t rotary_dim, bool interleaved) {
  return interleaved ? rotary_dim : rotary_dim / 2;
}

// Everything one rotation call needs, validated by the public entry point.
struct RopeCall {
  // Per pair frequencies (rotary_dim / 2), already scaled.
  const double* inv_freq;
  double attention_factor;  // multiplies cos and sin (YaRN), else 1
  // table_positions rows of [cos row, sin row], RopeRowFloats() floats each.
  const float* table;
  size_t table_positions;
  size_t head_dim;
  size_t rotary_dim;  // even, <= head_dim; the rest of a head is copied as is
  bool interleaved;   // GPT-J layout
  // Heads are contiguous within a token: head h of token t starts at
  // src + t * src_stride + h * head_dim. dst == src rotates in place;
  // otherwise the two must not overlap.
  const float* src;
  float* dst;
  size_t num_tokens;
  size_t num_heads;
  size_t src_stride;
  size_t dst_stride;
  // Position of token t: positions[t], or first_position + t if null.
  const int32_t* positions;
  int64_t first_position;
};

// One head of K rotated and encoded into a KV cache row in one pass
// (RopeAndWriteK): the head's cos/sin row, resolved once per token.
struct RopeKvRowCall {
  const float* cos_row;  // RopeRowFloats() floats each
  const float* sin_row;
  size_t head_dim;
  size_t rotary_dim;
  bool interleaved;
  KvFormat format;
};

// The cos/sin row of one position, as the table stores it. The table builder
// and the on-the-fly path both call this, so a position gets bit-identical
// values either way.
// The angle is formed in double: in f32, position * inv_freq would keep no
// fraction bits at all past 2^24 radians, and even at 100k positions would be
// off by ~0.004 rad. In double, the product's error (~angle * 2^-53) stays
// below f32 resolution for every position kernels accept; cos() and sin()
// reduce the argument exactly, so no explicit mod 2*pi (which would add the
// rounding of 2*pi times the number of turns) is done here.
inline void ComputeRopeRow(const double* inv_freq, size_t pairs,
                           double attention_factor, bool interleaved,
                           int64_t position, float* cos_row, float* sin_row) {
  const double p = static_cast<double>(position);
  for (size_t i = 0; i < pairs; ++i) {
    const double angle = p * inv_freq[i];
    const float c = static_cast<float>(cos(angle) * attention_factor);
    const float s = static_cast<float>(sin(angle) * attention_factor);
    if (interleaved) {
      cos_row[2 * i] = c;
      cos_row[2 * i + 1] = c;
      sin_row[2 * i] = -s;
      sin_row[2 * i + 1] = s;
    } else {
      cos_row[i] = c;
      sin_row[i] = s;
    }
  }
}

}  // namespace qkern

#endif  // QKERN_KERNELS_ROPE_TYPES_H_
