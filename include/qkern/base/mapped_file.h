// Read-only whole-file mappings, and giving their pages back to the kernel.
// Used by the GGUF reader; POSIX only (mmap/madvise).
#ifndef QKERN_BASE_MAPPED_FILE_H_
#define QKERN_BASE_MAPPED_FILE_H_

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "qkern/base/status.h"

namespace qkern {

// --- Releasing pages ---------------------------------------------------------

// Tells the kernel that the whole pages inside [p, p + bytes) are not needed
// any more (madvise MADV_DONTNEED); the partial pages at either end are kept
// because they may hold bytes someone still uses. Meant for a file-backed
// read-only mapping such as a GgufFile's: after a tensor has been repacked
// into its own buffer, this drops the source pages from the page cache
// charge of this process, which matters on phones where resident memory is
// the limit. Reading the range again afterwards is still correct (the pages
// are faulted back in from the file), only slower.
//
// Never call it on anonymous or heap memory: there MADV_DONTNEED discards the
// contents and later reads return zeros. GgufFile::AdviseDontNeed checks that
// the range is inside its own file mapping.
inline Status AdviseDontNeed(const void* p, size_t bytes) {
  const long page = sysconf(_SC_PAGESIZE);
  if (page <= 0 || bytes == 0) return Status::Ok();
  const uintptr_t page_size = static_cast<uintptr_t>(page);
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  if (bytes > UINTPTR_MAX - start) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "AdviseDontNeed: range of %zu bytes at %p wraps around "
                      "the address space",
                      bytes, p);
  }
  const uintptr_t begin = (start + page_size - 1) / page_size * page_size;
  const uintptr_t end = (start + bytes) / page_size * page_size;
  if (end <= begin) return Status::Ok();  // no whole page inside
  if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) !=
      0) {
    return MakeStatus(StatusCode::kIoError,
                      "madvise(MADV_DONTNEED) on %zu bytes at %p failed: %s",
                      static_cast<size_t>(end - begin),
                      reinterpret_cast<void*>(begin), strerror(errno));
  }
  return Status::Ok();
}

// --- A read-only file mapping ------------------------------------------------

// Move-only owner of a read-only MAP_PRIVATE mapping of a whole file. An
// empty file maps to data() == nullptr, size() == 0.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      Unmap();
      data_ = other.data_;
      size_ = other.size_;
      other.data_ = nullptr;
      other.size_ = 0;
    }
    return *this;
  }
  ~MappedFile() { Unmap(); }

  static Status Map(const std::string& path, MappedFile* out) {
    int fd;
    do {
      fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
      return MakeStatus(StatusCode::kIoError, "%s: cannot open: %s",
                        path.c_str(), strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
      const int error = errno;
      close(fd);
      return MakeStatus(StatusCode::kIoError, "%s: cannot stat: %s",
                        path.c_str(), strerror(error));
    }
    if (!S_ISREG(st.st_mode)) {
      close(fd);
      return MakeStatus(StatusCode::kIoError, "%s: not a regular file",
                        path.c_str());
    }
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    if (file_size > SIZE_MAX) {
      close(fd);
      return MakeStatus(StatusCode::kUnsupported,
                        "%s: %llu bytes do not fit this process's address "
                        "space",
                        path.c_str(),
                        static_cast<unsigned long long>(file_size));
    }
    MappedFile mapped;
    if (file_size > 0) {
      void* p = mmap(nullptr, static_cast<size_t>(file_size), PROT_READ,
                     MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int error = errno;
        close(fd);
        return MakeStatus(
            StatusCode::kIoError, "%s: cannot map %llu bytes: %s", path.c_str(),
            static_cast<unsigned long long>(file_size), strerror(error));
      }
      mapped.data_ = static_cast<const uint8_t*>(p);
      mapped.size_ = static_cast<size_t>(file_size);
    }
    close(fd);  // the mapping keeps the file referenced
    *out = std::move(mapped);
    return Status::Ok();
  }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

  bool Contains(const void* p, size_t bytes) const {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(data_);
    const uintptr_t q = reinterpret_cast<uintptr_t>(p);
    return data_ != nullptr && q >= begin && q - begin <= size_ &&
           bytes <= size_ - (q - begin);
  }

 private:
  void Unmap() {
    if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qkern

#endif  // QKERN_BASE_MAPPED_FILE_H_
