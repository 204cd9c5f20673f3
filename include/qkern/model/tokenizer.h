// Tokenizer: text <-> token ids for the reference decoder, loaded from the
// tokenizer.ggml.* metadata of a GGUF file.
//
// Two tokenizer models are supported:
//   "gpt2"   byte-level BPE (GPT-2, StarCoder/SmolLM, Llama-3, Qwen2): a
//            pre-tokenizer chosen by tokenizer.ggml.pre splits the text into
//            words, merges ranked by tokenizer.ggml.merges apply inside each
//            (bpe_tokenizer.h, pretokenizer.h).
//   "llama"  SentencePiece BPE: merges by tokenizer.ggml.scores, spaces
//            spelled U+2581, byte fallback through <0xXX> tokens
//            (spm_tokenizer.h).
//
// Special tokens: control tokens (token type 3) and the unknown token are
// recognised in the text only when Encode's `parse_special` is true;
// user-defined tokens (type 4) always are, as in SentencePiece, llama.cpp
// and HF tokenizers, where they are literal additions to the vocabulary.
// Where two candidates start at the same place the longest wins.
//
// The Tokenizer owns copies of everything it needs (one arena for all token
// strings), so it outlives the GgufFile it was read from. It is immutable
// after FromGguf; all methods are const and safe to call from several
// threads.
#ifndef QKERN_MODEL_TOKENIZER_H_
#define QKERN_MODEL_TOKENIZER_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "qkern/base/status.h"
#include "qkern/model/bpe_tokenizer.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/model/pretokenizer.h"
#include "qkern/model/spm_tokenizer.h"
#include "qkern/model/unicode.h"
#include "qkern/model/vocab.h"

namespace qkern {

enum class TokenizerModel { kByteLevelBpe, kSentencePiece };

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, pre, tokens, token_type, merges, scores,
  // bos/eos/unknown/eot/eom_token_id, add_bos_token, add_space_prefix}.
  // Errors name the key and what was wrong: a missing required key, array
  // sizes that disagree, a merge naming a token the vocabulary lacks, an
  // unknown model or pre-tokenizer, a special id outside the vocabulary.
  // On error `out` is left as it was.
  static Status FromGguf(const GgufFile& file, Tokenizer* out);

  // Appends the ids of `text`; never adds BOS/EOS (see add_bos()). Text that
  // is not well-formed UTF-8 is kInvalidArgument naming the byte offset.
  Status Encode(std::string_view text, bool parse_special,
                std::vector<int32_t>* ids) const;

  TokenizerModel model() const { return model_; }
  PreTokenizerKind pre_tokenizer() const { return pre_; }
  bool add_bos() const { return add_bos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  int32_t bos_id() const { return bos_id_; }  // -1 when the file has none
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t eot_id() const { return eot_id_; }

  // eos, eot, eom, and control tokens that end a turn in common chat
  // formats (<|im_end|>, <|eot_id|>, <|endoftext|>, <end_of_turn>, ...).
  bool IsEndOfGeneration(int32_t id) const {
    return std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
  }

  // Id of the exact vocabulary string `piece` (as stored: GPT-2 alphabet for
  // byte-level vocabularies, U+2581 for spaces in SentencePiece), or -1.
  int32_t FindToken(std::string_view piece) const { return vocab_.Find(piece); }
  size_t vocab_size() const { return vocab_.size(); }
  // The raw vocabulary string; empty for an id outside the vocabulary.
  std::string_view Piece(int32_t id) const { return vocab_.Piece(id); }
  TokenType token_type(int32_t id) const { return vocab_.Type(id); }

  // Appends the bytes token `id` stands for: byte-level pieces decoded,
  // U+2581 as a space, <0xXX> as that byte. Control and unknown tokens
  // append their text only when `render_special`. An id outside the
  // vocabulary appends nothing. The bytes of one token may be part of a
  // UTF-8 character; TokenStreamDecoder reassembles them.
  void AppendTokenBytes(int32_t id, bool render_special,
                        std::string* out) const;

  // All tokens' bytes. For SentencePiece with add_space_prefix, the space
  // Encode put before the text is dropped (from the first token that gives
  // any text, when its piece starts with U+2581), so Decode(Encode(text))
  // == text, as sentencepiece's own decoder does.
  std::string Decode(const std::vector<int32_t>& ids,
                     bool render_special) const {
    std::string out;
    bool strip = model_ == TokenizerModel::kSentencePiece && add_space_prefix_;
    for (int32_t id : ids) {
      AppendTokenBytes(id, render_special, &out);
      if (strip && !out.empty()) {
        if (out[0] == ' ' && Piece(id).substr(0, 3) == kSpmSpace) {
          out.erase(0, 1);
        }
        strip = false;
      }
    }
    return out;
  }

 private:
  struct Special {
    int32_t id;
    bool always;  // user-defined: matched even without parse_special
  };

  Status Load(const GgufFile& file);
  Status LoadMerges(const GgufFile& file);
  Status ReadSpecialId(const GgufFile& file, const char* key, int32_t* id);
  void EncodeFragment(std::string_view fragment, bool after_special,
                      std::vector<int32_t>* ids) const;

  TokenizerModel model_ = TokenizerModel::kByteLevelBpe;
  PreTokenizerKind pre_ = PreTokenizerKind::kGpt2;
  bool ignore_merges_ = false;
  bool add_bos_ = false;
  bool add_space_prefix_ = false;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t eot_id_ = -1;
  int32_t eom_id_ = -1;
  Vocab vocab_;
  BpeMergeTable merges_;
  // Id of each byte's token (GPT-2 alphabet or <0xXX>), or -1.
  std::vector<int32_t> byte_tokens_ = std::vector<int32_t>(256, -1);
  std::vector<Special> specials_;      // longest first
  bool special_first_byte_[256] = {};  // some special starts with this byte
  std::vector<int32_t> eog_ids_;
};

// --- Loading
// -------------------------------------------------------------------

inline Status Tokenizer::FromGguf(const GgufFile& file, Tokenizer* out) {
  Tokenizer t;
  QKERN_RETURN_IF_ERROR(t.Load(file));
  *out = std::move(t);
  return Status::Ok();
}

inline Status Tokenizer::ReadSpecialId(const GgufFile& file, const char* key,
                                       int32_t* id) {
  *id = -1;
  const GgufMetadataEntry* entry = file.FindMetadata(key);
  if (entry == nullptr) return Status::Ok();
  int64_t value = -1;
  if (entry->type == GgufValueType::kInt32) {
    int32_t v = 0;
    QKERN_RETURN_IF_ERROR(file.GetI32(key, &v));
    value = v;
  } else {
    uint32_t v = 0;
    QKERN_RETURN_IF_ERROR(file.GetU32(key, &v));
    value = v;
  }
  if (value < 0 || static_cast<uint64_t>(value) >= vocab_.size()) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: metadata key '%s' is %lld; expected a token id "
                      "below the vocabulary size %zu",
                      file.source().c_str(), key, static_cast<long long>(value),
                      vocab_.size());
  }
  *id = static_cast<int32_t>(value);
  return Status::Ok();
}

inline Status Tokenizer::Load(const GgufFile& file) {
  const char* src = file.source().c_str();
  std::string_view model_name;
  QKERN_RETURN_IF_ERROR(file.GetString("tokenizer.ggml.model", &model_name));
  if (model_name == "gpt2") {
    model_ = TokenizerModel::kByteLevelBpe;
  } else if (model_name == "llama") {
    model_ = TokenizerModel::kSentencePiece;
  } else {
    return MakeStatus(StatusCode::kUnsupported,
                      "%s: tokenizer.ggml.model '%s' is not supported; "
                      "supported: 'gpt2' (byte-level BPE), 'llama' "
                      "(SentencePiece BPE)",
                      src, detail::Printable(model_name).c_str());
  }
  const bool bpe = model_ == TokenizerModel::kByteLevelBpe;

  GgufArrayView tokens;
  QKERN_RETURN_IF_ERROR(
      file.GetArray("tokenizer.ggml.tokens", GgufValueType::kString, &tokens));
  const size_t n = tokens.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: tokenizer.ggml.tokens has %zu entries; expected "
                      "1 to 2^31 - 1",
                      src, n);
  }

  GgufArrayView types;
  const bool has_types =
      file.FindMetadata("tokenizer.ggml.token_type") != nullptr;
  if (has_types) {
    QKERN_RETURN_IF_ERROR(file.GetArray("tokenizer.ggml.token_type",
                                        GgufValueType::kInt32, &types));
    if (types.size() != n) {
      return MakeStatus(StatusCode::kDataLoss,
                        "%s: tokenizer.ggml.token_type has %zu entries but "
                        "tokenizer.ggml.tokens has %zu",
                        src, types.size(), n);
    }
  }

  // The whole string array is contiguous in the file: its extent bounds the
  // arena, and walking it once beats StringAt's checkpoint hops.
  vocab_.Reserve(n, n * 8);  // a guess; the arena grows if needed
  for (size_t i = 0; i < n; ++i) {
    TokenType type = TokenType::kNormal;
    if (has_types) {
      const int32_t raw = types.I32At(i);
      if (raw < 0 || raw > 6) {
        return MakeStatus(StatusCode::kDataLoss,
                          "%s: tokenizer.ggml.token_type[%zu] is %d; expected "
                          "0 to 6",
                          src, i, raw);
      }
      type = static_cast<TokenType>(raw);
    }
    vocab_.Add(tokens.StringAt(i), type);
  }

  const GgufMetadataEntry* scores_entry =
      file.FindMetadata("tokenizer.ggml.scores");
  if (scores_entry != nullptr || !bpe) {
    GgufArrayView scores;
    QKERN_RETURN_IF_ERROR(file.GetArray("tokenizer.ggml.scores",
                                        GgufValueType::kFloat32, &scores));
    if (scores.size() != n) {
      return MakeStatus(StatusCode::kDataLoss,
                        "%s: tokenizer.ggml.scores has %zu entries but "
                        "tokenizer.ggml.tokens has %zu",
                        src, scores.size(), n);
    }
    std::vector<float> values(n);
    memcpy(values.data(), scores.data(), n * sizeof(float));
    vocab_.SetScores(std::move(values));
  }
  vocab_.Index();

  if (bpe) {
    std::string_view pre_name = "default";
    QKERN_RETURN_IF_ERROR(
        file.GetStringOr("tokenizer.ggml.pre", "default", &pre_name));
    if (!PreTokenizerFromName(pre_name, &pre_)) {
      return MakeStatus(StatusCode::kUnsupported,
                        "%s: tokenizer.ggml.pre '%s' is not a supported "
                        "pre-tokenizer; supported: %s",
                        src, detail::Printable(pre_name).c_str(),
                        SupportedPreTokenizerNames());
    }
    // Llama-3's tokenizer emits a word that is a token whole, unmerged.
    ignore_merges_ = pre_ == PreTokenizerKind::kLlama3;
    std::string spelled;
    for (int b = 0; b < 256; ++b) {
      spelled.clear();
      AppendUtf8(kByteLevel.byte_to_cp[b], &spelled);
      byte_tokens_[b] = vocab_.Find(spelled);
    }
    QKERN_RETURN_IF_ERROR(LoadMerges(file));
  } else {
    for (size_t id = 0; id < n; ++id) {
      if (vocab_.Type(static_cast<int32_t>(id)) != TokenType::kByte) continue;
      const std::string_view p = vocab_.Piece(static_cast<int32_t>(id));
      const auto hex = [](char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                      : -1;
      };
      if (p.size() == 6 && p.substr(0, 3) == "<0x" && p[5] == '>' &&
          hex(p[3]) >= 0 && hex(p[4]) >= 0) {
        const int value = hex(p[3]) * 16 + hex(p[4]);
        if (byte_tokens_[value] < 0) {
          byte_tokens_[value] = static_cast<int32_t>(id);
        }
      }
    }
  }

  QKERN_RETURN_IF_ERROR(
      ReadSpecialId(file, "tokenizer.ggml.bos_token_id", &bos_id_));
  QKERN_RETURN_IF_ERROR(
      ReadSpecialId(file, "tokenizer.ggml.eos_token_id", &eos_id_));
  QKERN_RETURN_IF_ERROR(
      ReadSpecialId(file, "tokenizer.ggml.unknown_token_id", &unk_id_));
  QKERN_RETURN_IF_ERROR(
      ReadSpecialId(file, "tokenizer.ggml.eot_token_id", &eot_id_));
  QKERN_RETURN_IF_ERROR(
      ReadSpecialId(file, "tokenizer.ggml.eom_token_id", &eom_id_));
  QKERN_RETURN_IF_ERROR(
      file.GetBoolOr("tokenizer.ggml.add_bos_token", !bpe, &add_bos_));
  QKERN_RETURN_IF_ERROR(file.GetBoolOr("tokenizer.ggml.add_space_prefix", !bpe,
                                       &add_space_prefix_));
  if (bpe) add_space_prefix_ = false;  // not part of byte-level BPE

  // Special tokens, and the ones that end a turn.
  static constexpr const char* kEndOfTurn[] = {
      "<|im_end|>",    "<|eot_id|>",      "<|eom_id|>",
      "<|endoftext|>", "<|end_of_text|>", "<|end|>",
      "<end_of_turn>", "<EOT>",           "</s>"};
  for (int32_t id : {eos_id_, eot_id_, eom_id_}) {
    if (id >= 0 && !IsEndOfGeneration(id)) eog_ids_.push_back(id);
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    const TokenType type = vocab_.Type(id);
    const std::string_view p = vocab_.Piece(id);
    if (type == TokenType::kControl) {
      for (const char* end : kEndOfTurn) {
        if (p == end && !IsEndOfGeneration(id)) eog_ids_.push_back(id);
      }
    }
    if (p.empty()) continue;
    if (type == TokenType::kControl || type == TokenType::kUnknown ||
        type == TokenType::kUserDefined) {
      specials_.push_back({id, type == TokenType::kUserDefined});
      special_first_byte_[static_cast<uint8_t>(p[0])] = true;
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [&](const Special& a, const Special& b) {
                     return vocab_.Piece(a.id).size() >
                            vocab_.Piece(b.id).size();
                   });
  return Status::Ok();
}

inline Status Tokenizer::LoadMerges(const GgufFile& file) {
  const char* src = file.source().c_str();
  GgufArrayView merges;
  QKERN_RETURN_IF_ERROR(
      file.GetArray("tokenizer.ggml.merges", GgufValueType::kString, &merges));
  if (merges.size() > static_cast<size_t>(INT32_MAX)) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: tokenizer.ggml.merges has %zu entries", src,
                      merges.size());
  }
  merges_.Reserve(merges.size());
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string_view m = merges.StringAt(i);
    // Pieces never hold a plain space (GPT-2 spells it U+0120); starting the
    // search at 1 still splits a merge whose left side were one.
    const size_t space = m.find(' ', 1);
    const auto bad = [&](const char* why) {
      return MakeStatus(StatusCode::kDataLoss,
                        "%s: tokenizer.ggml.merges[%zu] '%s': %s", src, i,
                        detail::Printable(m).c_str(), why);
    };
    if (space == std::string_view::npos) {
      return bad("expected two tokens separated by a space");
    }
    const std::string_view left = m.substr(0, space);
    const std::string_view right = m.substr(space + 1);
    const int32_t left_id = vocab_.Find(left);
    const int32_t right_id = vocab_.Find(right);
    if (left_id < 0) return bad("its left side is not in the vocabulary");
    if (right_id < 0) return bad("its right side is not in the vocabulary");
    joined.assign(left);
    joined.append(right);
    const int32_t merged = vocab_.Find(joined);
    if (merged < 0) {
      return bad("the merged token is not in the vocabulary");
    }
    merges_.Add(left_id, right_id, static_cast<int32_t>(i), merged);
  }
  return Status::Ok();
}

// --- Encoding
// ------------------------------------------------------------------

inline void Tokenizer::EncodeFragment(std::string_view fragment,
                                      bool after_special,
                                      std::vector<int32_t>* ids) const {
  if (fragment.empty()) return;
  if (model_ == TokenizerModel::kSentencePiece) {
    detail::SpmScratch scratch;
    // llama.cpp's rule, which every GGUF SentencePiece model was converted
    // for: the prefix goes before the text's first fragment and after every
    // special token.
    EncodeSpmFragment(vocab_, byte_tokens_.data(), unk_id_,
                      add_space_prefix_ && after_special, fragment, &scratch,
                      ids);
    return;
  }
  detail::CodePoints cps;
  cps.Assign(fragment);
  detail::BpeScratch scratch;
  PreTokenize(pre_, cps, [&](size_t begin, size_t end) {
    EncodeBpeWord(vocab_, merges_, byte_tokens_.data(), ignore_merges_,
                  fragment.substr(begin, end - begin), &scratch, ids);
  });
}

inline Status Tokenizer::Encode(std::string_view text, bool parse_special,
                                std::vector<int32_t>* ids) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != text.size()) {
    const uint8_t* s = reinterpret_cast<const uint8_t*>(text.data()) + bad;
    return MakeStatus(StatusCode::kInvalidArgument,
                      "Tokenizer::Encode: invalid UTF-8 at byte offset %zu "
                      "(byte 0x%02X: %s)",
                      bad, s[0], Utf8ErrorReason(s, text.size() - bad));
  }
  size_t fragment_begin = 0;
  bool after_special = true;
  for (size_t pos = 0; pos < text.size();) {
    if (!special_first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    int32_t found = -1;
    size_t length = 0;
    for (const Special& s : specials_) {
      if (!parse_special && !s.always) continue;
      const std::string_view p = vocab_.Piece(s.id);
      if (text.compare(pos, p.size(), p) == 0) {
        found = s.id;
        length = p.size();
        break;  // longest first
      }
    }
    if (found < 0) {
      ++pos;
      continue;
    }
    EncodeFragment(text.substr(fragment_begin, pos - fragment_begin),
                   after_special, ids);
    ids->push_back(found);
    after_special = true;
    pos += length;
    fragment_begin = pos;
  }
  EncodeFragment(text.substr(fragment_begin), after_special, ids);
  return Status::Ok();
}

// --- Decoding
// ------------------------------------------------------------------

inline void Tokenizer::AppendTokenBytes(int32_t id, bool render_special,
                                        std::string* out) const {
  if (!vocab_.Valid(id)) return;
  const std::string_view p = vocab_.Piece(id);
  switch (vocab_.Type(id)) {
    case TokenType::kControl:
    case TokenType::kUnknown:
      if (render_special) out->append(p.data(), p.size());
      return;
    case TokenType::kUserDefined:
      out->append(p.data(), p.size());
      return;
    case TokenType::kByte:
      if (model_ == TokenizerModel::kSentencePiece) {
        for (int b = 0; b < 256; ++b) {
          if (byte_tokens_[b] == id) {
            out->push_back(static_cast<char>(b));
            return;
          }
        }
      }
      break;
    default:
      break;
  }
  if (model_ == TokenizerModel::kSentencePiece) {
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, 3, kSpmSpace) == 0) {
        out->push_back(' ');
        i += 3;
      } else {
        out->push_back(p[i++]);
      }
    }
    return;
  }
  // Byte-level: every code point of the piece spells one byte; one outside
  // the alphabet (a hand-added token) stands for itself.
  for (size_t pos = 0; pos < p.size();) {
    const size_t begin = pos;
    const uint32_t cp = NextCodePoint(p, &pos);
    const int byte = kByteLevel.ByteOf(cp);
    if (byte >= 0) {
      out->push_back(static_cast<char>(byte));
    } else {
      out->append(p.data() + begin, pos - begin);
    }
  }
}

// Turns a stream of token ids into UTF-8 text without ever emitting part of
// a character: the bytes of a character split across tokens are held back
// until it is complete. Bytes that can never form a character are replaced
// by U+FFFD (one per maximal ill-formed subsequence), as soon as that is
// certain. Keeps a pointer to `tokenizer`, which must outlive it.
class TokenStreamDecoder {
 public:
  explicit TokenStreamDecoder(const Tokenizer* tokenizer,
                              bool render_special = false)
      : tokenizer_(tokenizer), render_special_(render_special) {}

  // Appends the text that token `id` completes to *out.
  void Push(int32_t id, std::string* out) {
    tokenizer_->AppendTokenBytes(id, render_special_, &pending_);
    Drain(/*final=*/false, out);
  }
  std::string Push(int32_t id) {
    std::string out;
    Push(id, &out);
    return out;
  }

  // Appends whatever is held back (an unfinished character as U+FFFD) and
  // resets the decoder.
  void Flush(std::string* out) { Drain(/*final=*/true, out); }
  std::string Flush() {
    std::string out;
    Flush(&out);
    return out;
  }

  // Bytes held back, waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  void Drain(bool final, std::string* out) {
    const uint8_t* s = reinterpret_cast<const uint8_t*>(pending_.data());
    const size_t n = pending_.size();
    size_t i = 0;
    while (i < n) {
      uint32_t cp;
      size_t length;
      const Utf8Step step = DecodeUtf8(s + i, n - i, &cp, &length);
      if (step == Utf8Step::kOk) {
        out->append(pending_, i, length);
      } else if (step == Utf8Step::kTruncated && !final) {
        break;  // wait for the next token
      } else {
        AppendUtf8(kUnicodeReplacement, out);
      }
      i += length;
    }
    pending_.erase(0, i);
  }

  const Tokenizer* tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace qkern

#endif  // QKERN_MODEL_TOKENIZER_H_
