// An owning, aligned, uninitialised byte buffer: the only kind of memory qkern
// allocates for weights and scratch. Allocation happens at setup, never in a
// kernel.
#ifndef QKERN_BASE_ALIGNED_BUFFER_H_
#define QKERN_BASE_ALIGNED_BUFFER_H_

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <new>
#include <utility>

namespace qkern {

// 64 bytes: a cache line, and the widest vector we load from x86 (AVX-512).
// SVE vectors can be wider; kernels never require alignment, it only helps.
constexpr size_t kBufferAlignment = 64;

// Buffers from this size on (packed weights, the KV pool) are aligned to 2 MiB
// and, on Linux, advised to use transparent huge pages, which many kernels
// grant only on request. They are streamed (weights) or read in scattered
// slices (KV blocks): with 4 KiB pages nearly every few KiB costs a TLB miss
// that prefetching does not hide. Advice only: nothing changes where refused.
constexpr size_t kHugePageBytes = size_t{2} << 20;
constexpr size_t kHugePageThreshold = size_t{4} << 20;

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
    const size_t align =
        bytes >= kHugePageThreshold ? kHugePageBytes : kBufferAlignment;
    const size_t rounded = (bytes + align - 1) / align * align;
    if (rounded < bytes) return false;  // overflow
    data_ = static_cast<unsigned char*>(aligned_alloc(align, rounded));
    if (data_ == nullptr) return false;
    size_ = bytes;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Before the first touch, so the pages are huge from the start.
    if (align == kHugePageBytes) (void)madvise(data_, rounded, MADV_HUGEPAGE);
#endif
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
