// Pre-tokenizers of byte-level BPE models: split text into the words that
// BPE merges inside of. Each supported `tokenizer.ggml.pre` value names a
// regular expression in the reference implementations; here each one is a
// hand-written matcher over code points with the same leftmost-alternative
// semantics (no regex engine: std::regex is slow and knows no Unicode
// classes).
//
//   kGpt2           's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+
//                   | ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kDigitsGpt2     every \p{N} split off alone first, then kGpt2 on the
//                   pieces between (StarCoder, SmolLM)
//   kLlama3         (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+
//                   |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+
//                   |\s+(?!\S)|\s+
//   kQwen2          as kLlama3 with \p{N} (one digit) for \p{N}{1,3}
#ifndef QKERN_MODEL_PRETOKENIZER_H_
#define QKERN_MODEL_PRETOKENIZER_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

#include "qkern/model/unicode.h"

namespace qkern {

enum class PreTokenizerKind { kGpt2, kDigitsGpt2, kLlama3, kQwen2 };

// Maps a `tokenizer.ggml.pre` value to its pre-tokenizer; false when unknown.
inline bool PreTokenizerFromName(std::string_view name,
                                 PreTokenizerKind* kind) {
  struct Entry {
    const char* name;
    PreTokenizerKind kind;
  };
  static constexpr Entry kNames[] = {
      {"default", PreTokenizerKind::kGpt2},
      {"gpt2", PreTokenizerKind::kGpt2},
      {"gpt-2", PreTokenizerKind::kGpt2},
      {"smollm", PreTokenizerKind::kDigitsGpt2},
      {"starcoder", PreTokenizerKind::kDigitsGpt2},
      {"refact", PreTokenizerKind::kDigitsGpt2},
      {"command-r", PreTokenizerKind::kDigitsGpt2},
      {"llama3", PreTokenizerKind::kLlama3},
      {"llama-v3", PreTokenizerKind::kLlama3},
      {"llama-bpe", PreTokenizerKind::kLlama3},
      {"qwen2", PreTokenizerKind::kQwen2},
  };
  for (const Entry& e : kNames) {
    if (name == e.name) {
      *kind = e.kind;
      return true;
    }
  }
  return false;
}

// The names PreTokenizerFromName accepts, for error messages.
inline const char* SupportedPreTokenizerNames() {
  return "default, gpt2, gpt-2, smollm, starcoder, refact, command-r, "
         "llama3, llama-v3, llama-bpe, qwen2";
}

namespace detail {

constexpr uint8_t kClassMask =
    kUnicodeLetter | kUnicodeNumber | kUnicodeWhitespace;

// The text decoded once: code points, their classes, and byte offsets
// (offset[i] is where code point i starts; offset[n] == text size).
struct CodePoints {
  std::vector<uint32_t> cp;
  std::vector<uint8_t> cls;
  std::vector<uint32_t> offset;

  void Assign(std::string_view text) {
    cp.clear();
    cls.clear();
    offset.clear();
    size_t pos = 0;
    while (pos < text.size()) {
      offset.push_back(static_cast<uint32_t>(pos));
      const uint32_t c = NextCodePoint(text, &pos);
      cp.push_back(c);
      cls.push_back(UnicodeClassOf(c));
    }
    offset.push_back(static_cast<uint32_t>(text.size()));
  }
  size_t size() const { return cp.size(); }
};

// [^\s\p{L}\p{N}]
inline bool IsOther(uint8_t cls) { return (cls & kClassMask) == 0; }

inline uint32_t AsciiLower(uint32_t c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

// The contraction alternatives at i ('s 't 're 've 'm 'll 'd): end of the
// match, or i when none matches.
inline size_t MatchContraction(const CodePoints& t, size_t i, size_t end,
                               bool ignore_case) {
  if (t.cp[i] != '\'' || i + 1 >= end) return i;
  const auto fold = [&](size_t k) {
    return ignore_case ? AsciiLower(t.cp[k]) : t.cp[k];
  };
  const uint32_t c1 = fold(i + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
  if (i + 2 < end) {
    const uint32_t c2 = fold(i + 2);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
        (c1 == 'l' && c2 == 'l')) {
      return i + 3;
    }
  }
  return i;
}

// \s+(?!\S)|\s+ at i, where t.cls[i] is whitespace.
inline size_t MatchTrailingSpace(const CodePoints& t, size_t i, size_t end) {
  size_t k = i;
  while (k < end && (t.cls[k] & kUnicodeWhitespace)) ++k;
  if (k == end) return k;
  // A non-space follows: leave the last space to prefix the next word.
  return k - i >= 2 ? k - 1 : k;
}

// One match of the GPT-2 expression at i (i < end); returns its end.
inline size_t MatchGpt2(const CodePoints& t, size_t i, size_t end) {
  const size_t contraction = MatchContraction(t, i, end, false);
  if (contraction != i) return contraction;
  size_t start = i;
  // " ?" prefixes the three word classes but not whitespace.
  if (t.cp[i] == ' ' && i + 1 < end && !(t.cls[i + 1] & kUnicodeWhitespace)) {
    start = i + 1;
  }
  const uint8_t cls = t.cls[start] & kClassMask;
  if (cls & kUnicodeWhitespace) return MatchTrailingSpace(t, i, end);
  size_t k = start + 1;
  if (cls & kUnicodeLetter) {
    while (k < end && (t.cls[k] & kUnicodeLetter)) ++k;
  } else if (cls & kUnicodeNumber) {
    while (k < end && (t.cls[k] & kUnicodeNumber)) ++k;
  } else {
    while (k < end && IsOther(t.cls[k])) ++k;
  }
  return k;
}

// One match of the Llama-3 expression at i (i < end); `max_digits` is 3 for
// Llama-3 and 1 for Qwen2.
inline size_t MatchLlama3(const CodePoints& t, size_t i, size_t end,
                          size_t max_digits) {
  const size_t contraction = MatchContraction(t, i, end, true);
  if (contraction != i) return contraction;
  const uint32_t c = t.cp[i];
  const uint8_t cls = t.cls[i];
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t letters = end;
  if (cls & kUnicodeLetter) {
    letters = i;
  } else if (c != '\r' && c != '\n' && !(cls & kUnicodeNumber) && i + 1 < end &&
             (t.cls[i + 1] & kUnicodeLetter)) {
    letters = i + 1;
  }
  if (letters != end) {
    size_t k = letters + 1;
    while (k < end && (t.cls[k] & kUnicodeLetter)) ++k;
    return k;
  }
  // \p{N}{1,max}
  if (cls & kUnicodeNumber) {
    size_t k = i + 1;
    while (k < end && k - i < max_digits && (t.cls[k] & kUnicodeNumber)) ++k;
    return k;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t start = i;
  if (c == ' ' && i + 1 < end && IsOther(t.cls[i + 1])) start = i + 1;
  if (IsOther(t.cls[start])) {
    size_t k = start + 1;
    while (k < end && IsOther(t.cls[k])) ++k;
    while (k < end && (t.cp[k] == '\r' || t.cp[k] == '\n')) ++k;
    return k;
  }
  // Whitespace from here on. \s*[\r\n]+ ends after the run's last newline.
  size_t k = i;
  size_t after_newline = i;
  while (k < end && (t.cls[k] & kUnicodeWhitespace)) {
    if (t.cp[k] == '\r' || t.cp[k] == '\n') after_newline = k + 1;
    ++k;
  }
  if (after_newline != i) return after_newline;
  return MatchTrailingSpace(t, i, end);
}

}  // namespace detail

// Calls word(begin, end) with the byte range of every pre-token of `t` (the
// decoded text), in order; the ranges tile the text.
template <typename WordFn>
void PreTokenize(PreTokenizerKind kind, const detail::CodePoints& t,
                 WordFn&& word) {
  const size_t n = t.size();
  const auto emit = [&](size_t a, size_t b) { word(t.offset[a], t.offset[b]); };
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      for (size_t i = 0; i < n;) {
        const size_t k = detail::MatchGpt2(t, i, n);
        emit(i, k);
        i = k;
      }
      break;
    case PreTokenizerKind::kDigitsGpt2: {
      // Digits are isolated first; GPT-2 then runs on each piece between
      // them, so its look-ahead never sees past a digit.
      size_t i = 0;
      while (i < n) {
        size_t piece_end = i;
        while (piece_end < n && !(t.cls[piece_end] & kUnicodeNumber)) {
          ++piece_end;
        }
        while (i < piece_end) {
          const size_t k = detail::MatchGpt2(t, i, piece_end);
          emit(i, k);
          i = k;
        }
        if (i < n) {  // the digit
          emit(i, i + 1);
          ++i;
        }
      }
      break;
    }
    case PreTokenizerKind::kLlama3:
    case PreTokenizerKind::kQwen2: {
      const size_t max_digits = kind == PreTokenizerKind::kLlama3 ? 3 : 1;
      for (size_t i = 0; i < n;) {
        const size_t k = detail::MatchLlama3(t, i, n, max_digits);
        emit(i, k);
        i = k;
      }
      break;
    }
  }
}

}  // namespace qkern

#endif  // QKERN_MODEL_PRETOKENIZER_H_
