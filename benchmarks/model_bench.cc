// qkern-bench: end-to-end prefill and decode speed of a GGUF model on qkern,
// measured the way llama.cpp's llama-bench measures (pp = a prompt of P
// tokens from an empty context, tg = N tokens decoded one at a time after a
// context of D tokens, 0 unless -d, prefilled untimed), so the two can be
// compared on the same file.
//
//   qkern-bench -m MODEL [-p 512] [-n 128] [-d 0] [-t 1,2] [-r 3]
//               [--kv f16|int8] [--json]
//
// Per thread count: prefill and decode tok/s (median of the repetitions),
// time to first token (the prefill of P tokens up to its logits), peak RSS,
// bytes the decode reads per token (the weights, plus the KV cache of the
// context on average over the N steps), the GB/s that implies, and that as a
// fraction of the read bandwidth measured right after each decode run (see
// RoofNow).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "qkern/model/decoder.h"
#include "qkern/target.h"
#include "roofline.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double PeakRssMiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}

struct Args {
  std::string model;
  size_t prompt = 512;
  size_t decode = 128;
  size_t depth = 0;  // context before the decoded tokens
  std::vector<size_t> threads;
  size_t reps = 3;
  qkern::KvFormat kv = qkern::KvFormat::kF16;
  bool json = false;
};

[[noreturn]] void Usage(const char* why) {
  fprintf(stderr,
          "qkern-bench: %s\n"
          "usage: qkern-bench -m MODEL.gguf [-p PROMPT_TOKENS=512] "
          "[-n DECODE_TOKENS=128] [-d DEPTH_TOKENS=0] [-t THREADS,...] "
          "[-r REPS=3] "
          "[--kv f16|int8] [--json]\n",
          why);
  exit(2);
}

size_t ParseCount(const char* flag, const char* text) {
  char* end = nullptr;
  const unsigned long long v = strtoull(text, &end, 10);
  if (end == text || *end != '\0' || v > (1ull << 24)) {
    std::string why = std::string("bad value '") + text + "' for " + flag;
    Usage(why.c_str());
  }
  return static_cast<size_t>(v);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage(("missing value for " + flag).c_str());
      return argv[++i];
    };
    if (flag == "-m") {
      a.model = value();
    } else if (flag == "-p") {
      a.prompt = ParseCount("-p", value());
    } else if (flag == "-n") {
      a.decode = ParseCount("-n", value());
    } else if (flag == "-d") {
      a.depth = ParseCount("-d", value());
    } else if (flag == "-r") {
      a.reps = ParseCount("-r", value());
      if (a.reps == 0) Usage("-r must be at least 1");
    } else if (flag == "-t") {
      std::string list = value();
      size_t start = 0;
      while (start <= list.size()) {
        const size_t comma = std::min(list.find(',', start), list.size());
        const size_t t =
            ParseCount("-t", list.substr(start, comma - start).c_str());
        if (t == 0 || t > 1024) Usage("thread counts must be in [1, 1024]");
        a.threads.push_back(t);
        start = comma + 1;
      }
    } else if (flag == "--kv") {
      const std::string kv = value();
      if (kv == "f16")
        a.kv = qkern::KvFormat::kF16;
      else if (kv == "int8")
        a.kv = qkern::KvFormat::kInt8;
      else if (kv == "f32")
        a.kv = qkern::KvFormat::kF32;
      else
        Usage("--kv takes f16, int8 or f32");
    } else if (flag == "--json") {
      a.json = true;
    } else if (flag == "-h" || flag == "--help") {
      Usage("help");
    } else {
      Usage(("unknown argument " + flag).c_str());
    }
  }
  if (a.model.empty()) Usage("-m MODEL is required");
  if (a.prompt == 0 && a.decode == 0) Usage("nothing to measure (-p 0 -n 0)");
  if (a.threads.empty()) {
    a.threads.push_back(1);
    const size_t all = qkern::ThreadPool::DefaultNumThreads();
    if (all > 1) a.threads.push_back(all);
  }
  return a;
}

struct Result {
  size_t threads = 0;
  double prefill_tok_s = 0, decode_tok_s = 0, ttft_ms = 0;
  double decode_gb_s = 0, roof_gb_s = 0, roof_fraction = 0;
};

// The read-bandwidth roof with `threads` threads, measured in a child
// process right after a decode run: on a shared machine the bandwidth moves
// from minute to minute (a 2-thread roof of 40 or 66 GB/s on the same VM),
// so decode is compared with the roof of the same moment; and the child's
// 1 GiB buffer stays out of this process's peak RSS.
double RoofNow(size_t threads) {
  int fds[2];
  if (pipe(fds) != 0) return 0.0;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const double gbs = qkern::bench::ReadBandwidthGBs(threads);
    ssize_t ignored = write(fds[1], &gbs, sizeof(gbs));
    (void)ignored;
    _exit(0);
  }
  close(fds[1]);
  double gbs = 0.0;
  if (pid < 0 || read(fds[0], &gbs, sizeof(gbs)) != sizeof(gbs)) gbs = 0.0;
  close(fds[0]);
  if (pid > 0) waitpid(pid, nullptr, 0);
  return gbs;
}

void Check(const qkern::Status& s) {
  if (!s.ok()) {
    fprintf(stderr, "qkern-bench: %s\n", s.message().c_str());
    exit(1);
  }
}

// Bytes one decode step reads on average over the run: the weights, and the
// K and V (with int8 row scales) of every layer and kv head for the
// positions attended, depth + 1 up to depth + decode.
double DecodeStepBytes(const qkern::Model& model, const Args& a) {
  const qkern::ModelConfig& c = model.config();
  const qkern::KvFormatInfo& info = qkern::GetKvFormatInfo(a.kv);
  const double row = static_cast<double>(c.head_dim * info.element_bytes) +
                     (info.has_row_scale ? sizeof(float) : 0);
  const double positions = a.depth + (a.decode + 1) / 2.0;
  return static_cast<double>(model.weights().DecodeWeightBytes()) +
         2.0 * c.num_layers * c.num_kv_heads * row * positions;
}

Result Run(const qkern::Model& model, const Args& a, size_t threads) {
  qkern::ThreadPool pool(threads);
  const qkern::ParallelRunner runner = pool.Runner();
  qkern::DecoderOptions options;
  options.runner = &runner;
  options.kv_format = a.kv;
  options.context_length = std::max(a.prompt, a.depth + a.decode) + 1;
  options.max_batch = 128;
  qkern::Decoder decoder;
  Check(qkern::Decoder::Create(model, options, &decoder));
  const size_t vocab = decoder.vocab_size();
  std::vector<float> logits(vocab);
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(a.prompt);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);

  // One untimed warm-up of each path (page faults, pool start-up).
  Check(decoder.AddSequence(0));
  Check(decoder.Eval(0, prompt.data(), std::min<size_t>(a.prompt, 16),
                     logits.data()));
  Check(decoder.FreeSequence(0));

  std::vector<double> prefill, decode, ttft, roof, fraction;
  const double step_bytes = DecodeStepBytes(model, a);
  for (size_t rep = 0; rep < a.reps; ++rep) {
    if (a.prompt > 0) {
      Check(decoder.AddSequence(1));
      const auto t0 = Clock::now();
      Check(decoder.Eval(1, prompt.data(), prompt.size(), logits.data()));
      const double s = Seconds(t0, Clock::now());
      prefill.push_back(a.prompt / s);
      ttft.push_back(1e3 * s);
      Check(decoder.FreeSequence(1));
    }
    if (a.decode > 0) {
      Check(decoder.AddSequence(2));
      int32_t token = prompt.empty() ? 1 : prompt[0];
      if (a.depth > 0) {
        std::vector<int32_t> context(a.depth);
        for (int32_t& t : context) t = static_cast<int32_t>(rng() % vocab);
        Check(decoder.Eval(2, context.data(), context.size(), logits.data()));
      }
      const auto t0 = Clock::now();
      for (size_t i = 0; i < a.decode; ++i) {
        Check(decoder.Eval(2, &token, 1, logits.data()));
        token = static_cast<int32_t>(
            std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      decode.push_back(a.decode / Seconds(t0, Clock::now()));
      Check(decoder.FreeSequence(2));
      roof.push_back(RoofNow(threads));
      if (roof.back() > 0) {
        fraction.push_back(decode.back() * step_bytes / 1e9 / roof.back());
      }
    }
  }
  Result r;
  r.threads = threads;
  if (!prefill.empty()) {
    r.prefill_tok_s = Median(prefill);
    r.ttft_ms = Median(ttft);
  }
  if (!decode.empty()) {
    r.decode_tok_s = Median(decode);
    r.decode_gb_s = r.decode_tok_s * step_bytes / 1e9;
    r.roof_gb_s = Median(roof);
    r.roof_fraction = fraction.empty() ? 0.0 : Median(fraction);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = ParseArgs(argc, argv);
  const auto t0 = Clock::now();
  qkern::Model model;
  {
    const size_t threads =
        *std::max_element(a.threads.begin(), a.threads.end());
    qkern::ThreadPool pool(threads);
    const qkern::ParallelRunner runner = pool.Runner();
    Check(qkern::Model::Load(a.model, &model, &runner));
  }
  const double load_ms = 1e3 * Seconds(t0, Clock::now());
  for (const std::string& note : model.notes().lines) {
    fprintf(stderr, "qkern-bench: %s\n", note.c_str());
  }
  const double weight_mb =
      static_cast<double>(model.weights().DecodeWeightBytes()) / 1e6;
  const double step_mb = DecodeStepBytes(model, a) / 1e6;
  std::vector<Result> results;
  for (size_t t : a.threads) results.push_back(Run(model, a, t));
  const double rss = PeakRssMiB();
  const char* name = model.config().name.c_str();

  if (a.json) {
    printf("[\n");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      printf(
          "  {\"model\": \"%s\", \"target\": \"%s\", \"threads\": %zu, "
          "\"kv\": \"%s\", \"prefill_tokens\": %zu, \"decode_tokens\": %zu, "
          "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, "
          "\"ttft_ms\": %.2f, \"load_ms\": %.1f, \"peak_rss_mb\": %.1f, "
          "\"depth_tokens\": %zu, \"weight_mb_per_token\": %.2f, "
          "\"read_mb_per_token\": %.2f, \"decode_gb_s\": %.2f, "
          "\"read_roof_gb_s\": %.2f, \"roof_fraction\": %.3f}%s\n",
          a.model.c_str(), qkern::ActiveTargetName().c_str(), r.threads,
          qkern::GetKvFormatInfo(a.kv).name, a.prompt, a.decode,
          r.prefill_tok_s, r.decode_tok_s, r.ttft_ms, load_ms, rss, a.depth,
          weight_mb, step_mb, r.decode_gb_s, r.roof_gb_s, r.roof_fraction,
          i + 1 < results.size() ? "," : "");
    }
    printf("]\n");
    return 0;
  }
  printf("model: %s (%s), target %s, kv %s, load %.0f ms, peak RSS %.0f MiB\n",
         name, a.model.c_str(), qkern::ActiveTargetName().c_str(),
         qkern::GetKvFormatInfo(a.kv).name, load_ms, rss);
  printf(
      "read per decoded token: %.1f MB (weights %.1f MB, KV cache %.1f MB)\n",
      step_mb, weight_mb, step_mb - weight_mb);
  printf("%7s  %12s  %10s  %12s  %10s  %10s  %6s\n", "threads", "pp tok/s",
         "ttft ms", "tg tok/s", "tg GB/s", "roof GB/s", "roof%");
  for (const Result& r : results) {
    printf("%7zu  %12.1f  %10.1f  %12.1f  %10.2f  %10.2f  %5.0f%%\n", r.threads,
           r.prefill_tok_s, r.ttft_ms, r.decode_tok_s, r.decode_gb_s,
           r.roof_gb_s, 100 * r.roof_fraction);
  }
  printf(
      "(pp = %zu-token prompt, tg = %zu tokens after a %zu-token context; "
      "median of %zu; roof = read bandwidth measured right after each tg "
      "run, roof%% = median of tg GB/s / that roof)\n",
      a.prompt, a.decode, a.depth, a.reps);
  return 0;
}
