// Chat templates: every family rendered byte for byte as jinja2 renders the
// real template (fixtures from tools/gen_chat_template_fixtures.py),
// detection on each template text, and the multi-turn invariant: rendering
// turn by turn gives exactly the text of rendering everything at once.
#include "qkern/model/chat_template.h"

#include <gtest/gtest.h>
#include <stdio.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "status_matchers.h"

#ifdef QKERN_TEST_MODEL
#include "qkern/model/gguf_reader.h"
#endif

namespace qkern {
namespace {

using test::ExpectError;
using test::Mentions;

struct TemplateFixture {
  std::string name;
  std::string bos;
  std::string eos;
  std::string text;
};

struct RenderFixture {
  std::string template_name;
  size_t conversation;
  bool add_generation_prompt;
  bool ok;
  std::string text;  // the rendering, or the exception message
};

struct Fixtures {
  std::vector<TemplateFixture> templates;
  std::vector<std::vector<ChatMessage>> conversations;
  std::vector<RenderFixture> renders;
};

// Reader for the length-prefixed format described in the generator.
class FixtureReader {
 public:
  explicit FixtureReader(std::string data) : data_(std::move(data)) {}
  bool Done() {
    SkipComments();
    return pos_ >= data_.size();
  }
  std::vector<std::string> Header() {
    SkipComments();
    const size_t end = data_.find('\n', pos_);
    std::istringstream line(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    std::vector<std::string> words;
    for (std::string w; line >> w;) words.push_back(w);
    return words;
  }
  // Reads `len` bytes of payload and its trailing newline.
  std::string Payload(const std::string& len) {
    const size_t n = std::stoul(len);
    std::string out = data_.substr(pos_, n);
    EXPECT_EQ(data_[pos_ + n], '\n');
    pos_ += n + 1;
    return out;
  }

 private:
  void SkipComments() {
    while (pos_ < data_.size() && data_[pos_] == '#') {
      pos_ = data_.find('\n', pos_) + 1;
    }
  }
  std::string data_;
  size_t pos_ = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const Fixtures& GetFixtures() {
  static const Fixtures* fixtures = [] {
    auto* f = new Fixtures;
    FixtureReader r(ReadFile(std::string(QKERN_TEST_DATA_DIR) +
                             "/chat_template_fixtures.txt"));
    while (!r.Done()) {
      const std::vector<std::string> h = r.Header();
      if (h.at(0) == "template") {
        TemplateFixture t;
        t.name = h.at(1);
        t.bos = h.at(2) == "-" ? "" : h.at(2);
        t.eos = h.at(3) == "-" ? "" : h.at(3);
        t.text = r.Payload(h.at(4));
        f->templates.push_back(t);
      } else if (h.at(0) == "conversation") {
        const size_t n = std::stoul(h.at(2));
        std::vector<ChatMessage> conv;
        for (size_t i = 0; i < n; ++i) {
          const std::vector<std::string> m = r.Header();
          EXPECT_EQ(m.at(0), "message");
          conv.push_back({m.at(1), r.Payload(m.at(2))});
        }
        f->conversations.push_back(conv);
      } else {
        EXPECT_EQ(h.at(0), "render");
        RenderFixture rf;
        rf.template_name = h.at(1);
        rf.conversation = std::stoul(h.at(2));
        rf.add_generation_prompt = h.at(3) == "1";
        rf.ok = h.at(4) == "ok";
        rf.text = r.Payload(h.at(5));
        f->renders.push_back(rf);
      }
    }
    return f;
  }();
  return *fixtures;
}

const TemplateFixture& FindTemplate(const std::string& name) {
  for (const TemplateFixture& t : GetFixtures().templates) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no template " << name;
  static TemplateFixture none;
  return none;
}

ChatTemplateKind ExpectedKind(const std::string& fixture_name) {
  static const std::map<std::string, ChatTemplateKind> kinds = {
      {"chatml", ChatTemplateKind::kChatMl},
      {"smollm2", ChatTemplateKind::kChatMl},
      {"qwen2", ChatTemplateKind::kChatMl},
      {"llama3", ChatTemplateKind::kLlama3},
      {"llama31", ChatTemplateKind::kLlama31},
      {"gemma", ChatTemplateKind::kGemma},
      {"llama2", ChatTemplateKind::kLlama2},
      {"phi3", ChatTemplateKind::kPhi3}};
  return kinds.at(fixture_name);
}

ChatFormatter MakeFormatter(const TemplateFixture& t, bool render_bos) {
  ChatFormatter f;
  const Status status = ChatFormatter::FromTemplate(t.text, &f);
  EXPECT_TRUE(status.ok()) << t.name << ": " << status.message();
  f.set_render_bos(render_bos);
  return f;
}

std::vector<ChatMessage> Prefix(const std::vector<ChatMessage>& m, size_t n) {
  return std::vector<ChatMessage>(m.begin(), m.begin() + n);
}

// Shows the first difference of two renderings.
std::string Diff(const std::string& got, const std::string& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return "first difference at byte " + std::to_string(i) + ": got \"" +
         got.substr(i, 40) + "\" want \"" + want.substr(i, 40) + "\"";
}

TEST(ChatTemplateTest, FixturesLoaded) {
  const Fixtures& f = GetFixtures();
  EXPECT_EQ(f.templates.size(), 8u);
  EXPECT_GE(f.conversations.size(), 10u);
  EXPECT_EQ(f.renders.size(), f.templates.size() * f.conversations.size() * 2);
}

TEST(ChatTemplateTest, DetectsEveryFixtureTemplate) {
  for (const TemplateFixture& t : GetFixtures().templates) {
    ChatTemplateKind kind;
    const Status status = DetectChatTemplate(t.text, &kind);
    ASSERT_TRUE(status.ok()) << t.name << ": " << status.message();
    EXPECT_EQ(kind, ExpectedKind(t.name)) << t.name;
    // The stored .jinja file is the same text.
    EXPECT_EQ(ReadFile(std::string(QKERN_TEST_DATA_DIR) + "/chat_template_" +
                       t.name + ".jinja"),
              t.text);
  }
}

// The core oracle check: Render == jinja2, byte for byte, errors included.
TEST(ChatTemplateTest, RenderMatchesJinja) {
  const Fixtures& f = GetFixtures();
  size_t checked = 0;
  for (const RenderFixture& rf : f.renders) {
    const TemplateFixture& t = FindTemplate(rf.template_name);
    const ChatFormatter formatter = MakeFormatter(t, /*render_bos=*/true);
    const std::vector<ChatMessage>& conv = f.conversations.at(rf.conversation);
    std::string got;
    const Status status =
        formatter.Render(conv, rf.add_generation_prompt, &got);
    const std::string where = rf.template_name + " conversation " +
                              std::to_string(rf.conversation) + " gen " +
                              std::to_string(rf.add_generation_prompt);
    if (!rf.ok) {
      EXPECT_FALSE(status.ok()) << where << " should fail: " << rf.text;
      EXPECT_TRUE(Mentions(status, rf.text)) << where;
      continue;
    }
    ASSERT_TRUE(status.ok()) << where << ": " << status.message();
    EXPECT_EQ(got, rf.text) << where << "\n" << Diff(got, rf.text);
    // Without render_bos, exactly the leading BOS text is left out.
    std::string no_bos;
    ASSERT_TRUE(MakeFormatter(t, false)
                    .Render(conv, rf.add_generation_prompt, &no_bos)
                    .ok());
    const std::string bos(formatter.bos_text());
    if (!bos.empty() && rf.text.compare(0, bos.size(), bos) == 0) {
      EXPECT_EQ(bos + no_bos, rf.text) << where;
    } else {
      EXPECT_EQ(no_bos, rf.text) << where;
    }
    ++checked;
  }
  EXPECT_GT(checked, 150u);
}

// Incremental rendering: start from Render(messages before the first reply,
// true), then after each assistant reply append RenderedReply + the delta.
// After each turn the accumulated text equals Render(all so far, true).
TEST(ChatTemplateTest, TurnByTurnEqualsWholeConversation) {
  const Fixtures& f = GetFixtures();
  size_t checked = 0;
  for (const TemplateFixture& t : f.templates) {
    const ChatFormatter formatter = MakeFormatter(t, /*render_bos=*/true);
    for (size_t c = 0; c < f.conversations.size(); ++c) {
      const std::vector<ChatMessage>& conv = f.conversations[c];
      std::string whole;
      if (!formatter.Render(conv, true, &whole).ok()) continue;  // see errors
      // The first reply.
      size_t k = 0;
      while (k < conv.size() && conv[k].role != "assistant") ++k;
      if (k == 0 || k == conv.size()) continue;
      for (bool eot_in_cache : {false, true}) {
        std::string acc;
        ASSERT_TRUE(formatter.Render(Prefix(conv, k), true, &acc).ok());
        for (size_t reply = k; reply < conv.size();) {
          // This turn: the reply and the messages up to the next reply.
          size_t next = reply + 1;
          while (next < conv.size() && conv[next].role != "assistant") ++next;
          const std::vector<ChatMessage> upto = Prefix(conv, next);
          acc += formatter.RenderedReply(conv[reply].content);
          if (eot_in_cache) {
            // Llama-2 renders " </s>" after a reply, a space the model
            // doesn't emit before stopping (see chat_template.h); put it in
            // by hand so the rest is still compared exactly.
            if (t.name == "llama2") acc += " ";
            acc += std::string(formatter.EndOfTurn());
          }
          std::string delta;
          const Status status =
              formatter.RenderNextTurn(upto, reply, eot_in_cache, &delta);
          ASSERT_TRUE(status.ok()) << status.message();
          acc += delta;
          std::string want;
          ASSERT_TRUE(formatter.Render(upto, true, &want).ok());
          EXPECT_EQ(acc, want)
              << t.name << " conversation " << c << " reply " << reply
              << " eot_in_cache " << eot_in_cache << "\n"
              << Diff(acc, want);
          ++checked;
          reply = next;
        }
      }
    }
  }
  EXPECT_GT(checked, 30u);
}

// A real chat loop on ChatML: only deltas are fed; the cache text matches a
// full render of the conversation after every turn.
TEST(ChatTemplateTest, ChatMlDeltaIsNewlineUserTurnAndPrompt) {
  ChatFormatter f;
  ASSERT_TRUE(
      ChatFormatter::FromTemplate(FindTemplate("smollm2").text, &f).ok());
  std::vector<ChatMessage> m = {
      {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  std::string delta;
  ASSERT_TRUE(
      f.RenderNextTurn(m, 1, /*end_of_turn_in_cache=*/true, &delta).ok());
  EXPECT_EQ(delta,
            "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_TRUE(f.RenderNextTurn(m, 1, false, &delta).ok());
  EXPECT_EQ(
      delta,
      "<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  // reply_index must be an assistant message after a prompt.
  ExpectError(f.RenderNextTurn(m, 0, false, &delta),
              StatusCode::kInvalidArgument, "reply_index 0");
  ExpectError(f.RenderNextTurn(m, 2, false, &delta),
              StatusCode::kInvalidArgument, "assistant");
  ExpectError(f.RenderNextTurn(m, 3, false, &delta),
              StatusCode::kInvalidArgument, "reply_index 3");
}

// The default system message comes from the template text itself.
TEST(ChatTemplateTest, DefaultSystemMessageFromTemplate) {
  ChatFormatter f;
  ASSERT_TRUE(
      ChatFormatter::FromTemplate(FindTemplate("smollm2").text, &f).ok());
  EXPECT_EQ(
      f.default_system(),
      "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  ASSERT_TRUE(ChatFormatter::FromTemplate(FindTemplate("qwen2").text, &f).ok());
  EXPECT_EQ(f.default_system(), "You are a helpful assistant.");
  ASSERT_TRUE(
      ChatFormatter::FromTemplate(FindTemplate("chatml").text, &f).ok());
  EXPECT_EQ(f.default_system(), "");
  // Edited text in the template shows up in the rendering.
  std::string edited = FindTemplate("smollm2").text;
  const std::string from = "named SmolLM";
  edited.replace(edited.find(from), from.size(), "named Tester");
  ASSERT_TRUE(ChatFormatter::FromTemplate(edited, &f).ok());
  std::string text;
  ASSERT_TRUE(f.Render({{"user", "x"}}, false, &text).ok());
  EXPECT_EQ(
      text,
      "<|im_start|>system\nYou are a helpful AI assistant named Tester, "
      "trained by Hugging Face<|im_end|>\n<|im_start|>user\nx<|im_end|>\n");
}

TEST(ChatTemplateTest, MissingTemplateDefaultsToChatMl) {
  ChatFormatter f;
  ASSERT_TRUE(ChatFormatter::FromTemplate("", &f).ok());
  EXPECT_TRUE(f.used_default());
  EXPECT_EQ(f.kind(), ChatTemplateKind::kChatMl);
  EXPECT_EQ(f.default_system(), "");
  std::string text;
  ASSERT_TRUE(f.Render({{"user", "Hello!"}}, true, &text).ok());
  EXPECT_EQ(text,
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_TRUE(
      ChatFormatter::FromTemplate(FindTemplate("chatml").text, &f).ok());
  EXPECT_FALSE(f.used_default());
}

TEST(ChatTemplateTest, UnknownTemplateNamesKnownFamilies) {
  ChatTemplateKind kind;
  const char* unknown =
      "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}";
  ExpectError(DetectChatTemplate(unknown, &kind), StatusCode::kUnsupported,
              "known families: chatml, llama3, llama3.1, gemma, llama2, phi3");
  ChatFormatter f;
  ExpectError(ChatFormatter::FromTemplate(unknown, &f),
              StatusCode::kUnsupported, "### {{ m.role }}");
  ExpectError(DetectChatTemplate("", &kind), StatusCode::kInvalidArgument,
              "empty");
  // Mistral-style [INST] without <<SYS>> is not taken for Llama-2.
  ExpectError(DetectChatTemplate("{{ '[INST] ' + m + ' [/INST]' }}", &kind),
              StatusCode::kUnsupported, "known families");
  // Forcing a family works with any (or no) template text.
  ASSERT_TRUE(ChatTemplateFromName("ChatML", &kind).ok());
  EXPECT_EQ(kind, ChatTemplateKind::kChatMl);
  ASSERT_TRUE(ChatFormatter::FromKind(kind, unknown, &f).ok());
  EXPECT_EQ(f.kind(), ChatTemplateKind::kChatMl);
  for (ChatTemplateKind k :
       {ChatTemplateKind::kChatMl, ChatTemplateKind::kLlama3,
        ChatTemplateKind::kLlama31, ChatTemplateKind::kGemma,
        ChatTemplateKind::kLlama2, ChatTemplateKind::kPhi3}) {
    ChatTemplateKind back;
    ASSERT_TRUE(ChatTemplateFromName(ChatTemplateName(k), &back).ok());
    EXPECT_EQ(back, k);
  }
  ASSERT_TRUE(ChatTemplateFromName("llama31", &kind).ok());
  EXPECT_EQ(kind, ChatTemplateKind::kLlama31);
  ExpectError(ChatTemplateFromName("vicuna", &kind),
              StatusCode::kInvalidArgument,
              "\"vicuna\"; known families: chatml");
}

TEST(ChatTemplateTest, StopStrings) {
  for (const TemplateFixture& t : GetFixtures().templates) {
    const ChatFormatter f = MakeFormatter(t, false);
    const std::vector<std::string> stops = f.StopStrings();
    ASSERT_FALSE(stops.empty());
    EXPECT_EQ(stops[0], f.EndOfTurn()) << t.name;
  }
  ChatFormatter f;
  ASSERT_TRUE(
      ChatFormatter::FromTemplate(FindTemplate("smollm2").text, &f).ok());
  EXPECT_EQ(f.StopStrings(), std::vector<std::string>{"<|im_end|>"});
  ASSERT_TRUE(
      ChatFormatter::FromTemplate(FindTemplate("llama3").text, &f).ok());
  EXPECT_EQ(f.StopStrings(),
            (std::vector<std::string>{"<|eot_id|>", "<|end_of_text|>"}));
}

TEST(ChatTemplateTest, PythonStrip) {
  using detail::PythonStrip;
  EXPECT_EQ(PythonStrip(" \t\na b\r\n"), "a b");
  EXPECT_EQ(PythonStrip("\xE3\x80\x80x\xC2\xA0"), "x");  // U+3000, U+00A0
  EXPECT_EQ(PythonStrip("\xE2\x80\x8B"
                        "x"),
            "\xE2\x80\x8B"
            "x");                                  // U+200B: no
  EXPECT_EQ(PythonStrip("\xC3\xA9"), "\xC3\xA9");  // é stays
  EXPECT_EQ(PythonStrip("   "), "");
  EXPECT_EQ(PythonStrip(""), "");
  EXPECT_EQ(PythonStrip("x\xE2"), "x\xE2");  // truncated UTF-8 is kept
}

#ifdef QKERN_TEST_MODEL
// The template inside the real model: same text as the fixture, detected as
// ChatML with SmolLM2's default system message.
TEST(ChatTemplateTest, RealModelTemplate) {
  GgufFile file;
  const Status open = GgufFile::Open(QKERN_TEST_MODEL, &file);
  ASSERT_TRUE(open.ok()) << open.message();
  std::string_view jinja;
  ASSERT_TRUE(file.GetString("tokenizer.chat_template", &jinja).ok());
  EXPECT_EQ(std::string(jinja), FindTemplate("smollm2").text);
  ChatFormatter f;
  ASSERT_TRUE(ChatFormatter::FromTemplate(jinja, &f).ok());
  EXPECT_EQ(f.kind(), ChatTemplateKind::kChatMl);
  EXPECT_FALSE(f.used_default());
  EXPECT_EQ(
      f.default_system(),
      "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}
#endif

}  // namespace
}  // namespace qkern
