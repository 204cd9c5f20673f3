// SentencePiece-style BPE (GGUF tokenizer model "llama"): spaces are spelled
// U+2581, the text starts as one symbol per character, and the adjacent pair
// whose concatenation is a vocabulary piece with the highest score is merged
// (leftmost first among equal scores) until no pair is a piece. A final
// symbol that is not a piece (a character outside the vocabulary) becomes
// its UTF-8 bytes as <0xXX> byte tokens, or the unknown token when the vocab
// has no byte tokens.
#ifndef QKERN_MODEL_SPM_TOKENIZER_H_
#define QKERN_MODEL_SPM_TOKENIZER_H_

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "qkern/model/unicode.h"
#include "qkern/model/vocab.h"

namespace qkern {

// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space.
inline constexpr char kSpmSpace[] = "\xE2\x96\x81";

namespace detail {

struct SpmScratch {
  struct Symbol {
    uint32_t begin;  // byte range in the normalized text
    uint32_t size;   // 0: merged away
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    float score;
    int32_t left;
    uint32_t size;  // both sides together, to spot stale candidates
    // Heap order: highest score first, then leftmost.
    bool operator<(const Candidate& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::string text;  // the fragment with spaces spelled U+2581
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

// Pieces that merges may form: a byte, control or unused token spelled out
// in the text is text, not that token.
inline bool SpmMergeable(TokenType type) {
  return type == TokenType::kNormal || type == TokenType::kUserDefined ||
         type == TokenType::kUndefined;
}

inline void PushSpmCandidate(const Vocab& vocab, SpmScratch* s, int32_t left) {
  if (left < 0) return;
  const int32_t right = s->symbols[left].next;
  if (right < 0) return;
  const uint32_t begin = s->symbols[left].begin;
  const uint32_t size = s->symbols[left].size + s->symbols[right].size;
  const int32_t id = vocab.Find(std::string_view(s->text).substr(begin, size));
  if (id < 0 || !SpmMergeable(vocab.Type(id))) return;
  s->heap.push_back({vocab.Score(id), left, size});
  std::push_heap(s->heap.begin(), s->heap.end());
}

}  // namespace detail

// Appends the ids of `fragment` (valid UTF-8, no special tokens), with a
// leading U+2581 when `space_prefix`. `byte_tokens[b]` is the <0xXX> token
// of byte b or -1.
inline void EncodeSpmFragment(const Vocab& vocab, const int32_t* byte_tokens,
                              int32_t unk_id, bool space_prefix,
                              std::string_view fragment, detail::SpmScratch* s,
                              std::vector<int32_t>* out) {
  std::string& text = s->text;
  text.clear();
  if (space_prefix) text += kSpmSpace;
  for (char c : fragment) {
    if (c == ' ') {
      text += kSpmSpace;
    } else {
      text.push_back(c);
    }
  }
  auto& symbols = s->symbols;
  symbols.clear();
  for (size_t pos = 0; pos < text.size();) {
    const size_t begin = pos;
    NextCodePoint(text, &pos);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(begin),
                       static_cast<uint32_t>(pos - begin), index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  }
  if (symbols.empty()) return;
  s->heap.clear();
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) {
    detail::PushSpmCandidate(vocab, s, i);
  }
  while (!s->heap.empty()) {
    std::pop_heap(s->heap.begin(), s->heap.end());
    const detail::SpmScratch::Candidate c = s->heap.back();
    s->heap.pop_back();
    auto& left = symbols[c.left];
    // Symbols only grow, so an unchanged total size means the same pair.
    if (left.size == 0 || left.next < 0 ||
        left.size + symbols[left.next].size != c.size) {
      continue;
    }
    const int32_t right = left.next;
    left.size = c.size;
    left.next = symbols[right].next;
    if (left.next >= 0) symbols[left.next].prev = c.left;
    symbols[right].size = 0;
    detail::PushSpmCandidate(vocab, s, left.prev);
    detail::PushSpmCandidate(vocab, s, c.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece =
        std::string_view(text).substr(symbols[i].begin, symbols[i].size);
    const int32_t id = vocab.Find(piece);
    if (id >= 0 && detail::SpmMergeable(vocab.Type(id))) {
      out->push_back(id);
      continue;
    }
    for (unsigned char b : piece) {
      const int32_t byte_id = byte_tokens[b];
      if (byte_id >= 0) {
        out->push_back(byte_id);
      } else if (unk_id >= 0) {
        out->push_back(unk_id);
        break;  // one unknown token per character
      }
    }
  }
}

}  // namespace qkern

#endif  // QKERN_MODEL_SPM_TOKENIZER_H_
