// Byte-level BPE (GPT-2 style): a pre-token's bytes start as one symbol per
// byte (the token spelling that byte in the GPT-2 alphabet) and the adjacent
// pair with the lowest merge rank is merged until no ranked pair is left;
// among equal ranks the leftmost goes first.
//
// The merge table maps a (left id, right id) pair to its rank and the merged
// token, so a merge step is one hash probe, not a string concatenation.
#ifndef QKERN_MODEL_BPE_TOKENIZER_H_
#define QKERN_MODEL_BPE_TOKENIZER_H_

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "qkern/model/unicode.h"
#include "qkern/model/vocab.h"

namespace qkern {

class BpeMergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;  // left << 32 | right
    int32_t rank = 0;
    int32_t merged = 0;
  };

  void Reserve(size_t n) {
    slots_.assign(detail::TableCapacity(n), Entry());
    mask_ = slots_.size() - 1;
  }

  // Keeps the first (best) rank when a pair is listed twice. Reserve first.
  void Add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
    const uint64_t key = Key(left, right);
    size_t slot = detail::HashPair(key) & mask_;
    for (;; slot = (slot + 1) & mask_) {
      Entry& e = slots_[slot];
      if (e.key == kEmpty) {
        e.key = key;
        e.rank = rank;
        e.merged = merged;
        return;
      }
      if (e.key == key) return;
    }
  }

  // nullptr when the pair has no merge.
  const Entry* Find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = Key(left, right);
    size_t slot = detail::HashPair(key) & mask_;
    for (;; slot = (slot + 1) & mask_) {
      const Entry& e = slots_[slot];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t Key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
           static_cast<uint32_t>(right);
  }

  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

namespace detail {

// Buffers reused across the words of one Encode call.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;  // -1: none
    int32_t next;  // -1: none
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol
    int32_t left;
    int32_t right;
    // Heap order: lowest rank first, then leftmost.
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::string spelled;  // a word in the GPT-2 alphabet
};

inline void PushBpeCandidate(const BpeMergeTable& merges, BpeScratch* s,
                             int32_t pos) {
  if (pos < 0) return;
  const int32_t next = s->symbols[pos].next;
  if (next < 0) return;
  const int32_t left = s->symbols[pos].id;
  const int32_t right = s->symbols[next].id;
  const BpeMergeTable::Entry* e = merges.Find(left, right);
  if (e == nullptr) return;
  s->heap.push_back({e->rank, pos, left, right});
  std::push_heap(s->heap.begin(), s->heap.end());
}

}  // namespace detail

// Appends the ids of one pre-token `word` (raw bytes). `byte_tokens[b]` is
// the id spelling byte b, or -1 when the vocabulary lacks it; such a byte is
// dropped, as HF tokenizers' BPE does (SmolLM2's vocabulary has no token for
// 0x1D; its unknown id is <|endoftext|>, which must not appear mid-prompt).
// With `ignore_merges` a word that is itself in the vocab is emitted whole
// (Llama-3's tokenizer does this).
inline void EncodeBpeWord(const Vocab& vocab, const BpeMergeTable& merges,
                          const int32_t* byte_tokens, bool ignore_merges,
                          std::string_view word, detail::BpeScratch* s,
                          std::vector<int32_t>* out) {
  if (word.empty()) return;
  if (ignore_merges && word.size() > 1) {
    s->spelled.clear();
    for (unsigned char b : word) {
      AppendUtf8(kByteLevel.byte_to_cp[b], &s->spelled);
    }
    const int32_t id = vocab.Find(s->spelled);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
  }
  auto& symbols = s->symbols;
  symbols.clear();
  for (unsigned char b : word) {
    const int32_t id = byte_tokens[b];
    if (id < 0) continue;
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  }
  if (symbols.size() <= 1) {
    if (!symbols.empty()) out->push_back(symbols[0].id);
    return;
  }
  s->heap.clear();
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) {
    detail::PushBpeCandidate(merges, s, i);
  }
  while (!s->heap.empty()) {
    std::pop_heap(s->heap.begin(), s->heap.end());
    const detail::BpeScratch::Candidate c = s->heap.back();
    s->heap.pop_back();
    // Stale when either side has merged since: merged tokens are longer, so
    // their ids differ from those recorded.
    auto& left = symbols[c.pos];
    if (left.id != c.left || left.next < 0 ||
        symbols[left.next].id != c.right) {
      continue;
    }
    const BpeMergeTable::Entry* e = merges.Find(c.left, c.right);
    const int32_t right_index = left.next;
    left.id = e->merged;
    left.next = symbols[right_index].next;
    if (left.next >= 0) symbols[left.next].prev = c.pos;
    symbols[right_index].id = -1;
    detail::PushBpeCandidate(merges, s, left.prev);
    detail::PushBpeCandidate(merges, s, c.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next)
    out->push_back(symbols[i].id);
}

}  // namespace qkern

#endif  // QKERN_MODEL_BPE_TOKENIZER_H_
