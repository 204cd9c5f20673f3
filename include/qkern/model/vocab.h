// Vocab: the token strings of a tokenizer in one contiguous arena, their
// GGUF token types and scores, and an open-addressing piece -> id table.
//
// One arena instead of a std::string per token keeps loading a 50k-token
// vocabulary to a single copy and a single hash pass; ids are stored in the
// table and compared through the arena, so the table holds 4 bytes a slot.
#ifndef QKERN_MODEL_VOCAB_H_
#define QKERN_MODEL_VOCAB_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <string_view>
#include <vector>

namespace qkern {

// tokenizer.ggml.token_type values (llama.cpp's enum, stored as INT32).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

namespace detail {

// 64-bit FNV-1a with a final avalanche; token strings are short.
inline uint64_t HashBytes(const char* p, size_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 0x100000001B3ull;
  }
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return h;
}

inline uint64_t HashPair(uint64_t key) {
  key ^= key >> 33;
  key *= 0xFF51AFD7ED558CCDull;
  key ^= key >> 33;
  key *= 0xC4CEB9FE1A85EC53ull;
  key ^= key >> 33;
  return key;
}

inline size_t TableCapacity(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;  // load factor <= 0.5
  return cap;
}

}  // namespace detail

class Vocab {
 public:
  // Reserves room for n tokens of `bytes` total length.
  void Reserve(size_t n, size_t bytes) {
    arena_.reserve(bytes);
    begin_.reserve(n + 1);
    types_.reserve(n);
  }

  // Appends token #size(). Call Index() after the last one.
  void Add(std::string_view piece, TokenType type) {
    if (begin_.empty()) begin_.push_back(0);
    arena_.insert(arena_.end(), piece.begin(), piece.end());
    begin_.push_back(static_cast<uint32_t>(arena_.size()));
    types_.push_back(type);
  }

  void SetScores(std::vector<float> scores) { scores_ = std::move(scores); }

  // Builds the lookup table. When a piece occurs twice the lower id wins.
  void Index() {
    const size_t n = size();
    slots_.assign(detail::TableCapacity(n), -1);
    mask_ = slots_.size() - 1;
    for (size_t id = 0; id < n; ++id) {
      const std::string_view p = Piece(static_cast<int32_t>(id));
      size_t slot = detail::HashBytes(p.data(), p.size()) & mask_;
      for (;; slot = (slot + 1) & mask_) {
        const int32_t other = slots_[slot];
        if (other < 0) {
          slots_[slot] = static_cast<int32_t>(id);
          break;
        }
        if (Piece(other) == p) break;
      }
    }
  }

  size_t size() const { return types_.size(); }
  bool Valid(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < types_.size();
  }

  std::string_view Piece(int32_t id) const {
    if (!Valid(id)) return {};
    return std::string_view(arena_.data() + begin_[id],
                            begin_[id + 1] - begin_[id]);
  }
  TokenType Type(int32_t id) const {
    return Valid(id) ? types_[id] : TokenType::kUndefined;
  }
  float Score(int32_t id) const {
    return Valid(id) && static_cast<size_t>(id) < scores_.size() ? scores_[id]
                                                                 : 0.0f;
  }

  // Id of `piece`, or -1.
  int32_t Find(std::string_view piece) const {
    if (slots_.empty()) return -1;
    size_t slot = detail::HashBytes(piece.data(), piece.size()) & mask_;
    for (;; slot = (slot + 1) & mask_) {
      const int32_t id = slots_[slot];
      if (id < 0) return -1;
      const uint32_t b = begin_[id];
      const uint32_t len = begin_[id + 1] - b;
      if (len == piece.size() &&
          (len == 0 || memcmp(arena_.data() + b, piece.data(), len) == 0)) {
        return id;
      }
    }
  }

 private:
  std::vector<char> arena_;
  std::vector<uint32_t> begin_;  // size() + 1 offsets into arena_
  std::vector<TokenType> types_;
  std::vector<float> scores_;
  std::vector<int32_t> slots_;
  size_t mask_ = 0;
};

}  // namespace qkern

#endif  // QKERN_MODEL_VOCAB_H_
