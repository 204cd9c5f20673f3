// RoPE benchmarks on real attention shapes: q and k of one layer rotated in
// place for 1 token (decode) and 512 tokens (prefill), from the table and on
// the fly (positions past the table), and the fused K write into the paged
// cache next to a plain WriteKV of the same rows.
//
// Figures: GB/s of bytes read + written (q and k rows twice, plus the cos/sin
// rows each call reads) and that over the measured single-thread read
// bandwidth ("roof"). The 512-token rows (up to 4 MiB) mostly live in cache,
// so "roof" can exceed 1 there; decode is latency, not bandwidth.
//
//   qkern_bench --benchmark_filter=RoPE/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <chrono>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "qkern/kernels/rope.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/target.h"
#include "roofline.h"

namespace qkern {
namespace bench {
namespace {

struct RopeShape {
  const char* model;
  size_t q_heads;
  size_t kv_heads;
  size_t head_dim;
  double theta;
  RopeScaling scaling;
};

const RopeShape kRopeShapes[] = {
    {"SmolLM2-135M", 9, 3, 64, 100000.0, RopeScaling::None()},
    {"Llama-3.2-1B", 32, 8, 64, 500000.0,
     RopeScaling::Llama3(32.0, 1.0, 4.0, 8192.0)},
};

// Positions below this come from the table.
constexpr size_t kTablePositions = 4096;

RopeTable MakeTable(const RopeShape& shape, RopeLayout layout) {
  RopeConfig c;
  c.head_dim = c.rotary_dim = shape.head_dim;
  c.theta_base = shape.theta;
  c.layout = layout;
  c.scaling = shape.scaling;
  RopeTable table;
  const Status s = RopeTable::Create(c, kTablePositions, &table);
  if (!s.ok()) {
    fprintf(stderr, "RopeTable::Create failed: %s\n", s.message().c_str());
    abort();
  }
  return table;
}

std::vector<float> Filled(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.001f * static_cast<float>(i % 997);
  return v;
}

void RunApplyRope(benchmark::State& state, const RopeShape& shape,
                  RopeLayout layout, size_t tokens, bool past_table) {
  const RopeTable table = MakeTable(shape, layout);
  const size_t q_row = shape.q_heads * shape.head_dim;
  const size_t k_row = shape.kv_heads * shape.head_dim;
  std::vector<float> q = Filled(tokens * q_row), k = Filled(tokens * k_row);
  const int64_t first = past_table ? 100000 : 100;
  std::vector<int32_t> positions(tokens);
  for (size_t t = 0; t < tokens; ++t) {
    positions[t] = static_cast<int32_t>(first + static_cast<int64_t>(t));
  }
  const double bandwidth = ReadBandwidthGBs(1);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Status s = ApplyRope(table, q.data(), tokens, shape.q_heads, q_row,
                         positions.data());
    if (s.ok()) {
      s = ApplyRope(table, k.data(), tokens, shape.kv_heads, k_row,
                    positions.data());
    }
    if (!s.ok()) state.SkipWithError(s.message().c_str());
    benchmark::DoNotOptimize(q.data());
    benchmark::DoNotOptimize(k.data());
    benchmark::ClobberMemory();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  // Rows read and written; each of the two calls reads one cos/sin row per
  // token from the table (computed rows stay in L1).
  const double table_bytes =
      past_table ? 0.0 : 2.0 * tokens * 2 * table.RowFloats() * sizeof(float);
  const double bytes =
      2.0 * tokens * (q_row + k_row) * sizeof(float) + table_bytes;
  const double gbs =
      bytes * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["roof"] = gbs / bandwidth;
  state.counters["ns/token"] =
      seconds * 1e9 / (static_cast<double>(state.iterations()) * tokens);
  state.SetLabel(ActiveTargetName());
}

// One decode step's K/V store for one layer: RopeAndWriteK against WriteKV
// of already rotated rows, so the ratio is the cost of the rotation.
void RunKWrite(benchmark::State& state, const RopeShape& shape, KvFormat format,
               bool fused) {
  const RopeTable table = MakeTable(shape, RopeLayout::kNeox);
  KvCacheConfig kc;
  kc.num_layers = 1;
  kc.num_kv_heads = shape.kv_heads;
  kc.head_dim = shape.head_dim;
  kc.block_tokens = 16;
  kc.format = format;
  kc.memory_budget_bytes = size_t{1} << 20;
  PagedKvCache cache;
  if (!PagedKvCache::Create(kc, &cache).ok() || !cache.AddSequence(0).ok() ||
      !cache.ReserveTokens(0, 1).ok()) {
    state.SkipWithError("cache setup failed");
    return;
  }
  const size_t row = cache.RowFloats();
  const std::vector<float> k = Filled(row), v = Filled(row);
  const double bandwidth = ReadBandwidthGBs(1);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    // The position is rewritten every iteration (allowed until committed).
    const Status s =
        fused ? RopeAndWriteK(table, &cache, 0, 0, 0, 100, k.data(), v.data())
              : cache.WriteKV(0, 0, 0, k.data(), v.data());
    if (!s.ok()) state.SkipWithError(s.message().c_str());
    benchmark::ClobberMemory();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const KvFormatInfo& info = GetKvFormatInfo(format);
  const double stored = 2.0 * row * info.element_bytes +
                        (info.has_row_scale ? 2.0 * shape.kv_heads * 4 : 0.0);
  const double bytes = 2.0 * row * sizeof(float) + stored;
  const double gbs =
      bytes * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["roof"] = gbs / bandwidth;
  state.SetLabel(ActiveTargetName());
}

void RegisterRopeBenchmarks() {
  for (const RopeShape& shape : kRopeShapes) {
    const std::string heads = "q" + std::to_string(shape.q_heads) + "_kv" +
                              std::to_string(shape.kv_heads) + "_d" +
                              std::to_string(shape.head_dim);
    for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kGptJ}) {
      const std::string layout_name =
          layout == RopeLayout::kNeox ? "NeoX" : "GPT-J";
      for (size_t tokens : {1, 512}) {
        for (bool past_table : {false, true}) {
          const std::string name = "RoPE/" + layout_name + "/" + shape.model +
                                   "/" + heads +
                                   "/tokens:" + std::to_string(tokens) +
                                   (past_table ? "/on_the_fly" : "/table");
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State&
                                                             state) {
            RunApplyRope(state, shape, layout, tokens, past_table);
          })->Unit(benchmark::kMicrosecond);
        }
      }
    }
    for (KvFormat format : kAllKvFormats) {
      for (bool fused : {false, true}) {
        const std::string name = std::string("RoPE/KWrite/") + shape.model +
                                 "/" + heads + "/" +
                                 GetKvFormatInfo(format).name +
                                 (fused ? "/RopeAndWriteK" : "/WriteKV_only");
        benchmark::RegisterBenchmark(name.c_str(),
                                     [=](benchmark::State& state) {
                                       RunKWrite(state, shape, format, fused);
                                     })
            ->Unit(benchmark::kNanosecond);
      }
    }
  }
}

// qkern_bench's main (matmul_bench.cc) runs whatever is registered.
const bool kRopeRegistered = [] {
  RegisterRopeBenchmarks();
  return true;
}();

}  // namespace
}  // namespace bench
}  // namespace qkern
