// A fixed pool of equal-sized memory blocks with reference counts: the
// storage behind the paged KV cache.
//
// The pool is sized once from a byte budget (num_blocks = floor(budget /
// block_bytes)) and never grows, so the cache can never use more memory than
// the application allowed. Allocation pops a free list; freeing pushes it.
// Neither touches the heap after Create. The budget covers block storage only;
// bookkeeping adds 8 bytes per block.
//
// Not thread-safe: the owner (PagedKvCache) serialises mutation.
#ifndef QKERN_KV_BLOCK_POOL_H_
#define QKERN_KV_BLOCK_POOL_H_

#include <stddef.h>
#include <stdint.h>

#include <utility>
#include <vector>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/status.h"

namespace qkern {

class BlockPool {
 public:
  // Indices are 32-bit (a block table entry); this one never names a block.
  static constexpr uint32_t kMaxBlocks = UINT32_MAX - 1;

  BlockPool() = default;
  BlockPool(BlockPool&&) = default;
  BlockPool& operator=(BlockPool&&) = default;

  // Allocates floor(budget_bytes / block_bytes) blocks. Block b's base is
  // b * base_stride bytes into the storage: with base_stride == block_bytes
  // (0 means that) the blocks are disjoint and contiguous; with less, the
  // owner interleaves their bytes over the storage (the KV cache:
  // KvBlockLayout). Bases start on a kBufferAlignment boundary when the
  // stride is a multiple of it. Fails if that is zero blocks, more than
  // kMaxBlocks, a stride above block_bytes, or the memory is unavailable;
  // `*out` is unchanged on failure.
  static Status Create(size_t block_bytes, size_t budget_bytes, BlockPool* out,
                       size_t base_stride = 0) {
    if (out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "BlockPool: output is null");
    }
    if (block_bytes == 0) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "BlockPool: block_bytes is 0");
    }
    if (base_stride == 0) base_stride = block_bytes;
    if (base_stride > block_bytes) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "BlockPool: base stride %zu exceeds block_bytes %zu",
                        base_stride, block_bytes);
    }
    const size_t blocks = budget_bytes / block_bytes;
    if (blocks == 0) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "BlockPool: memory budget of %zu bytes is smaller than "
                        "one block of %zu bytes",
                        budget_bytes, block_bytes);
    }
    if (blocks > kMaxBlocks) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "BlockPool: budget of %zu bytes gives %zu blocks, more "
                        "than the %u a 32-bit block index can name",
                        budget_bytes, blocks,
                        static_cast<unsigned>(kMaxBlocks));
    }
    BlockPool pool;
    // blocks * block_bytes <= budget_bytes, so this cannot overflow. (Large
    // pools get huge pages: AlignedBuffer.)
    if (!pool.storage_.Allocate(blocks * block_bytes)) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "BlockPool: cannot allocate %zu blocks of %zu bytes",
                        blocks, block_bytes);
    }
    pool.block_bytes_ = block_bytes;
    pool.base_stride_ = base_stride;
    pool.num_blocks_ = static_cast<uint32_t>(blocks);
    pool.refcounts_.assign(blocks, 0);
    pool.free_list_.resize(blocks);
    // Pop order hands out low indices first, which keeps early sequences in
    // one region of memory.
    for (size_t i = 0; i < blocks; ++i) {
      pool.free_list_[i] = static_cast<uint32_t>(blocks - 1 - i);
    }
    *out = std::move(pool);
    return Status::Ok();
  }

  uint32_t num_blocks() const { return num_blocks_; }
  uint32_t num_free() const { return static_cast<uint32_t>(free_list_.size()); }
  size_t block_bytes() const { return block_bytes_; }
  size_t base_stride() const { return base_stride_; }

  // Takes `n` blocks, each with refcount 1, writing their indices to `out`;
  // all or nothing. Block contents are whatever was there before.
  Status Allocate(uint32_t n, uint32_t* out) {
    if (n > num_free()) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "BlockPool: %u blocks requested, %u of %u free", n,
                        num_free(), num_blocks_);
    }
    if (n > 0 && out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "BlockPool: output is null");
    }
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t block = free_list_.back();
      free_list_.pop_back();
      refcounts_[block] = 1;
      out[i] = block;
    }
    return Status::Ok();
  }

  // Adds a reference to an allocated block.
  Status Ref(uint32_t block) {
    QKERN_RETURN_IF_ERROR(CheckAllocated(block));
    ++refcounts_[block];
    return Status::Ok();
  }

  // Drops a reference; the block returns to the free list at zero.
  Status Unref(uint32_t block) {
    QKERN_RETURN_IF_ERROR(CheckAllocated(block));
    if (--refcounts_[block] == 0) free_list_.push_back(block);
    return Status::Ok();
  }

  // 0 for free blocks and for indices out of range.
  uint32_t RefCount(uint32_t block) const {
    return block < num_blocks_ ? refcounts_[block] : 0;
  }

  // The block's base (see Create); null for indices out of range.
  uint8_t* Data(uint32_t block) {
    return block < num_blocks_ ? storage_.data() + block * base_stride_
                               : nullptr;
  }
  const uint8_t* Data(uint32_t block) const {
    return block < num_blocks_ ? storage_.data() + block * base_stride_
                               : nullptr;
  }

  // Ok if `block` is in range and allocated.
  Status CheckAllocated(uint32_t block) const {
    if (block >= num_blocks_) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "block index %u is out of range (pool has %u blocks)",
                        block, num_blocks_);
    }
    if (refcounts_[block] == 0) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "block index %u is free (stale block table?)", block);
    }
    return Status::Ok();
  }

 private:
  AlignedBuffer storage_;
  size_t block_bytes_ = 0;
  size_t base_stride_ = 0;
  uint32_t num_blocks_ = 0;
  std::vector<uint32_t> refcounts_;
  std::vector<uint32_t>
      free_list_;  // capacity num_blocks_: pushes never allocate
};

}  // namespace qkern

#endif  // QKERN_KV_BLOCK_POOL_H_
