// Weight formats qkern multiplies with, and their storage.
//
// GGUF block types (Q4_0, Q4_1, Q8_0) are stored exactly as in a GGUF file, so
// a tensor can be used straight from an mmapped model. qkern's own groupwise
// formats (INT4 with a group-size parameter, per-channel INT8) use separate
// code and scale arrays, the layout other runtimes export.
#ifndef QKERN_QUANT_BLOCK_FORMATS_H_
#define QKERN_QUANT_BLOCK_FORMATS_H_

#include <stddef.h>
#include <stdint.h>

#include "qkern/base/f16.h"

namespace qkern {

// Every format quantizes along K in blocks of this many values, and
// activations are quantized to int8 in blocks of the same size.
constexpr size_t kQuantBlock = 32;

// value = d * (q - 8), q in [0, 15]; qs[j] holds element j in its low nibble
// and element j + 16 in its high nibble.
struct BlockQ4_0 {
  f16_t d;
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "GGUF Q4_0 block is 18 bytes");

// value = d * q + m, q in [0, 15]; nibble order as BlockQ4_0.
struct BlockQ4_1 {
  f16_t d;
  f16_t m;
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "GGUF Q4_1 block is 20 bytes");

// value = d * q, q in [-128, 127] (the reference quantizer emits [-127, 127]).
struct BlockQ8_0 {
  f16_t d;
  int8_t qs[kQuantBlock];
};
static_assert(sizeof(BlockQ8_0) == 34, "GGUF Q8_0 block is 34 bytes");

enum class WeightFormat : uint32_t {
  kQ4_0 = 0,
  kQ4_1,
  kQ8_0,
  // Groupwise 4-bit, symmetric: value = scale * (q - 8), one f16 scale per
  // group of `group_size` values along K. Codes packed two per byte, element
  // 2i in the low nibble of byte i.
  kInt4Sym,
  // Groupwise 4-bit with a zero point expressed as a float minimum:
  // value = scale * q + min, f16 scale and min per group.
  kInt4Asym,
  // Per-output-channel 8-bit: value = scale[row] * q, q int8, f32 scales.
  kInt8PerChannel,
};

constexpr WeightFormat kAllWeightFormats[] = {
    WeightFormat::kQ4_0,    WeightFormat::kQ4_1,     WeightFormat::kQ8_0,
    WeightFormat::kInt4Sym, WeightFormat::kInt4Asym, WeightFormat::kInt8PerChannel};

// The one table that describes a format.
struct WeightFormatInfo {
  const char* name;
  uint32_t bits;          // bits per code
  bool is_gguf_block;     // stored as GGUF blocks (group size fixed at 32)
  size_t block_bytes;     // GGUF: bytes per 32-value block; else 0
  bool has_min;           // value = scale * q + min (else symmetric)
  bool per_channel;       // one scale per row, f32
};

inline const WeightFormatInfo& FormatInfo(WeightFormat format) {
  static constexpr WeightFormatInfo kTable[] = {
      {"Q4_0", 4, true, sizeof(BlockQ4_0), false, false},
      {"Q4_1", 4, true, sizeof(BlockQ4_1), true, false},
      {"Q8_0", 8, true, sizeof(BlockQ8_0), false, false},
      {"INT4_SYM", 4, false, 0, false, false},
      {"INT4_ASYM", 4, false, 0, true, false},
      {"INT8_PER_CHANNEL", 8, false, 0, false, true},
  };
  return kTable[static_cast<uint32_t>(format)];
}

inline bool IsKnownFormat(WeightFormat format) {
  return static_cast<uint32_t>(format) <=
         static_cast<uint32_t>(WeightFormat::kInt8PerChannel);
}

// A non-owning view of an N x K weight matrix (N output rows, K inputs), rows
// contiguous. For GGUF formats `codes` points at rows * K / 32 blocks; for the
// groupwise formats `codes` holds the codes and `scales` / `mins` the per-group
// (or per-row) parameters, row-major.
struct QuantizedWeights {
  WeightFormat format = WeightFormat::kQ4_0;
  size_t rows = 0;
  size_t cols = 0;
  size_t group_size = kQuantBlock;  // ignored for GGUF and per-channel formats
  const void* codes = nullptr;
  const void* scales = nullptr;  // f16 per group, or f32 per row
  const void* mins = nullptr;    // f16 per group (kInt4Asym only)

  // Values per scale along K.
  size_t EffectiveGroupSize() const {
    const WeightFormatInfo& info = FormatInfo(format);
    if (info.is_gguf_block) return kQuantBlock;
    if (info.per_channel) return cols;
    return group_size;
  }
};

}  // namespace qkern

#endif  // QKERN_QUANT_BLOCK_FORMATS_H_
