// Benchmarks of the ops in qkern/kernels/ops.h on SmolLM2-135M and
// Llama-3.2-1B widths: RMSNorm and the residual ops on the model width, the
// activations on the FFN width, softmax on the vocabulary, and embedding
// rows of the token table in each storage format.
//
// Figures: GB/s of the bytes an op must read and write once (inputs, weight
// row, output; softmax: the row read and written), on one thread, and that
// over the measured single-thread read bandwidth ("roof"). Decode-time
// activations are a few KiB and live in L1/L2, so "roof" above 1 is expected
// there: those rows show how far from a cache-bound loop the kernel is. The
// embedding table (up to 525 MB) is read cold, one random row per call, and
// is the one DRAM-bound case.
//
//   qkern_bench --benchmark_filter='^Ops/'
#include <benchmark/benchmark.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qkern/kernels/ops.h"
#include "qkern/target.h"
#include "roofline.h"

namespace qkern {
namespace bench {
namespace {

struct ModelWidths {
  const char* model;
  size_t dim, ffn, vocab;
};

constexpr ModelWidths kModels[] = {
    {"SmolLM2-135M", 576, 1536, 49152},
    {"Llama-3.2-1B", 2048, 8192, 128256},
};

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Runs `body` (one op call) in the benchmark loop and reports GB/s of
// `bytes` per call and its fraction of the read roof.
template <class Body>
void RunOp(benchmark::State& state, size_t bytes, Body body) {
  const double roof = ReadBandwidthGBs(1);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const Status s = body();
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
    benchmark::ClobberMemory();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const double gbs =
      static_cast<double>(bytes) * state.iterations() / seconds / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["roof"] = gbs / roof;
  state.SetLabel(ActiveTargetName());
}

void RegisterRowOps(const ModelWidths& m) {
  const std::string prefix = std::string("Ops/") + m.model + "/";
  const size_t dim = m.dim, ffn = m.ffn, vocab = m.vocab;

  for (size_t rows : {size_t{1}, size_t{64}}) {
    benchmark::RegisterBenchmark(
        (prefix + "RmsNorm/dim:" + std::to_string(dim) +
         "/rows:" + std::to_string(rows))
            .c_str(),
        [=](benchmark::State& state) {
          const std::vector<float> x = RandomFloats(rows * dim, 1, 1.0f);
          const std::vector<float> w = RandomFloats(dim, 2, 1.0f);
          std::vector<float> y(rows * dim);
          RunOp(state, 3 * rows * dim * sizeof(float), [&] {
            return RmsNormRows(x.data(), dim, w.data(), 1e-5f, rows, dim,
                               y.data(), dim);
          });
        });
  }

  struct Unary {
    const char* name;
    Status (*run)(const float*, size_t, float*);
  };
  const Unary unary[] = {
      {"Silu",
       [](const float* x, size_t n, float* y) { return Silu(x, n, y); }},
      {"GeluTanh",
       [](const float* x, size_t n, float* y) {
         return Gelu(x, n, y, GeluApproximation::kTanh);
       }},
      {"GeluErf",
       [](const float* x, size_t n, float* y) {
         return Gelu(x, n, y, GeluApproximation::kErf);
       }},
  };
  for (const Unary& op : unary) {
    benchmark::RegisterBenchmark(
        (prefix + op.name + "/ffn:" + std::to_string(ffn)).c_str(),
        [=](benchmark::State& state) {
          const std::vector<float> x = RandomFloats(ffn, 3, 2.0f);
          std::vector<float> y(ffn);
          RunOp(state, 2 * ffn * sizeof(float),
                [&] { return op.run(x.data(), ffn, y.data()); });
        });
  }

  struct Gated {
    const char* name;
    Status (*run)(const float*, const float*, size_t, float*);
  };
  const Gated gated[] = {
      {"SwiGlu", [](const float* g, const float* u, size_t n,
                    float* out) { return SwiGlu(g, u, n, out); }},
      {"GeGluTanh",
       [](const float* g, const float* u, size_t n, float* out) {
         return GeGlu(g, u, n, out, GeluApproximation::kTanh);
       }},
      {"GeGluErf",
       [](const float* g, const float* u, size_t n, float* out) {
         return GeGlu(g, u, n, out, GeluApproximation::kErf);
       }},
  };
  for (const Gated& op : gated) {
    benchmark::RegisterBenchmark(
        (prefix + op.name + "/ffn:" + std::to_string(ffn)).c_str(),
        [=](benchmark::State& state) {
          const std::vector<float> gate = RandomFloats(ffn, 4, 2.0f);
          const std::vector<float> up = RandomFloats(ffn, 5, 1.0f);
          std::vector<float> out(ffn);
          RunOp(state, 3 * ffn * sizeof(float), [&] {
            return op.run(gate.data(), up.data(), ffn, out.data());
          });
        });
  }

  // Softmax over the logits, as sampling does. The row is normalized in
  // place again each iteration: a distribution costs what logits cost.
  benchmark::RegisterBenchmark(
      (prefix + "Softmax/vocab:" + std::to_string(vocab)).c_str(),
      [=](benchmark::State& state) {
        std::vector<float> logits = RandomFloats(vocab, 6, 5.0f);
        RunOp(state, 2 * vocab * sizeof(float),
              [&] { return Softmax(logits.data(), vocab, 1.0f / 0.7f); });
      });

  benchmark::RegisterBenchmark(
      (prefix + "AddInPlace/dim:" + std::to_string(dim)).c_str(),
      [=](benchmark::State& state) {
        const std::vector<float> x = RandomFloats(dim, 7, 1.0f);
        std::vector<float> y = RandomFloats(dim, 8, 1.0f);
        RunOp(state, 3 * dim * sizeof(float),
              [&] { return AddInPlace(y.data(), x.data(), dim); });
      });
  benchmark::RegisterBenchmark(
      (prefix + "Scale/dim:" + std::to_string(dim)).c_str(),
      [=](benchmark::State& state) {
        std::vector<float> x = RandomFloats(dim, 9, 1.0f);
        // In place by a factor whose repeated use stays finite (|s| = 1).
        RunOp(state, 2 * dim * sizeof(float),
              [&] { return Scale(x.data(), -1.0f, dim, x.data()); });
      });
}

// A vocab x dim token table filled by tiling one block of well-formed rows
// (valid scales, finite f16/bf16), built once per (format, shape) and kept
// only while its benchmarks run.
struct TableCache {
  EmbeddingFormat format;
  size_t rows = 0, cols = 0;
  std::unique_ptr<uint8_t[]> bytes;
};

const uint8_t* TokenTable(EmbeddingFormat format, size_t rows, size_t cols) {
  static TableCache cache;
  if (cache.bytes && cache.format == format && cache.rows == rows &&
      cache.cols == cols) {
    return cache.bytes.get();
  }
  cache.bytes.reset();
  const size_t row_bytes = EmbeddingRowBytes(format, cols);
  const size_t pattern_rows = 16;
  std::vector<uint8_t> pattern(pattern_rows * row_bytes);
  std::mt19937 rng(11);
  for (uint8_t& b : pattern) b = static_cast<uint8_t>(rng());
  const std::vector<float> values =
      RandomFloats(pattern_rows * cols, 12, 0.05f);
  for (size_t i = 0; i < pattern_rows * cols; ++i) {
    switch (format) {
      case EmbeddingFormat::kF32:
        memcpy(&pattern[4 * i], &values[i], 4);
        break;
      case EmbeddingFormat::kF16: {
        const f16_t h = F16FromF32(values[i]);
        memcpy(&pattern[2 * i], &h, 2);
        break;
      }
      case EmbeddingFormat::kBF16: {
        const bf16_t h = BF16FromF32(values[i]);
        memcpy(&pattern[2 * i], &h, 2);
        break;
      }
      default:
        if (i % kQuantBlock == 0) {  // the block's f16 scale (and min)
          const f16_t d = F16FromF32(0.01f);
          const size_t block_bytes = row_bytes / (cols / kQuantBlock);
          uint8_t* block = &pattern[i / kQuantBlock * block_bytes];
          memcpy(block, &d, 2);
          if (format == EmbeddingFormat::kQ4_1) memcpy(block + 2, &d, 2);
        }
        break;
    }
  }
  cache.bytes.reset(new uint8_t[rows * row_bytes]);
  for (size_t r = 0; r < rows; r += pattern_rows) {
    const size_t n = std::min(pattern_rows, rows - r);
    memcpy(cache.bytes.get() + r * row_bytes, pattern.data(), n * row_bytes);
  }
  cache.format = format;
  cache.rows = rows;
  cache.cols = cols;
  return cache.bytes.get();
}

void RegisterEmbedding(const ModelWidths& m) {
  const EmbeddingFormat formats[] = {
      EmbeddingFormat::kF32,  EmbeddingFormat::kF16,  EmbeddingFormat::kBF16,
      EmbeddingFormat::kQ8_0, EmbeddingFormat::kQ4_1, EmbeddingFormat::kQ4_0};
  for (EmbeddingFormat format : formats) {
    // A 1 GB f32 Llama table says nothing a 113 MB SmolLM2 one does not.
    if (format == EmbeddingFormat::kF32 && m.vocab > 100000) continue;
    const size_t rows = m.vocab, cols = m.dim;
    benchmark::RegisterBenchmark(
        (std::string("Ops/") + m.model + "/EmbeddingRow/" +
         EmbeddingFormatName(format) + "/" + std::to_string(rows) + "x" +
         std::to_string(cols))
            .c_str(),
        [=](benchmark::State& state) {
          const uint8_t* table = TokenTable(format, rows, cols);
          std::vector<float> out(cols);
          // Tokens in a scattered order: each call reads a row not in cache.
          size_t token = 0;
          RunOp(state, EmbeddingRowBytes(format, cols) + cols * sizeof(float),
                [&] {
                  token = (token + 7919) % rows;
                  return EmbeddingRow(table, format, rows, cols, token,
                                      out.data());
                });
        });
  }
}

const bool kOpsRegistered = [] {
  for (const ModelWidths& m : kModels) RegisterRowOps(m);
  for (const ModelWidths& m : kModels) RegisterEmbedding(m);
  return true;
}();

}  // namespace
}  // namespace bench
}  // namespace qkern
