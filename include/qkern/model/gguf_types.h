// The type vocabulary of the GGUF file format: metadata value types and GGML
// tensor types with their block geometry.
//
// The numbers are the on-disk ids of the GGUF specification (as listed by the
// `gguf` Python package 0.19); changing one breaks every file. Block geometry
// is what the reader needs to bound-check a tensor of a type qkern cannot
// decode, so unsupported-but-known types still validate and get a clear error
// when a caller asks for their data.
#ifndef QKERN_MODEL_GGUF_TYPES_H_
#define QKERN_MODEL_GGUF_TYPES_H_

#include <stddef.h>
#include <stdint.h>

namespace qkern {

// "GGUF" read as a little-endian u32.
constexpr uint32_t kGgufMagic = 0x46554747u;
constexpr uint32_t kGgufDefaultAlignment = 32;

// --- Metadata value types ----------------------------------------------------

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

constexpr uint32_t kGgufValueTypeCount = 13;

inline bool IsKnownValueType(uint32_t id) { return id < kGgufValueTypeCount; }

inline const char* ValueTypeName(GgufValueType type) {
  static constexpr const char* kNames[kGgufValueTypeCount] = {
      "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
      "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};
  const uint32_t id = static_cast<uint32_t>(type);
  return id < kGgufValueTypeCount ? kNames[id] : "INVALID";
}

// Bytes of a fixed-size value; 0 for STRING and ARRAY (variable length).
inline size_t ValueTypeSize(GgufValueType type) {
  static constexpr uint8_t kSizes[kGgufValueTypeCount] = {1, 1, 2, 2, 4, 4, 4,
                                                          1, 0, 0, 8, 8, 8};
  const uint32_t id = static_cast<uint32_t>(type);
  return id < kGgufValueTypeCount ? kSizes[id] : 0;
}

// --- Tensor types ------------------------------------------------------------

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
};

struct GgmlTypeInfo {
  const char* name;      // nullptr: the id was never assigned
  uint32_t block_size;   // values per block; 0: the id was retired
  uint32_t block_bytes;  // bytes per block
  bool qkern_reads;      // qkern has a dequantizer / kernel for it
};

constexpr uint32_t kGgmlTypeIdCount = 42;

// Ids 4, 5, 31-33 and 36-38 were assigned once and later removed from ggml;
// files using them exist but their layout is no longer defined.
inline const GgmlTypeInfo& GgmlTypeInfoFor(uint32_t id) {
  static constexpr GgmlTypeInfo kUnassigned = {nullptr, 0, 0, false};
  static constexpr GgmlTypeInfo kTable[kGgmlTypeIdCount] = {
      {"F32", 1, 4, true},     // 0
      {"F16", 1, 2, true},     // 1
      {"Q4_0", 32, 18, true},  // 2
      {"Q4_1", 32, 20, true},  // 3
      {"Q4_2", 0, 0, false},   // 4 (retired)
      {"Q4_3", 0, 0, false},   // 5 (retired)
      {"Q5_0", 32, 22, true},  // 6
      {"Q5_1", 32, 24, true},  // 7
      {"Q8_0", 32, 34, true},  // 8
      // ggml's block is an f16 pair plus 32 int8 (36 bytes); gguf-py's table
      // says 40, a leftover from when the pair was f32. ggml writes the files.
      {"Q8_1", 32, 36, false},      // 9
      {"Q2_K", 256, 84, false},     // 10
      {"Q3_K", 256, 110, false},    // 11
      {"Q4_K", 256, 144, true},     // 12
      {"Q5_K", 256, 176, true},     // 13
      {"Q6_K", 256, 210, true},     // 14
      {"Q8_K", 256, 292, false},    // 15
      {"IQ2_XXS", 256, 66, false},  // 16
      {"IQ2_XS", 256, 74, false},   // 17
      {"IQ3_XXS", 256, 98, false},  // 18
      {"IQ1_S", 256, 50, false},    // 19
      {"IQ4_NL", 32, 18, false},    // 20
      {"IQ3_S", 256, 110, false},   // 21
      {"IQ2_S", 256, 82, false},    // 22
      {"IQ4_XS", 256, 136, false},  // 23
      {"I8", 1, 1, false},          // 24
      {"I16", 1, 2, false},         // 25
      {"I32", 1, 4, false},         // 26
      {"I64", 1, 8, false},         // 27
      {"F64", 1, 8, false},         // 28
      {"IQ1_M", 256, 56, false},    // 29
      {"BF16", 1, 2, true},         // 30
      {"Q4_0_4_4", 0, 0, false},    // 31 (retired)
      {"Q4_0_4_8", 0, 0, false},    // 32 (retired)
      {"Q4_0_8_8", 0, 0, false},    // 33 (retired)
      {"TQ1_0", 256, 54, false},    // 34
      {"TQ2_0", 256, 66, false},    // 35
      {"IQ4_NL_4_4", 0, 0, false},  // 36 (retired)
      {"IQ4_NL_4_8", 0, 0, false},  // 37 (retired)
      {"IQ4_NL_8_8", 0, 0, false},  // 38 (retired)
      {"MXFP4", 32, 17, false},     // 39
      {"NVFP4", 64, 36, false},     // 40
      {"Q1_0", 128, 18, false},     // 41
  };
  return id < kGgmlTypeIdCount ? kTable[id] : kUnassigned;
}

inline const GgmlTypeInfo& GgmlTypeInfoFor(GgmlType type) {
  return GgmlTypeInfoFor(static_cast<uint32_t>(type));
}

// A type whose layout is defined, so its tensors can be bound-checked.
inline bool IsKnownGgmlType(uint32_t id) {
  return GgmlTypeInfoFor(id).block_size != 0;
}

inline const char* GgmlTypeName(GgmlType type) {
  const char* name = GgmlTypeInfoFor(type).name;
  return name != nullptr ? name : "UNKNOWN";
}

}  // namespace qkern

#endif  // QKERN_MODEL_GGUF_TYPES_H_
