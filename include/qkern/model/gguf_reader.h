// GgufFile: a validating, zero-copy reader of GGUF model files.
//
// The file is mapped read-only and every length, count, dimension and offset
// in it is checked against the file size before it is used, so a truncated
// or hostile file gives a Status naming the key or tensor, the byte offset,
// what was expected and what was found; it never makes the reader crash or
// read outside the mapping. Nothing is copied: metadata values are decoded
// on access from an index of offsets, strings are views into the mapping, and
// tensor data pointers point into it (aligned to `alignment()` relative to
// the start of the file, so to that many bytes for a mapped file).
//
// Opening walks the header, the metadata and the tensor-info table once (a
// string array has to be walked to find where it ends); it does not touch
// tensor data, so the cost is independent of the model size.
//
// Lifetime: every string_view, GgufArrayView and tensor pointer obtained from
// a GgufFile is valid while that GgufFile (or the one it was moved into) is
// alive. All accessors are const and safe to call from several threads.
//
// Caveat of mmap: if another process truncates the file while it is mapped,
// touching the lost pages raises SIGBUS; no reader can validate that away.
//
// POSIX only (mmap/madvise); little-endian hosts only, as GGUF version 2/3
// files written by llama.cpp and gguf-py are little-endian.
#ifndef QKERN_MODEL_GGUF_READER_H_
#define QKERN_MODEL_GGUF_READER_H_

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qkern/base/mapped_file.h"
#include "qkern/base/status.h"
#include "qkern/model/gguf_types.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qkern's GGUF reader assumes a little-endian host"
#endif

namespace qkern {

// --- Views -------------------------------------------------------------------

namespace detail {

template <typename T>
inline T LoadLE(const uint8_t* p) {
  T value;
  memcpy(&value, p, sizeof(value));
  return value;
}

// String arrays remember the offset of every kGgufStringStride-th element,
// so element i is at most stride - 1 length fields away: a 49152-token
// vocabulary costs 3072 offsets instead of a copy of every string.
constexpr uint64_t kGgufStringStride = 16;

// A key, name or string from the file made safe for an error message:
// non-printable bytes escaped, long ones cut.
inline std::string Printable(std::string_view s) {
  constexpr size_t kMax = 96;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\x%02x", c);
      out += esc;
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

inline unsigned long long Ull(uint64_t v) {
  return static_cast<unsigned long long>(v);
}

}  // namespace detail

// The elements of one metadata array, read in place. Element accessors are
// typed: calling one that does not match type() (or an index >= size())
// returns a zero value / empty string rather than reinterpreting bytes.
// Obtain one with GgufFile::GetArray, which checks the element type.
class GgufArrayView {
 public:
  GgufValueType type() const { return type_; }
  size_t size() const { return static_cast<size_t>(count_); }
  bool empty() const { return count_ == 0; }

  // Element i of a STRING array; not NUL-terminated.
  std::string_view StringAt(size_t i) const {
    if (type_ != GgufValueType::kString || i >= count_) return {};
    uint64_t offset = checkpoints_[i / detail::kGgufStringStride];
    for (uint64_t skip = i % detail::kGgufStringStride;; --skip) {
      // Re-checked against the array's extent even though Open validated it:
      // an index lookup must never leave the array.
      if (bytes_ - offset < 8) return {};
      const uint64_t length = detail::LoadLE<uint64_t>(begin_ + offset);
      if (length > bytes_ - offset - 8) return {};
      if (skip == 0) {
        return std::string_view(
            reinterpret_cast<const char*>(begin_ + offset + 8),
            static_cast<size_t>(length));
      }
      offset += 8 + length;
    }
  }

  uint8_t U8At(size_t i) const { return At<uint8_t>(GgufValueType::kUint8, i); }
  int8_t I8At(size_t i) const { return At<int8_t>(GgufValueType::kInt8, i); }
  uint16_t U16At(size_t i) const {
    return At<uint16_t>(GgufValueType::kUint16, i);
  }
  int16_t I16At(size_t i) const {
    return At<int16_t>(GgufValueType::kInt16, i);
  }
  uint32_t U32At(size_t i) const {
    return At<uint32_t>(GgufValueType::kUint32, i);
  }
  int32_t I32At(size_t i) const {
    return At<int32_t>(GgufValueType::kInt32, i);
  }
  uint64_t U64At(size_t i) const {
    return At<uint64_t>(GgufValueType::kUint64, i);
  }
  int64_t I64At(size_t i) const {
    return At<int64_t>(GgufValueType::kInt64, i);
  }
  float F32At(size_t i) const { return At<float>(GgufValueType::kFloat32, i); }
  double F64At(size_t i) const {
    return At<double>(GgufValueType::kFloat64, i);
  }
  bool BoolAt(size_t i) const {
    return At<uint8_t>(GgufValueType::kBool, i) != 0;
  }

  // Fixed-size element types: the size() * ValueTypeSize(type()) raw
  // little-endian bytes, for bulk copies. Not aligned. nullptr for STRING.
  const void* data() const {
    return type_ == GgufValueType::kString ? nullptr : begin_;
  }

 private:
  friend class GgufFile;

  template <typename T>
  T At(GgufValueType want, size_t i) const {
    if (type_ != want || i >= count_) return T();
    return detail::LoadLE<T>(begin_ + i * sizeof(T));
  }

  const uint8_t* begin_ = nullptr;  // first element
  uint64_t bytes_ = 0;              // extent of all elements
  uint64_t count_ = 0;
  GgufValueType type_ = GgufValueType::kUint8;
  const uint64_t* checkpoints_ = nullptr;  // STRING: offsets from begin_
};

// One key-value pair of the metadata, as an index into the file.
struct GgufMetadataEntry {
  std::string_view key;
  GgufValueType type = GgufValueType::kUint8;
  GgufValueType element_type = GgufValueType::kUint8;  // arrays only
  uint64_t count = 0;             // arrays only: number of elements
  uint64_t key_offset = 0;        // file offset of the key's u64 length
  uint64_t value_offset = 0;      // first byte after the u32 value type: the
                                  // value, a string's length, or an array's
                                  // element type (then u64 count, elements)
  uint64_t value_bytes = 0;       // bytes from value_offset to the next key
  uint64_t first_checkpoint = 0;  // STRING arrays: into the offset table
};

// One tensor: its shape, type and where its bytes are.
struct GgufTensorInfo {
  std::string_view name;
  GgmlType type = GgmlType::kF32;
  uint32_t n_dims = 0;
  // ne[0] varies fastest: it is the row length (K of a weight matrix), ne[1]
  // the number of rows. Dimensions past n_dims are 1.
  uint64_t ne[4] = {1, 1, 1, 1};
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  uint64_t file_offset = 0;  // absolute offset of the data in the file
  uint64_t info_offset = 0;  // where this tensor's info record starts
  const void* data = nullptr;

  uint64_t rows() const { return n_elements / ne[0]; }
  uint64_t row_bytes() const { return rows() == 0 ? 0 : n_bytes / rows(); }
};

// --- The file ----------------------------------------------------------------

class GgufFile {
 public:
  GgufFile() = default;
  GgufFile(GgufFile&&) = default;
  GgufFile& operator=(GgufFile&&) = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // Maps `path` read-only and validates it. On error `out` is left as it was.
  static Status Open(const std::string& path, GgufFile* out) {
    GgufFile file;
    file.source_ = path;
    QKERN_RETURN_IF_ERROR(MappedFile::Map(path, &file.mapping_));
    file.base_ = file.mapping_.data();
    file.size_ = file.mapping_.size();
    QKERN_RETURN_IF_ERROR(file.Parse());
    *out = std::move(file);
    return Status::Ok();
  }

  // Reads a GGUF image the caller already holds (e.g. an Android asset
  // buffer); the bytes must outlive the GgufFile. Tensor pointers are then
  // aligned only as well as `data` is. AdviseDontNeed is refused.
  static Status OpenFromMemory(const void* data, size_t size, GgufFile* out) {
    GgufFile file;
    file.source_ = "<memory>";
    file.base_ = static_cast<const uint8_t*>(data);
    file.size_ = data != nullptr ? size : 0;
    QKERN_RETURN_IF_ERROR(file.Parse());
    *out = std::move(file);
    return Status::Ok();
  }

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Start of the tensor data section. With no tensors it may equal or exceed
  // file_size(): a file may end right after the tensor-info table.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }
  const std::string& source() const { return source_; }

  // --- Metadata ---

  // In file order.
  const std::vector<GgufMetadataEntry>& metadata() const { return metadata_; }
  // nullptr when absent.
  const GgufMetadataEntry* FindMetadata(std::string_view key) const {
    const auto it = metadata_index_.find(key);
    return it == metadata_index_.end() ? nullptr : &metadata_[it->second];
  }

  // Typed getters. A missing key is kInvalidArgument; a key stored with
  // another type is kDataLoss and the message says which type it has.
  Status GetU8(std::string_view key, uint8_t* out) const {
    return GetFixed(key, GgufValueType::kUint8, out);
  }
  Status GetI8(std::string_view key, int8_t* out) const {
    return GetFixed(key, GgufValueType::kInt8, out);
  }
  Status GetU16(std::string_view key, uint16_t* out) const {
    return GetFixed(key, GgufValueType::kUint16, out);
  }
  Status GetI16(std::string_view key, int16_t* out) const {
    return GetFixed(key, GgufValueType::kInt16, out);
  }
  Status GetU32(std::string_view key, uint32_t* out) const {
    return GetFixed(key, GgufValueType::kUint32, out);
  }
  Status GetI32(std::string_view key, int32_t* out) const {
    return GetFixed(key, GgufValueType::kInt32, out);
  }
  Status GetU64(std::string_view key, uint64_t* out) const {
    return GetFixed(key, GgufValueType::kUint64, out);
  }
  Status GetI64(std::string_view key, int64_t* out) const {
    return GetFixed(key, GgufValueType::kInt64, out);
  }
  Status GetF32(std::string_view key, float* out) const {
    return GetFixed(key, GgufValueType::kFloat32, out);
  }
  Status GetF64(std::string_view key, double* out) const {
    return GetFixed(key, GgufValueType::kFloat64, out);
  }
  Status GetBool(std::string_view key, bool* out) const {
    uint8_t byte = 0;
    QKERN_RETURN_IF_ERROR(GetFixed(key, GgufValueType::kBool, &byte));
    *out = byte != 0;
    return Status::Ok();
  }
  // A view into the file; not NUL-terminated.
  Status GetString(std::string_view key, std::string_view* out) const {
    const GgufMetadataEntry* entry = nullptr;
    QKERN_RETURN_IF_ERROR(FindTyped(key, GgufValueType::kString, &entry));
    const uint64_t length =
        detail::LoadLE<uint64_t>(base_ + entry->value_offset);
    *out = std::string_view(
        reinterpret_cast<const char*>(base_ + entry->value_offset + 8),
        static_cast<size_t>(length));
    return Status::Ok();
  }

  // Optional keys: `fallback` when absent, an error when present with
  // another type (a silently ignored wrong type hides a broken converter).
  Status GetU32Or(std::string_view key, uint32_t fallback,
                  uint32_t* out) const {
    return Optional(key, fallback, out, &GgufFile::GetU32);
  }
  Status GetI32Or(std::string_view key, int32_t fallback, int32_t* out) const {
    return Optional(key, fallback, out, &GgufFile::GetI32);
  }
  Status GetF32Or(std::string_view key, float fallback, float* out) const {
    return Optional(key, fallback, out, &GgufFile::GetF32);
  }
  Status GetBoolOr(std::string_view key, bool fallback, bool* out) const {
    return Optional(key, fallback, out, &GgufFile::GetBool);
  }
  Status GetStringOr(std::string_view key, std::string_view fallback,
                     std::string_view* out) const {
    return Optional(key, fallback, out, &GgufFile::GetString);
  }

  // An array of any element type.
  Status GetArray(std::string_view key, GgufArrayView* out) const {
    const GgufMetadataEntry* entry = nullptr;
    QKERN_RETURN_IF_ERROR(FindTyped(key, GgufValueType::kArray, &entry));
    *out = MakeArrayView(*entry);
    return Status::Ok();
  }
  // An array whose elements must be `element_type`.
  Status GetArray(std::string_view key, GgufValueType element_type,
                  GgufArrayView* out) const {
    const GgufMetadataEntry* entry = nullptr;
    QKERN_RETURN_IF_ERROR(FindTyped(key, GgufValueType::kArray, &entry));
    if (entry->element_type != element_type) {
      return Error(
          StatusCode::kDataLoss,
          "metadata key '%s' (at offset %llu) is an array of %s; "
          "expected an array of %s",
          detail::Printable(key).c_str(), detail::Ull(entry->key_offset),
          ValueTypeName(entry->element_type), ValueTypeName(element_type));
    }
    *out = MakeArrayView(*entry);
    return Status::Ok();
  }

  // --- Tensors ---

  // Every tensor, in file order, including types qkern cannot decode.
  const std::vector<GgufTensorInfo>& ListTensors() const { return tensors_; }

  // A tensor qkern can read: kInvalidArgument when there is no tensor of that
  // name, kUnsupported (naming the type) when its type has no qkern decoder.
  Status FindTensor(std::string_view name, GgufTensorInfo* out) const {
    const auto it = tensor_index_.find(name);
    if (it == tensor_index_.end()) {
      return Error(StatusCode::kInvalidArgument,
                   "tensor '%s' not found (the file has %zu tensors)",
                   detail::Printable(name).c_str(), tensors_.size());
    }
    const GgufTensorInfo& tensor = tensors_[it->second];
    if (!GgmlTypeInfoFor(tensor.type).qkern_reads) {
      return Error(StatusCode::kUnsupported,
                   "unsupported tensor type %s (id %u) for tensor '%s'; qkern "
                   "reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
                   "Q5_K, Q6_K",
                   GgmlTypeName(tensor.type),
                   static_cast<unsigned>(tensor.type),
                   detail::Printable(name).c_str());
    }
    *out = tensor;
    return Status::Ok();
  }

  // Drops the whole pages of `tensor`'s data from this process's memory (see
  // the free function AdviseDontNeed); for use once the tensor has been
  // repacked elsewhere. Only for files opened with Open().
  Status AdviseDontNeed(const GgufTensorInfo& tensor) const {
    if (!mapping_.Contains(tensor.data, static_cast<size_t>(tensor.n_bytes))) {
      return Error(StatusCode::kInvalidArgument,
                   "AdviseDontNeed: tensor '%s' is not inside this file's "
                   "mapping (was the file opened from memory?)",
                   detail::Printable(tensor.name).c_str());
    }
    return ::qkern::AdviseDontNeed(tensor.data,
                                   static_cast<size_t>(tensor.n_bytes));
  }

 private:
  // Smallest possible records, to reject impossible counts before parsing:
  // key (u64 length + 1 byte) + u32 type + 1-byte value; name (u64 + 1) +
  // u32 n_dims + one u64 dim + u32 type + u64 offset.
  static constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
  static constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
  static constexpr uint64_t kHeaderBytes = 24;

  // Prefixes the file's name. (Argument 1 of a member is `this`.)
  QKERN_PRINTF_LIKE(3, 4)
  Status Error(StatusCode code, const char* format, ...) const {
    va_list args;
    va_start(args, format);
    std::string text = source_ + ": " + detail::FormatV(format, args);
    va_end(args);
    return Status(code, std::move(text));
  }

  bool Has(uint64_t pos, uint64_t bytes) const {
    return pos <= size_ && bytes <= size_ - pos;
  }

  // Reads a u64-length-prefixed string at *pos. `describe` names it for an
  // error message and is only called on error.
  template <typename Describe>
  Status ReadString(uint64_t* pos, std::string_view* out,
                    Describe describe) const {
    if (!Has(*pos, 8)) {
      return Error(StatusCode::kDataLoss,
                   "%s at offset %llu: the u64 string length runs past end of "
                   "file (size %llu)",
                   describe().c_str(), detail::Ull(*pos), detail::Ull(size_));
    }
    const uint64_t length = detail::LoadLE<uint64_t>(base_ + *pos);
    if (length > size_ - *pos - 8) {
      return Error(StatusCode::kDataLoss,
                   "%s at offset %llu: string length %llu exceeds the %llu "
                   "bytes left in the file (size %llu)",
                   describe().c_str(), detail::Ull(*pos), detail::Ull(length),
                   detail::Ull(size_ - *pos - 8), detail::Ull(size_));
    }
    *out = std::string_view(reinterpret_cast<const char*>(base_ + *pos + 8),
                            static_cast<size_t>(length));
    *pos += 8 + length;
    return Status::Ok();
  }

  template <typename T, typename Describe>
  Status ReadFixed(uint64_t* pos, T* out, Describe describe) const {
    if (!Has(*pos, sizeof(T))) {
      return Error(StatusCode::kDataLoss,
                   "%s at offset %llu: needs %zu bytes, past end of file "
                   "(size %llu)",
                   describe().c_str(), detail::Ull(*pos), sizeof(T),
                   detail::Ull(size_));
    }
    *out = detail::LoadLE<T>(base_ + *pos);
    *pos += sizeof(T);
    return Status::Ok();
  }

  Status Parse() {
    if (size_ < 4) {
      return Error(StatusCode::kDataLoss,
                   "file is %llu bytes; a GGUF file starts with the 4-byte "
                   "magic \"GGUF\"",
                   detail::Ull(size_));
    }
    if (detail::LoadLE<uint32_t>(base_) != kGgufMagic) {
      return Error(
          StatusCode::kDataLoss,
          "not a GGUF file: magic at offset 0 is \"%s\"; expected \"GGUF\"",
          detail::Printable(
              std::string_view(reinterpret_cast<const char*>(base_), 4))
              .c_str());
    }
    if (size_ < kHeaderBytes) {
      return Error(StatusCode::kDataLoss,
                   "file is %llu bytes; the GGUF header (magic, version, "
                   "tensor count, metadata count) needs %llu",
                   detail::Ull(size_), detail::Ull(kHeaderBytes));
    }
    version_ = detail::LoadLE<uint32_t>(base_ + 4);
    if (version_ != 2 && version_ != 3) {
      if (version_ == 0x02000000u || version_ == 0x03000000u) {
        return Error(StatusCode::kUnsupported,
                     "GGUF version at offset 4 reads 0x%08x: a big-endian "
                     "file; qkern reads little-endian GGUF version 2 or 3",
                     version_);
      }
      return Error(StatusCode::kUnsupported,
                   "GGUF version %u at offset 4 is not supported; expected 2 "
                   "or 3%s",
                   version_,
                   version_ == 1 ? " (version 1 used 32-bit counts)" : "");
    }
    const uint64_t n_tensors = detail::LoadLE<uint64_t>(base_ + 8);
    const uint64_t n_kv = detail::LoadLE<uint64_t>(base_ + 16);
    const uint64_t rest = size_ - kHeaderBytes;
    if (n_kv > rest / kMinKvBytes) {
      return Error(StatusCode::kDataLoss,
                   "metadata count %llu at offset 16 cannot fit: a key-value "
                   "pair takes at least %llu bytes and %llu bytes follow the "
                   "header",
                   detail::Ull(n_kv), detail::Ull(kMinKvBytes),
                   detail::Ull(rest));
    }
    if (n_tensors > rest / kMinTensorInfoBytes) {
      return Error(StatusCode::kDataLoss,
                   "tensor count %llu at offset 8 cannot fit: a tensor info "
                   "takes at least %llu bytes and %llu bytes follow the header",
                   detail::Ull(n_tensors), detail::Ull(kMinTensorInfoBytes),
                   detail::Ull(rest));
    }
    uint64_t pos = kHeaderBytes;
    QKERN_RETURN_IF_ERROR(ParseMetadata(n_kv, &pos));
    QKERN_RETURN_IF_ERROR(ResolveAlignment());
    QKERN_RETURN_IF_ERROR(ParseTensorInfos(n_tensors, &pos));
    // pos <= size_ < 2^63 and alignment_ <= 2^31: no overflow.
    data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
    return PlaceTensors();
  }

  Status ParseMetadata(uint64_t n_kv, uint64_t* pos) {
    for (uint64_t i = 0; i < n_kv; ++i) {
      GgufMetadataEntry entry;
      entry.key_offset = *pos;
      QKERN_RETURN_IF_ERROR(ReadString(pos, &entry.key, [&] {
        return "metadata key #" + std::to_string(i);
      }));
      const std::string key = detail::Printable(entry.key);
      if (entry.key.empty()) {
        return Error(StatusCode::kDataLoss,
                     "metadata key #%llu at offset %llu is empty",
                     detail::Ull(i), detail::Ull(entry.key_offset));
      }
      const auto described = [&] { return "metadata key '" + key + "'"; };
      uint32_t type = 0;
      const uint64_t type_offset = *pos;
      QKERN_RETURN_IF_ERROR(
          ReadFixed(pos, &type, [&] { return described() + ": value type"; }));
      if (!IsKnownValueType(type)) {
        return Error(StatusCode::kDataLoss,
                     "metadata key '%s': value type %u at offset %llu is not "
                     "a GGUF value type (0 to 12)",
                     key.c_str(), type, detail::Ull(type_offset));
      }
      entry.type = static_cast<GgufValueType>(type);
      entry.value_offset = *pos;
      if (entry.type == GgufValueType::kArray) {
        QKERN_RETURN_IF_ERROR(ParseArray(key, pos, &entry));
      } else if (entry.type == GgufValueType::kString) {
        std::string_view ignored;
        QKERN_RETURN_IF_ERROR(ReadString(
            pos, &ignored, [&] { return "value of " + described(); }));
      } else {
        const uint64_t bytes = ValueTypeSize(entry.type);
        if (!Has(*pos, bytes)) {
          return Error(StatusCode::kDataLoss,
                       "metadata key '%s': %s value at offset %llu needs %llu "
                       "bytes, past end of file (size %llu)",
                       key.c_str(), ValueTypeName(entry.type),
                       detail::Ull(*pos), detail::Ull(bytes),
                       detail::Ull(size_));
        }
        *pos += bytes;
      }
      entry.value_bytes = *pos - entry.value_offset;
      const auto inserted =
          metadata_index_.emplace(entry.key, metadata_.size());
      if (!inserted.second) {
        return Error(StatusCode::kDataLoss,
                     "metadata key '%s' at offset %llu appears twice (first "
                     "at offset %llu)",
                     key.c_str(), detail::Ull(entry.key_offset),
                     detail::Ull(metadata_[inserted.first->second].key_offset));
      }
      metadata_.push_back(entry);
    }
    return Status::Ok();
  }

  Status ParseArray(const std::string& key, uint64_t* pos,
                    GgufMetadataEntry* entry) {
    const uint64_t header = *pos;
    if (!Has(header, 12)) {
      return Error(StatusCode::kDataLoss,
                   "metadata key '%s': array header (element type, count) at "
                   "offset %llu runs past end of file (size %llu)",
                   key.c_str(), detail::Ull(header), detail::Ull(size_));
    }
    const uint32_t element_type = detail::LoadLE<uint32_t>(base_ + header);
    const uint64_t count = detail::LoadLE<uint64_t>(base_ + header + 4);
    *pos += 12;
    if (element_type == static_cast<uint32_t>(GgufValueType::kArray)) {
      return Error(StatusCode::kUnsupported,
                   "metadata key '%s': array of arrays at offset %llu; "
                   "nested arrays are not supported",
                   key.c_str(), detail::Ull(header));
    }
    if (!IsKnownValueType(element_type)) {
      return Error(StatusCode::kDataLoss,
                   "metadata key '%s': array element type %u at offset %llu "
                   "is not a GGUF value type (0 to 12)",
                   key.c_str(), element_type, detail::Ull(header));
    }
    entry->element_type = static_cast<GgufValueType>(element_type);
    entry->count = count;
    const uint64_t left = size_ - *pos;
    if (entry->element_type != GgufValueType::kString) {
      const uint64_t bytes = ValueTypeSize(entry->element_type);
      if (count > left / bytes) {
        return Error(StatusCode::kDataLoss,
                     "metadata key '%s': array of %llu %s elements (count at "
                     "offset %llu) needs %llu x %llu bytes; only %llu bytes "
                     "are left in the file (size %llu)",
                     key.c_str(), detail::Ull(count),
                     ValueTypeName(entry->element_type),
                     detail::Ull(header + 4), detail::Ull(count),
                     detail::Ull(bytes), detail::Ull(left), detail::Ull(size_));
      }
      *pos += count * bytes;
      return Status::Ok();
    }
    if (count > left / 8) {
      return Error(StatusCode::kDataLoss,
                   "metadata key '%s': array of %llu strings (count at offset "
                   "%llu) needs at least 8 bytes each; only %llu bytes are "
                   "left in the file (size %llu)",
                   key.c_str(), detail::Ull(count), detail::Ull(header + 4),
                   detail::Ull(left), detail::Ull(size_));
    }
    // The walk is unavoidable (it finds where the array ends); keeping every
    // stride-th offset on the way makes StringAt cheap later.
    entry->first_checkpoint = string_checkpoints_.size();
    const uint64_t begin = *pos;
    for (uint64_t j = 0; j < count; ++j) {
      if (j % detail::kGgufStringStride == 0) {
        string_checkpoints_.push_back(*pos - begin);
      }
      const uint64_t at = *pos;
      if (!Has(at, 8)) {
        return Error(StatusCode::kDataLoss,
                     "metadata key '%s': string #%llu of %llu at offset %llu: "
                     "the u64 length runs past end of file (size %llu)",
                     key.c_str(), detail::Ull(j), detail::Ull(count),
                     detail::Ull(at), detail::Ull(size_));
      }
      const uint64_t length = detail::LoadLE<uint64_t>(base_ + at);
      if (length > size_ - at - 8) {
        return Error(StatusCode::kDataLoss,
                     "metadata key '%s': string #%llu of %llu at offset %llu: "
                     "length %llu exceeds the %llu bytes left in the file "
                     "(size %llu)",
                     key.c_str(), detail::Ull(j), detail::Ull(count),
                     detail::Ull(at), detail::Ull(length),
                     detail::Ull(size_ - at - 8), detail::Ull(size_));
      }
      *pos = at + 8 + length;
    }
    return Status::Ok();
  }

  Status ResolveAlignment() {
    alignment_ = kGgufDefaultAlignment;
    const GgufMetadataEntry* entry = FindMetadata("general.alignment");
    if (entry == nullptr) return Status::Ok();
    if (entry->type != GgufValueType::kUint32) {
      return Error(StatusCode::kDataLoss,
                   "metadata key 'general.alignment' (at offset %llu) has "
                   "type %s; expected UINT32",
                   detail::Ull(entry->key_offset), ValueTypeName(entry->type));
    }
    const uint32_t value =
        detail::LoadLE<uint32_t>(base_ + entry->value_offset);
    if (value == 0 || (value & (value - 1)) != 0) {
      return Error(StatusCode::kDataLoss,
                   "metadata key 'general.alignment' is %u (value at offset "
                   "%llu); expected a power of two",
                   value, detail::Ull(entry->value_offset));
    }
    alignment_ = value;
    return Status::Ok();
  }

  Status ParseTensorInfos(uint64_t n_tensors, uint64_t* pos) {
    // Relative data offsets, and where each was read, until PlaceTensors.
    relative_offsets_.clear();
    for (uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo tensor;
      tensor.info_offset = *pos;
      QKERN_RETURN_IF_ERROR(ReadString(pos, &tensor.name, [&] {
        return "name of tensor #" + std::to_string(i);
      }));
      if (tensor.name.empty()) {
        return Error(StatusCode::kDataLoss,
                     "tensor #%llu (info at offset %llu) has an empty name",
                     detail::Ull(i), detail::Ull(tensor.info_offset));
      }
      const std::string name = detail::Printable(tensor.name);
      const auto described = [&] { return "tensor '" + name + "'"; };

      const uint64_t n_dims_offset = *pos;
      QKERN_RETURN_IF_ERROR(ReadFixed(
          pos, &tensor.n_dims, [&] { return described() + ": n_dims"; }));
      if (tensor.n_dims < 1 || tensor.n_dims > 4) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s' (info at offset %llu): n_dims %u at offset "
                     "%llu; expected 1 to 4",
                     name.c_str(), detail::Ull(tensor.info_offset),
                     tensor.n_dims, detail::Ull(n_dims_offset));
      }
      uint64_t n_elements = 1;
      for (uint32_t d = 0; d < tensor.n_dims; ++d) {
        const uint64_t dim_offset = *pos;
        uint64_t dim = 0;
        QKERN_RETURN_IF_ERROR(ReadFixed(pos, &dim, [&] {
          return described() + ": ne[" + std::to_string(d) + "]";
        }));
        if (dim == 0) {
          return Error(StatusCode::kDataLoss,
                       "tensor '%s': ne[%u] is 0 at offset %llu; every "
                       "dimension must be at least 1",
                       name.c_str(), d, detail::Ull(dim_offset));
        }
        if (dim > static_cast<uint64_t>(INT64_MAX) / n_elements) {
          return Error(StatusCode::kDataLoss,
                       "tensor '%s': ne[%u] = %llu at offset %llu makes the "
                       "element count overflow 2^63 - 1",
                       name.c_str(), d, detail::Ull(dim),
                       detail::Ull(dim_offset));
        }
        n_elements *= dim;
        tensor.ne[d] = dim;
      }
      tensor.n_elements = n_elements;

      const uint64_t type_offset = *pos;
      uint32_t type = 0;
      QKERN_RETURN_IF_ERROR(
          ReadFixed(pos, &type, [&] { return described() + ": type"; }));
      const GgmlTypeInfo& info = GgmlTypeInfoFor(type);
      if (info.name == nullptr) {
        return Error(StatusCode::kUnsupported,
                     "tensor '%s': type id %u at offset %llu is not a known "
                     "GGML tensor type",
                     name.c_str(), type, detail::Ull(type_offset));
      }
      if (info.block_size == 0) {
        return Error(StatusCode::kUnsupported,
                     "tensor '%s': type %s (id %u) at offset %llu was removed "
                     "from GGML; its layout is not defined",
                     name.c_str(), info.name, type, detail::Ull(type_offset));
      }
      tensor.type = static_cast<GgmlType>(type);
      if (tensor.ne[0] % info.block_size != 0) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s': row length ne[0] = %llu is not a multiple "
                     "of the %s block size %u",
                     name.c_str(), detail::Ull(tensor.ne[0]), info.name,
                     info.block_size);
      }
      const uint64_t n_blocks = n_elements / info.block_size;
      if (n_blocks > UINT64_MAX / info.block_bytes) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s': %llu blocks of %u bytes overflow 64 bits",
                     name.c_str(), detail::Ull(n_blocks), info.block_bytes);
      }
      tensor.n_bytes = n_blocks * info.block_bytes;

      const uint64_t offset_offset = *pos;
      uint64_t relative = 0;
      QKERN_RETURN_IF_ERROR(ReadFixed(
          pos, &relative, [&] { return described() + ": data offset"; }));
      relative_offsets_.push_back({relative, offset_offset});

      const auto inserted = tensor_index_.emplace(tensor.name, tensors_.size());
      if (!inserted.second) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s' (info at offset %llu) appears twice (first "
                     "at offset %llu)",
                     name.c_str(), detail::Ull(tensor.info_offset),
                     detail::Ull(tensors_[inserted.first->second].info_offset));
      }
      tensors_.push_back(tensor);
    }
    return Status::Ok();
  }

  // Checks every tensor's data range against the alignment, the file size and
  // the other tensors, then sets its pointer.
  Status PlaceTensors() {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      GgufTensorInfo& tensor = tensors_[i];
      const uint64_t relative = relative_offsets_[i].first;
      const uint64_t field = relative_offsets_[i].second;
      const std::string name = detail::Printable(tensor.name);
      if (relative % alignment_ != 0) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s': data offset %llu (at offset %llu) is not a "
                     "multiple of the alignment %llu",
                     name.c_str(), detail::Ull(relative), detail::Ull(field),
                     detail::Ull(alignment_));
      }
      if (data_offset_ > size_ || relative > size_ - data_offset_) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s': data offset %llu (at offset %llu) starts "
                     "past end of file (data section at %llu, file size %llu)",
                     name.c_str(), detail::Ull(relative), detail::Ull(field),
                     detail::Ull(data_offset_), detail::Ull(size_));
      }
      const uint64_t start = data_offset_ + relative;
      if (tensor.n_bytes > size_ - start) {
        return Error(StatusCode::kDataLoss,
                     "tensor '%s': data [%llu, %llu) extends past end of file "
                     "(size %llu)",
                     name.c_str(), detail::Ull(start),
                     detail::Ull(start + tensor.n_bytes), detail::Ull(size_));
      }
      tensor.file_offset = start;
      tensor.data = base_ + start;
    }
    std::vector<uint32_t> order(tensors_.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = static_cast<uint32_t>(i);
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return tensors_[a].file_offset < tensors_[b].file_offset;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const GgufTensorInfo& a = tensors_[order[k - 1]];
      const GgufTensorInfo& b = tensors_[order[k]];
      if (a.file_offset + a.n_bytes > b.file_offset) {
        return Error(
            StatusCode::kDataLoss,
            "tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
            detail::Printable(a.name).c_str(), detail::Ull(a.file_offset),
            detail::Ull(a.file_offset + a.n_bytes),
            detail::Printable(b.name).c_str(), detail::Ull(b.file_offset),
            detail::Ull(b.file_offset + b.n_bytes));
      }
    }
    relative_offsets_.clear();
    relative_offsets_.shrink_to_fit();
    return Status::Ok();
  }

  Status FindTyped(std::string_view key, GgufValueType want,
                   const GgufMetadataEntry** out) const {
    const GgufMetadataEntry* entry = FindMetadata(key);
    if (entry == nullptr) {
      return Error(StatusCode::kInvalidArgument, "metadata key '%s' not found",
                   detail::Printable(key).c_str());
    }
    if (entry->type != want) {
      const std::string found =
          entry->type == GgufValueType::kArray
              ? std::string("ARRAY of ") + ValueTypeName(entry->element_type)
              : std::string(ValueTypeName(entry->type));
      return Error(StatusCode::kDataLoss,
                   "metadata key '%s' (at offset %llu) has type %s; expected "
                   "%s",
                   detail::Printable(key).c_str(),
                   detail::Ull(entry->key_offset), found.c_str(),
                   ValueTypeName(want));
    }
    *out = entry;
    return Status::Ok();
  }

  template <typename T>
  Status GetFixed(std::string_view key, GgufValueType want, T* out) const {
    static_assert(std::is_trivially_copyable<T>::value, "raw value");
    const GgufMetadataEntry* entry = nullptr;
    QKERN_RETURN_IF_ERROR(FindTyped(key, want, &entry));
    *out = detail::LoadLE<T>(base_ + entry->value_offset);
    return Status::Ok();
  }

  template <typename T>
  Status Optional(std::string_view key, T fallback, T* out,
                  Status (GgufFile::*get)(std::string_view, T*) const) const {
    if (FindMetadata(key) == nullptr) {
      *out = fallback;
      return Status::Ok();
    }
    return (this->*get)(key, out);
  }

  GgufArrayView MakeArrayView(const GgufMetadataEntry& entry) const {
    GgufArrayView view;
    view.begin_ = base_ + entry.value_offset + 12;
    view.bytes_ = entry.value_bytes - 12;
    view.count_ = entry.count;
    view.type_ = entry.element_type;
    view.checkpoints_ =
        entry.element_type == GgufValueType::kString && entry.count > 0
            ? string_checkpoints_.data() + entry.first_checkpoint
            : nullptr;
    return view;
  }

  MappedFile mapping_;  // empty when reading caller-owned memory
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::string source_;  // the path, for messages
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufMetadataEntry> metadata_;
  std::unordered_map<std::string_view, size_t> metadata_index_;
  std::vector<uint64_t> string_checkpoints_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
  std::vector<std::pair<uint64_t, uint64_t>> relative_offsets_;
};

}  // namespace qkern

#endif  // QKERN_MODEL_GGUF_READER_H_
