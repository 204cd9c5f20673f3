// An owning, aligned, uninitialised byte buffer: the only kind of memory qkern
// allocates for weights and scratch. Allocation happens at setup, never in a
// kernel.
#ifndef QKERN_BASE_ALIGNED_BUFFER_H_
#define QKERN_BASE_ALIGNED_BUFFER_H_

#include <stddef.h>
#include <stdlib.h>

#include <new>
#include <utility>

namespace qkern {

// 64 bytes: a cache line, and the widest vector we load from x86 (AVX-512).
// SVE vectors can be wider; kernels never require alignment, it only helps.
constexpr size_t kBufferAlignment = 64;

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Returns an empty buffer (data() == nullptr) if the allocation fails; use
  // Allocate() to observe the failure.
  explicit AlignedBuffer(size_t bytes) { Allocate(bytes); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& other) noexcept { *this = std::move(other); }
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = other.data_;
      size_ = other.size_;
      other.data_ = nullptr;
      other.size_ = 0;
    }
    return *this;
  }
  ~AlignedBuffer() { Free(); }

  // Returns false (and leaves the buffer empty) if memory is not available.
  bool Allocate(size_t bytes) {
    Free();
    if (bytes == 0) return true;
    const size_t rounded =
        (bytes + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
    if (rounded < bytes) return false;  // overflow
    data_ = static_cast<unsigned char*>(aligned_alloc(kBufferAlignment, rounded));
    if (data_ == nullptr) return false;
    size_ = bytes;
    return true;
  }

  // Grows (never shrinks) to at least `bytes`; contents are not preserved.
  bool Reserve(size_t bytes) { return bytes <= size_ || Allocate(bytes); }

  void Free() {
    free(data_);
    data_ = nullptr;
    size_ = 0;
  }

  unsigned char* data() { return data_; }
  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data_);
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data_);
  }

 private:
  unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qkern

#endif  // QKERN_BASE_ALIGNED_BUFFER_H_
