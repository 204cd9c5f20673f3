// Attention benchmarks on real model shapes.
//
// Decode (one query at the end of the context) is bound by reading the KV
// cache: its figure is GB/s of K/V bytes (values plus int8 row scales) and
// the fraction of the read bandwidth: "roof" for the mean call against the
// roof measured at the process's start (the best of five passes),
// "roof_best" for the fastest call against the same, and "roof_now" for the
// mean call against a roof measured right after the benchmark. On a shared
// machine whose bandwidth moves from minute to minute the two roofs can
// differ by half; then every fraction of that run is only indicative, and
// before/after comparisons need alternating runs. At 8K it also runs with the
// sequence's blocks scattered over the pool ("pages:scattered"), as a pool
// fragmented by many sequences leaves them. Prefill (a causal prompt) is
// compute bound: GFLOP/s (2 per multiply-add of q.k and p.v over the causal
// pairs) and the fraction of the f32 FMA peak.
//
//   qkern_bench --benchmark_filter=Attention/Decode/Llama
#include <benchmark/benchmark.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "qkern/kernels/attention.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/target.h"
#include "qkern/threading/thread_pool.h"
#include "roofline.h"

namespace qkern {
namespace bench {
namespace {

struct ModelShape {
  const char* name;
  size_t num_layers, num_q_heads, num_kv_heads, head_dim;
};

constexpr ModelShape kModels[] = {
    {"SmolLM2-135M", 30, 9, 3, 64},
    {"Llama-3.2-1B", 16, 32, 8, 64},
};

constexpr size_t kBlockTokens = 16;

// A decode step reads each layer's K/V once, between matmuls that stream
// far more weight bytes, so the KV cache is not in the last-level cache.
// Decode benchmarks therefore cycle through the layers of enough copies of
// the cache to exceed the LLC several times over. Caches have the model's
// layer count (so blocks have the real size and stride), or fewer where one
// copy would pass ColdBytes() (long contexts), to bound the memory used.
// QKERN_BENCH_ATTN_COLD_MIB overrides it: a value below the LLC (e.g. 1)
// runs the same calls warm, which separates the kernel's compute ceiling
// from its memory behaviour.
size_t ColdBytes() {
  static const size_t bytes =
      ColdBytesFromEnv("QKERN_BENCH_ATTN_COLD_MIB", 128);
  return bytes;
}

// Bytes of K and V (with row scales) that attention over `context`
// positions of one layer reads.
size_t KvBytes(const ModelShape& m, KvFormat format, size_t context) {
  const KvFormatInfo& info = GetKvFormatInfo(format);
  const size_t row = m.head_dim * info.element_bytes +
                     (info.has_row_scale ? sizeof(float) : 0);
  return 2 * context * m.num_kv_heads * row;
}

// Copies of a cache holding one sequence of `context` positions. Values
// cycle through a few random rows: they do not affect the speed, and
// encoding 128 MiB of distinct random data would dominate the run.
struct BenchCaches {
  std::vector<std::unique_ptr<PagedKvCache>> copies;
};

// How the sequence's blocks lie in the pool. kInOrder is what a sequence
// whose blocks were allocated one after another gets (a fresh pool, or one
// whose freed sequences gave their blocks back in order): one head's pieces
// of consecutive blocks are adjacent (KvBlockLayout). kScattered is a pool
// fragmented by many sequences: the blocks in a random order.
enum class Pages { kInOrder, kScattered };

// Hands the sequence `seq` blocks for `context` positions, in `pages` order.
Status ReservePages(PagedKvCache* cache, KvSeqId seq, size_t context,
                    Pages pages) {
  if (pages == Pages::kScattered) {
    // One single-block sequence per pool block, freed in a random order: the
    // pool hands freed blocks out last first, so `seq` gets that order.
    std::vector<KvSeqId> ids;
    for (uint32_t i = 0; i < cache->num_blocks(); ++i) {
      ids.push_back(seq + 1 + i);
      QKERN_RETURN_IF_ERROR(cache->AddSequence(ids.back()));
      QKERN_RETURN_IF_ERROR(cache->ReserveTokens(ids.back(), 1));
    }
    std::shuffle(ids.begin(), ids.end(), std::mt19937(7));
    for (KvSeqId id : ids) QKERN_RETURN_IF_ERROR(cache->Free(id));
  }
  QKERN_RETURN_IF_ERROR(cache->AddSequence(seq));
  return cache->ReserveTokens(seq, context);
}

std::unique_ptr<PagedKvCache> MakeCache(const ModelShape& m, KvFormat format,
                                        size_t context, size_t layers,
                                        Pages pages) {
  auto cache = std::make_unique<PagedKvCache>();
  KvCacheConfig config;
  config.num_layers = layers;
  config.num_kv_heads = m.num_kv_heads;
  config.head_dim = m.head_dim;
  config.block_tokens = kBlockTokens;
  config.format = format;
  KvBlockLayout layout;
  if (!KvBlockLayout::Compute(layers, m.num_kv_heads, m.head_dim, kBlockTokens,
                              format, &layout)
           .ok()) {
    abort();
  }
  // Spare blocks, so the sequence's pages are not simply the whole pool.
  const size_t blocks = (context + kBlockTokens - 1) / kBlockTokens + 4;
  config.memory_budget_bytes = blocks * layout.BlockBytes();
  Status s = PagedKvCache::Create(config, cache.get());
  if (s.ok()) s = ReservePages(cache.get(), 1, context, pages);
  const size_t row = cache->RowFloats();
  constexpr size_t kDistinctRows = 61;
  std::mt19937 rng(static_cast<uint32_t>(context));
  std::normal_distribution<float> normal;
  std::vector<float> values(kDistinctRows * row);
  for (float& v : values) v = normal(rng);
  for (size_t pos = 0; pos < context && s.ok(); ++pos) {
    for (size_t layer = 0; layer < layers && s.ok(); ++layer) {
      const float* k = &values[((pos + layer) % kDistinctRows) * row];
      const float* v = &values[((pos + layer + 7) % kDistinctRows) * row];
      s = cache->WriteKV(1, layer, pos, k, v);
    }
  }
  if (s.ok()) s = cache->CommitTokens(1, context);
  if (!s.ok()) {
    fprintf(stderr, "attention bench: %s\n", s.message().c_str());
    abort();
  }
  return cache;
}

// The caches of the benchmark running now; the previous ones are freed when
// the shape changes (benchmarks of one shape are registered together).
BenchCaches& CachesFor(const ModelShape& m, KvFormat format, size_t context,
                       size_t layers, size_t copies,
                       Pages pages = Pages::kInOrder) {
  static std::tuple<const ModelShape*, KvFormat, size_t, size_t, size_t, Pages>
      key;
  static BenchCaches caches;
  const auto wanted =
      std::make_tuple(&m, format, context, layers, copies, pages);
  if (caches.copies.empty() || key != wanted) {
    caches.copies.clear();
    for (size_t i = 0; i < copies; ++i) {
      caches.copies.push_back(MakeCache(m, format, context, layers, pages));
    }
    key = wanted;
  }
  return caches;
}

ThreadPool& PoolFor(size_t threads) {
  static std::map<size_t, std::unique_ptr<ThreadPool>> pools;
  auto& pool = pools[threads];
  if (!pool) pool.reset(new ThreadPool(threads));
  return *pool;
}

AttentionParams ParamsFor(const ModelShape& m) {
  AttentionParams p;
  p.num_q_heads = m.num_q_heads;
  p.num_kv_heads = m.num_kv_heads;
  p.head_dim = m.head_dim;
  return p;
}

void RunDecode(benchmark::State& state, const ModelShape& m, KvFormat format,
               size_t context, size_t threads, Pages pages) {
  const size_t layer_bytes = KvBytes(m, format, context);
  const size_t layers =
      std::min(m.num_layers, std::max<size_t>(1, ColdBytes() / layer_bytes));
  const size_t copies = std::max<size_t>(
      1, (ColdBytes() + layers * layer_bytes - 1) / (layers * layer_bytes));
  BenchCaches& caches = CachesFor(m, format, context, layers, copies, pages);
  const AttentionParams params = ParamsFor(m);
  std::vector<float> q(m.num_q_heads * m.head_dim, 0.1f), out(q.size());
  AttentionWorkspace ws;
  const ParallelRunner runner = PoolFor(threads).Runner();
  const double bandwidth = ReadBandwidthGBs(threads);
  size_t layer = 0, copy = 0;
  double seconds = 0.0, fastest = 1e30;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const Status s = Attention(*caches.copies[copy], 1, layer, q.data(), 1,
                               context - 1, out.data(), params, &ws, &runner);
    const double t =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (!s.ok()) state.SkipWithError(s.message().c_str());
    benchmark::DoNotOptimize(out.data());
    state.SetIterationTime(t);
    seconds += t;
    fastest = std::min(fastest, t);
    if (++layer == layers) {
      layer = 0;
      copy = copy + 1 == copies ? 0 : copy + 1;
    }
  }
  const double gbs =
      layer_bytes * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["roof"] = gbs / bandwidth;
  // The roof is the best of several passes; on a shared machine the
  // fastest call (still cold: every call reads another layer or copy) is
  // the like-for-like figure, the mean shows what the neighbours left.
  state.counters["roof_best"] = layer_bytes / fastest / 1e9 / bandwidth;
  // Against the roof of this moment rather than of the process's start.
  state.counters["roof_now"] = gbs / ReadBandwidthNowGBs(threads);
  // Says which int8 path ran: integer dot products (q and the weights
  // rounded to 15 bits) or f32 arithmetic on the widened codes.
  const bool int_dots =
      format == KvFormat::kInt8 && AttentionInt8IntegerDots(m.head_dim);
  state.SetLabel(ActiveTargetName() + (int_dots ? " int-dots" : ""));
}

void RunPrefill(benchmark::State& state, const ModelShape& m, KvFormat format,
                size_t tokens, size_t threads) {
  const PagedKvCache& cache = *CachesFor(m, format, tokens, 1, 1).copies[0];
  const AttentionParams params = ParamsFor(m);
  std::vector<float> q(tokens * m.num_q_heads * m.head_dim);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (float& x : q) x = normal(rng);
  std::vector<float> out(q.size());
  AttentionWorkspace ws;
  const ParallelRunner runner = PoolFor(threads).Runner();
  const double peak = F32FmaPeakGflops(threads);
  double seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const Status s = Attention(cache, 1, 0, q.data(), tokens, 0, out.data(),
                               params, &ws, &runner);
    const double t =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (!s.ok()) state.SkipWithError(s.message().c_str());
    benchmark::DoNotOptimize(out.data());
    state.SetIterationTime(t);
    seconds += t;
  }
  const double pairs = 0.5 * static_cast<double>(tokens) * (tokens + 1);
  const double flops = 4.0 * pairs * m.num_q_heads * m.head_dim;
  const double gflops =
      flops * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["fma_peak"] = gflops / peak;
  state.SetLabel(ActiveTargetName());
}

bool RegisterAll() {
  const size_t all_threads = ThreadPool::DefaultNumThreads();
  std::vector<size_t> thread_counts = {1};
  if (all_threads > 1) thread_counts.push_back(all_threads);
  const KvFormat formats[] = {KvFormat::kF16, KvFormat::kInt8};
  for (const ModelShape& m : kModels) {
    // Pages in order at every context; scattered at 8K, for what a
    // fragmented pool costs.
    for (size_t context : {512, 2048, 8192, 32768}) {
      for (Pages pages : {Pages::kInOrder, Pages::kScattered}) {
        if (pages == Pages::kScattered && context != 8192) continue;
        for (KvFormat format : formats) {
          for (size_t threads : thread_counts) {
            const std::string name =
                std::string("Attention/Decode/") + m.name + "/" +
                GetKvFormatInfo(format).name +
                "/context:" + std::to_string(context) +
                (pages == Pages::kScattered ? "/pages:scattered" : "") +
                "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(
                name.c_str(),
                [&m, format, context, threads, pages](benchmark::State& state) {
                  RunDecode(state, m, format, context, threads, pages);
                })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
      }
    }
  }
  for (const ModelShape& m : kModels) {
    for (size_t tokens : {512, 2048}) {
      for (KvFormat format : formats) {
        for (size_t threads : thread_counts) {
          const std::string name = std::string("Attention/Prefill/") + m.name +
                                   "/" + GetKvFormatInfo(format).name +
                                   "/tokens:" + std::to_string(tokens) +
                                   "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(
              name.c_str(),
              [&m, format, tokens, threads](benchmark::State& state) {
                RunPrefill(state, m, format, tokens, threads);
              })
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond);
        }
      }
    }
  }
  return true;
}

// Registered before main runs; qkern_bench's main (matmul_bench.cc) then
// initializes Google Benchmark and runs everything registered.
[[maybe_unused]] const bool kRegistered = RegisterAll();

}  // namespace
}  // namespace bench
}  // namespace qkern
