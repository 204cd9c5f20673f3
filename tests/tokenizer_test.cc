// Tests for qkern/model/tokenizer.h that need only checked-in data
// (tests/data/tokenizer_*, from tools/gen_tokenizer_fixtures.py):
//
// - SentencePiece BPE: a model trained by `sentencepiece` itself, stored as
//   tests/data/tokenizer_spm.gguf; ids must equal sentencepiece's for every
//   fixture string (byte fallback included) and decode back to the text.
// - The pre-tokenizers split exactly where HF tokenizers' Oniguruma regexes
//   split, for the gpt2, smollm, llama3 and qwen2 patterns.
// - A hand-made byte-level BPE vocabulary (GGUF written in this file) checks
//   merge order, special tokens and decoding without the real model.
// - Bad input: invalid UTF-8 names its byte offset; GGUF metadata that is
//   missing, inconsistent or unknown gives an error naming it; ids outside
//   the vocabulary decode to nothing; TokenStreamDecoder never emits half a
//   character.
#include "qkern/model/tokenizer.h"

#include <stdint.h>
#include <string.h>

#include <fstream>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/model/gguf_reader.h"
#include "status_matchers.h"
#include "tokenizer_fixtures.h"

#ifndef QKERN_TEST_DATA_DIR
#error "QKERN_TEST_DATA_DIR must name the tests/data directory"
#endif

namespace qkern {
namespace {

using test::ExpectError;

std::string DataPath(const char* name) {
  return std::string(QKERN_TEST_DATA_DIR) + "/" + name;
}

using test::Escaped;
using test::FromHex;
using test::Join;
using test::ParseInts;
using test::SplitTabs;

// --- A minimal GGUF writer for metadata-only files --------------------------

class GgufBuilder {
 public:
  void String(const std::string& key, const std::string& value) {
    Key(key, 8);
    Str(value);
  }
  void U32(const std::string& key, uint32_t value) {
    Key(key, 4);
    Raw(&value, 4);
  }
  void Bool(const std::string& key, bool value) {
    Key(key, 7);
    const uint8_t b = value;
    Raw(&b, 1);
  }
  void Strings(const std::string& key, const std::vector<std::string>& v) {
    ArrayHeader(key, 8, v.size());
    for (const std::string& s : v) Str(s);
  }
  void I32s(const std::string& key, const std::vector<int32_t>& v) {
    ArrayHeader(key, 5, v.size());
    for (int32_t x : v) Raw(&x, 4);
  }
  void F32s(const std::string& key, const std::vector<float>& v) {
    ArrayHeader(key, 6, v.size());
    for (float x : v) Raw(&x, 4);
  }

  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> out;
    const auto put = [&](const void* p, size_t n) {
      const uint8_t* b = static_cast<const uint8_t*>(p);
      out.insert(out.end(), b, b + n);
    };
    put("GGUF", 4);
    const uint32_t version = 3;
    const uint64_t n_tensors = 0;
    put(&version, 4);
    put(&n_tensors, 8);
    put(&n_kv_, 8);
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  void Raw(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    body_.insert(body_.end(), b, b + n);
  }
  void Str(const std::string& s) {
    const uint64_t n = s.size();
    Raw(&n, 8);
    Raw(s.data(), s.size());
  }
  void Key(const std::string& key, uint32_t type) {
    ++n_kv_;
    Str(key);
    Raw(&type, 4);
  }
  void ArrayHeader(const std::string& key, uint32_t element, uint64_t n) {
    Key(key, 9);
    Raw(&element, 4);
    Raw(&n, 8);
  }

  std::vector<uint8_t> body_;
  uint64_t n_kv_ = 0;
};

// The GPT-2 alphabet spelling of a byte string.
std::string ByteLevel(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) AppendUtf8(kByteLevel.byte_to_cp[b], &out);
  return out;
}

// A byte-level BPE vocabulary: the 256 byte tokens, then merged tokens and
// two control tokens; `merges` in rank order as raw-byte pairs.
struct TinyBpe {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;

  TinyBpe() {
    for (int b = 0; b < 256; ++b) {
      tokens.push_back(ByteLevel(std::string(1, static_cast<char>(b))));
      types.push_back(1);
    }
    for (const auto& m :
         std::vector<std::pair<std::string, std::string>>{{"l", "l"},
                                                          {"h", "e"},
                                                          {"he", "ll"},
                                                          {"hell", "o"},
                                                          {" ", "w"},
                                                          {" w", "o"},
                                                          {"a", "a"},
                                                          {"r", "ld"},
                                                          {"l", "d"},
                                                          {" wo", "rld"}}) {
      merges.push_back(ByteLevel(m.first) + " " + ByteLevel(m.second));
      tokens.push_back(ByteLevel(m.first + m.second));
      types.push_back(1);
    }
    tokens.push_back("<|end|>");
    types.push_back(3);
    tokens.push_back("<|end|>x");  // longer candidate at the same place
    types.push_back(3);
    tokens.push_back("[USER]");
    types.push_back(4);
    tokens.push_back("xyz");  // a token no merge reaches
    types.push_back(1);
  }

  GgufBuilder Builder(const std::string& pre = "gpt2") const {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    b.String("tokenizer.ggml.pre", pre);
    b.Strings("tokenizer.ggml.tokens", tokens);
    b.I32s("tokenizer.ggml.token_type", types);
    b.Strings("tokenizer.ggml.merges", merges);
    b.U32("tokenizer.ggml.eos_token_id", 266);
    return b;
  }
};

Status LoadFromBytes(const std::vector<uint8_t>& bytes, Tokenizer* tok) {
  GgufFile file;
  QKERN_RETURN_IF_ERROR(
      GgufFile::OpenFromMemory(bytes.data(), bytes.size(), &file));
  return Tokenizer::FromGguf(file, tok);
}

int32_t Id(const Tokenizer& tok, const std::string& bytes) {
  return tok.FindToken(ByteLevel(bytes));
}

// --- SentencePiece
// -------------------------------------------------------------

class SpmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QKERN_ASSERT_OK(GgufFile::Open(DataPath("tokenizer_spm.gguf"), &file_));
    QKERN_ASSERT_OK(Tokenizer::FromGguf(file_, &tok_));
  }
  GgufFile file_;
  Tokenizer tok_;
};

TEST_F(SpmTest, Metadata) {
  EXPECT_EQ(tok_.model(), TokenizerModel::kSentencePiece);
  EXPECT_EQ(tok_.vocab_size(), 700u);
  EXPECT_TRUE(tok_.add_bos());
  EXPECT_TRUE(tok_.add_space_prefix());
  EXPECT_EQ(tok_.bos_id(), 1);
  EXPECT_EQ(tok_.eos_id(), 2);
  EXPECT_EQ(tok_.unk_id(), 0);
  EXPECT_TRUE(tok_.IsEndOfGeneration(2));
  EXPECT_FALSE(tok_.IsEndOfGeneration(1));
  EXPECT_EQ(tok_.FindToken("<0x41>"), 3 + 0x41);
  EXPECT_EQ(tok_.token_type(3 + 0x41), TokenType::kByte);
}

TEST_F(SpmTest, MatchesSentencePiece) {
  std::ifstream in(DataPath("tokenizer_spm.tsv"));
  ASSERT_TRUE(in) << "missing tokenizer_spm.tsv";
  std::string line;
  int checked = 0, with_fallback = 0;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = SplitTabs(line);
    ASSERT_EQ(f.size(), 2u) << line;
    const std::string text = FromHex(f[0]);
    const std::vector<int32_t> want = ParseInts(f[1]);
    std::vector<int32_t> ids;
    QKERN_ASSERT_OK(tok_.Encode(text, /*parse_special=*/false, &ids));
    EXPECT_EQ(Join(ids), Join(want)) << "text: \"" << Escaped(text) << "\"";
    // A literal U+2581 in the text decodes as a space, as in sentencepiece.
    if (text.find(kSpmSpace) == std::string::npos) {
      EXPECT_EQ(tok_.Decode(ids, false), text);
    }
    for (int32_t id : ids) {
      if (tok_.token_type(id) == TokenType::kByte) {
        ++with_fallback;
        break;
      }
    }
    ++checked;
  }
  EXPECT_GE(checked, 100);
  EXPECT_GE(with_fallback, 5);  // the fixtures exercise byte fallback
}

TEST_F(SpmTest, SpacePrefixAfterSpecialTokens) {
  std::vector<int32_t> plain, after;
  QKERN_ASSERT_OK(tok_.Encode("hello", false, &plain));
  QKERN_ASSERT_OK(tok_.Encode("</s>hello", true, &after));
  ASSERT_EQ(after.size(), plain.size() + 1);
  EXPECT_EQ(after[0], 2);
  EXPECT_EQ(std::vector<int32_t>(after.begin() + 1, after.end()), plain);
  std::vector<int32_t> empty;
  QKERN_ASSERT_OK(tok_.Encode("", true, &empty));
  EXPECT_TRUE(empty.empty());
}

// --- Pre-tokenizers
// --------------------------------------------------------------

TEST(PreTokenizerTest, MatchesOnigurumaSplits) {
  std::ifstream in(DataPath("tokenizer_pretok.tsv"));
  ASSERT_TRUE(in) << "missing tokenizer_pretok.tsv";
  std::string line;
  int checked = 0;
  detail::CodePoints cps;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = SplitTabs(line);
    ASSERT_EQ(f.size(), 3u) << line;
    PreTokenizerKind kind;
    ASSERT_TRUE(PreTokenizerFromName(f[0], &kind)) << f[0];
    const std::string text = FromHex(f[1]);
    cps.Assign(text);
    std::vector<int32_t> ends;
    size_t expect_begin = 0;
    PreTokenize(kind, cps, [&](size_t begin, size_t end) {
      EXPECT_EQ(begin, expect_begin);
      EXPECT_LT(begin, end);
      expect_begin = end;
      ends.push_back(static_cast<int32_t>(end));
    });
    EXPECT_EQ(Join(ends), Join(ParseInts(f[2])))
        << f[0] << " text: \"" << Escaped(text) << "\"";
    ++checked;
  }
  EXPECT_GE(checked, 800);
}

TEST(PreTokenizerTest, Names) {
  PreTokenizerKind kind;
  EXPECT_TRUE(PreTokenizerFromName("smollm", &kind));
  EXPECT_EQ(kind, PreTokenizerKind::kDigitsGpt2);
  EXPECT_TRUE(PreTokenizerFromName("llama-bpe", &kind));
  EXPECT_EQ(kind, PreTokenizerKind::kLlama3);
  EXPECT_TRUE(PreTokenizerFromName("qwen2", &kind));
  EXPECT_EQ(kind, PreTokenizerKind::kQwen2);
  EXPECT_FALSE(PreTokenizerFromName("smollm2", &kind));
}

TEST(UnicodeTest, Classes) {
  EXPECT_EQ(UnicodeClassOf('a'), kUnicodeLetter);
  EXPECT_EQ(UnicodeClassOf('7'), kUnicodeNumber);
  EXPECT_EQ(UnicodeClassOf(' '), kUnicodeWhitespace);
  EXPECT_EQ(UnicodeClassOf('!'), 0);
  EXPECT_EQ(UnicodeClassOf(0x65E5), kUnicodeLetter);      // 日
  EXPECT_EQ(UnicodeClassOf(0x0663), kUnicodeNumber);      // Arabic-Indic 3
  EXPECT_EQ(UnicodeClassOf(0x00B2), kUnicodeNumber);      // superscript 2
  EXPECT_EQ(UnicodeClassOf(0x3000), kUnicodeWhitespace);  // ideographic
  EXPECT_EQ(UnicodeClassOf(0x200B), 0);                   // zero width
  EXPECT_EQ(UnicodeClassOf(0x1F600), 0);                  // emoji
  EXPECT_EQ(UnicodeClassOf(0x10FFFF), 0);
}

// --- Byte-level BPE on a hand-made vocabulary --------------------------------

TEST(BpeTest, MergesAndSpecialTokens) {
  const TinyBpe tiny;
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder().Bytes(), &tok));
  EXPECT_EQ(tok.model(), TokenizerModel::kByteLevelBpe);
  EXPECT_FALSE(tok.add_bos());
  const int32_t end = 266, end_x = 267, user = 268;
  std::vector<int32_t> ids;
  QKERN_ASSERT_OK(tok.Encode("hello world", true, &ids));
  EXPECT_EQ(ids, (std::vector<int32_t>{Id(tok, "hello"), Id(tok, " world")}));
  // "aaa": the leftmost of two equal-rank pairs merges first.
  ids.clear();
  QKERN_ASSERT_OK(tok.Encode("aaa", true, &ids));
  EXPECT_EQ(ids, (std::vector<int32_t>{Id(tok, "aa"), Id(tok, "a")}));
  // "rld": "l d" (rank 8) before "r ld" (rank 7) is possible.
  ids.clear();
  QKERN_ASSERT_OK(tok.Encode("rld", true, &ids));
  EXPECT_EQ(ids, (std::vector<int32_t>{Id(tok, "rld")}));

  // Control tokens, longest first; plain text when not parsing specials.
  ids.clear();
  QKERN_ASSERT_OK(tok.Encode("he<|end|>x<|end|>", true, &ids));
  EXPECT_EQ(ids, (std::vector<int32_t>{Id(tok, "he"), end_x, end}));
  ids.clear();
  QKERN_ASSERT_OK(tok.Encode("<|end|>", false, &ids));
  EXPECT_EQ(ids.size(), 7u);
  for (int32_t id : ids) EXPECT_NE(id, end);
  // User-defined tokens are always matched.
  ids.clear();
  QKERN_ASSERT_OK(tok.Encode("[USER]hello", false, &ids));
  EXPECT_EQ(ids, (std::vector<int32_t>{user, Id(tok, "hello")}));

  std::string text;
  tok.AppendTokenBytes(end, false, &text);
  EXPECT_EQ(text, "");
  tok.AppendTokenBytes(end, true, &text);
  EXPECT_EQ(text, "<|end|>");
  text.clear();
  tok.AppendTokenBytes(user, false, &text);
  EXPECT_EQ(text, "[USER]");

  EXPECT_TRUE(tok.IsEndOfGeneration(end));  // eos_token_id and <|end|>
  EXPECT_FALSE(tok.IsEndOfGeneration(end_x));
}

TEST(BpeTest, Llama3EmitsWholeWordsThatAreTokens) {
  const TinyBpe tiny;
  Tokenizer gpt2, llama3;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder("gpt2").Bytes(), &gpt2));
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder("llama-bpe").Bytes(), &llama3));
  std::vector<int32_t> a, b;
  QKERN_ASSERT_OK(gpt2.Encode("xyz", false, &a));
  QKERN_ASSERT_OK(llama3.Encode("xyz", false, &b));
  EXPECT_EQ(
      a, (std::vector<int32_t>{Id(gpt2, "x"), Id(gpt2, "y"), Id(gpt2, "z")}));
  EXPECT_EQ(b, std::vector<int32_t>{269});
}

TEST(BpeTest, EotIdEndsGeneration) {
  const TinyBpe tiny;
  GgufBuilder b = tiny.Builder();
  b.U32("tokenizer.ggml.eot_token_id", 267);
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(b.Bytes(), &tok));
  EXPECT_TRUE(tok.IsEndOfGeneration(266));
  EXPECT_TRUE(tok.IsEndOfGeneration(267));
  EXPECT_EQ(tok.eot_id(), 267);
}

// Random text from a mix of scripts, spaces and digits: every pre-tokenizer
// tiles it, and the ids decode back to it.
TEST(BpeTest, RandomTextRoundTrips) {
  const TinyBpe tiny;
  const uint32_t pool[] = {'a',    'Z',    ' ',    '\t',    '\n',   '\r',
                           '\'',   's',    '7',    '.',     0xA0,   0xE9,
                           0x0663, 0x3000, 0x65E5, 0x1F600, 0x200D, 0x10FFFF,
                           'l',    'L',    0x2581, '<',     '|',    0xFE0F};
  std::mt19937 rng(7);
  for (const char* pre : {"gpt2", "smollm", "llama3", "qwen2"}) {
    Tokenizer tok;
    QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder(pre).Bytes(), &tok));
    for (int rep = 0; rep < 200; ++rep) {
      std::string text;
      const int n = static_cast<int>(rng() % 40);
      for (int i = 0; i < n; ++i) {
        AppendUtf8(pool[rng() % (sizeof(pool) / sizeof(pool[0]))], &text);
      }
      std::vector<int32_t> ids;
      QKERN_ASSERT_OK(tok.Encode(text, false, &ids));
      EXPECT_EQ(tok.Decode(ids, true), text) << pre << " " << Escaped(text);
    }
  }
}

TEST(BpeTest, EveryByteRoundTrips) {
  const TinyBpe tiny;
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder().Bytes(), &tok));
  for (int b = 0; b < 256; ++b) {
    std::string out;
    tok.AppendTokenBytes(Id(tok, std::string(1, static_cast<char>(b))), false,
                         &out);
    EXPECT_EQ(out, std::string(1, static_cast<char>(b))) << b;
  }
}

TEST(BpeTest, OutOfRangeIdsDecodeToNothing) {
  const TinyBpe tiny;
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder().Bytes(), &tok));
  std::string out = "keep";
  for (int32_t id :
       {-1, static_cast<int32_t>(tok.vocab_size()), INT32_MAX, INT32_MIN}) {
    tok.AppendTokenBytes(id, true, &out);
    EXPECT_EQ(tok.Piece(id), "");
    EXPECT_FALSE(tok.IsEndOfGeneration(id));
  }
  EXPECT_EQ(out, "keep");
  TokenStreamDecoder stream(&tok);
  EXPECT_EQ(stream.Push(-5), "");
  EXPECT_EQ(stream.Flush(), "");
}

// --- Invalid UTF-8
// -----------------------------------------------------------------

TEST(Utf8Test, InvalidTextNamesTheOffset) {
  const TinyBpe tiny;
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder().Bytes(), &tok));
  struct Case {
    std::string text;
    size_t offset;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"\x80", 0, "continuation"},
      {"ab\xBF", 2, "continuation"},
      {"x\xC0\xAF", 1, "overlong"},
      {"\xE0\x80\xAF", 0, "overlong"},
      {"ok\xF0\x82\x82\xAC", 2, "overlong"},
      {"\xED\xA0\x80", 0, "surrogate"},
      {"abc\xED\xBF\xBF", 3, "surrogate"},
      {"\xF4\x90\x80\x80", 0, "above U+10FFFF"},
      {"\xF5\x80\x80\x80", 0, "never used"},
      {"\xFF", 0, "never used"},
      {"abcd\xE2\x82", 4, "truncated"},
      {"\xE2\x82x", 0, "missing continuation"},
      {"\xC3", 0, "truncated"},
      {"\xE6\x97\xA5\xF0\x9F\x98", 3, "truncated"},
  };
  for (const Case& c : cases) {
    std::vector<int32_t> ids = {42};
    const Status status = tok.Encode(c.text, true, &ids);
    ExpectError(status, StatusCode::kInvalidArgument,
                "byte offset " + std::to_string(c.offset) + " ");
    EXPECT_TRUE(test::Mentions(status, c.reason)) << Escaped(c.text);
    EXPECT_EQ(ids, std::vector<int32_t>{42}) << "nothing appended on error";
  }
  std::vector<int32_t> ids;
  QKERN_ASSERT_OK(tok.Encode("\xEF\xBF\xBF \xF4\x8F\xBF\xBF \xC2\x80", true,
                             &ids));  // U+FFFF, U+10FFFF, U+0080 are fine
}

// --- Bad GGUF metadata
// -------------------------------------------------------------

TEST(FromGgufTest, Errors) {
  const TinyBpe tiny;
  Tokenizer tok;
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    b.Strings("tokenizer.ggml.tokens", tiny.tokens);
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kInvalidArgument,
                "tokenizer.ggml.merges");
  }
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    b.Strings("tokenizer.ggml.tokens", tiny.tokens);
    std::vector<int32_t> types = tiny.types;
    types.pop_back();
    b.I32s("tokenizer.ggml.token_type", types);
    b.Strings("tokenizer.ggml.merges", tiny.merges);
    const Status s = LoadFromBytes(b.Bytes(), &tok);
    ExpectError(s, StatusCode::kDataLoss, "token_type has 269 entries");
    EXPECT_TRUE(test::Mentions(s, "tokens has 270"));
  }
  ExpectError(LoadFromBytes(tiny.Builder("smollm3").Bytes(), &tok),
              StatusCode::kUnsupported, "'smollm3'");
  EXPECT_TRUE(test::Mentions(LoadFromBytes(tiny.Builder("x").Bytes(), &tok),
                             "smollm, starcoder"));
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "bert");
    b.Strings("tokenizer.ggml.tokens", tiny.tokens);
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kUnsupported,
                "'bert'");
  }
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    b.Strings("tokenizer.ggml.tokens", tiny.tokens);
    b.Strings("tokenizer.ggml.merges", {"h e", "q zz", "x"});
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kDataLoss,
                "merges[1] 'q zz': its right side");
  }
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    b.Strings("tokenizer.ggml.tokens", tiny.tokens);
    b.Strings("tokenizer.ggml.merges", {"hq"});
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kDataLoss,
                "separated by a space");
  }
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    b.Strings("tokenizer.ggml.tokens", {"a", "b"});
    b.Strings("tokenizer.ggml.merges", {"a b"});
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kDataLoss,
                "merged token is not in the vocabulary");
  }
  {
    GgufBuilder b = tiny.Builder();
    b.U32("tokenizer.ggml.bos_token_id", 5000);
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kDataLoss,
                "bos_token_id' is 5000");
  }
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "llama");
    b.Strings("tokenizer.ggml.tokens", {"<unk>", "a"});
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kInvalidArgument,
                "tokenizer.ggml.scores");
    b.F32s("tokenizer.ggml.scores", {0.0f});
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kDataLoss,
                "scores has 1 entries but tokenizer.ggml.tokens has 2");
  }
  {
    GgufBuilder b;
    b.String("tokenizer.ggml.model", "gpt2");
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kInvalidArgument,
                "tokenizer.ggml.tokens");
  }
  {
    GgufBuilder b;
    b.Strings("tokenizer.ggml.tokens", tiny.tokens);
    ExpectError(LoadFromBytes(b.Bytes(), &tok), StatusCode::kInvalidArgument,
                "tokenizer.ggml.model");
  }
  // The failed loads left `tok` as it was (default constructed).
  EXPECT_EQ(tok.vocab_size(), 0u);
  std::vector<int32_t> ids;
  EXPECT_TRUE(tok.Encode("text", true, &ids).ok());
}

// --- Streaming
// ---------------------------------------------------------------------

TEST(StreamDecoderTest, HoldsBackPartialCharacters) {
  const TinyBpe tiny;
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder().Bytes(), &tok));
  const std::string text = "a\xC3\xA9\xF0\x9F\x98\x80\xE6\x97\xA5!";  // aé😀日!
  TokenStreamDecoder stream(&tok);
  std::string out;
  std::vector<std::string> pushes;
  for (unsigned char b : text) {
    pushes.push_back(
        stream.Push(Id(tok, std::string(1, static_cast<char>(b)))));
    EXPECT_EQ(FindInvalidUtf8(pushes.back()), pushes.back().size());
    out += pushes.back();
  }
  out += stream.Flush();
  EXPECT_EQ(out, text);
  const std::vector<std::string> want = {
      "a", "", "\xC3\xA9",     "", "", "", "\xF0\x9F\x98\x80",
      "",  "", "\xE6\x97\xA5", "!"};
  EXPECT_EQ(pushes, want);
}

TEST(StreamDecoderTest, InvalidBytesBecomeReplacementCharacters) {
  const TinyBpe tiny;
  Tokenizer tok;
  QKERN_ASSERT_OK(LoadFromBytes(tiny.Builder().Bytes(), &tok));
  const auto byte = [&](int b) {
    return Id(tok, std::string(1, static_cast<char>(b)));
  };
  const std::string fffd = "\xEF\xBF\xBD";
  TokenStreamDecoder stream(&tok);
  EXPECT_EQ(stream.Push(byte(0xFF)), fffd);
  EXPECT_EQ(stream.Push(byte(0xE2)), "");
  EXPECT_EQ(stream.Push(byte(0x82)), "");
  EXPECT_EQ(stream.pending_bytes(), 2u);
  EXPECT_EQ(stream.Push(byte('a')), fffd + "a");  // one per maximal subpart
  EXPECT_EQ(stream.Push(byte(0xF0)), "");
  EXPECT_EQ(stream.Flush(), fffd);
  EXPECT_EQ(stream.pending_bytes(), 0u);
  EXPECT_EQ(stream.Push(byte(0xED)), "");
  EXPECT_EQ(stream.Push(byte(0xA0)), fffd + fffd);  // surrogate: never valid
}

TEST_F(SpmTest, DecodeDropsOnlyThePrefixSpace) {
  std::vector<int32_t> ids = {1};  // <s> first: it gives no text
  QKERN_ASSERT_OK(tok_.Encode("  two spaces", false, &ids));
  EXPECT_EQ(tok_.Decode(ids, false), "  two spaces");
  std::mt19937 rng(3);
  const char* pool[] = {"a",   " ", "\xC3\xA9", "\xF0\x9F\x98\x80",
                        "the", "7", "\t",       "\xE6\x97\xA5",
                        "<s>"};
  for (int rep = 0; rep < 300; ++rep) {
    std::string text;
    for (int i = static_cast<int>(rng() % 12); i > 0; --i) {
      text += pool[rng() % (sizeof(pool) / sizeof(pool[0]))];
    }
    ids.clear();
    QKERN_ASSERT_OK(tok_.Encode(text, false, &ids));
    EXPECT_EQ(tok_.Decode(ids, false), text) << Escaped(text);
  }
}

TEST_F(SpmTest, StreamDecoderWithByteFallback) {
  std::vector<int32_t> ids;
  const std::string text = "hello \xF0\x9F\x98\x80 \xC4\x9F";  // 😀 ğ
  QKERN_ASSERT_OK(tok_.Encode(text, false, &ids));
  TokenStreamDecoder stream(&tok_);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = stream.Push(id);
    EXPECT_EQ(FindInvalidUtf8(piece), piece.size());
    out += piece;
  }
  out += stream.Flush();
  EXPECT_EQ(out, " " + text);  // the space prefix is kept mid-stream
}

}  // namespace
}  // namespace qkern
