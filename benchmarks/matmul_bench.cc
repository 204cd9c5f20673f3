// MatMul benchmarks on real layer shapes: decode GEMV (GB/s of weights and
// fraction of the measured read bandwidth) and prefill GEMM (GOP/s and
// fraction of the measured int8 dot peak), at 1 thread and all threads.
//
//   qkern_bench --benchmark_filter=GEMV/Q4_0
//   qkern_bench --benchmark_out=out.json --benchmark_out_format=json
#include <stdint.h>
#include <stdio.h>

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "qkern/qkern.h"
#include "roofline.h"

namespace qkern {
namespace bench {
namespace {

struct LayerShape {
  const char* model;
  const char* layer;
  size_t n, k;
};

// N x K of the matmuls in a decoder layer and the output head.
constexpr LayerShape kShapes[] = {
    {"SmolLM2-135M", "attn_qo", 576, 576},
    {"SmolLM2-135M", "attn_kv", 192, 576},
    {"SmolLM2-135M", "ffn_up", 1536, 576},
    {"SmolLM2-135M", "ffn_down", 576, 1536},
    {"SmolLM2-135M", "output", 49152, 576},
    {"Llama-3.2-1B", "attn_qo", 2048, 2048},
    {"Llama-3.2-1B", "attn_kv", 512, 2048},
    {"Llama-3.2-1B", "ffn_up", 8192, 2048},
    {"Llama-3.2-1B", "ffn_down", 2048, 8192},
    {"Llama-3.2-1B", "output", 128256, 2048},
};

struct FormatCase {
  WeightFormat format;
  size_t group;
};
constexpr FormatCase kFormats[] = {
    {WeightFormat::kQ4_0, 32},    {WeightFormat::kQ4_1, 32},
    {WeightFormat::kQ8_0, 32},    {WeightFormat::kInt4Sym, 128},
    {WeightFormat::kInt4Asym, 64}, {WeightFormat::kInt8PerChannel, 0},
};

std::string FormatLabel(const FormatCase& f) {
  std::string name = FormatInfo(f.format).name;
  if (f.format == WeightFormat::kInt4Sym || f.format == WeightFormat::kInt4Asym) {
    name += "_G" + std::to_string(f.group);
  }
  return name;
}

// Random codes with plausible scales: speed does not depend on the values,
// and quantizing 260M floats with the reference quantizer would dominate the
// run.
PackedWeights MakePacked(const FormatCase& f, size_t n, size_t k) {
  std::mt19937_64 rng(n * 31 + k);
  const WeightFormatInfo& info = FormatInfo(f.format);
  std::vector<uint8_t> codes, scales, mins;
  auto random_bytes = [&](std::vector<uint8_t>& v, size_t bytes) {
    v.resize(bytes);
    for (size_t i = 0; i < bytes; i += 8) {
      const uint64_t r = rng();
      memcpy(v.data() + i, &r, std::min<size_t>(8, bytes - i));
    }
  };
  auto random_f16 = [&](uint8_t* p) {
    const f16_t h = F16FromF32(0.001f + (rng() % 1000) * 1e-5f);
    memcpy(p, &h, 2);
  };
  QuantizedWeights view;
  view.format = f.format;
  view.rows = n;
  view.cols = k;
  view.group_size = f.group;
  if (info.is_gguf_block) {
    const size_t blocks = n * k / kQuantBlock;
    random_bytes(codes, blocks * info.block_bytes);
    for (size_t b = 0; b < blocks; ++b) {
      uint8_t* block = codes.data() + b * info.block_bytes;
      random_f16(block);
      if (info.has_min) random_f16(block + 2);
    }
  } else if (info.per_channel) {
    random_bytes(codes, n * k);
    scales.resize(n * sizeof(float));
    for (size_t r = 0; r < n; ++r) {
      const float s = 0.01f;
      memcpy(scales.data() + r * 4, &s, 4);
    }
  } else {
    random_bytes(codes, n * k / 2);
    const size_t groups = n * (k / f.group);
    scales.resize(groups * 2);
    mins.resize(groups * 2);
    for (size_t g = 0; g < groups; ++g) {
      random_f16(scales.data() + 2 * g);
      random_f16(mins.data() + 2 * g);
    }
  }
  view.codes = codes.data();
  view.scales = scales.data();
  view.mins = mins.data();
  PackedWeights packed;
  const Status s = PackWeightsForCurrentTarget(view, &packed);
  if (!s.ok()) {
    fprintf(stderr, "pack failed: %s\n", s.message().c_str());
    abort();
  }
  return packed;
}

ThreadPool& PoolFor(size_t threads) {
  static std::map<size_t, std::unique_ptr<ThreadPool>> pools;
  auto& pool = pools[threads];
  if (!pool) pool.reset(new ThreadPool(threads));
  return *pool;
}

// Decode streams every weight of the model once per token, so a GEMV that
// finds its matrix in the last-level cache measures the cache, not DRAM. GEMV
// benchmarks therefore cycle through enough copies of the packed matrix to
// exceed the LLC many times over (like the layers of a real model).
// QKERN_BENCH_GEMV_COLD_MIB overrides the 512 MiB: a value below the LLC
// (e.g. 1) runs the same calls warm, which shows the kernel's compute ceiling.
size_t ColdBytes() {
  static const size_t bytes = ColdBytesFromEnv("QKERN_BENCH_GEMV_COLD_MIB", 512);
  return bytes;
}

void RunMatMul(benchmark::State& state, const FormatCase& f,
               const LayerShape& shape, size_t m, size_t threads,
               uint32_t dot_path_mask = kDotPathAll) {
  // Restored on every exit, so later benchmarks run the default paths.
  struct MaskScope {
    explicit MaskScope(uint32_t mask) { SetDotPathMask(mask); }
    ~MaskScope() { SetDotPathMask(kDotPathAll); }
  } mask_scope(dot_path_mask);
  std::vector<PackedWeights> copies;
  copies.push_back(MakePacked(f, shape.n, shape.k));
  const size_t bytes_per_copy = copies[0].WeightBytes();
  if (m == 1) {
    const size_t wanted = (ColdBytes() + bytes_per_copy - 1) / bytes_per_copy;
    for (size_t i = 1; i < wanted; ++i) copies.push_back(MakePacked(f, shape.n, shape.k));
  }
  std::vector<float> x(m * shape.k), y(m * shape.n);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  MatMulWorkspace ws;
  const ParallelRunner runner = PoolFor(threads).Runner();
  const double bandwidth = ReadBandwidthGBs(threads);
  size_t next = 0;
  double seconds = 0.0;
  for (auto _ : state) {
    const PackedWeights& w = copies[next];
    next = next + 1 == copies.size() ? 0 : next + 1;
    const auto start = std::chrono::steady_clock::now();
    const Status s = MatMul(w, x.data(), m, shape.k, y.data(), shape.n, nullptr,
                            &ws, &runner);
    const double t = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start).count();
    if (!s.ok()) state.SkipWithError(s.message().c_str());
    benchmark::DoNotOptimize(y.data());
    state.SetIterationTime(t);
    seconds += t;
  }
  const double iters = static_cast<double>(state.iterations());
  if (m == 1) {
    const double gbs = bytes_per_copy * iters / seconds / 1e9;
    state.counters["GB/s"] = gbs;
    state.counters["roof"] = gbs / bandwidth;
  } else {
    const double gops = 2.0 * m * shape.n * shape.k * iters / seconds / 1e9;
    // The peak is measured again right after the run: this VM's throughput
    // drifts with its neighbours' load, and a ratio of two figures taken
    // minutes apart would mostly measure that drift.
    state.counters["GOP/s"] = gops;
    state.counters["dot_peak"] = gops / MeasureInt8DotPeakGops(threads);
  }
  state.SetLabel(ActiveTargetName() + "/" + ActiveDotPath());
}

void RegisterAll() {
  const size_t all_threads = ThreadPool::DefaultNumThreads();
  std::vector<size_t> thread_counts = {1};
  if (all_threads > 1) thread_counts.push_back(all_threads);

  for (size_t threads : thread_counts) {
    benchmark::RegisterBenchmark(
        ("Roof/read_bandwidth/threads:" + std::to_string(threads)).c_str(),
        [threads](benchmark::State& state) {
          for (auto _ : state) benchmark::DoNotOptimize(ReadBandwidthGBs(threads));
          state.counters["GB/s"] = ReadBandwidthGBs(threads);
          state.counters["int8_GOP/s"] = Int8DotPeakGops(threads);
          state.counters["f32_GFLOP/s"] = F32FmaPeakGflops(threads);
          state.SetLabel(ActiveTargetName() + "/" + ActiveDotPath());
        })->Iterations(1);
  }
  for (const FormatCase& f : kFormats) {
    for (const LayerShape& shape : kShapes) {
      for (size_t threads : thread_counts) {
        const std::string name = "GEMV/" + FormatLabel(f) + "/" + shape.model +
                                 "/" + shape.layer + "_" + std::to_string(shape.n) +
                                 "x" + std::to_string(shape.k) +
                                 "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& state) {
          RunMatMul(state, f, shape, 1, threads);
        })->UseManualTime()->Unit(benchmark::kMicrosecond);
      }
    }
  }
  const LayerShape gemm_shapes[] = {{"Llama-3.2-1B", "ffn_down", 2048, 8192},
                                    {"Llama-3.2-1B", "ffn_up", 8192, 2048}};
  // Prefill on CPUs with AMX also runs with AMX masked off.
  const bool amx = ActiveDotPath().find("amx") != std::string::npos;
  for (const FormatCase& f : kFormats) {
    for (const LayerShape& shape : gemm_shapes) {
      for (size_t m : {16, 64, 512}) {
        for (size_t threads : thread_counts) {
          const std::string name =
              "GEMM/" + FormatLabel(f) + "/" + shape.model + "/" + shape.layer +
              "_" + std::to_string(shape.n) + "x" + std::to_string(shape.k) +
              "/M:" + std::to_string(m) + "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& state) {
            RunMatMul(state, f, shape, m, threads);
          })->UseManualTime()->Unit(benchmark::kMillisecond);
          if (amx) {
            // The VNNI tiles on the same CPU, for a ratio within one run.
            const std::string vnni_name =
                name.substr(0, name.rfind("/threads:")) + "/no_amx" +
                name.substr(name.rfind("/threads:"));
            benchmark::RegisterBenchmark(
                vnni_name.c_str(), [=](benchmark::State& state) {
                  RunMatMul(state, f, shape, m, threads,
                            kDotPathAll & ~uint32_t{kDotPathX86Amx});
                })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace bench
}  // namespace qkern

int main(int argc, char** argv) {
  qkern::bench::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
