// PagedKvCache: the KV cache of a decoder, paged into fixed-size blocks from a
// pool sized once from a memory budget.
//
// Each sequence (an integer id chosen by the caller) owns a block table:
// entry i holds positions [i * block_tokens, (i + 1) * block_tokens) of all
// layers (layout in kv_format.h). A forked sequence shares its parent's blocks
// by reference count.
//
// Appending tokens, per decoder step:
//   ReserveTokens(seq, n)                   blocks for positions
//                                           [Length, Length + n); may fail
//   for each layer: WriteKV(seq, layer, p, k, v) for p in that range
//                   (attention of that layer may now read those positions)
//   CommitTokens(seq, n)                    Length += n
// Why three calls: every allocation (and every way to run out of blocks)
// happens in ReserveTokens, before the step has written anything, and it is
// all or nothing. WriteKV then cannot fail for lack of memory and allocates
// nothing, and a failed step leaves no half-appended token: CommitTokens
// refuses positions not written for every layer, and Truncate discards an
// uncommitted reservation. Speculative decoding reserves and commits the
// draft tokens, then Truncates to the accepted length.
//
// Fork and copy-on-write: Fork shares every block holding the parent's
// committed tokens, including a partly filled last block. That block is copied
// lazily, by whichever sharer next calls ReserveTokens on it (counted in that
// call's block need), so a fork that never appends costs no block, and Fork
// itself never runs out of memory. Copy-on-write never needs to happen in
// WriteKV because a reservation made by the parent before the fork only covers
// positions at or past the parent's length, and the other sharers never read
// those positions: they hold at most that many tokens of the shared block
// (their own appends go to a copy, and Truncate drops the reservation).
//
// Errors: every entry point validates its arguments (sequence ids, positions,
// layers, pointers, block indices) and returns a Status naming the offending
// value and the limit; a failing call changes nothing, except that a failed
// WriteKV leaves that (position, layer) unwritten.
//
// Writing in place: WritableKvRow gives the page bytes of one (position,
// layer, kv head, K or V) row of a reserved, uncommitted position, validated
// as WriteKV validates, so a producer (RopeAndWriteK in rope.h: rotate in
// registers, encode, store) writes the cache format straight into the page
// (K rows are dim-major, so their values are strided: EncodeKvRowToSlot
// stores a row either way); WritablePosition gives all rows of a (position,
// layer) for one validation.
// Once every row of that (position, layer) is stored, MarkKvWritten sets the
// mark WriteKV sets; until then CommitTokens and ReadKV refuse the position.
//
// Threads: not thread-safe for calls that change sequences. Read-only calls,
// and the attention kernel reading blocks, may run concurrently with each
// other, and WriteKV calls (or WritableKvRow / MarkKvWritten) for different
// sequences may run concurrently.
#ifndef QKERN_KV_PAGED_KV_CACHE_H_
#define QKERN_KV_PAGED_KV_CACHE_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qkern/base/status.h"
#include "qkern/kv/block_pool.h"
#include "qkern/kv/kv_format.h"

namespace qkern {

using KvSeqId = uint64_t;

namespace detail {

// EncodeKvRow (kv_format.h) on the best SIMD target; defined in
// qkern/detail/dispatch_targets.h, which this header includes at its end
// (the kernels there need PagedKvCache to be complete).
inline size_t DispatchEncodeKvRow(KvFormat format, const float* src, size_t n,
                                  void* values, float* scale);

// The error of a K or V value that `format` cannot hold.
inline Status KvUnstorableValue(const char* op, KvPart part, size_t index,
                                float value, size_t layer, size_t pos,
                                KvFormat format) {
  return MakeStatus(StatusCode::kInvalidArgument,
                    "%s: %s[%zu] = %g (layer %zu, position %zu) cannot be "
                    "stored as %s: values must be finite%s",
                    op, part == KvPart::kK ? "k" : "v", index,
                    static_cast<double>(value), layer, pos,
                    GetKvFormatInfo(format).name,
                    format == KvFormat::kF16 ? " and within +-65504" : "");
}

}  // namespace detail

// Where one stored row of the cache lives: head_dim values in the cache
// format, `value_stride` bytes apart (the element size, or more for K stored
// dim-major: see KvBlockLayout), and, for int8, the row's f32 scale (4-byte
// aligned). Neither is 64-byte aligned in general. EncodeKvRowToSlot stores a
// row either way.
struct KvRowSlot {
  uint8_t* values = nullptr;
  size_t value_stride = 0;
  float* scale = nullptr;  // null for formats without row scales
};

// The slot of row (layer, kv_head, part) at `slot` of a block.
inline KvRowSlot KvRowSlotAt(const KvBlockLayout& layout, uint8_t* block,
                             size_t layer, size_t kv_head, KvPart part,
                             size_t slot) {
  KvRowSlot row;
  row.values = block + layout.RowOffset(layer, kv_head, part, slot);
  row.value_stride = layout.ValueStride(part);
  // Formats without scales get null: their scale offsets lie outside the
  // part. The rows' codecs access scales with memcpy (no alignment assumed).
  if (layout.has_row_scales()) {
    row.scale = reinterpret_cast<float*>(
        block + layout.ScaleOffset(layer, kv_head, part, slot));
  }
  return row;
}

// EncodeKvRow (same result: n, or the index of the first value `format`
// cannot hold) of src[0, n) into `slot`.
inline size_t EncodeKvRowToSlot(KvFormat format, const float* src, size_t n,
                                const KvRowSlot& slot) {
  const size_t element = GetKvFormatInfo(format).element_bytes;
  if (slot.value_stride == element) {
    return detail::DispatchEncodeKvRow(format, src, n, slot.values, slot.scale);
  }
  if (format == KvFormat::kInt8) {
    // The row's scale depends on all its values: stage the whole row.
    alignas(64) uint8_t row[kMaxKvHeadDim];
    if (n > kMaxKvHeadDim) return 0;
    const size_t stored =
        detail::DispatchEncodeKvRow(format, src, n, row, slot.scale);
    ScatterKvValues(row, stored, element, slot.values, slot.value_stride);
    return stored;
  }
  // f32 and f16 encode value by value: encoding in chunks gives the same
  // bytes.
  constexpr size_t kChunk = 256;
  alignas(64) uint8_t staged[kChunk * sizeof(float)];
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t m = std::min(kChunk, n - i);
    const size_t stored =
        detail::DispatchEncodeKvRow(format, src + i, m, staged, nullptr);
    ScatterKvValues(staged, stored, element,
                    slot.values + i * slot.value_stride, slot.value_stride);
    if (stored != m) return i + stored;
  }
  return n;
}

// DecodeKvRow of the row in `slot` into dst[0, n).
inline void DecodeKvRowFromSlot(KvFormat format, const KvRowSlot& slot,
                                size_t n, float* dst) {
  const size_t element = GetKvFormatInfo(format).element_bytes;
  if (slot.value_stride == element) {
    DecodeKvRow(format, slot.values, slot.scale, n, dst);
    return;
  }
  constexpr size_t kChunk = 256;
  alignas(64) uint8_t staged[kChunk * sizeof(float)];
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t m = std::min(kChunk, n - i);
    GatherKvValues(slot.values + i * slot.value_stride, slot.value_stride, m,
                   element, staged);
    DecodeKvRow(format, staged, slot.scale, m, dst + i);
  }
}

// The rows of one (position, layer) of a sequence, all kv heads, K and V:
// what PagedKvCache::WritablePosition validated once, so a writer that
// fills every row of a token pays one validation, as WriteKV does.
class KvPositionSlots {
 public:
  KvPositionSlots() = default;
  // `kv_head` < num_kv_heads and `part` K or V (not checked here).
  KvRowSlot Row(size_t kv_head, KvPart part) const {
    return KvRowSlotAt(*layout_, block_, layer_, kv_head, part, row_);
  }

 private:
  friend class PagedKvCache;
  uint8_t* block_ = nullptr;
  const KvBlockLayout* layout_ = nullptr;
  size_t layer_ = 0;
  size_t row_ = 0;  // slot of the position inside its block
};

struct KvCacheConfig {
  size_t num_layers = 0;
  size_t num_kv_heads = 0;
  size_t head_dim = 0;
  size_t block_tokens = 16;  // positions per block; 16 or 32 are typical
  KvFormat format = KvFormat::kF16;
  // Bytes of block storage the cache may use; it gets
  // floor(memory_budget_bytes / block_bytes) blocks and never more.
  size_t memory_budget_bytes = 0;
};

// A sequence's block table: block indices into the pool, in position order.
// Valid until the next call that changes that sequence.
struct KvBlockTable {
  const uint32_t* data = nullptr;
  size_t size = 0;

  const uint32_t* begin() const { return data; }
  const uint32_t* end() const { return data + size; }
  uint32_t operator[](size_t i) const { return data[i]; }
};

class PagedKvCache {
 public:
  // An empty cache: every call fails until it is replaced by one from Create.
  PagedKvCache() = default;
  PagedKvCache(PagedKvCache&&) = default;
  PagedKvCache& operator=(PagedKvCache&&) = default;

  // Validates `config` and allocates the whole pool; `*out` is unchanged on
  // failure. Bad shapes and a budget below one block are kInvalidArgument,
  // an allocation failure kResourceExhausted.
  static Status Create(const KvCacheConfig& config, PagedKvCache* out) {
    if (out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "PagedKvCache::Create: output is null");
    }
    PagedKvCache cache;
    QKERN_RETURN_IF_ERROR(KvBlockLayout::Compute(
        config.num_layers, config.num_kv_heads, config.head_dim,
        config.block_tokens, config.format, &cache.layout_));
    QKERN_RETURN_IF_ERROR(BlockPool::Create(
        cache.layout_.BlockBytes(), config.memory_budget_bytes, &cache.pool_,
        cache.layout_.BlockStride()));
    QKERN_RETURN_IF_ERROR(
        cache.layout_.SetPoolBlocks(cache.pool_.num_blocks()));
    cache.config_ = config;
    cache.words_per_position_ = (config.num_layers + 63) / 64;
    *out = std::move(cache);
    return Status::Ok();
  }

  const KvCacheConfig& config() const { return config_; }
  const KvBlockLayout& layout() const { return layout_; }
  const BlockPool& pool() const { return pool_; }
  uint32_t num_blocks() const { return pool_.num_blocks(); }
  uint32_t num_free_blocks() const { return pool_.num_free(); }
  // Floats in one token's K (or V) for one layer: [kv_head][head_dim].
  size_t RowFloats() const { return config_.num_kv_heads * config_.head_dim; }

  // --- Sequences -----------------------------------------------------------

  // Starts an empty sequence.
  Status AddSequence(KvSeqId seq) {
    QKERN_RETURN_IF_ERROR(CheckCreated());
    if (sequences_.count(seq) != 0) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "sequence id %llu already exists", Id(seq));
    }
    sequences_.emplace(seq, Sequence());
    return Status::Ok();
  }

  // Starts `dst` as a copy of `src`'s committed tokens, sharing their blocks.
  // `src`, including any reservation it holds, is unchanged. Uses no block.
  Status Fork(KvSeqId src, KvSeqId dst) {
    QKERN_RETURN_IF_ERROR(CheckCreated());
    const Sequence* parent = nullptr;
    QKERN_RETURN_IF_ERROR(Find(src, "Fork", &parent));
    if (sequences_.count(dst) != 0) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "Fork: destination sequence id %llu already exists",
                        Id(dst));
    }
    Sequence child;
    child.length = child.reserved = parent->length;
    child.blocks.assign(parent->blocks.data(),
                        parent->blocks.data() + BlocksFor(parent->length));
    // Every entry of a live table is allocated, so Ref cannot fail.
    for (uint32_t block : child.blocks) (void)pool_.Ref(block);
    sequences_.emplace(dst, std::move(child));
    return Status::Ok();
  }

  // Ends a sequence; blocks no other sequence shares return to the pool.
  Status Free(KvSeqId seq) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "Free", &s));
    ReleaseBlocksFrom(s, 0);
    sequences_.erase(seq);
    return Status::Ok();
  }

  bool HasSequence(KvSeqId seq) const { return sequences_.count(seq) != 0; }
  size_t num_sequences() const { return sequences_.size(); }

  // Committed tokens.
  Status Length(KvSeqId seq, size_t* length) const {
    const Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "Length", &s));
    QKERN_RETURN_IF_ERROR(CheckOut(length, "Length"));
    *length = s->length;
    return Status::Ok();
  }

  // Committed plus reserved positions: WriteKV accepts [Length, this).
  Status ReservedLength(KvSeqId seq, size_t* reserved) const {
    const Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "ReservedLength", &s));
    QKERN_RETURN_IF_ERROR(CheckOut(reserved, "ReservedLength"));
    *reserved = s->reserved;
    return Status::Ok();
  }

  // --- Appending -----------------------------------------------------------

  // Blocks that ReserveTokens(seq, n) would take now (new blocks plus copies
  // of shared ones), whether or not that many are free; lets a scheduler
  // admit work without trying. kResourceExhausted only if the whole pool
  // could not hold the sequence.
  Status BlocksToReserve(KvSeqId seq, size_t n, size_t* blocks) const {
    const Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "BlocksToReserve", &s));
    QKERN_RETURN_IF_ERROR(CheckOut(blocks, "BlocksToReserve"));
    size_t fresh = 0, copies = 0;
    QKERN_RETURN_IF_ERROR(CountReserve(seq, *s, n, &fresh, &copies));
    *blocks = fresh + copies;
    return Status::Ok();
  }

  // Makes positions [Length, Length + n) writable: allocates the blocks they
  // need and copies any shared block among them. All or nothing: when the
  // pool is short, returns kResourceExhausted (naming the blocks needed and
  // free) and changes no sequence. Never shrinks an existing reservation.
  Status ReserveTokens(KvSeqId seq, size_t n) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "ReserveTokens", &s));
    size_t fresh = 0, copies = 0;
    QKERN_RETURN_IF_ERROR(CountReserve(seq, *s, n, &fresh, &copies));
    if (fresh + copies > pool_.num_free()) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "ReserveTokens: sequence %llu needs %zu blocks for %zu "
                        "more tokens (%zu new, %zu copy-on-write) but only %u "
                        "of %u are free",
                        Id(seq), fresh + copies, n, fresh, copies,
                        pool_.num_free(), pool_.num_blocks());
    }
    const size_t target = s->length + n;
    // Host-side growth first, so nothing below can fail half way.
    s->blocks.reserve(s->blocks.size() + fresh);
    if (target > s->reserved) {
      s->written.resize((target - s->length) * words_per_position_, 0);
    }
    if (copies > 0) {
      const size_t last = std::min(s->blocks.size(), BlocksFor(target));
      for (size_t i = s->length / config_.block_tokens; i < last; ++i) {
        const uint32_t old_block = s->blocks[i];
        if (pool_.RefCount(old_block) <= 1) continue;
        uint32_t copy = 0;
        (void)pool_.Allocate(1, &copy);
        // The whole block: it may also hold this sequence's pending writes.
        CopyBlock(old_block, copy);
        (void)pool_.Unref(old_block);
        s->blocks[i] = copy;
      }
    }
    if (fresh > 0) {
      const size_t old_size = s->blocks.size();
      s->blocks.resize(old_size + fresh);
      (void)pool_.Allocate(static_cast<uint32_t>(fresh),
                           s->blocks.data() + old_size);
    }
    if (target > s->reserved) s->reserved = target;
    return Status::Ok();
  }

  // Stores one token's K and V of one layer, converted to the cache format.
  // `k` and `v` hold RowFloats() floats each, [kv_head][head_dim]. `pos` must
  // be reserved and not committed. Values must be finite, and for f16 round
  // to at most 65504 in magnitude (|x| < 65520). Allocates nothing.
  Status WriteKV(KvSeqId seq, size_t layer, size_t pos, const float* k,
                 const float* v) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(CheckWritable("WriteKV", seq, layer, pos, &s));
    if (k == nullptr || v == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "WriteKV: %s is null",
                        k == nullptr ? "k" : "v");
    }
    uint64_t& word = WrittenWord(s, pos, layer);
    const uint64_t bit = uint64_t{1} << (layer % 64);
    word &= ~bit;  // a failed rewrite must not leave the old mark
    uint8_t* block = pool_.Data(s->blocks[pos / config_.block_tokens]);
    const size_t slot = pos % config_.block_tokens;
    const size_t dim = config_.head_dim;
    for (size_t head = 0; head < config_.num_kv_heads; ++head) {
      for (KvPart part : {KvPart::kK, KvPart::kV}) {
        const float* src = (part == KvPart::kK ? k : v) + head * dim;
        const size_t stored = EncodeKvRowToSlot(
            config_.format, src, dim,
            KvRowSlotAt(layout_, block, layer, head, part, slot));
        if (stored != dim) {
          return detail::KvUnstorableValue("WriteKV", part, head * dim + stored,
                                           src[stored], layer, pos,
                                           config_.format);
        }
      }
    }
    word |= bit;
    return Status::Ok();
  }

  // The page bytes of row (kv_head, part) of `pos` in `layer`, for a caller
  // that encodes the row itself (see the file comment). `pos` must be
  // reserved and not committed, as for WriteKV (same errors). Clears the
  // written mark of (pos, layer): call MarkKvWritten after storing all
  // 2 * num_kv_heads rows of it. The slot stays valid until the next call
  // that changes the sequence. Allocates nothing.
  Status WritableKvRow(KvSeqId seq, size_t layer, size_t pos, size_t kv_head,
                       KvPart part, KvRowSlot* slot) {
    if (kv_head >= config_.num_kv_heads) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "WritableKvRow: kv head %zu is out of range "
                        "(num_kv_heads %zu)",
                        kv_head, config_.num_kv_heads);
    }
    if (part != KvPart::kK && part != KvPart::kV) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "WritableKvRow: part %u is neither K (0) nor V (1)",
                        static_cast<unsigned>(part));
    }
    QKERN_RETURN_IF_ERROR(CheckOut(slot, "WritableKvRow"));
    KvPositionSlots rows;
    QKERN_RETURN_IF_ERROR(
        WritablePositionFor("WritableKvRow", seq, layer, pos, &rows));
    *slot = rows.Row(kv_head, part);
    return Status::Ok();
  }

  // WritableKvRow for every row of (pos, layer) at once: one validation
  // (same checks and errors) and one clearing of the written mark.
  Status WritablePosition(KvSeqId seq, size_t layer, size_t pos,
                          KvPositionSlots* rows) {
    QKERN_RETURN_IF_ERROR(CheckOut(rows, "WritablePosition"));
    return WritablePositionFor("WritablePosition", seq, layer, pos, rows);
  }

  // Marks (pos, layer) written, as a successful WriteKV does, after every
  // row of it was stored through WritableKvRow. The cache cannot check the
  // bytes: marking a row that was never stored exposes stale page contents.
  Status MarkKvWritten(KvSeqId seq, size_t layer, size_t pos) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(CheckWritable("MarkKvWritten", seq, layer, pos, &s));
    WrittenWord(s, pos, layer) |= uint64_t{1} << (layer % 64);
    return Status::Ok();
  }

  // Length += n. Every one of those positions must have been written for
  // every layer.
  Status CommitTokens(KvSeqId seq, size_t n) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "CommitTokens", &s));
    if (n > s->reserved - s->length) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "CommitTokens: %zu tokens requested but sequence %llu "
                        "has %zu reserved past its length %zu",
                        n, Id(seq), s->reserved - s->length, s->length);
    }
    for (size_t pos = s->length; pos < s->length + n; ++pos) {
      for (size_t layer = 0; layer < config_.num_layers; ++layer) {
        if (!IsWritten(*s, pos, layer)) {
          return MakeStatus(StatusCode::kInvalidArgument,
                            "CommitTokens: position %zu of sequence %llu was "
                            "never written for layer %zu",
                            pos, Id(seq), layer);
        }
      }
    }
    s->written.erase(
        s->written.begin(),
        s->written.begin() + static_cast<ptrdiff_t>(n * words_per_position_));
    s->length += n;
    return Status::Ok();
  }

  // Rolls a sequence back to its first `new_length` tokens, drops its
  // reservation and uncommitted writes, and releases blocks it no longer
  // needs (shared ones stay alive for their other owners).
  Status Truncate(KvSeqId seq, size_t new_length) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "Truncate", &s));
    if (new_length > s->length) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "Truncate: new length %zu is past the length %zu of "
                        "sequence %llu",
                        new_length, s->length, Id(seq));
    }
    ReleaseBlocksFrom(s, BlocksFor(new_length));
    s->length = s->reserved = new_length;
    s->written.clear();
    return Status::Ok();
  }

  // --- Reading -------------------------------------------------------------

  // The blocks backing [0, ReservedLength): the first
  // ceil(Length / block_tokens) hold committed tokens.
  Status BlockTable(KvSeqId seq, KvBlockTable* table) const {
    const Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "BlockTable", &s));
    QKERN_RETURN_IF_ERROR(CheckOut(table, "BlockTable"));
    table->data = s->blocks.data();
    table->size = s->blocks.size();
    return Status::Ok();
  }

  // Base of a block, the address layout()'s offsets are taken from (its
  // bytes are spread over the pool: KvBlockLayout); null if `block` is out of
  // range.
  const uint8_t* BlockData(uint32_t block) const { return pool_.Data(block); }

  // For kernels given a block table by their caller: Ok if `table` has
  // enough entries for `num_tokens` positions and each of them names an
  // allocated block of this cache.
  Status ValidateBlockTable(const uint32_t* table, size_t table_size,
                            size_t num_tokens) const {
    const size_t needed = BlocksFor(num_tokens);
    if (table_size < needed) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "block table has %zu entries, %zu tokens need %zu",
                        table_size, num_tokens, needed);
    }
    if (needed > 0 && table == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "block table is null");
    }
    for (size_t i = 0; i < needed; ++i) {
      const Status status = pool_.CheckAllocated(table[i]);
      if (!status.ok()) {
        return MakeStatus(status.code(), "block table entry %zu: %s", i,
                          status.message().c_str());
      }
    }
    return Status::Ok();
  }

  // Dequantizes one token's K and V of one layer into RowFloats() floats
  // each. `pos` must be committed, or reserved and written for this layer.
  Status ReadKV(KvSeqId seq, size_t layer, size_t pos, float* k,
                float* v) const {
    const Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, "ReadKV", &s));
    QKERN_RETURN_IF_ERROR(CheckLayer(layer, "ReadKV"));
    if (pos >= s->reserved) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "ReadKV: position %zu is past the length %zu of "
                        "sequence %llu",
                        pos, s->length, Id(seq));
    }
    if (pos >= s->length && !IsWritten(*s, pos, layer)) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "ReadKV: position %zu of sequence %llu is reserved but "
                        "not written for layer %zu",
                        pos, Id(seq), layer);
    }
    if (k == nullptr || v == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "ReadKV: %s is null",
                        k == nullptr ? "k" : "v");
    }
    const uint8_t* block = pool_.Data(s->blocks[pos / config_.block_tokens]);
    const size_t slot = pos % config_.block_tokens;
    const size_t dim = config_.head_dim;
    for (size_t head = 0; head < config_.num_kv_heads; ++head) {
      for (KvPart part : {KvPart::kK, KvPart::kV}) {
        // The slot is only read.
        DecodeKvRowFromSlot(config_.format,
                            KvRowSlotAt(layout_, const_cast<uint8_t*>(block),
                                        layer, head, part, slot),
                            dim, (part == KvPart::kK ? k : v) + head * dim);
      }
    }
    return Status::Ok();
  }

 private:
  struct Sequence {
    std::vector<uint32_t> blocks;  // ceil(reserved / block_tokens) entries
    size_t length = 0;             // committed positions
    size_t reserved = 0;           // >= length
    // For each position in [length, reserved), words_per_position_ words
    // with one bit per layer: set once WriteKV stored that layer.
    std::vector<uint64_t> written;
  };

  static unsigned long long Id(KvSeqId seq) {
    return static_cast<unsigned long long>(seq);
  }

  // Drops the sequence's references to its blocks from index `keep` on, last
  // first: the pool reuses freed blocks last in, first out, so the next
  // sequence gets them back in position order, and a head's pieces stay one
  // ascending stream (see KvBlockLayout).
  void ReleaseBlocksFrom(Sequence* s, size_t keep) {
    for (size_t i = s->blocks.size(); i > keep; --i) {
      (void)pool_.Unref(s->blocks[i - 1]);
    }
    s->blocks.resize(keep);
  }

  // Copies every piece of block `from` to block `to` (one per layer and kv
  // head, spread over the pool: KvBlockLayout).
  void CopyBlock(uint32_t from, uint32_t to) {
    const uint8_t* src = pool_.Data(from);
    uint8_t* dst = pool_.Data(to);
    for (size_t layer = 0; layer < config_.num_layers; ++layer) {
      for (size_t h = 0; h < config_.num_kv_heads; ++h) {
        const size_t offset = layout_.ValuesOffset(layer, h, KvPart::kK);
        memcpy(dst + offset, src + offset, layout_.HeadBytes());
      }
    }
  }

  size_t BlocksFor(size_t tokens) const {
    return tokens / config_.block_tokens +
           (tokens % config_.block_tokens != 0 ? 1 : 0);
  }

  Status CheckCreated() const {
    if (pool_.num_blocks() == 0) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "PagedKvCache is empty; make one with "
                        "PagedKvCache::Create");
    }
    return Status::Ok();
  }

  template <typename T>
  static Status CheckOut(const T* out, const char* op) {
    if (out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "%s: output is null", op);
    }
    return Status::Ok();
  }

  Status WritablePositionFor(const char* op, KvSeqId seq, size_t layer,
                             size_t pos, KvPositionSlots* rows) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(CheckWritable(op, seq, layer, pos, &s));
    WrittenWord(s, pos, layer) &= ~(uint64_t{1} << (layer % 64));
    rows->block_ = pool_.Data(s->blocks[pos / config_.block_tokens]);
    rows->layout_ = &layout_;
    rows->layer_ = layer;
    rows->row_ = pos % config_.block_tokens;
    return Status::Ok();
  }

  // `pos` of `seq` is reserved and not committed, and `layer` exists.
  Status CheckWritable(const char* op, KvSeqId seq, size_t layer, size_t pos,
                       Sequence** out) {
    Sequence* s = nullptr;
    QKERN_RETURN_IF_ERROR(Find(seq, op, &s));
    QKERN_RETURN_IF_ERROR(CheckLayer(layer, op));
    if (pos < s->length) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "%s: position %zu of sequence %llu is already "
                        "committed (length %zu); Truncate to rewrite it",
                        op, pos, Id(seq), s->length);
    }
    if (pos >= s->reserved) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "%s: position %zu of sequence %llu is past its "
                        "reserved length %zu; call ReserveTokens first",
                        op, pos, Id(seq), s->reserved);
    }
    *out = s;
    return Status::Ok();
  }

  Status CheckLayer(size_t layer, const char* op) const {
    if (layer >= config_.num_layers) {
      return MakeStatus(StatusCode::kOutOfRange,
                        "%s: layer %zu is out of range (num_layers %zu)", op,
                        layer, config_.num_layers);
    }
    return Status::Ok();
  }

  template <typename SequencePtr>
  Status FindIn(KvSeqId seq, const char* op, SequencePtr* out) const {
    auto it = sequences_.find(seq);
    if (it == sequences_.end()) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "%s: unknown sequence id %llu", op, Id(seq));
    }
    *out = const_cast<SequencePtr>(&it->second);
    return Status::Ok();
  }
  Status Find(KvSeqId seq, const char* op, const Sequence** out) const {
    return FindIn(seq, op, out);
  }
  Status Find(KvSeqId seq, const char* op, Sequence** out) {
    return FindIn(seq, op, out);
  }

  // Blocks ReserveTokens(seq, n) takes: `fresh` new ones for positions past
  // the table, `copies` for shared blocks among those it will write.
  Status CountReserve(KvSeqId seq, const Sequence& s, size_t n, size_t* fresh,
                      size_t* copies) const {
    // num_blocks * block_tokens <= num_blocks * block_bytes fits size_t.
    const size_t capacity =
        static_cast<size_t>(pool_.num_blocks()) * config_.block_tokens;
    if (n > capacity - s.length) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "ReserveTokens: sequence %llu at length %zu cannot "
                        "grow by %zu tokens: the whole pool holds %zu tokens "
                        "(%u blocks of %zu)",
                        Id(seq), s.length, n, capacity, pool_.num_blocks(),
                        config_.block_tokens);
    }
    const size_t target_blocks = BlocksFor(s.length + n);
    *fresh =
        target_blocks > s.blocks.size() ? target_blocks - s.blocks.size() : 0;
    *copies = 0;
    const size_t last = std::min(s.blocks.size(), target_blocks);
    for (size_t i = s.length / config_.block_tokens; i < last; ++i) {
      if (pool_.RefCount(s.blocks[i]) > 1) ++*copies;
    }
    return Status::Ok();
  }

  uint64_t& WrittenWord(Sequence* s, size_t pos, size_t layer) const {
    return s->written[(pos - s->length) * words_per_position_ + layer / 64];
  }
  bool IsWritten(const Sequence& s, size_t pos, size_t layer) const {
    const uint64_t word =
        s.written[(pos - s.length) * words_per_position_ + layer / 64];
    return (word >> (layer % 64)) & 1u;
  }

  KvCacheConfig config_;
  KvBlockLayout layout_;
  BlockPool pool_;
  size_t words_per_position_ = 0;
  std::unordered_map<KvSeqId, Sequence> sequences_;
};

}  // namespace qkern

// Defines detail::DispatchEncodeKvRow (declared above). Included last: the
// per-target kernels it brings in use the complete PagedKvCache.
#include "qkern/dispatch.h"

#endif  // QKERN_KV_PAGED_KV_CACHE_H_
