// Reference (scalar) quantizers and dequantizers.
//
// The GGUF ones follow ggml's reference quantizers step for step, including
// the order of float operations, so their output is bit-identical to what
// llama.cpp and the `gguf` Python package write (checked against fixtures in
// tests/data). They are the specification; nothing here is fast.
#ifndef QKERN_QUANT_QUANTIZE_REF_H_
#define QKERN_QUANT_QUANTIZE_REF_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <algorithm>

#include "qkern/base/f16.h"
#include "qkern/quant/block_formats.h"

namespace qkern {
namespace ref {

// Keeps `a * b + c` from being fused into one FMA (a different rounding than
// the reference quantizers use) whatever -ffp-contract says.
inline float RoundedProduct(float a, float b) {
  float p = a * b;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(p));
#else
  volatile float barrier = p;
  p = barrier;
#endif
  return p;
}

inline float Reciprocal(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

// --- GGUF blocks -----------------------------------------------------------

inline void QuantizeQ4_0(const float* x, size_t n, BlockQ4_0* out) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, signed
    for (size_t j = 0; j < kQuantBlock; ++j) {
      if (amax < fabsf(v[j])) {
        amax = fabsf(v[j]);
        max = v[j];
      }
    }
    const float d = max / -8.0f;
    const float id = Reciprocal(d);
    out[b].d = F16FromF32(d);
    for (size_t j = 0; j < kQuantBlock / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(RoundedProduct(v[j], id) + 8.5f));
      const int hi =
          std::min(15, static_cast<int>(RoundedProduct(v[j + 16], id) + 8.5f));
      out[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

inline void QuantizeQ4_1(const float* x, size_t n, BlockQ4_1* out) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    float min = v[0], max = v[0];
    for (size_t j = 1; j < kQuantBlock; ++j) {
      min = std::min(min, v[j]);
      max = std::max(max, v[j]);
    }
    const float d = (max - min) / 15.0f;
    const float id = Reciprocal(d);
    out[b].d = F16FromF32(d);
    out[b].m = F16FromF32(min);
    for (size_t j = 0; j < kQuantBlock / 2; ++j) {
      const int lo = std::min(
          15, static_cast<int>(RoundedProduct(v[j] - min, id) + 0.5f));
      const int hi = std::min(
          15, static_cast<int>(RoundedProduct(v[j + 16] - min, id) + 0.5f));
      out[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

inline void QuantizeQ8_0(const float* x, size_t n, BlockQ8_0* out) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    float amax = 0.0f;
    for (size_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, fabsf(v[j]));
    const float d = amax / 127.0f;
    const float id = Reciprocal(d);
    out[b].d = F16FromF32(d);
    for (size_t j = 0; j < kQuantBlock; ++j) {
      out[b].qs[j] = static_cast<int8_t>(roundf(v[j] * id));  // half away
    }
  }
}

inline void DequantizeQ4_0(const BlockQ4_0* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F32FromF16(in[b].d);
    for (size_t j = 0; j < kQuantBlock / 2; ++j) {
      y[b * kQuantBlock + j] = static_cast<float>((in[b].qs[j] & 15) - 8) * d;
      y[b * kQuantBlock + j + 16] = static_cast<float>((in[b].qs[j] >> 4) - 8) * d;
    }
  }
}

inline void DequantizeQ4_1(const BlockQ4_1* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F32FromF16(in[b].d);
    const float m = F32FromF16(in[b].m);
    for (size_t j = 0; j < kQuantBlock / 2; ++j) {
      y[b * kQuantBlock + j] = static_cast<float>(in[b].qs[j] & 15) * d + m;
      y[b * kQuantBlock + j + 16] = static_cast<float>(in[b].qs[j] >> 4) * d + m;
    }
  }
}

inline void DequantizeQ8_0(const BlockQ8_0* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F32FromF16(in[b].d);
    for (size_t j = 0; j < kQuantBlock; ++j) {
      y[b * kQuantBlock + j] = static_cast<float>(in[b].qs[j]) * d;
    }
  }
}

// --- qkern groupwise / per-channel formats -----------------------------------

// Quantizes one row of `cols` values. Symmetric INT4 uses Q4_0's rule (scale
// from the signed extreme, so the full [-8, 7] range is used); asymmetric
// INT4 uses Q4_1's rule. Codes: element 2i in the low nibble of byte i.
inline void QuantizeInt4GroupRow(const float* x, size_t cols, size_t group,
                                 bool with_min, uint8_t* codes, f16_t* scales,
                                 f16_t* mins) {
  for (size_t i = 0; i < cols / 2; ++i) codes[i] = 0;
  for (size_t g = 0; g < cols / group; ++g) {
    const float* v = x + g * group;
    float d, id, offset;
    if (with_min) {
      float min = v[0], max = v[0];
      for (size_t j = 1; j < group; ++j) {
        min = std::min(min, v[j]);
        max = std::max(max, v[j]);
      }
      d = (max - min) / 15.0f;
      mins[g] = F16FromF32(min);
      offset = min;
    } else {
      float amax = 0.0f, max = 0.0f;
      for (size_t j = 0; j < group; ++j) {
        if (amax < fabsf(v[j])) {
          amax = fabsf(v[j]);
          max = v[j];
        }
      }
      d = max / -8.0f;
      offset = 0.0f;
    }
    id = Reciprocal(d);
    scales[g] = F16FromF32(d);
    for (size_t j = 0; j < group; ++j) {
      const float t = RoundedProduct(v[j] - offset, id) + (with_min ? 0.5f : 8.5f);
      const int q = std::min(15, std::max(0, static_cast<int>(t)));
      const size_t k = g * group + j;
      codes[k / 2] |= static_cast<uint8_t>(q << ((k & 1) * 4));
    }
  }
}

inline void QuantizeInt8Row(const float* x, size_t cols, int8_t* codes,
                            float* scale) {
  float amax = 0.0f;
  for (size_t j = 0; j < cols; ++j) amax = std::max(amax, fabsf(x[j]));
  const float d = amax / 127.0f;
  const float id = Reciprocal(d);
  *scale = d;
  for (size_t j = 0; j < cols; ++j) {
    codes[j] = static_cast<int8_t>(roundf(x[j] * id));
  }
}

// Dequantizes row `r` of any format into y[0, cols).
inline void DequantizeRow(const QuantizedWeights& w, size_t r, float* y) {
  const size_t k = w.cols;
  switch (w.format) {
    case WeightFormat::kQ4_0:
      DequantizeQ4_0(static_cast<const BlockQ4_0*>(w.codes) + r * k / kQuantBlock,
                     k, y);
      return;
    case WeightFormat::kQ4_1:
      DequantizeQ4_1(static_cast<const BlockQ4_1*>(w.codes) + r * k / kQuantBlock,
                     k, y);
      return;
    case WeightFormat::kQ8_0:
      DequantizeQ8_0(static_cast<const BlockQ8_0*>(w.codes) + r * k / kQuantBlock,
                     k, y);
      return;
    case WeightFormat::kInt4Sym:
    case WeightFormat::kInt4Asym: {
      const size_t group = w.group_size;
      const uint8_t* codes = static_cast<const uint8_t*>(w.codes) + r * k / 2;
      const bool with_min = w.format == WeightFormat::kInt4Asym;
      const f16_t* scales = static_cast<const f16_t*>(w.scales) + r * (k / group);
      // mins may be null for the symmetric format: no pointer arithmetic on it.
      const f16_t* mins =
          with_min ? static_cast<const f16_t*>(w.mins) + r * (k / group) : nullptr;
      for (size_t j = 0; j < k; ++j) {
        const int q = (codes[j / 2] >> ((j & 1) * 4)) & 15;
        const float d = F32FromF16(scales[j / group]);
        y[j] = with_min ? static_cast<float>(q) * d + F32FromF16(mins[j / group])
                        : static_cast<float>(q - 8) * d;
      }
      return;
    }
    case WeightFormat::kInt8PerChannel: {
      const int8_t* codes = static_cast<const int8_t*>(w.codes) + r * k;
      const float d = static_cast<const float*>(w.scales)[r];
      for (size_t j = 0; j < k; ++j) y[j] = static_cast<float>(codes[j]) * d;
      return;
    }
  }
}

}  // namespace ref
}  // namespace qkern

#endif  // QKERN_QUANT_QUANTIZE_REF_H_
