// Times decode attention call by call and prints the fastest, the 10th
// percentile and the median, as GB/s of KV bytes read. On a shared VM whose
// speed swings from second to second (the Zen 3 VM of 2026-12-06 alternated
// between two speeds about 2x apart), the fastest of a few thousand calls
// repeats within ~1% from run to run where the benchmark's mean does not, so
// alternating runs of two builds of this tool compare kernels.
//
//   g++ -O2 -std=c++17 -pthread -I include -o /tmp/decode_attention_timer
//       tools/decode_attention_timer.cc -lhwy
//   /tmp/decode_attention_timer smollm2|llama f16|int8 CONTEXT CALLS
//       [THREADS [LAYERS]]
//
// Shapes: SmolLM2-135M (9 q heads, 3 kv heads) or Llama-3.2-1B (32 / 8),
// head_dim 64, 16-token blocks (BLOCK_TOKENS in the environment overrides).
// One sequence of CONTEXT positions in LAYERS layers (default 1: the cache
// stays warm at short contexts); call i reads layer i % LAYERS, so enough
// layers make every call read from DRAM.
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "qkern/kernels/attention.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/threading/thread_pool.h"

namespace {

void Check(const qkern::Status& s) {
  if (!s.ok()) {
    fprintf(stderr, "decode_attention_timer: %s\n", s.message().c_str());
    exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qkern;
  if (argc < 5 || argc > 7) {
    fprintf(stderr,
            "usage: %s smollm2|llama f16|int8 CONTEXT CALLS [THREADS "
            "[LAYERS]]\n",
            argv[0]);
    return 2;
  }
  const bool llama = std::string(argv[1]) == "llama";
  const KvFormat format =
      std::string(argv[2]) == "int8" ? KvFormat::kInt8 : KvFormat::kF16;
  const size_t context = strtoul(argv[3], nullptr, 10);
  const size_t calls = strtoul(argv[4], nullptr, 10);
  const size_t threads = argc > 5 ? strtoul(argv[5], nullptr, 10) : 1;
  const size_t layers = argc > 6 ? strtoul(argv[6], nullptr, 10) : 1;
  const char* env_block = getenv("BLOCK_TOKENS");
  const std::string model = argv[1], kv = argv[2];
  if ((model != "smollm2" && model != "llama") ||
      (kv != "f16" && kv != "int8")) {
    fprintf(stderr, "model must be smollm2 or llama, KV f16 or int8\n");
    return 2;
  }
  if (context == 0 || calls == 0 || threads == 0 || layers == 0) {
    fprintf(stderr, "CONTEXT, CALLS, THREADS and LAYERS must be positive\n");
    return 2;
  }

  KvCacheConfig config;
  config.num_layers = layers;
  config.num_kv_heads = llama ? 8 : 3;
  config.head_dim = 64;
  config.block_tokens =
      env_block != nullptr ? strtoul(env_block, nullptr, 10) : 16;
  config.format = format;
  KvBlockLayout layout;
  Check(KvBlockLayout::Compute(layers, config.num_kv_heads, config.head_dim,
                               config.block_tokens, format, &layout));
  config.memory_budget_bytes =
      ((context + config.block_tokens - 1) / config.block_tokens) *
      layout.BlockBytes();
  PagedKvCache cache;
  Check(PagedKvCache::Create(config, &cache));
  Check(cache.AddSequence(1));
  Check(cache.ReserveTokens(1, context));
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> k(cache.RowFloats()), v(k.size());
  for (size_t pos = 0; pos < context; ++pos) {
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    for (size_t layer = 0; layer < layers; ++layer) {
      Check(cache.WriteKV(1, layer, pos, k.data(), v.data()));
    }
  }
  Check(cache.CommitTokens(1, context));

  AttentionParams params;
  params.num_q_heads = llama ? 32 : 9;
  params.num_kv_heads = config.num_kv_heads;
  params.head_dim = config.head_dim;
  std::vector<float> q(params.num_q_heads * params.head_dim), out(q.size());
  for (float& x : q) x = normal(rng);
  AttentionWorkspace ws;
  ThreadPool pool(threads);
  const ParallelRunner runner = pool.Runner();
  std::vector<double> seconds;
  for (size_t i = 0; i < calls; ++i) {
    const auto start = std::chrono::steady_clock::now();
    Check(Attention(cache, 1, i % layers, q.data(), 1, context - 1, out.data(),
                    params, &ws, &runner));
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(seconds.begin(), seconds.end());
  // K and V codes per position and kv head, plus int8's two row scales.
  const double row_bytes =
      format == KvFormat::kInt8 ? 2.0 * (64 + 4) : 2.0 * 64 * 2;
  const double bytes = context * config.num_kv_heads * row_bytes;
  auto gbs = [&](size_t i) { return bytes / seconds[i] / 1e9; };
  printf(
      "%s %s context %zu, %zu layers, %zu threads: fastest %.2f GB/s, p10 "
      "%.2f, median %.2f (out[0] %g)\n",
      argv[1], argv[2], context, layers, threads, gbs(0),
      gbs(seconds.size() / 10), gbs(seconds.size() / 2), out[0]);
  return 0;
}
