// Chat templates: turns a conversation into the prompt text a chat model was
// trained on.
//
// GGUF models carry a Jinja template (tokenizer.chat_template). We don't run
// Jinja: DetectChatTemplate() recognises the family from markers in the
// template text, and ChatFormatter renders that family in C++, byte for byte
// as jinja2 renders the family's published template (HF settings:
// trim_blocks, lstrip_blocks). tests/chat_template_test.cc checks this
// against fixtures made by tools/gen_chat_template_fixtures.py.
//
// Families:
//   chatml    <|im_start|>role\ncontent<|im_end|>\n   (SmolLM2, Qwen2, ...)
//             A default system message the template injects when the first
//             message isn't a system one is read from the template text.
//   llama3    <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>,
//             content trimmed, BOS <|begin_of_text|> first.
//   llama3.1  llama3 plus a system header that is always present
//             (knowledge cutoff and date lines, read from the template).
//   gemma     <start_of_turn>user|model\ncontent<end_of_turn>\n, no system
//             role, strict user/model alternation.
//   llama2    <s>[INST] <<SYS>>...<</SYS>> user [/INST] reply </s>.
//   phi3      <|user|>\ncontent<|end|>\n
//
// BOS: templates that start with the BOS text (llama3, gemma, llama2) leave
// it out of Render() by default, because the tokenizer adds the BOS token
// itself; set_render_bos(true) puts it in the text (as Jinja does). Llama-2's
// later "<s>" before each [INST] are always in the text (special tokens the
// tokenizer must parse).
//
// Multi-turn with a KV cache: the app keeps the conversation in the cache
// and feeds only what is new. After Render(m[0, k), true) the model
// generates the reply to m[k]; RenderNextTurn(m, k, ...) gives the text to
// feed next (the end of that reply's turn, the new messages and the
// generation prompt), such that
//   Render(m[0,k), true) + RenderedReply(m[k].content)
//       [+ EndOfTurn() when end_of_turn_in_cache] + RenderNextTurn(...)
//   == Render(m, true).
// The model usually stops by emitting EndOfTurn() (e.g. <|im_end|>). If the
// app decoded that token into the cache, pass end_of_turn_in_cache = true
// and the delta starts after it (ChatML: just "\n"); if it stopped without
// feeding it, pass false and the delta starts with it. RenderedReply() is
// what the template renders for the reply's content: itself for chatml and
// phi3, trimmed for llama3 / gemma (so if the model emitted leading or
// trailing whitespace, the cache differs slightly from a full re-render; the
// delta is still the right continuation), " " + trimmed for llama2.
// Llama-2 closes a reply with " </s>": a model that stops on </s> never
// emitted that space, so with end_of_turn_in_cache the equality holds except
// for that one space.
#ifndef QKERN_MODEL_CHAT_TEMPLATE_H_
#define QKERN_MODEL_CHAT_TEMPLATE_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

#include "qkern/base/status.h"

namespace qkern {

enum class ChatTemplateKind {
  kChatMl,
  kLlama3,
  kLlama31,
  kGemma,
  kLlama2,
  kPhi3
};

// Lower-case name, as ChatTemplateFromName accepts it.
inline const char* ChatTemplateName(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kChatMl:
      return "chatml";
    case ChatTemplateKind::kLlama3:
      return "llama3";
    case ChatTemplateKind::kLlama31:
      return "llama3.1";
    case ChatTemplateKind::kGemma:
      return "gemma";
    case ChatTemplateKind::kLlama2:
      return "llama2";
    case ChatTemplateKind::kPhi3:
      return "phi3";
  }
  return "?";
}

// For error messages: every name ChatTemplateFromName accepts.
inline const char* KnownChatTemplates() {
  return "chatml, llama3, llama3.1, gemma, llama2, phi3";
}

namespace detail {

inline bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// Decodes one UTF-8 code point starting at s[i]; returns its length (1 for
// a malformed byte, which then counts as not-whitespace).
inline size_t DecodeUtf8(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t c = b(0);
  const size_t left = s.size() - i;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if ((c & 0xE0) == 0xC0 && left >= 2 && (b(1) & 0xC0) == 0x80) {
    *cp = ((c & 0x1Fu) << 6) | (b(1) & 0x3Fu);
    return 2;
  }
  if ((c & 0xF0) == 0xE0 && left >= 3 && (b(1) & 0xC0) == 0x80 &&
      (b(2) & 0xC0) == 0x80) {
    *cp = ((c & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
    return 3;
  }
  if ((c & 0xF8) == 0xF0 && left >= 4 && (b(1) & 0xC0) == 0x80 &&
      (b(2) & 0xC0) == 0x80 && (b(3) & 0xC0) == 0x80) {
    *cp = ((c & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) |
          (b(3) & 0x3Fu);
    return 4;
  }
  *cp = 0xFFFD;
  return 1;
}

// Python's str.isspace(), which Jinja's trim filter and str.strip() use:
// more than ASCII whitespace, so a template that trims also drops e.g.
// U+3000 or U+00A0 at the ends.
inline bool IsPythonSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) ||
         cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Python's str.strip() on UTF-8 text.
inline std::string_view PythonStrip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    uint32_t cp;
    const size_t n = DecodeUtf8(s, begin, &cp);
    if (!IsPythonSpace(cp)) break;
    begin += n;
  }
  size_t end = s.size();
  while (end > begin) {
    // Step back to the start of the last code point.
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80 &&
           end - start < 4) {
      --start;
    }
    uint32_t cp;
    const size_t n = DecodeUtf8(s, start, &cp);
    if (start + n != end || !IsPythonSpace(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

// Undoes the escapes of a Jinja string literal (the ones templates use).
inline std::string UnescapeJinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      switch (c) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        default:
          out += c;
          break;  // \\ \' \"
      }
    } else {
      out += s[i];
    }
  }
  return out;
}

// Text of a string literal in `jinja` that starts with `prefix` and runs to
// `terminator` (both excluded), as long as no quote or Jinja syntax lies in
// between, i.e. it really is one literal. Escapes are undone. Empty when not
// found.
inline std::string FindLiteralText(std::string_view jinja,
                                   std::string_view prefix,
                                   std::string_view terminator) {
  for (size_t pos = jinja.find(prefix); pos != std::string_view::npos;
       pos = jinja.find(prefix, pos + 1)) {
    const size_t start = pos + prefix.size();
    const size_t end = jinja.find(terminator, start);
    if (end == std::string_view::npos) return {};
    const std::string_view text = jinja.substr(start, end - start);
    if (text.find_first_of("'\"{}") == std::string_view::npos) {
      return UnescapeJinja(text);
    }
  }
  return {};
}

}  // namespace detail

// Recognises the family of a Jinja chat template by markers only that
// family uses. An empty or unrecognised template is an error naming the
// known families (the caller may then force one with ChatTemplateFromName).
inline Status DetectChatTemplate(std::string_view jinja,
                                 ChatTemplateKind* out) {
  using detail::Contains;
  if (jinja.empty()) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "chat template: the template is empty; known families: "
                      "%s",
                      KnownChatTemplates());
  }
  if (Contains(jinja, "<|im_start|>")) {
    *out = ChatTemplateKind::kChatMl;
  } else if (Contains(jinja, "<|start_header_id|>")) {
    *out = Contains(jinja, "Cutting Knowledge Date")
               ? ChatTemplateKind::kLlama31
               : ChatTemplateKind::kLlama3;
  } else if (Contains(jinja, "<start_of_turn>")) {
    *out = ChatTemplateKind::kGemma;
  } else if (Contains(jinja, "<|user|>") && Contains(jinja, "<|assistant|>")) {
    *out = ChatTemplateKind::kPhi3;
  } else if (Contains(jinja, "[INST]") && Contains(jinja, "<<SYS>>")) {
    // Mistral's [INST] templates have no <<SYS>> and differ in spacing.
    *out = ChatTemplateKind::kLlama2;
  } else {
    return MakeStatus(StatusCode::kUnsupported,
                      "chat template: unrecognised template (%zu bytes, starts "
                      "\"%.40s\"); known families: %s; force one by name",
                      jinja.size(), std::string(jinja.substr(0, 40)).c_str(),
                      KnownChatTemplates());
  }
  return Status::Ok();
}

// "chatml", "llama3", "llama3.1" (or "llama31"), "gemma", "llama2", "phi3";
// case-insensitive.
inline Status ChatTemplateFromName(std::string_view name,
                                   ChatTemplateKind* out) {
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (lower == "llama31") lower = "llama3.1";
  for (ChatTemplateKind kind :
       {ChatTemplateKind::kChatMl, ChatTemplateKind::kLlama3,
        ChatTemplateKind::kLlama31, ChatTemplateKind::kGemma,
        ChatTemplateKind::kLlama2, ChatTemplateKind::kPhi3}) {
    if (lower == ChatTemplateName(kind)) {
      *out = kind;
      return Status::Ok();
    }
  }
  return MakeStatus(StatusCode::kInvalidArgument,
                    "chat template: unknown name \"%s\"; known families: %s",
                    std::string(name).c_str(), KnownChatTemplates());
}

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

class ChatFormatter {
 public:
  // From the model's template text: detects the family. An empty template
  // (the model has none) gives ChatML with used_default() set, so the
  // caller can print a notice.
  static Status FromTemplate(std::string_view jinja, ChatFormatter* out) {
    if (jinja.empty()) {
      QKERN_RETURN_IF_ERROR(FromKind(ChatTemplateKind::kChatMl, jinja, out));
      out->used_default_ = true;
      return Status::Ok();
    }
    ChatTemplateKind kind = ChatTemplateKind::kChatMl;
    QKERN_RETURN_IF_ERROR(DetectChatTemplate(jinja, &kind));
    return FromKind(kind, jinja, out);
  }

  // A forced family. `jinja` (may be empty) still supplies the defaults the
  // template text carries: ChatML's default system message, Llama-3.1's
  // header lines.
  static Status FromKind(ChatTemplateKind kind, std::string_view jinja,
                         ChatFormatter* out) {
    ChatFormatter f;
    f.kind_ = kind;
    switch (kind) {
      case ChatTemplateKind::kChatMl:
        // Only a template that checks for a leading system message injects
        // one (SmolLM2: "You are a helpful AI assistant named SmolLM, ...",
        // Qwen2: "You are a helpful assistant.").
        if (detail::Contains(jinja, "!= 'system'") ||
            detail::Contains(jinja, "!= \"system\"")) {
          f.default_system_ = detail::FindLiteralText(
              jinja, "<|im_start|>system\n", "<|im_end|>");
          if (f.default_system_.empty()) {
            f.default_system_ = detail::FindLiteralText(
                jinja, "<|im_start|>system\\n", "<|im_end|>");
          }
          f.has_default_system_ = !f.default_system_.empty();
        }
        break;
      case ChatTemplateKind::kLlama31: {
        // The line ends in an escaped or a literal newline.
        std::string cutoff =
            detail::FindLiteralText(jinja, "Cutting Knowledge Date: ", "\\n");
        if (cutoff.empty()) {
          cutoff =
              detail::FindLiteralText(jinja, "Cutting Knowledge Date: ", "\n");
        }
        std::string date =
            detail::FindLiteralText(jinja, "date_string = \"", "\"");
        f.llama31_cutoff_ = cutoff.empty() ? "December 2023" : cutoff;
        f.llama31_date_ = date.empty() ? "26 Jul 2024" : date;
        break;
      }
      default:
        break;
    }
    *out = std::move(f);
    return Status::Ok();
  }

  ChatTemplateKind kind() const { return kind_; }
  // True when the model had no template and ChatML was assumed.
  bool used_default() const { return used_default_; }
  // The system message injected when the conversation has none (empty if
  // the template injects none).
  const std::string& default_system() const { return default_system_; }

  // BOS text the template starts with ("" for chatml and phi3).
  std::string_view bos_text() const {
    switch (kind_) {
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        return "<|begin_of_text|>";
      case ChatTemplateKind::kGemma:
        return "<bos>";
      case ChatTemplateKind::kLlama2:
        return "<s>";
      default:
        return "";
    }
  }
  void set_render_bos(bool on) { render_bos_ = on; }

  // The marker a reply ends with; the model emits it to stop.
  std::string_view EndOfTurn() const {
    switch (kind_) {
      case ChatTemplateKind::kChatMl:
        return "<|im_end|>";
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        return "<|eot_id|>";
      case ChatTemplateKind::kGemma:
        return "<end_of_turn>";
      case ChatTemplateKind::kLlama2:
        return "</s>";
      case ChatTemplateKind::kPhi3:
        return "<|end|>";
    }
    return "";
  }

  // Strings that end generation: the end-of-turn marker, plus the family's
  // other end tokens.
  std::vector<std::string> StopStrings() const {
    std::vector<std::string> stops = {std::string(EndOfTurn())};
    switch (kind_) {
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        stops.push_back("<|end_of_text|>");
        break;
      case ChatTemplateKind::kGemma:
        stops.push_back("<eos>");
        break;
      case ChatTemplateKind::kPhi3:
        stops.push_back("<|endoftext|>");
        break;
      default:
        break;
    }
    return stops;
  }

  // Text the template renders for messages [0, n) and, with
  // add_generation_prompt, the opening of the assistant's turn.
  Status Render(const std::vector<ChatMessage>& messages,
                bool add_generation_prompt, std::string* out) const {
    std::string text;
    QKERN_RETURN_IF_ERROR(Validate(messages));
    AppendPreamble(messages, &text);
    for (size_t i = 0; i < messages.size(); ++i) {
      AppendOpen(messages, i, &text);
      AppendBody(messages, i, &text);
      AppendClose(messages, i, &text);
    }
    if (add_generation_prompt) {
      text += GenerationPrompt();
    } else if (kind_ == ChatTemplateKind::kPhi3) {
      text += "<|endoftext|>";  // Phi-3 ends a closed conversation with EOS
    }
    *out = std::move(text);
    return Status::Ok();
  }

  // What the template renders for an assistant reply with this content
  // (between the generation prompt and the end of the turn).
  std::string RenderedReply(std::string_view content) const {
    switch (kind_) {
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
      case ChatTemplateKind::kGemma:
        return std::string(detail::PythonStrip(content));
      case ChatTemplateKind::kLlama2:
        return " " + std::string(detail::PythonStrip(content));
      default:
        return std::string(content);
    }
  }

  // The text to feed after the model's reply messages[reply_index]
  // (an assistant message whose content the model generated right after
  // Render(messages[0, reply_index), true)): the end of that turn (less
  // EndOfTurn() if the app already fed it), messages (reply_index, n), and
  // the generation prompt. See the invariant at the top of this file.
  Status RenderNextTurn(const std::vector<ChatMessage>& messages,
                        size_t reply_index, bool end_of_turn_in_cache,
                        std::string* out) const {
    if (reply_index >= messages.size() ||
        messages[reply_index].role != "assistant") {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "chat template: reply_index %zu must name an "
                        "assistant message (have %zu messages)",
                        reply_index, messages.size());
    }
    if (reply_index == 0) {
      // Nothing before it: the reply would swallow the preamble and the
      // first-message decorations (BOS, default system message).
      return MakeStatus(StatusCode::kInvalidArgument,
                        "chat template: reply_index 0: the conversation must "
                        "start with a prompt");
    }
    QKERN_RETURN_IF_ERROR(Validate(messages));
    std::string text;
    AppendClose(messages, reply_index, &text);
    const std::string_view eot = EndOfTurn();
    if (end_of_turn_in_cache) {
      const size_t at = text.find(eot);
      if (at == std::string::npos) {
        return MakeStatus(StatusCode::kUnsupported,
                          "chat template: turn end lacks %s",
                          std::string(eot).c_str());
      }
      text.erase(0, at + eot.size());
    }
    for (size_t i = reply_index + 1; i < messages.size(); ++i) {
      AppendOpen(messages, i, &text);
      AppendBody(messages, i, &text);
      AppendClose(messages, i, &text);
    }
    text += GenerationPrompt();
    *out = std::move(text);
    return Status::Ok();
  }

 private:
  bool IsSystem(const std::vector<ChatMessage>& m, size_t i) const {
    return m[i].role == "system";
  }

  // The template's own errors (raise_exception), with its wording.
  Status Validate(const std::vector<ChatMessage>& m) const {
    if (kind_ == ChatTemplateKind::kGemma) {
      if (!m.empty() && IsSystem(m, 0)) {
        return MakeStatus(StatusCode::kInvalidArgument,
                          "chat template gemma: System role not supported");
      }
      for (size_t i = 0; i < m.size(); ++i) {
        if ((m[i].role == "user") != (i % 2 == 0)) {
          return AlternationError(i);
        }
      }
    }
    if (kind_ == ChatTemplateKind::kLlama2) {
      const size_t first = !m.empty() && IsSystem(m, 0) ? 1 : 0;
      for (size_t i = first; i < m.size(); ++i) {
        if ((m[i].role == "user") != ((i - first) % 2 == 0)) {
          return AlternationError(i);
        }
      }
    }
    if (kind_ == ChatTemplateKind::kLlama31) {
      for (size_t i = 0; i < m.size(); ++i) {
        if (m[i].role == "tool" || m[i].role == "ipython") {
          return MakeStatus(StatusCode::kUnsupported,
                            "chat template llama3.1: message %zu has role "
                            "\"%s\"; tool messages are not supported",
                            i, m[i].role.c_str());
        }
      }
    }
    return Status::Ok();
  }
  Status AlternationError(size_t i) const {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "chat template %s: Conversation roles must alternate "
                      "user/assistant/user/assistant/... (message %zu)",
                      ChatTemplateName(kind_), i);
  }

  std::string_view GenerationPrompt() const {
    switch (kind_) {
      case ChatTemplateKind::kChatMl:
        return "<|im_start|>assistant\n";
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        return "<|start_header_id|>assistant<|end_header_id|>\n\n";
      case ChatTemplateKind::kGemma:
        return "<start_of_turn>model\n";
      case ChatTemplateKind::kLlama2:
        return "";  // the reply follows [/INST]
      case ChatTemplateKind::kPhi3:
        return "<|assistant|>\n";
    }
    return "";
  }

  // Text before the first message that doesn't belong to any message.
  void AppendPreamble(const std::vector<ChatMessage>& m,
                      std::string* out) const {
    if (kind_ == ChatTemplateKind::kGemma ||
        kind_ == ChatTemplateKind::kLlama31) {
      if (render_bos_) *out += bos_text();
    }
    if (kind_ == ChatTemplateKind::kLlama31) {
      *out += "<|start_header_id|>system<|end_header_id|>\n\n";
      *out += "Cutting Knowledge Date: " + llama31_cutoff_ + "\n";
      *out += "Today Date: " + llama31_date_ + "\n\n";
      if (!m.empty() && IsSystem(m, 0)) {
        *out += detail::PythonStrip(m[0].content);
      }
      *out += "<|eot_id|>";
    }
  }

  // A message is open + body + close; body is the content as rendered, so
  // that RenderNextTurn can start right after a generated reply.
  void AppendOpen(const std::vector<ChatMessage>& m, size_t i,
                  std::string* out) const {
    const ChatMessage& msg = m[i];
    switch (kind_) {
      case ChatTemplateKind::kChatMl:
        if (i == 0 && has_default_system_ && !IsSystem(m, 0)) {
          *out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
        }
        *out += "<|im_start|>" + msg.role + "\n";
        break;
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        if (kind_ == ChatTemplateKind::kLlama31 && i == 0 && IsSystem(m, 0)) {
          break;  // in the preamble
        }
        if (kind_ == ChatTemplateKind::kLlama3 && i == 0 && render_bos_) {
          *out += bos_text();
        }
        *out += "<|start_header_id|>" + msg.role + "<|end_header_id|>\n\n";
        break;
      case ChatTemplateKind::kGemma:
        *out += "<start_of_turn>";
        *out += msg.role == "assistant" ? std::string("model") : msg.role;
        *out += "\n";
        break;
      case ChatTemplateKind::kLlama2:
        if (msg.role == "user") {
          const bool first_user = i == 0 || (i == 1 && IsSystem(m, 0));
          if (!first_user || render_bos_) *out += bos_text();
          *out += "[INST] ";
        }
        break;
      case ChatTemplateKind::kPhi3:
        if (msg.role == "system" || msg.role == "user" ||
            msg.role == "assistant") {
          *out += "<|" + msg.role + "|>\n";
        }
        break;
    }
  }

  void AppendBody(const std::vector<ChatMessage>& m, size_t i,
                  std::string* out) const {
    const ChatMessage& msg = m[i];
    switch (kind_) {
      case ChatTemplateKind::kChatMl:
        *out += msg.content;
        break;
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        if (kind_ == ChatTemplateKind::kLlama31 && i == 0 && IsSystem(m, 0)) {
          break;
        }
        *out += detail::PythonStrip(msg.content);
        break;
      case ChatTemplateKind::kGemma:
        *out += detail::PythonStrip(msg.content);
        break;
      case ChatTemplateKind::kLlama2: {
        if (IsSystem(m, i) && i == 0) break;  // folded into the first turn
        std::string content = msg.content;
        if (i == 1 && IsSystem(m, 0)) {
          content = "<<SYS>>\n" + m[0].content + "\n<</SYS>>\n\n" + content;
        }
        if (msg.role == "user") {
          *out += detail::PythonStrip(content);
        } else if (msg.role == "assistant") {
          *out += " ";
          *out += detail::PythonStrip(content);
        }
        break;
      }
      case ChatTemplateKind::kPhi3:
        if (msg.role == "system" || msg.role == "user" ||
            msg.role == "assistant") {
          *out += msg.content;
        }
        break;
    }
  }

  void AppendClose(const std::vector<ChatMessage>& m, size_t i,
                   std::string* out) const {
    const ChatMessage& msg = m[i];
    switch (kind_) {
      case ChatTemplateKind::kChatMl:
        *out += "<|im_end|>\n";
        break;
      case ChatTemplateKind::kLlama3:
      case ChatTemplateKind::kLlama31:
        if (kind_ == ChatTemplateKind::kLlama31 && i == 0 && IsSystem(m, 0)) {
          break;
        }
        *out += "<|eot_id|>";
        break;
      case ChatTemplateKind::kGemma:
        *out += "<end_of_turn>\n";
        break;
      case ChatTemplateKind::kLlama2:
        if (i == 0 && IsSystem(m, 0)) break;
        if (msg.role == "user") *out += " [/INST]";
        if (msg.role == "assistant") *out += " </s>";
        break;
      case ChatTemplateKind::kPhi3:
        if (msg.role == "system" || msg.role == "user" ||
            msg.role == "assistant") {
          *out += "<|end|>\n";
        }
        break;
    }
  }

  ChatTemplateKind kind_ = ChatTemplateKind::kChatMl;
  bool used_default_ = false;
  bool render_bos_ = false;
  bool has_default_system_ = false;
  std::string default_system_;
  std::string llama31_cutoff_;
  std::string llama31_date_;
};

}  // namespace qkern

#endif  // QKERN_MODEL_CHAT_TEMPLATE_H_
