// Tests for qkern/model/gguf_reader.h and qkern/quant/kquants_ref.h.
//
// - The synthetic files from tools/make_gguf.py parse to exactly the metadata
//   and tensors listed in their `.expected` sidecars (tensor data compared by
//   hash, raw and dequantized with qkern::ref against gguf's dequantize).
// - The K-quant / Q5 dequantizers are bit-exact with the `gguf` package
//   (tests/data/kquant_fixtures.bin, tools/gen_kquant_fixtures.py).
// - Malformed input: targeted corruptions give errors naming the right thing;
//   truncation at (nearly) every length and byte / u64 overwrites at every
//   header offset never crash or read outside the buffer (run under ASan).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/base/f16.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/model/gguf_types.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/kquants_ref.h"
#include "qkern/quant/quantize_ref.h"
#include "status_matchers.h"

#ifndef QKERN_TEST_DATA_DIR
#error "QKERN_TEST_DATA_DIR must name the tests/data directory"
#endif

namespace qkern {
namespace {


std::string DataPath(const char* name) {
  return std::string(QKERN_TEST_DATA_DIR) + "/" + name;
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in),
                              std::istreambuf_iterator<char>());
}

bool UnderEmulation() { return getenv("QKERN_UNDER_EMULATION") != nullptr; }

uint64_t Fnv1a64(const void* data, size_t bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

std::string Hex64(uint64_t v) {
  char text[17];
  snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(v));
  return text;
}

// Opens an in-memory image (the vector's exact size, so ASan sees any read
// past its end).
Status OpenBytes(const std::vector<uint8_t>& bytes, GgufFile* file) {
  return GgufFile::OpenFromMemory(bytes.data(), bytes.size(), file);
}

void ExpectError(const Status& status,
                 std::initializer_list<const char*> mentions) {
  ASSERT_FALSE(status.ok())
      << "expected an error mentioning " << *mentions.begin();
  for (const char* text : mentions) {
    EXPECT_NE(status.message().find(text), std::string::npos)
        << "'" << text << "' missing from: " << status.message();
  }
}

// --- The sidecar written by tools/make_gguf.py (format in its docstring) ----

struct SidecarKv {
  std::string key;
  std::string type;  // element type for arrays
  bool is_array = false;
  std::string value;
  std::vector<std::string> elements;
};

struct SidecarTensor {
  std::string name;
  std::string type;
  uint32_t n_dims = 0;
  uint64_t ne[4] = {1, 1, 1, 1};
  uint64_t n_bytes = 0;
  std::string raw_hash;
  std::string dequant_hash;
};

struct Sidecar {
  uint32_t version = 0;
  uint64_t alignment = 0;
  size_t n_kv = 0;
  size_t n_tensors = 0;
  std::vector<SidecarKv> kvs;
  std::vector<SidecarTensor> tensors;
};

bool LoadSidecar(const std::string& path, Sidecar* out, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot open " + path + " (run tools/make_gguf.py)";
    return false;
  }
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "version") {
      fields >> out->version;
    } else if (tag == "alignment") {
      fields >> out->alignment;
    } else if (tag == "n_kv") {
      fields >> out->n_kv;
    } else if (tag == "n_tensors") {
      fields >> out->n_tensors;
    } else if (tag == "kv") {
      SidecarKv kv;
      fields >> kv.key >> kv.type >> kv.value;
      out->kvs.push_back(kv);
    } else if (tag == "arr") {
      SidecarKv kv;
      kv.is_array = true;
      size_t count = 0;
      fields >> kv.key >> kv.type >> count;
      for (size_t i = 0; i < count; ++i) {
        std::string element;
        if (!std::getline(in, element) || element.compare(0, 3, "el ") != 0) {
          *error = "bad array element line for " + kv.key;
          return false;
        }
        kv.elements.push_back(element.substr(3));
      }
      out->kvs.push_back(kv);
    } else if (tag == "tensor") {
      SidecarTensor t;
      fields >> t.name >> t.type >> t.n_dims;
      for (uint32_t d = 0; d < t.n_dims && d < 4; ++d) fields >> t.ne[d];
      fields >> t.n_bytes >> t.raw_hash >> t.dequant_hash;
      out->tensors.push_back(t);
    } else {
      *error = "unknown sidecar line: " + line;
      return false;
    }
    if (fields.fail()) {
      *error = "malformed sidecar line: " + line;
      return false;
    }
  }
  return true;
}

// Values encoded the way the sidecar writes them.
std::string HexBytes(std::string_view s) {
  if (s.empty()) return "-";
  std::string out;
  char byte[3];
  for (unsigned char c : s) {
    snprintf(byte, sizeof(byte), "%02x", c);
    out += byte;
  }
  return out;
}

std::string HexF32(float f) {
  char text[9];
  snprintf(text, sizeof(text), "%08x", BitsFromF32(f));
  return text;
}

std::string HexF64(double f) {
  uint64_t bits;
  memcpy(&bits, &f, 8);
  return Hex64(bits);
}

std::string ScalarAsSidecar(const GgufFile& file, const GgufMetadataEntry& e) {
  const std::string_view key = e.key;
  Status status;
  std::string text;
  switch (e.type) {
    case GgufValueType::kUint8: {
      uint8_t v = 0;
      status = file.GetU8(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kInt8: {
      int8_t v = 0;
      status = file.GetI8(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kUint16: {
      uint16_t v = 0;
      status = file.GetU16(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kInt16: {
      int16_t v = 0;
      status = file.GetI16(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kUint32: {
      uint32_t v = 0;
      status = file.GetU32(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kInt32: {
      int32_t v = 0;
      status = file.GetI32(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kUint64: {
      uint64_t v = 0;
      status = file.GetU64(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kInt64: {
      int64_t v = 0;
      status = file.GetI64(key, &v);
      text = std::to_string(v);
      break;
    }
    case GgufValueType::kFloat32: {
      float v = 0;
      status = file.GetF32(key, &v);
      text = HexF32(v);
      break;
    }
    case GgufValueType::kFloat64: {
      double v = 0;
      status = file.GetF64(key, &v);
      text = HexF64(v);
      break;
    }
    case GgufValueType::kBool: {
      bool v = false;
      status = file.GetBool(key, &v);
      text = v ? "1" : "0";
      break;
    }
    case GgufValueType::kString: {
      std::string_view v;
      status = file.GetString(key, &v);
      text = HexBytes(v);
      break;
    }
    case GgufValueType::kArray:
      return "<array>";
  }
  EXPECT_TRUE(status.ok()) << status.message();
  return text;
}

std::string ElementAsSidecar(const GgufArrayView& a, size_t i) {
  switch (a.type()) {
    case GgufValueType::kUint8:
      return std::to_string(a.U8At(i));
    case GgufValueType::kInt8:
      return std::to_string(a.I8At(i));
    case GgufValueType::kUint16:
      return std::to_string(a.U16At(i));
    case GgufValueType::kInt16:
      return std::to_string(a.I16At(i));
    case GgufValueType::kUint32:
      return std::to_string(a.U32At(i));
    case GgufValueType::kInt32:
      return std::to_string(a.I32At(i));
    case GgufValueType::kUint64:
      return std::to_string(a.U64At(i));
    case GgufValueType::kInt64:
      return std::to_string(a.I64At(i));
    case GgufValueType::kFloat32:
      return HexF32(a.F32At(i));
    case GgufValueType::kFloat64:
      return HexF64(a.F64At(i));
    case GgufValueType::kBool:
      return a.BoolAt(i) ? "1" : "0";
    case GgufValueType::kString:
      return HexBytes(a.StringAt(i));
    case GgufValueType::kArray:
      break;
  }
  return "<nested>";
}

// Dequantizes a tensor of any type qkern reads with the reference code.
bool DequantizeTensor(const GgufTensorInfo& t, std::vector<float>* out) {
  const size_t n = static_cast<size_t>(t.n_elements);
  const uint8_t* p = static_cast<const uint8_t*>(t.data);
  out->assign(n, 0.0f);
  float* y = out->data();
  switch (t.type) {
    case GgmlType::kF32:
      memcpy(y, p, n * 4);
      return true;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        memcpy(&bits, p + 2 * i, 2);
        y[i] = t.type == GgmlType::kF16 ? F32FromF16(bits) : F32FromBF16(bits);
      }
      return true;
    case GgmlType::kQ4_0:
      ref::DequantizeQ4_0(reinterpret_cast<const BlockQ4_0*>(p), n, y);
      return true;
    case GgmlType::kQ4_1:
      ref::DequantizeQ4_1(reinterpret_cast<const BlockQ4_1*>(p), n, y);
      return true;
    case GgmlType::kQ8_0:
      ref::DequantizeQ8_0(reinterpret_cast<const BlockQ8_0*>(p), n, y);
      return true;
    case GgmlType::kQ5_0:
      ref::DequantizeQ5_0(reinterpret_cast<const BlockQ5_0*>(p), n, y);
      return true;
    case GgmlType::kQ5_1:
      ref::DequantizeQ5_1(reinterpret_cast<const BlockQ5_1*>(p), n, y);
      return true;
    case GgmlType::kQ4_K:
      ref::DequantizeQ4_K(reinterpret_cast<const BlockQ4_K*>(p), n, y);
      return true;
    case GgmlType::kQ5_K:
      ref::DequantizeQ5_K(reinterpret_cast<const BlockQ5_K*>(p), n, y);
      return true;
    case GgmlType::kQ6_K:
      ref::DequantizeQ6_K(reinterpret_cast<const BlockQ6_K*>(p), n, y);
      return true;
    default:
      return false;
  }
}

// Checks a parsed file against its sidecar, value by value.
void ExpectMatchesSidecar(const GgufFile& file, const char* sidecar_name) {
  Sidecar expected;
  std::string error;
  ASSERT_TRUE(LoadSidecar(DataPath(sidecar_name), &expected, &error)) << error;
  EXPECT_EQ(file.version(), expected.version);
  EXPECT_EQ(file.alignment(), expected.alignment);
  ASSERT_EQ(file.metadata().size(), expected.n_kv);
  ASSERT_EQ(expected.kvs.size(), expected.n_kv);
  for (size_t i = 0; i < expected.kvs.size(); ++i) {
    const SidecarKv& want = expected.kvs[i];
    SCOPED_TRACE("metadata key " + want.key);
    // File order is preserved.
    EXPECT_EQ(file.metadata()[i].key, want.key);
    const GgufMetadataEntry* entry = file.FindMetadata(want.key);
    ASSERT_NE(entry, nullptr);
    if (!want.is_array) {
      EXPECT_EQ(ValueTypeName(entry->type), want.type);
      EXPECT_EQ(ScalarAsSidecar(file, *entry), want.value);
      continue;
    }
    ASSERT_EQ(entry->type, GgufValueType::kArray);
    EXPECT_EQ(ValueTypeName(entry->element_type), want.type);
    GgufArrayView view;
    QKERN_ASSERT_OK(file.GetArray(want.key, entry->element_type, &view));
    ASSERT_EQ(view.size(), want.elements.size());
    for (size_t j = 0; j < view.size(); ++j) {
      EXPECT_EQ(ElementAsSidecar(view, j), want.elements[j]) << "element " << j;
    }
  }

  const std::vector<GgufTensorInfo>& tensors = file.ListTensors();
  ASSERT_EQ(tensors.size(), expected.n_tensors);
  ASSERT_EQ(expected.tensors.size(), expected.n_tensors);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SidecarTensor& want = expected.tensors[i];
    const GgufTensorInfo& t = tensors[i];
    SCOPED_TRACE("tensor " + want.name);
    EXPECT_EQ(t.name, want.name);
    EXPECT_EQ(GgmlTypeName(t.type), want.type);
    EXPECT_EQ(t.n_dims, want.n_dims);
    uint64_t n_elements = 1;
    for (int d = 0; d < 4; ++d) {
      EXPECT_EQ(t.ne[d], want.ne[d]) << "ne[" << d << "]";
      n_elements *= want.ne[d];
    }
    EXPECT_EQ(t.n_elements, n_elements);
    EXPECT_EQ(t.n_bytes, want.n_bytes);
    EXPECT_EQ(t.file_offset % file.alignment(), 0u);
    EXPECT_GE(t.file_offset, file.data_offset());
    EXPECT_LE(t.file_offset + t.n_bytes, file.file_size());
    EXPECT_EQ(Hex64(Fnv1a64(t.data, static_cast<size_t>(t.n_bytes))),
              want.raw_hash);

    GgufTensorInfo found;
    const Status status = file.FindTensor(want.name, &found);
    if (want.dequant_hash == "-") {
      ExpectError(status, {"unsupported tensor type", want.type.c_str(),
                           want.name.c_str()});
      continue;
    }
    QKERN_ASSERT_OK(status);
    EXPECT_EQ(found.data, t.data);
    std::vector<float> values;
    ASSERT_TRUE(DequantizeTensor(found, &values));
    EXPECT_EQ(Hex64(Fnv1a64(values.data(), values.size() * 4)),
              want.dequant_hash)
        << "dequantized values differ from gguf.quants.dequantize";
  }
}

// Reads everything a consumer could reach, so ASan sees any out-of-bounds
// view; returns a checksum so the reads are not optimized away.
uint64_t TouchEverything(const GgufFile& file) {
  uint64_t sum = 0;
  for (const GgufMetadataEntry& e : file.metadata()) {
    if (e.type == GgufValueType::kString) {
      std::string_view s;
      if (file.GetString(e.key, &s).ok()) sum += Fnv1a64(s.data(), s.size());
    } else if (e.type == GgufValueType::kArray) {
      GgufArrayView view;
      if (!file.GetArray(e.key, &view).ok()) continue;
      for (size_t i = 0; i < view.size(); ++i) {
        if (view.type() == GgufValueType::kString) {
          const std::string_view s = view.StringAt(i);
          sum += Fnv1a64(s.data(), s.size());
        } else {
          sum += Fnv1a64(static_cast<const uint8_t*>(view.data()) +
                             i * ValueTypeSize(view.type()),
                         ValueTypeSize(view.type()));
        }
      }
    } else {
      const std::string value = ScalarAsSidecar(file, e);
      sum += Fnv1a64(value.data(), value.size());
    }
  }
  for (const GgufTensorInfo& t : file.ListTensors()) {
    EXPECT_LE(t.file_offset + t.n_bytes, file.file_size()) << t.name;
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    sum += p[0] + p[t.n_bytes - 1];
  }
  return sum;
}

// --- Type tables -------------------------------------------------------------

TEST(GgufTypes, TableMatchesBlockStructs) {
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ4_0).block_bytes, sizeof(BlockQ4_0));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ4_1).block_bytes, sizeof(BlockQ4_1));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ8_0).block_bytes, sizeof(BlockQ8_0));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ5_0).block_bytes, sizeof(BlockQ5_0));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ5_1).block_bytes, sizeof(BlockQ5_1));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ4_K).block_bytes, sizeof(BlockQ4_K));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ5_K).block_bytes, sizeof(BlockQ5_K));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ6_K).block_bytes, sizeof(BlockQ6_K));
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ4_K).block_size, kSuperBlock);
  EXPECT_EQ(GgmlTypeInfoFor(GgmlType::kQ5_0).block_size, kQuantBlock);
  int readable = 0;
  for (uint32_t id = 0; id < 64; ++id) {
    const GgmlTypeInfo& info = GgmlTypeInfoFor(id);
    if (info.qkern_reads) ++readable;
    if (info.block_size != 0) {
      EXPECT_NE(info.name, nullptr);
      EXPECT_GT(info.block_bytes, 0u);
    }
  }
  EXPECT_EQ(readable, 11);
  EXPECT_FALSE(IsKnownGgmlType(4));  // retired Q4_2
  EXPECT_FALSE(IsKnownGgmlType(99));
  EXPECT_STREQ(GgmlTypeName(GgmlType::kBF16), "BF16");
  EXPECT_STREQ(ValueTypeName(GgufValueType::kFloat64), "FLOAT64");
  EXPECT_EQ(ValueTypeSize(GgufValueType::kUint64), 8u);
  EXPECT_EQ(ValueTypeSize(GgufValueType::kString), 0u);
}

// --- K-quant and Q5 dequantizers vs gguf -------------------------------------

struct KFixtureSection {
  uint32_t type = 0, block_values = 0, block_bytes = 0, n_blocks = 0;
  std::vector<uint8_t> blocks;
  std::vector<float> dequant;
};

bool LoadKFixtures(std::vector<KFixtureSection>* sections, std::string* error) {
  const std::vector<uint8_t> bytes = ReadBytes(DataPath("kquant_fixtures.bin"));
  size_t pos = 0;
  auto take = [&](void* dst, size_t n) {
    if (n > bytes.size() - pos) return false;
    memcpy(dst, bytes.data() + pos, n);
    pos += n;
    return true;
  };
  char magic[8];
  uint32_t version = 0, n_sections = 0;
  if (!take(magic, 8) || memcmp(magic, "QKKFIX01", 8) != 0 ||
      !take(&version, 4) || version != 1 || !take(&n_sections, 4)) {
    *error = "bad header (run tools/gen_kquant_fixtures.py)";
    return false;
  }
  for (uint32_t s = 0; s < n_sections; ++s) {
    KFixtureSection section;
    if (!take(&section.type, 4) || !take(&section.block_values, 4) ||
        !take(&section.block_bytes, 4) || !take(&section.n_blocks, 4)) {
      *error = "truncated section header";
      return false;
    }
    section.blocks.resize(size_t{section.n_blocks} * section.block_bytes);
    section.dequant.resize(size_t{section.n_blocks} * section.block_values);
    if (!take(section.blocks.data(), section.blocks.size()) ||
        !take(section.dequant.data(), section.dequant.size() * 4)) {
      *error = "truncated section data";
      return false;
    }
    sections->push_back(std::move(section));
  }
  return pos == bytes.size();
}

TEST(KQuants, BitExactWithGguf) {
  std::vector<KFixtureSection> sections;
  std::string error;
  ASSERT_TRUE(LoadKFixtures(&sections, &error)) << error;
  std::vector<uint32_t> seen;
  for (const KFixtureSection& s : sections) {
    const GgmlTypeInfo& info = GgmlTypeInfoFor(s.type);
    SCOPED_TRACE(info.name != nullptr ? info.name : "?");
    ASSERT_EQ(s.block_values, info.block_size);
    ASSERT_EQ(s.block_bytes, info.block_bytes);
    GgufTensorInfo t;
    t.type = static_cast<GgmlType>(s.type);
    t.n_elements = s.dequant.size();
    t.data = s.blocks.data();
    std::vector<float> got;
    ASSERT_TRUE(DequantizeTensor(t, &got));
    size_t mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (BitsFromF32(got[i]) == BitsFromF32(s.dequant[i])) continue;
      if (++mismatches <= 5) {
        ADD_FAILURE() << "block " << i / s.block_values << " element "
                      << i % s.block_values << ": got " << got[i]
                      << " expected " << s.dequant[i];
      }
    }
    EXPECT_EQ(mismatches, 0u);
    seen.push_back(s.type);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<uint32_t>{6, 7, 12, 13, 14}));
}

// The scale/min packing on its own: every 6-bit value round-trips through
// the 12-byte layout described in kquants_ref.h.
TEST(KQuants, ScaleMinPacking) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    int scale[8], min[8];
    uint8_t packed[12] = {};
    for (int s = 0; s < 8; ++s) {
      scale[s] = static_cast<int>(rng() % 64);
      min[s] = static_cast<int>(rng() % 64);
      if (s < 4) {
        packed[s] |= static_cast<uint8_t>(scale[s]);
        packed[s + 4] |= static_cast<uint8_t>(min[s]);
      } else {
        packed[s + 4] =
            static_cast<uint8_t>((scale[s] & 15) | ((min[s] & 15) << 4));
        packed[s - 4] |= static_cast<uint8_t>((scale[s] >> 4) << 6);
        packed[s] |= static_cast<uint8_t>((min[s] >> 4) << 6);
      }
    }
    for (int s = 0; s < 8; ++s) {
      int got_scale, got_min;
      ref::UnpackKScaleMin(packed, s, &got_scale, &got_min);
      ASSERT_EQ(got_scale, scale[s]) << "sub-block " << s;
      ASSERT_EQ(got_min, min[s]) << "sub-block " << s;
    }
  }
}

// --- The synthetic files -----------------------------------------------------

TEST(GgufReader, TinyLlamaMatchesSidecar) {
  GgufFile file;
  QKERN_ASSERT_OK(GgufFile::Open(DataPath("tiny_llama.gguf"), &file));
  EXPECT_EQ(file.source(), DataPath("tiny_llama.gguf"));
  ExpectMatchesSidecar(file, "tiny_llama.expected");
  // Mapped: tensor pointers are aligned in memory, not just in the file.
  for (const GgufTensorInfo& t : file.ListTensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % file.alignment(), 0u)
        << t.name;
  }
}

TEST(GgufReader, MiscMatchesSidecar) {
  GgufFile file;
  QKERN_ASSERT_OK(GgufFile::Open(DataPath("gguf_misc.gguf"), &file));
  EXPECT_EQ(file.alignment(), 64u);
  ExpectMatchesSidecar(file, "gguf_misc.expected");
}

TEST(GgufReader, MemoryImageMatchesSidecar) {
  const std::vector<uint8_t> bytes = ReadBytes(DataPath("tiny_llama.gguf"));
  GgufFile file;
  QKERN_ASSERT_OK(OpenBytes(bytes, &file));
  ExpectMatchesSidecar(file, "tiny_llama.expected");
}

TEST(GgufReader, TypedAccessors) {
  GgufFile file;
  QKERN_ASSERT_OK(GgufFile::Open(DataPath("tiny_llama.gguf"), &file));

  uint32_t n_layer = 0;
  QKERN_EXPECT_OK(file.GetU32("llama.block_count", &n_layer));
  EXPECT_EQ(n_layer, 3u);
  float eps = 0;
  QKERN_EXPECT_OK(file.GetF32("llama.attention.layer_norm_rms_epsilon", &eps));
  EXPECT_EQ(eps, 1e-5f);
  std::string_view arch;
  QKERN_EXPECT_OK(file.GetString("general.architecture", &arch));
  EXPECT_EQ(arch, "llama");
  bool add_bos = true;
  QKERN_EXPECT_OK(file.GetBool("tokenizer.ggml.add_bos_token", &add_bos));
  EXPECT_FALSE(add_bos);

  // Present with another type: the message says which.
  uint32_t u32 = 0;
  ExpectError(file.GetU32("general.architecture", &u32),
              {"general.architecture", "has type STRING", "expected UINT32"});
  int32_t i32 = 0;
  ExpectError(file.GetI32("llama.block_count", &i32),
              {"llama.block_count", "UINT32", "expected INT32"});
  ExpectError(file.GetString("tokenizer.ggml.tokens", &arch),
              {"tokenizer.ggml.tokens", "ARRAY of STRING", "expected STRING"});
  ExpectError(file.GetU32("no.such.key", &u32), {"no.such.key", "not found"});
  EXPECT_EQ(file.GetU32("no.such.key", &u32).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(file.GetI32("llama.block_count", &i32).code(),
            StatusCode::kDataLoss);

  // Optional keys: fallback only when absent.
  QKERN_EXPECT_OK(file.GetU32Or("llama.expert_count", 7, &u32));
  EXPECT_EQ(u32, 7u);
  QKERN_EXPECT_OK(file.GetU32Or("llama.block_count", 7, &u32));
  EXPECT_EQ(u32, 3u);
  float theta = 0;
  QKERN_EXPECT_OK(file.GetF32Or("llama.rope.freq_base", 1.0f, &theta));
  EXPECT_EQ(theta, 10000.0f);
  QKERN_EXPECT_OK(file.GetBoolOr("missing.bool", true, &add_bos));
  EXPECT_TRUE(add_bos);
  std::string_view tmpl;
  QKERN_EXPECT_OK(file.GetStringOr("missing.template", "none", &tmpl));
  EXPECT_EQ(tmpl, "none");
  ExpectError(file.GetI32Or("llama.block_count", 0, &i32),
              {"llama.block_count", "expected INT32"});

  // Arrays.
  GgufArrayView tokens;
  QKERN_ASSERT_OK(
      file.GetArray("tokenizer.ggml.tokens", GgufValueType::kString, &tokens));
  EXPECT_EQ(tokens.size(), 64u);
  EXPECT_EQ(tokens.StringAt(0), "<|endoftext|>");
  EXPECT_EQ(tokens.StringAt(3), "");
  EXPECT_EQ(tokens.StringAt(10), "h\xc3\xa9llo");
  EXPECT_EQ(tokens.StringAt(63), "tok47");
  EXPECT_EQ(tokens.StringAt(64), "");  // out of range: empty, no read
  EXPECT_EQ(tokens.I32At(0), 0);       // wrong type: zero, no read
  EXPECT_EQ(tokens.data(), nullptr);
  GgufArrayView types;
  QKERN_ASSERT_OK(file.GetArray("tokenizer.ggml.token_type", &types));
  EXPECT_EQ(types.type(), GgufValueType::kInt32);
  EXPECT_EQ(types.I32At(0), 3);
  EXPECT_EQ(types.I32At(5), 1);
  EXPECT_EQ(types.F32At(0), 0.0f);
  EXPECT_EQ(types.StringAt(0), "");
  GgufArrayView scores;
  QKERN_ASSERT_OK(
      file.GetArray("tokenizer.ggml.scores", GgufValueType::kFloat32, &scores));
  EXPECT_EQ(scores.F32At(4), -1.0f);
  ExpectError(file.GetArray("tokenizer.ggml.token_type",
                            GgufValueType::kFloat32, &scores),
              {"tokenizer.ggml.token_type", "array of INT32",
               "expected an array of FLOAT32"});
  ExpectError(file.GetArray("llama.block_count", &scores),
              {"llama.block_count", "UINT32", "expected ARRAY"});

  // Tensors.
  GgufTensorInfo t;
  QKERN_ASSERT_OK(file.FindTensor("blk.2.ffn_down.weight", &t));
  EXPECT_EQ(t.type, GgmlType::kQ6_K);
  EXPECT_EQ(t.ne[0], 256u);  // row length = n_ff
  EXPECT_EQ(t.ne[1], 32u);   // rows = n_embd
  EXPECT_EQ(t.rows(), 32u);
  EXPECT_EQ(t.row_bytes(), sizeof(BlockQ6_K));
  ExpectError(file.FindTensor("blk.9.attn_q.weight", &t),
              {"blk.9.attn_q.weight", "not found"});

  // A moved file keeps its views valid.
  GgufFile moved = std::move(file);
  QKERN_ASSERT_OK(moved.FindTensor("output.weight", &t));
  QKERN_EXPECT_OK(moved.GetString("general.architecture", &arch));
  EXPECT_EQ(arch, "llama");
  EXPECT_EQ(tokens.StringAt(1), "<|im_start|>");
}

TEST(GgufReader, UnsupportedTensorTypeIsNamed) {
  GgufFile file;
  QKERN_ASSERT_OK(GgufFile::Open(DataPath("gguf_misc.gguf"), &file));
  GgufTensorInfo t;
  const Status status = file.FindTensor("unsupported.i8", &t);
  ExpectError(status, {"unsupported tensor type I8", "unsupported.i8"});
  EXPECT_EQ(status.code(), StatusCode::kUnsupported);
  QKERN_EXPECT_OK(file.FindTensor("rank4.q8_0", &t));
  EXPECT_EQ(t.n_dims, 4u);
  EXPECT_EQ(t.rows(), 8u);
}

// --- Hand-built files --------------------------------------------------------

class GgufBytes {
 public:
  GgufBytes& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return U32(kGgufMagic).U32(version).U64(n_tensors).U64(n_kv);
  }
  GgufBytes& U8(uint8_t v) { return Append(&v, 1); }
  GgufBytes& U32(uint32_t v) { return Append(&v, 4); }
  GgufBytes& U64(uint64_t v) { return Append(&v, 8); }
  GgufBytes& Str(std::string_view s) {
    U64(s.size());
    return Append(s.data(), s.size());
  }
  GgufBytes& Type(GgufValueType t) { return U32(static_cast<uint32_t>(t)); }
  GgufBytes& KvU32(std::string_view key, uint32_t v) {
    return Str(key).Type(GgufValueType::kUint32).U32(v);
  }
  // A tensor info: name, dims (ne order), type, relative offset.
  GgufBytes& Tensor(std::string_view name, std::initializer_list<uint64_t> ne,
                    GgmlType type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) U64(d);
    return U32(static_cast<uint32_t>(type)).U64(offset);
  }
  GgufBytes& PadTo(size_t alignment) {
    while (bytes.size() % alignment != 0) bytes.push_back(0);
    return *this;
  }
  GgufBytes& Zeros(size_t n) {
    bytes.insert(bytes.end(), n, 0);
    return *this;
  }
  GgufBytes& Append(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
    return *this;
  }
  std::vector<uint8_t> bytes;
};

std::string VocabPiece(size_t i) {
  if (i % 97 == 0) return "";
  return "t" + std::to_string(i) + std::string(i % 7, 'x');
}

TEST(GgufReader, LargeVocabularyIsReadInPlace) {
  constexpr size_t kVocab = 49152;
  GgufBytes g;
  g.Header(0, 1).Str("tokenizer.ggml.tokens").Type(GgufValueType::kArray);
  g.Type(GgufValueType::kString).U64(kVocab);
  for (size_t i = 0; i < kVocab; ++i) g.Str(VocabPiece(i));
  GgufFile file;
  QKERN_ASSERT_OK(OpenBytes(g.bytes, &file));
  GgufArrayView tokens;
  QKERN_ASSERT_OK(
      file.GetArray("tokenizer.ggml.tokens", GgufValueType::kString, &tokens));
  ASSERT_EQ(tokens.size(), kVocab);
  size_t wrong = 0;
  for (size_t i = 0; i < kVocab; ++i)
    wrong += tokens.StringAt(i) != VocabPiece(i);
  std::mt19937 rng(3);
  for (int k = 0; k < 20000; ++k) {
    const size_t i = rng() % kVocab;
    wrong += tokens.StringAt(i) != VocabPiece(i);
  }
  EXPECT_EQ(wrong, 0u);
  // The strings are views into the image, not copies.
  const std::string_view first = tokens.StringAt(1);
  EXPECT_GE(reinterpret_cast<const uint8_t*>(first.data()), g.bytes.data());
  EXPECT_LT(reinterpret_cast<const uint8_t*>(first.data()),
            g.bytes.data() + g.bytes.size());
}

TEST(GgufReader, EdgeCasesThatAreValid) {
  {  // No tensors, no data section, empty arrays of both kinds.
    GgufBytes g;
    g.Header(0, 3);
    g.Str("a.strings")
        .Type(GgufValueType::kArray)
        .Type(GgufValueType::kString)
        .U64(0);
    g.Str("a.ints")
        .Type(GgufValueType::kArray)
        .Type(GgufValueType::kInt32)
        .U64(0);
    g.Str("a.empty").Type(GgufValueType::kString).U64(0);
    GgufFile file;
    QKERN_ASSERT_OK(OpenBytes(g.bytes, &file));
    GgufArrayView view;
    QKERN_ASSERT_OK(file.GetArray("a.strings", &view));
    EXPECT_TRUE(view.empty());
    EXPECT_EQ(view.StringAt(0), "");
    QKERN_ASSERT_OK(file.GetArray("a.ints", GgufValueType::kInt32, &view));
    EXPECT_EQ(view.size(), 0u);
    std::string_view s = "x";
    QKERN_EXPECT_OK(file.GetString("a.empty", &s));
    EXPECT_TRUE(s.empty());
    EXPECT_TRUE(file.ListTensors().empty());
  }
  {  // Header only.
    GgufBytes g;
    g.Header(0, 0);
    GgufFile file;
    QKERN_EXPECT_OK(OpenBytes(g.bytes, &file));
  }
  {  // Version 2 has the same layout; tensors out of file order, 1-D, 4-D.
    GgufBytes g;
    g.Header(2, 1, /*version=*/2).KvU32("general.alignment", 16);
    g.Tensor("b", {4}, GgmlType::kF32, 16);
    g.Tensor("a", {1, 1, 1, 2}, GgmlType::kF16, 0);
    g.PadTo(16).Zeros(32);
    GgufFile file;
    QKERN_ASSERT_OK(OpenBytes(g.bytes, &file));
    EXPECT_EQ(file.version(), 2u);
    EXPECT_EQ(file.alignment(), 16u);
    GgufTensorInfo t;
    QKERN_ASSERT_OK(file.FindTensor("a", &t));
    EXPECT_EQ(t.n_dims, 4u);
    EXPECT_EQ(t.ne[3], 2u);
    EXPECT_EQ(t.n_bytes, 4u);
    EXPECT_EQ(t.file_offset, file.data_offset());
  }
  {  // A bool byte other than 0/1 reads as true.
    GgufBytes g;
    g.Header(0, 1).Str("b").Type(GgufValueType::kBool).U8(7);
    GgufFile file;
    QKERN_ASSERT_OK(OpenBytes(g.bytes, &file));
    bool b = false;
    QKERN_EXPECT_OK(file.GetBool("b", &b));
    EXPECT_TRUE(b);
  }
}

TEST(GgufReader, HandBuiltMalformedFiles) {
  GgufFile file;
  auto open = [&](const GgufBytes& g) { return OpenBytes(g.bytes, &file); };
  {
    GgufBytes g;
    g.Header(0, 1).Str("").Type(GgufValueType::kUint8).U8(0).Zeros(8);
    ExpectError(open(g), {"metadata key #0", "offset 24", "is empty"});
  }
  {
    GgufBytes g;
    g.Header(0, 2).KvU32("k", 1).KvU32("k", 2);
    ExpectError(open(g), {"'k'", "appears twice", "first at offset 24"});
  }
  {
    GgufBytes g;
    g.Header(0, 1).Str("nested").Type(GgufValueType::kArray);
    g.Type(GgufValueType::kArray).U64(1).Type(GgufValueType::kUint8).U64(0);
    ExpectError(open(g), {"'nested'", "nested arrays"});
  }
  {
    GgufBytes g;
    g.Header(0, 1).Str("bad").U32(13).U32(0);
    ExpectError(open(g), {"'bad'", "value type 13"});
  }
  {
    GgufBytes g;
    g.Header(0, 1)
        .Str("general.alignment")
        .Type(GgufValueType::kUint64)
        .U64(32);
    ExpectError(open(g), {"general.alignment", "UINT64", "expected UINT32"});
  }
  for (uint32_t bad : {0u, 48u}) {
    GgufBytes g;
    g.Header(0, 1).KvU32("general.alignment", bad);
    ExpectError(open(g), {"general.alignment", "power of two"});
  }
  {
    GgufBytes g;
    g.Header(1, 0).Tensor("", {32}, GgmlType::kF32, 0).PadTo(32).Zeros(128);
    ExpectError(open(g), {"tensor #0", "empty name"});
  }
  {
    GgufBytes g;
    g.Header(1, 0).Str("t").U32(0).U32(0).U64(0).PadTo(32).Zeros(64);
    ExpectError(open(g), {"'t'", "n_dims 0", "expected 1 to 4"});
  }
  {
    GgufBytes g;
    g.Header(2, 0);
    g.Tensor("t", {32}, GgmlType::kF32, 0)
        .Tensor("t", {32}, GgmlType::kF32, 128);
    g.PadTo(32).Zeros(256);
    ExpectError(open(g), {"'t'", "appears twice"});
  }
  {  // Element count exactly 2^63 overflows int64.
    GgufBytes g;
    g.Header(1, 0).Tensor("big", {1ull << 32, 1ull << 31}, GgmlType::kF32, 0);
    g.PadTo(32).Zeros(64);
    ExpectError(open(g), {"'big'", "ne[1]", "overflow"});
  }
  {  // Fits int64 as elements, overflows 64 bits as bytes.
    GgufBytes g;
    g.Header(1, 0).Tensor("wide", {1ull << 62}, GgmlType::kF32, 0);
    g.PadTo(32).Zeros(64);
    ExpectError(open(g), {"'wide'", "overflow 64 bits"});
  }
  {  // A header that promises tensors, then nothing.
    GgufBytes g;
    g.Header(1, 0).Zeros(40);
    EXPECT_FALSE(open(g).ok());
  }
}

// --- Corruption of a real file -----------------------------------------------

// Byte offsets of the fields of the tiny model, read back from a clean parse.
struct Layout {
  std::vector<uint8_t> clean;
  uint64_t data_offset = 0;
  uint64_t data_end = 0;  // end of the last tensor's data
  // Per tensor: where n_dims, ne[0], type and the data offset are stored.
  struct TensorFields {
    std::string name;
    uint64_t n_dims_at, ne_at, type_at, offset_at;
    uint64_t relative;
  };
  std::vector<TensorFields> tensors;
  const TensorFields& Tensor(const std::string& name) const {
    for (const TensorFields& t : tensors) {
      if (t.name == name) return t;
    }
    static const TensorFields kNone{};
    ADD_FAILURE() << "no tensor " << name;
    return kNone;
  }
  GgufMetadataEntry Key(const std::string& key) const {
    GgufFile file;
    EXPECT_TRUE(
        GgufFile::OpenFromMemory(clean.data(), clean.size(), &file).ok());
    const GgufMetadataEntry* e = file.FindMetadata(key);
    EXPECT_NE(e, nullptr) << key;
    return e != nullptr ? *e : GgufMetadataEntry{};
  }
};

Layout ReadLayout(const char* name) {
  Layout layout;
  layout.clean = ReadBytes(DataPath(name));
  GgufFile file;
  const Status status = OpenBytes(layout.clean, &file);
  EXPECT_TRUE(status.ok()) << status.message();
  layout.data_offset = file.data_offset();
  for (const GgufTensorInfo& t : file.ListTensors()) {
    Layout::TensorFields f;
    f.name = std::string(t.name);
    f.n_dims_at = t.info_offset + 8 + t.name.size();
    f.ne_at = f.n_dims_at + 4;
    f.type_at = f.ne_at + 8 * t.n_dims;
    f.offset_at = f.type_at + 4;
    f.relative = t.file_offset - file.data_offset();
    layout.tensors.push_back(f);
    layout.data_end = std::max(layout.data_end, t.file_offset + t.n_bytes);
  }
  return layout;
}

template <typename T>
void Poke(std::vector<uint8_t>* bytes, uint64_t at, T value) {
  ASSERT_LE(at + sizeof(T), bytes->size());
  memcpy(bytes->data() + at, &value, sizeof(T));
}

TEST(GgufReader, TargetedCorruptionsAreNamed) {
  const Layout layout = ReadLayout("tiny_llama.gguf");
  ASSERT_FALSE(layout.tensors.empty());
  struct Case {
    const char* what;
    std::function<void(std::vector<uint8_t>*)> corrupt;
    std::vector<const char*> mentions;
  };
  const GgufMetadataEntry arch = layout.Key("general.architecture");
  const GgufMetadataEntry block_count = layout.Key("llama.block_count");
  const GgufMetadataEntry tokens = layout.Key("tokenizer.ggml.tokens");
  const GgufMetadataEntry scores = layout.Key("tokenizer.ggml.scores");
  const GgufMetadataEntry bos = layout.Key("tokenizer.ggml.bos_token_id");
  const Layout::TensorFields& q0 = layout.Tensor("blk.0.attn_q.weight");
  const Layout::TensorFields& k0 = layout.Tensor("blk.0.attn_k.weight");
  const Layout::TensorFields& q1 = layout.Tensor("blk.1.attn_q.weight");
  const Layout::TensorFields& last = layout.tensors.back();
  const uint64_t size = layout.clean.size();
  // Offset of token string #5's length field.
  uint64_t string5 = tokens.value_offset + 12;
  for (int i = 0; i < 5; ++i) {
    uint64_t length;
    memcpy(&length, layout.clean.data() + string5, 8);
    string5 += 8 + length;
  }
  const uint64_t kHuge = 1ull << 63;

  const std::vector<Case> cases = {
      {"magic", [](auto* b) { (*b)[3] = 'X'; }, {"not a GGUF file", "GGUX"}},
      {"version 1",
       [](auto* b) { Poke<uint32_t>(b, 4, 1); },
       {"version 1", "expected 2 or 3"}},
      {"version 4", [](auto* b) { Poke<uint32_t>(b, 4, 4); }, {"version 4"}},
      {"big-endian",
       [](auto* b) { Poke<uint32_t>(b, 4, 0x03000000u); },
       {"big-endian"}},
      {"tensor count",
       [](auto* b) { Poke<uint64_t>(b, 8, ~0ull); },
       {"tensor count 18446744073709551615", "offset 8"}},
      {"metadata count",
       [&](auto* b) { Poke<uint64_t>(b, 16, kHuge); },
       {"metadata count 9223372036854775808", "offset 16"}},
      {"first key length",
       [&](auto* b) { Poke<uint64_t>(b, 24, kHuge); },
       {"metadata key #0", "offset 24", "string length 9223372036854775808"}},
      {"string value length",
       [&](auto* b) { Poke<uint64_t>(b, arch.value_offset, kHuge); },
       {"general.architecture", "string length 9223372036854775808"}},
      {"value type",
       [&](auto* b) { Poke<uint32_t>(b, block_count.value_offset - 4, 13); },
       {"llama.block_count", "value type 13"}},
      {"string array count",
       [&](auto* b) { Poke<uint64_t>(b, tokens.value_offset + 4, 1ull << 61); },
       {"tokenizer.ggml.tokens", "array of 2305843009213693952 strings"}},
      {"fixed array count overflowing count * 4",
       [&](auto* b) {
         Poke<uint64_t>(b, scores.value_offset + 4, (1ull << 62) + 1);
       },
       {"tokenizer.ggml.scores", "FLOAT32 elements", "x 4 bytes"}},
      {"string element length",
       [&](auto* b) { Poke<uint64_t>(b, string5, kHuge); },
       {"tokenizer.ggml.tokens", "string #5", "length 9223372036854775808"}},
      {"nested array",
       [&](auto* b) { Poke<uint32_t>(b, tokens.value_offset, 9); },
       {"tokenizer.ggml.tokens", "nested arrays"}},
      {"array element type",
       [&](auto* b) { Poke<uint32_t>(b, tokens.value_offset, 13); },
       {"tokenizer.ggml.tokens", "element type 13"}},
      {"duplicate key",
       [&](auto* b) { (*b)[bos.key_offset + 8 + 15] = 'e'; },
       {"tokenizer.ggml.eos_token_id", "appears twice"}},
      {"n_dims 5",
       [&](auto* b) { Poke<uint32_t>(b, q1.n_dims_at, 5); },
       {"blk.1.attn_q.weight", "n_dims 5", "expected 1 to 4"}},
      {"dimension 0",
       [&](auto* b) { Poke<uint64_t>(b, q1.ne_at + 8, 0); },
       {"blk.1.attn_q.weight", "ne[1] is 0"}},
      {"dimension product overflow",
       [&](auto* b) { Poke<uint64_t>(b, q1.ne_at + 8, 1ull << 62); },
       {"blk.1.attn_q.weight", "ne[1]", "overflow"}},
      {"type 99",
       [&](auto* b) { Poke<uint32_t>(b, q1.type_at, 99); },
       {"blk.1.attn_q.weight", "type id 99"}},
      {"retired type",
       [&](auto* b) { Poke<uint32_t>(b, q1.type_at, 4); },
       {"blk.1.attn_q.weight", "Q4_2", "removed"}},
      {"row not a multiple of the block",
       [&](auto* b) { Poke<uint64_t>(b, q0.ne_at, 48); },
       {"blk.0.attn_q.weight", "ne[0] = 48", "Q4_0 block size 32"}},
      {"misaligned offset",
       [&](auto* b) { Poke<uint64_t>(b, q1.offset_at, q1.relative + 1); },
       {"blk.1.attn_q.weight", "not a multiple of the alignment 32"}},
      {"offset past end of file",
       [&](auto* b) { Poke<uint64_t>(b, q1.offset_at, 1ull << 62); },
       {"blk.1.attn_q.weight", "past end of file"}},
      {"data extends past end of file",
       [&](auto* b) {
         Poke<uint64_t>(b, last.offset_at,
                        (size - layout.data_offset) / 32 * 32);
       },
       {last.name.c_str(), "extends past end of file", "(size 76320)"}},
      {"overlap",
       [&](auto* b) { Poke<uint64_t>(b, k0.offset_at, q0.relative); },
       {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "overlap"}},
      {"type grows into the next tensor",
       [&](auto* b) {
         Poke<uint32_t>(b, q0.type_at, static_cast<uint32_t>(GgmlType::kF32));
       },
       {"blk.0.attn_q.weight", "overlap"}},
      {"duplicate tensor name",
       [&](auto* b) {
         (*b)[k0.n_dims_at - 8] = 'q';  // blk.0.attn_k -> blk.0.attn_q
       },
       {"blk.0.attn_q.weight", "appears twice"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<uint8_t> bytes = layout.clean;
    c.corrupt(&bytes);
    GgufFile file;
    const Status status = OpenBytes(bytes, &file);
    ASSERT_FALSE(status.ok()) << c.what;
    EXPECT_EQ(status.message().rfind("<memory>: ", 0), 0u) << status.message();
    for (const char* text : c.mentions) {
      EXPECT_NE(status.message().find(text), std::string::npos)
          << "'" << text << "' missing from: " << status.message();
    }
  }
}

TEST(GgufReader, VersionTwoIsAccepted) {
  std::vector<uint8_t> bytes = ReadBytes(DataPath("tiny_llama.gguf"));
  Poke<uint32_t>(&bytes, 4, 2);
  GgufFile file;
  QKERN_ASSERT_OK(OpenBytes(bytes, &file));
  EXPECT_EQ(file.version(), 2u);
}

void TruncationSweep(const char* name) {
  const Layout layout = ReadLayout(name);
  const std::vector<uint8_t>& clean = layout.clean;
  const size_t stride_in_data = UnderEmulation() ? 61 : 13;
  size_t checked = 0;
  for (size_t length = 0; length < clean.size();) {
    std::vector<uint8_t> prefix(clean.begin(), clean.begin() + length);
    GgufFile file;
    const Status status = OpenBytes(prefix, &file);
    if (length < layout.data_end) {
      ASSERT_FALSE(status.ok()) << "truncated to " << length;
      const std::string& m = status.message();
      EXPECT_TRUE(m.find("past end of file") != std::string::npos ||
                  m.find("left in the file") != std::string::npos ||
                  m.find("file is ") != std::string::npos ||
                  m.find("cannot fit") != std::string::npos)
          << "truncated to " << length << ": " << m;
    } else {
      // Only the padding after the last tensor is gone.
      EXPECT_TRUE(status.ok()) << length << ": " << status.message();
    }
    ++checked;
    // Every length through the tensor-info table, a dense sample of the data
    // section, and every length near the ends of the data.
    const bool dense =
        length < layout.data_offset + 64 || length + 64 >= layout.data_end;
    length += dense ? 1 : stride_in_data;
  }
  EXPECT_GT(checked, layout.data_offset);
}

TEST(GgufReader, TruncationSweepTinyLlama) {
  TruncationSweep("tiny_llama.gguf");
}
TEST(GgufReader, TruncationSweepMisc) { TruncationSweep("gguf_misc.gguf"); }

// Overwrites every byte of the header, metadata and tensor infos with a few
// values, and every 8-byte window with huge u64s: each must give an error or
// a file whose every view stays inside the buffer.
TEST(GgufReader, OverwriteSweep) {
  const Layout layout = ReadLayout("tiny_llama.gguf");
  std::vector<uint8_t> bytes = layout.clean;
  const size_t end = static_cast<size_t>(layout.data_offset);
  const size_t stride = UnderEmulation() ? 3 : 1;
  size_t opened = 0, rejected = 0;
  uint64_t sink = 0;
  auto check = [&] {
    GgufFile file;
    if (OpenBytes(bytes, &file).ok()) {
      ++opened;
      sink += TouchEverything(file);
    } else {
      ++rejected;
    }
  };
  for (size_t at = 0; at < end; at += stride) {
    const uint8_t original = bytes[at];
    for (uint8_t value : {uint8_t{0x00}, uint8_t{0xFF}, uint8_t{0x80},
                          static_cast<uint8_t>(original ^ 0x01),
                          static_cast<uint8_t>(original ^ 0x40)}) {
      bytes[at] = value;
      check();
    }
    bytes[at] = original;
  }
  for (size_t at = 0; at + 8 <= end; at += stride) {
    uint64_t original;
    memcpy(&original, bytes.data() + at, 8);
    for (uint64_t value : {1ull << 63, ~0ull, (1ull << 32) + 1}) {
      memcpy(bytes.data() + at, &value, 8);
      check();
    }
    memcpy(bytes.data() + at, &original, 8);
  }
  EXPECT_EQ(bytes, layout.clean);
  EXPECT_GT(rejected, 0u);
  EXPECT_GT(opened, 0u);  // e.g. a changed letter inside a token
  (void)sink;
}

// Random multi-byte damage anywhere in the small file.
TEST(GgufReader, RandomDamage) {
  const std::vector<uint8_t> clean = ReadBytes(DataPath("gguf_misc.gguf"));
  std::mt19937_64 rng(11);
  uint64_t sink = 0;
  const int trials = UnderEmulation() ? 1000 : 5000;
  for (int trial = 0; trial < trials; ++trial) {
    std::vector<uint8_t> bytes = clean;
    const int hits = 1 + static_cast<int>(rng() % 4);
    for (int h = 0; h < hits; ++h)
      bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
    bytes.resize(rng() % 4 == 0 ? rng() % bytes.size() : bytes.size());
    GgufFile file;
    if (OpenBytes(bytes, &file).ok()) sink += TouchEverything(file);
  }
  (void)sink;
}

// --- The mmap path -----------------------------------------------------------

std::string TempPath(const char* tag) {
  return ::testing::TempDir() + "qkern_gguf_test_" + std::to_string(getpid()) +
         "_" + tag;
}

void WriteBytes(const std::string& path, const uint8_t* data, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data),
            static_cast<std::streamsize>(n));
}

TEST(GgufReader, OpenErrorsNameThePath) {
  GgufFile file;
  const std::string missing = TempPath("missing.gguf");
  Status status = GgufFile::Open(missing, &file);
  ExpectError(status, {missing.c_str(), "cannot open"});
  EXPECT_EQ(status.code(), StatusCode::kIoError);

  ExpectError(GgufFile::Open(QKERN_TEST_DATA_DIR, &file),
              {"not a regular file"});

  const std::string empty = TempPath("empty.gguf");
  WriteBytes(empty, nullptr, 0);
  ExpectError(GgufFile::Open(empty, &file), {empty.c_str(), "file is 0 bytes"});
  unlink(empty.c_str());

  const std::vector<uint8_t> clean = ReadBytes(DataPath("tiny_llama.gguf"));
  const std::string cut = TempPath("cut.gguf");
  for (size_t length :
       {size_t{3}, size_t{23}, size_t{1000}, clean.size() - 1}) {
    WriteBytes(cut, clean.data(), length);
    status = GgufFile::Open(cut, &file);
    ASSERT_FALSE(status.ok()) << length;
    EXPECT_EQ(status.message().rfind(cut + ": ", 0), 0u) << status.message();
  }
  unlink(cut.c_str());

  // A failed Open leaves the target untouched.
  QKERN_ASSERT_OK(GgufFile::Open(DataPath("gguf_misc.gguf"), &file));
  EXPECT_FALSE(GgufFile::Open(missing, &file).ok());
  EXPECT_EQ(file.alignment(), 64u);
  EXPECT_EQ(file.ListTensors().size(), 6u);
}

TEST(GgufReader, AdviseDontNeedKeepsDataReadable) {
  GgufFile file;
  QKERN_ASSERT_OK(GgufFile::Open(DataPath("tiny_llama.gguf"), &file));
  std::vector<uint64_t> before;
  for (const GgufTensorInfo& t : file.ListTensors()) {
    before.push_back(Fnv1a64(t.data, static_cast<size_t>(t.n_bytes)));
  }
  for (const GgufTensorInfo& t : file.ListTensors()) {
    QKERN_EXPECT_OK(file.AdviseDontNeed(t));
  }
  // All tensor data at once: spans whole pages.
  GgufTensorInfo all = file.ListTensors().front();
  all.n_bytes = file.file_size() - all.file_offset;
  QKERN_EXPECT_OK(file.AdviseDontNeed(all));
  for (size_t i = 0; i < before.size(); ++i) {
    const GgufTensorInfo& t = file.ListTensors()[i];
    EXPECT_EQ(Fnv1a64(t.data, static_cast<size_t>(t.n_bytes)), before[i])
        << t.name;
  }
  // Outside the mapping, or a file read from memory: refused.
  GgufTensorInfo outside = all;
  outside.n_bytes += 1;
  ExpectError(file.AdviseDontNeed(outside), {"not inside this file's mapping"});
  const std::vector<uint8_t> bytes = ReadBytes(DataPath("tiny_llama.gguf"));
  GgufFile in_memory;
  QKERN_ASSERT_OK(OpenBytes(bytes, &in_memory));
  EXPECT_FALSE(in_memory.AdviseDontNeed(in_memory.ListTensors()[0]).ok());
  // Less than a page: nothing to drop, not an error.
  QKERN_EXPECT_OK(AdviseDontNeed(bytes.data() + 1, 10));
  QKERN_EXPECT_OK(AdviseDontNeed(bytes.data(), 0));
}

}  // namespace
}  // namespace qkern
