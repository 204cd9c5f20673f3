// UTF-8 and Unicode helpers for the tokenizer: strict UTF-8 decoding (with
// the byte offset of the first bad byte), encoding, the code point classes
// the pre-tokenizers match on, and GPT-2's byte <-> code point table.
#ifndef QKERN_MODEL_UNICODE_H_
#define QKERN_MODEL_UNICODE_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>

#include "qkern/model/unicode_tables.h"

namespace qkern {

constexpr uint32_t kUnicodeReplacement = 0xFFFD;

// Classes of a code point, as bits (the values of unicode_tables.h).
enum UnicodeClass : uint8_t {
  kUnicodeLetter = 1,      // \p{L}
  kUnicodeNumber = 2,      // \p{N}
  kUnicodeWhitespace = 4,  // White_Space, i.e. \s
};

namespace detail {

struct AsciiClassTable {
  uint8_t flags[128] = {};
  constexpr AsciiClassTable() {
    for (int c = 'a'; c <= 'z'; ++c) flags[c] = kUnicodeLetter;
    for (int c = 'A'; c <= 'Z'; ++c) flags[c] = kUnicodeLetter;
    for (int c = '0'; c <= '9'; ++c) flags[c] = kUnicodeNumber;
    for (int c = 0x09; c <= 0x0D; ++c) flags[c] = kUnicodeWhitespace;
    flags[' '] = kUnicodeWhitespace;
  }
};
inline constexpr AsciiClassTable kAsciiClasses{};

}  // namespace detail

// UnicodeClass bits of `cp` (0 for everything else and for non-characters).
inline uint8_t UnicodeClassOf(uint32_t cp) {
  if (cp < 128) return detail::kAsciiClasses.flags[cp];
  // Binary search for the last range starting at or before cp.
  const detail::UnicodeRange* ranges = detail::kUnicodeRanges;
  size_t lo = 0;
  size_t hi =
      sizeof(detail::kUnicodeRanges) / sizeof(detail::kUnicodeRanges[0]);
  while (hi - lo > 1) {
    const size_t mid = (lo + hi) / 2;
    if (ranges[mid].first <= cp) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const detail::UnicodeRange& r = ranges[lo];
  if (cp < r.first || cp > (r.last_and_flags >> 8)) return 0;
  return static_cast<uint8_t>(r.last_and_flags & 0xFF);
}

// --- UTF-8
// ---------------------------------------------------------------------

// Result of decoding the UTF-8 sequence at the start of some bytes.
enum class Utf8Step { kOk, kInvalid, kTruncated };

// Decodes the sequence at s[0, n), n > 0, strictly (Unicode's table 3-7: no
// overlongs, no surrogates, nothing above U+10FFFF).
//   kOk:        *cp is set, *length is the sequence length.
//   kInvalid:   *length is the maximal subpart to replace by one U+FFFD
//               (at least 1).
//   kTruncated: the n bytes are a valid start that needs more bytes;
//               *length = n.
inline Utf8Step DecodeUtf8(const uint8_t* s, size_t n, uint32_t* cp,
                           size_t* length) {
  const uint8_t b0 = s[0];
  *length = 1;
  if (b0 < 0x80) {
    *cp = b0;
    return Utf8Step::kOk;
  }
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  uint32_t value;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return Utf8Step::kInvalid;  // continuation, C0/C1 (overlong), F5..FF
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) {
      *length = n;
      return Utf8Step::kTruncated;
    }
    const uint8_t b = s[i];
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) {
      *length = i;
      return Utf8Step::kInvalid;
    }
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  *length = need;
  return Utf8Step::kOk;
}

// Why the bytes at s[0, n) are not UTF-8, for an error message.
inline const char* Utf8ErrorReason(const uint8_t* s, size_t n) {
  const uint8_t b0 = s[0];
  if (b0 >= 0x80 && b0 <= 0xBF) return "unexpected continuation byte";
  if (b0 == 0xC0 || b0 == 0xC1) return "overlong encoding";
  if (b0 >= 0xF5) return "byte never used in UTF-8";
  uint32_t cp;
  size_t length;
  if (DecodeUtf8(s, n, &cp, &length) == Utf8Step::kTruncated) {
    return "truncated sequence at end of text";
  }
  if (n >= 2 && s[1] >= 0x80 && s[1] <= 0xBF) {
    if (b0 == 0xE0 || b0 == 0xF0) return "overlong encoding";
    if (b0 == 0xED) return "UTF-16 surrogate";
    if (b0 == 0xF4) return "code point above U+10FFFF";
  }
  return "truncated sequence (missing continuation byte)";
}

// Offset of the first byte of `text` that is not part of well-formed UTF-8,
// or text.size() when it is all valid.
inline size_t FindInvalidUtf8(std::string_view text) {
  const uint8_t* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII runs are the common case.
    while (i < n && s[i] < 0x80) ++i;
    if (i == n) break;
    uint32_t cp;
    size_t length;
    if (DecodeUtf8(s + i, n - i, &cp, &length) != Utf8Step::kOk) return i;
    i += length;
  }
  return n;
}

// Appends the UTF-8 encoding of `cp` (assumed a valid scalar value).
inline void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes one code point of text known to be valid UTF-8 at `*pos`, and
// advances it.
inline uint32_t NextCodePoint(std::string_view text, size_t* pos) {
  const uint8_t* s = reinterpret_cast<const uint8_t*>(text.data()) + *pos;
  uint32_t cp = 0;
  size_t length;
  if (DecodeUtf8(s, text.size() - *pos, &cp, &length) != Utf8Step::kOk) {
    cp = kUnicodeReplacement;  // not reached for validated text
  }
  *pos += length;
  return cp;
}

// --- GPT-2 byte-level alphabet
// ------------------------------------------------

// Byte-level BPE spells every byte as a printable code point: the printable
// Latin-1 bytes stand for themselves, the other 68 are moved to U+0100 and
// up, in byte order.
struct ByteLevelAlphabet {
  uint16_t byte_to_cp[256] = {};
  int16_t cp_to_byte[0x144] = {};  // -1: not in the alphabet

  constexpr ByteLevelAlphabet() {
    for (int i = 0; i < 0x144; ++i) cp_to_byte[i] = -1;
    int next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const int cp = printable ? b : next++;
      byte_to_cp[b] = static_cast<uint16_t>(cp);
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }

  // The byte `cp` stands for, or -1.
  int ByteOf(uint32_t cp) const { return cp < 0x144 ? cp_to_byte[cp] : -1; }
};
inline constexpr ByteLevelAlphabet kByteLevel{};

}  // namespace qkern

#endif  // QKERN_MODEL_UNICODE_H_
