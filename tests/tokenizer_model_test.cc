// Tests of qkern/model/tokenizer.h on the real model's tokenizer
// (SmolLM2-135M-Instruct: byte-level BPE, 49152 tokens, 48900 merges,
// pre-tokenizer "smollm").
//
// - tests/data/tokenizer_smollm.tsv (tools/gen_tokenizer_fixtures.py) holds
//   HF tokenizers' ids for ~420 strings, with and without special-token
//   parsing; every one must match exactly and decode back to its text.
// (Tokenizer load time is part of qkern-bench's load figure, not a test.)
#include <stdint.h>
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/model/tokenizer.h"
#include "status_matchers.h"
#include "tokenizer_fixtures.h"

#ifndef QKERN_TEST_DATA_DIR
#error "QKERN_TEST_DATA_DIR must name the tests/data directory"
#endif
#ifndef QKERN_TEST_MODEL
#error "QKERN_TEST_MODEL must name the SmolLM2 GGUF"
#endif

namespace qkern {
namespace {

using test::Escaped;
using test::FromHex;
using test::Join;
using test::ParseInts;
using test::SplitTabs;

struct Fixture {
  bool parse_special;
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Fixture> ReadFixtures() {
  std::vector<Fixture> out;
  std::ifstream in(std::string(QKERN_TEST_DATA_DIR) + "/tokenizer_smollm.tsv");
  std::string line;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = SplitTabs(line);
    if (f.size() != 3) {
      ADD_FAILURE() << "bad fixture line: " << line;
      continue;
    }
    out.push_back({f[0] == "s", FromHex(f[1]), ParseInts(f[2])});
  }
  return out;
}

class SmolLmTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    file_ = new GgufFile;
    tok_ = new Tokenizer;
    const Status s = GgufFile::Open(QKERN_TEST_MODEL, file_);
    ASSERT_TRUE(s.ok()) << s.message();
    const Status t = Tokenizer::FromGguf(*file_, tok_);
    ASSERT_TRUE(t.ok()) << t.message();
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete file_;
  }
  static GgufFile* file_;
  static Tokenizer* tok_;
};
GgufFile* SmolLmTokenizerTest::file_ = nullptr;
Tokenizer* SmolLmTokenizerTest::tok_ = nullptr;

TEST_F(SmolLmTokenizerTest, Metadata) {
  const Tokenizer& tok = *tok_;
  EXPECT_EQ(tok.model(), TokenizerModel::kByteLevelBpe);
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizerKind::kDigitsGpt2);
  EXPECT_EQ(tok.vocab_size(), 49152u);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.FindToken("<|im_start|>"), 1);
  EXPECT_EQ(tok.FindToken("<|im_end|>"), 2);
  EXPECT_EQ(tok.FindToken("no such token"), -1);
  EXPECT_EQ(tok.Piece(1), "<|im_start|>");
  EXPECT_EQ(tok.token_type(1), TokenType::kControl);
  EXPECT_TRUE(tok.IsEndOfGeneration(2));  // eos, <|im_end|>
  EXPECT_TRUE(tok.IsEndOfGeneration(0));  // <|endoftext|>
  EXPECT_FALSE(tok.IsEndOfGeneration(1));
  EXPECT_FALSE(tok.IsEndOfGeneration(tok.FindToken("Hello")));
  std::string out;
  tok.AppendTokenBytes(tok.FindToken("\xC4\xA0world"), false, &out);  // Ġworld
  EXPECT_EQ(out, " world");
}

TEST_F(SmolLmTokenizerTest, MatchesHuggingFaceTokenizers) {
  const std::vector<Fixture> fixtures = ReadFixtures();
  ASSERT_GE(fixtures.size(), 400u);
  int mismatches = 0;
  size_t plain = 0, with_special = 0;
  for (const Fixture& f : fixtures) {
    std::vector<int32_t> ids;
    QKERN_ASSERT_OK(tok_->Encode(f.text, f.parse_special, &ids));
    if (ids != f.ids && ++mismatches <= 20) {
      ADD_FAILURE() << (f.parse_special ? "[special] " : "[plain] ") << "\""
                    << Escaped(f.text) << "\"\n  got:  " << Join(ids)
                    << "\n  want: " << Join(f.ids);
    }
    // Every token's bytes, specials rendered, give the text back, less the
    // bytes the vocabulary cannot spell (0x1D), which both tokenizers drop.
    std::string decoded, spellable;
    for (int32_t id : ids) tok_->AppendTokenBytes(id, true, &decoded);
    for (unsigned char b : f.text) {
      std::string spelled;
      AppendUtf8(kByteLevel.byte_to_cp[b], &spelled);
      if (tok_->FindToken(spelled) >= 0)
        spellable.push_back(static_cast<char>(b));
    }
    EXPECT_EQ(decoded, spellable) << Escaped(f.text);
    (f.parse_special ? with_special : plain) += 1;
    if (f.parse_special) {
      for (int32_t id : ids) {
        if (tok_->token_type(id) == TokenType::kControl) {
          EXPECT_NE(f.text.find(std::string(tok_->Piece(id))),
                    std::string::npos);
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_GE(plain, 10u);
  printf("[ info ] %zu strings with special parsing, %zu without\n",
         with_special, plain);
}

TEST_F(SmolLmTokenizerTest, ChatTurn) {
  std::vector<int32_t> ids;
  QKERN_ASSERT_OK(tok_->Encode("<|im_start|>user\nHi<|im_end|>\n", true, &ids));
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
  std::vector<int32_t> plain;
  QKERN_ASSERT_OK(tok_->Encode("<|im_start|>", false, &plain));
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
}

TEST_F(SmolLmTokenizerTest, StreamDecoderNeverEmitsHalfACharacter) {
  const std::string text =
      "日本語 😀👍🏽 👨\u200d👩\u200d👧 Привет ٣٤ naïve — "
      "done";
  std::vector<int32_t> ids;
  QKERN_ASSERT_OK(tok_->Encode(text, true, &ids));
  TokenStreamDecoder stream(tok_);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = stream.Push(id);
    EXPECT_EQ(FindInvalidUtf8(piece), piece.size()) << Escaped(piece);
    out += piece;
  }
  out += stream.Flush();
  EXPECT_EQ(out, text);
  // The model can emit byte tokens one at a time: same result.
  TokenStreamDecoder bytes(tok_);
  out.clear();
  for (unsigned char b : text) {
    std::string spelled;
    AppendUtf8(kByteLevel.byte_to_cp[b], &spelled);
    const int32_t id = tok_->FindToken(spelled);
    ASSERT_GE(id, 0);
    const std::string piece = bytes.Push(id);
    EXPECT_EQ(FindInvalidUtf8(piece), piece.size());
    out += piece;
  }
  EXPECT_EQ(out + bytes.Flush(), text);
}

}  // namespace
}  // namespace qkern
