// qkern-chat: an offline chat with a GGUF model, on qkern's kernels.
//
//   qkern-chat -m MODEL.gguf                       interactive
//   qkern-chat -m MODEL.gguf -p "PROMPT" -n 64 --temp 0     one reply
//
// Interactive: replies stream as they are generated; the conversation stays
// in the KV cache, so each turn only prefills what is new. /reset starts
// over, /quit (or end of input) leaves, Ctrl-C stops a reply (and, at the
// prompt, leaves). After each reply a line of statistics goes to stderr.
// One reply (-p): only the reply goes to stdout, statistics to stderr.
//
// Private by construction: no network, and nothing is written anywhere
// unless --log FILE asks for a transcript.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "qkern/model/chat_template.h"
#include "qkern/model/decoder.h"
#include "qkern/model/sampler.h"
#include "qkern/model/tokenizer.h"
#include "qkern/target.h"

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_interrupted = 0;

void OnInterrupt(int) { g_interrupted = 1; }

struct Options {
  std::string model;
  std::string prompt;
  bool one_shot = false;
  std::string system;
  bool has_system = false;
  long n_predict = -1;  // -1: until the model ends its turn or the context
  size_t threads = 0;
  size_t context = 0;
  qkern::KvFormat kv = qkern::KvFormat::kF16;
  qkern::SamplerConfig sampling;
  std::string template_name;
  std::string log_path;
};

[[noreturn]] void Usage(const std::string& why) {
  fprintf(stderr,
          "qkern-chat: %s\n"
          "usage: qkern-chat -m MODEL.gguf [-p PROMPT] [options]\n"
          "  -p PROMPT         answer one prompt, print only the reply, exit\n"
          "  -n N              at most N reply tokens (default: until the turn ends)\n"
          "  --system TEXT     system message\n"
          "  -t THREADS        threads (default: the performance cores, %zu here)\n"
          "  -c CONTEXT        context length in tokens (default: min(model, 4096))\n"
          "  --kv f16|int8     KV cache storage (default f16)\n"
          "  --temp T          temperature, 0 = greedy (default 0.8)\n"
          "  --top-k K --top-p P --min-p P --repeat-penalty R --seed S\n"
          "  --template NAME   chat template family (default: from the model)\n"
          "  --log FILE        append a transcript to FILE (off by default)\n",
          why.c_str(), qkern::ThreadPool::DefaultNumThreads());
  exit(2);
}

double ParseNumber(const std::string& flag, const char* text, double lo,
                   double hi) {
  char* end = nullptr;
  errno = 0;
  const double v = strtod(text, &end);
  if (end == text || *end != '\0' || errno != 0 || !(v >= lo && v <= hi)) {
    Usage("bad value '" + std::string(text) + "' for " + flag);
  }
  return v;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage("missing value for " + flag);
      return argv[++i];
    };
    if (flag == "-m" || flag == "--model") {
      o.model = value();
    } else if (flag == "-p" || flag == "--prompt") {
      o.prompt = value();
      o.one_shot = true;
    } else if (flag == "-n") {
      o.n_predict = static_cast<long>(ParseNumber(flag, value(), -1, 1 << 24));
    } else if (flag == "--system") {
      o.system = value();
      o.has_system = true;
    } else if (flag == "-t" || flag == "--threads") {
      o.threads = static_cast<size_t>(ParseNumber(flag, value(), 1, 1024));
    } else if (flag == "-c" || flag == "--ctx") {
      o.context = static_cast<size_t>(ParseNumber(flag, value(), 16, 1 << 24));
    } else if (flag == "--kv") {
      const std::string kv = value();
      if (kv == "f16") o.kv = qkern::KvFormat::kF16;
      else if (kv == "int8") o.kv = qkern::KvFormat::kInt8;
      else if (kv == "f32") o.kv = qkern::KvFormat::kF32;
      else Usage("--kv takes f16, int8 or f32");
    } else if (flag == "--temp") {
      o.sampling.temperature = static_cast<float>(ParseNumber(flag, value(), 0, 100));
    } else if (flag == "--top-k") {
      o.sampling.top_k = static_cast<size_t>(ParseNumber(flag, value(), 0, 1 << 24));
    } else if (flag == "--top-p") {
      o.sampling.top_p = static_cast<float>(ParseNumber(flag, value(), 0, 1));
    } else if (flag == "--min-p") {
      o.sampling.min_p = static_cast<float>(ParseNumber(flag, value(), 0, 1));
    } else if (flag == "--repeat-penalty") {
      o.sampling.repeat_penalty = static_cast<float>(ParseNumber(flag, value(), 0, 100));
    } else if (flag == "--seed") {
      o.sampling.seed = static_cast<uint64_t>(ParseNumber(flag, value(), 0, 9e15));
    } else if (flag == "--template") {
      o.template_name = value();
    } else if (flag == "--log") {
      o.log_path = value();
    } else if (flag == "-h" || flag == "--help") {
      Usage("offline chat on qkern");
    } else {
      Usage("unknown argument " + flag);
    }
  }
  if (o.model.empty()) Usage("-m MODEL is required");
  return o;
}

[[noreturn]] void Fail(const qkern::Status& status) {
  fprintf(stderr, "qkern-chat: %s\n", status.message().c_str());
  exit(1);
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The conversation: its messages, and what of it the KV cache holds.
class Chat {
 public:
  Chat(const Options& options, const qkern::Tokenizer& tokenizer,
       const qkern::ChatFormatter& formatter, qkern::Decoder* decoder,
       qkern::Sampler* sampler)
      : options_(options),
        tokenizer_(tokenizer),
        formatter_(formatter),
        decoder_(decoder),
        sampler_(sampler),
        logits_(decoder->vocab_size()) {}

  qkern::Status Reset() {
    messages_.clear();
    if (options_.has_system) messages_.push_back({"system", options_.system});
    sampler_->Reset();
    end_of_turn_in_cache_ = false;
    if (decoder_->cache().HasSequence(kSeq)) {
      QKERN_RETURN_IF_ERROR(decoder_->FreeSequence(kSeq));
    }
    return decoder_->AddSequence(kSeq);
  }

  // Answers `user`, streaming the reply to `out`. Returns the reply's text.
  qkern::Status Turn(const std::string& user, FILE* out, std::string* reply) {
    reply->clear();
    const size_t bad = qkern::FindInvalidUtf8(user);
    if (bad != user.size()) {
      return qkern::MakeStatus(qkern::StatusCode::kInvalidArgument,
                               "your message is not valid UTF-8 (byte %zu = "
                               "0x%02X)",
                               bad, static_cast<unsigned char>(user[bad]));
    }
    const size_t reply_index = messages_.size() - (messages_.empty() ? 0 : 1);
    std::vector<qkern::ChatMessage> next = messages_;
    next.push_back({"user", user});
    std::string text;
    size_t length = 0;
    QKERN_RETURN_IF_ERROR(decoder_->Length(kSeq, &length));
    std::vector<int32_t> tokens;
    if (length == 0) {
      QKERN_RETURN_IF_ERROR(formatter_.Render(next, true, &text));
      if (tokenizer_.add_bos() && tokenizer_.bos_id() >= 0) {
        tokens.push_back(tokenizer_.bos_id());
      }
    } else {
      QKERN_RETURN_IF_ERROR(formatter_.RenderNextTurn(
          next, reply_index, end_of_turn_in_cache_, &text));
    }
    const qkern::Status encoded = tokenizer_.Encode(text, true, &tokens);
    if (!encoded.ok()) {
      return qkern::MakeStatus(encoded.code(), "your message: %s",
                               encoded.message().c_str());
    }
    const size_t context = decoder_->context_length();
    if (length + tokens.size() >= context) {
      return qkern::MakeStatus(
          qkern::StatusCode::kOutOfRange,
          "the prompt needs %zu tokens but only %zu of the %zu-token context "
          "are left%s",
          tokens.size(), context - length, context,
          length > 0 ? "; /reset to start over" : "; use a larger -c");
    }

    const auto t0 = Clock::now();
    QKERN_RETURN_IF_ERROR(
        decoder_->Eval(kSeq, tokens.data(), tokens.size(), logits_.data()));
    for (int32_t t : tokens) sampler_->Accept(t);
    const auto t_prefill = Clock::now();
    messages_ = next;

    qkern::TokenStreamDecoder stream(&tokenizer_);
    size_t generated = 0;
    std::string piece;
    Clock::time_point t_first = t_prefill;
    const char* stop_reason = "length";
    while (options_.n_predict < 0 ||
           generated < static_cast<size_t>(options_.n_predict)) {
      if (g_interrupted) {
        stop_reason = "interrupted";
        break;
      }
      int32_t token = 0;
      QKERN_RETURN_IF_ERROR(sampler_->Sample(logits_.data(), &token));
      if (generated == 0) t_first = Clock::now();
      if (tokenizer_.IsEndOfGeneration(token)) {
        stop_reason = "end of turn";
        break;
      }
      ++generated;
      piece.clear();
      stream.Push(token, &piece);
      reply->append(piece);
      fputs(piece.c_str(), out);
      fflush(out);
      QKERN_RETURN_IF_ERROR(decoder_->Length(kSeq, &length));
      if (length + 1 >= context) {
        stop_reason = "context full: /reset to start over";
        break;
      }
      QKERN_RETURN_IF_ERROR(decoder_->Eval(kSeq, &token, 1, logits_.data()));
    }
    piece.clear();
    stream.Flush(&piece);
    reply->append(piece);
    fputs(piece.c_str(), out);
    fputc('\n', out);
    fflush(out);
    g_interrupted = 0;
    // The end-of-turn token the model emitted was sampled but not fed; the
    // next turn's text starts with it (RenderNextTurn).
    end_of_turn_in_cache_ = false;
    messages_.push_back({"assistant", *reply});

    const auto t_end = Clock::now();
    const double prefill_s = Seconds(t0, t_prefill);
    const double decode_s = Seconds(t_first, t_end);
    QKERN_RETURN_IF_ERROR(decoder_->Length(kSeq, &length));
    fprintf(stderr,
            "[prompt %zu tok, %.1f tok/s | reply %zu tok, %.1f tok/s | first "
            "token %.0f ms | context %zu/%zu | %s]\n",
            tokens.size(), tokens.size() / prefill_s, generated,
            generated > 1 ? (generated - 1) / decode_s : 0.0,
            1e3 * Seconds(t0, t_first), length, context, stop_reason);
    return qkern::Status::Ok();
  }

 private:
  static constexpr qkern::KvSeqId kSeq = 0;
  const Options& options_;
  const qkern::Tokenizer& tokenizer_;
  const qkern::ChatFormatter& formatter_;
  qkern::Decoder* decoder_;
  qkern::Sampler* sampler_;
  std::vector<float> logits_;
  std::vector<qkern::ChatMessage> messages_;
  bool end_of_turn_in_cache_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  Options options = ParseArgs(argc, argv);
  const auto t_start = Clock::now();

  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = OnInterrupt;  // no SA_RESTART: a read at the prompt ends
  sigaction(SIGINT, &action, nullptr);

  const size_t threads =
      options.threads != 0 ? options.threads : qkern::ThreadPool::DefaultNumThreads();
  qkern::ThreadPool pool(threads);
  const qkern::ParallelRunner runner = pool.Runner();

  qkern::Model model;
  qkern::Status status = qkern::Model::Load(options.model, &model, &runner);
  if (!status.ok()) Fail(status);
  for (const std::string& note : model.notes().lines) {
    fprintf(stderr, "qkern-chat: note: %s\n", note.c_str());
  }
  qkern::Tokenizer tokenizer;
  status = qkern::Tokenizer::FromGguf(model.file(), &tokenizer);
  if (!status.ok()) Fail(status);

  std::string_view jinja;
  status = model.file().GetStringOr("tokenizer.chat_template", "", &jinja);
  if (!status.ok()) Fail(status);
  qkern::ChatFormatter formatter;
  if (!options.template_name.empty()) {
    qkern::ChatTemplateKind kind = qkern::ChatTemplateKind::kChatMl;
    status = qkern::ChatTemplateFromName(options.template_name, &kind);
    if (status.ok()) status = qkern::ChatFormatter::FromKind(kind, jinja, &formatter);
  } else {
    status = qkern::ChatFormatter::FromTemplate(jinja, &formatter);
  }
  if (!status.ok()) Fail(status);
  if (formatter.used_default()) {
    fprintf(stderr, "qkern-chat: note: the model has no chat template; using ChatML\n");
  }

  qkern::DecoderOptions decoder_options;
  decoder_options.runner = &runner;
  decoder_options.kv_format = options.kv;
  const size_t model_context = model.config().context_length;
  decoder_options.context_length =
      options.context != 0 ? options.context
                           : (model_context < 4096 ? model_context : 4096);
  qkern::Decoder decoder;
  status = qkern::Decoder::Create(model, decoder_options, &decoder);
  if (!status.ok()) Fail(status);
  qkern::Sampler sampler;
  status = qkern::Sampler::Create(options.sampling, decoder.vocab_size(), &sampler);
  if (!status.ok()) Fail(status);

  FILE* log = nullptr;
  if (!options.log_path.empty()) {
    log = fopen(options.log_path.c_str(), "a");
    if (log == nullptr) {
      fprintf(stderr, "qkern-chat: cannot open --log %s: %s\n",
              options.log_path.c_str(), strerror(errno));
      return 1;
    }
  }

  Chat chat(options, tokenizer, formatter, &decoder, &sampler);
  status = chat.Reset();
  if (!status.ok()) Fail(status);
  fprintf(stderr, "qkern-chat: %s, %zu layers, %s, %zu threads, context %zu, "
          "kv %s; loaded in %.0f ms\n",
          model.config().name.c_str(), model.config().num_layers,
          qkern::ActiveTargetName().c_str(), decoder.num_threads(),
          decoder.context_length(), qkern::GetKvFormatInfo(options.kv).name,
          1e3 * Seconds(t_start, Clock::now()));

  std::string reply;
  if (options.one_shot) {
    status = chat.Turn(options.prompt, stdout, &reply);
    if (!status.ok()) Fail(status);
    if (log != nullptr) {
      fprintf(log, "user: %s\nassistant: %s\n", options.prompt.c_str(), reply.c_str());
      fclose(log);
    }
    return 0;
  }

  const bool tty = isatty(STDIN_FILENO);
  if (tty) fprintf(stderr, "Type a message; /reset starts over, /quit leaves, Ctrl-C stops a reply.\n");
  std::string line;
  while (true) {
    if (tty) {
      fputs("> ", stdout);
      fflush(stdout);
    }
    g_interrupted = 0;
    if (!std::getline(std::cin, line)) break;  // EOF, or Ctrl-C at the prompt
    if (line == "/quit" || line == "/exit") break;
    if (line == "/reset") {
      status = chat.Reset();
      if (!status.ok()) Fail(status);
      fprintf(stderr, "(conversation reset)\n");
      continue;
    }
    if (line.empty()) continue;
    status = chat.Turn(line, stdout, &reply);
    if (!status.ok()) {
      fprintf(stderr, "qkern-chat: %s\n", status.message().c_str());
      continue;
    }
    if (log != nullptr) {
      fprintf(log, "user: %s\nassistant: %s\n", line.c_str(), reply.c_str());
      fflush(log);
    }
  }
  if (log != nullptr) fclose(log);
  return 0;
}
