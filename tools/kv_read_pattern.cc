// Reads the KV pool the way decode attention walks it, with no attention
// arithmetic, to tell what the page pattern alone allows from what the
// kernel's compute costs. Shape: Llama-3.2-1B (16 layers, 8 kv heads), int8
// (a piece of K and V with row scales is 2176 bytes per 16-token block) or
// f16 (4096 bytes), an 8K context of 16-token blocks in a pool with huge
// pages; each call reads one layer, its heads split in two ranges each over
// the threads, as the kernel's plan does at 2 threads.
//
//   g++ -O2 -march=native -std=c++17 -pthread -o /tmp/kv_read_pattern
//       tools/kv_read_pattern.cc
//   /tmp/kv_read_pattern LAYOUT PIECE_BYTES THREADS AHEAD
//
// LAYOUT: "block" (each block's pieces together, the pool before
// 2026-12-06) or "head" ((layer, head)-major, blocks innermost: one head's
// pieces of consecutive blocks adjacent). AHEAD: pieces ahead that each
// piece's lines are prefetched into L2 (x86 prefetcht1), spread one per line
// read; 0 leaves it to the hardware. Prints the best and mean GB/s of five
// passes over 96 calls.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace {

// Half a cache line: two of these per line keep the sum in registers on
// AVX2 (a 64-byte GCC vector went through the stack there).
typedef float Half __attribute__((vector_size(32)));

constexpr size_t kLayers = 16, kHeads = 8, kBlocks = 512, kSplits = 2;

struct Pattern {
  const uint8_t* pool;
  size_t piece;     // bytes of one (layer, head) of a block
  bool head_major;  // false: block-major
  size_t ahead;     // pieces of software prefetch distance
};

const uint8_t* PieceAt(const Pattern& p, size_t block, size_t layer,
                       size_t head) {
  const size_t slab = layer * kHeads + head;
  return p.pool + (p.head_major ? (slab * kBlocks + block) * p.piece
                                : (block * kLayers * kHeads + slab) * p.piece);
}

Half ReadRange(const Pattern& p, size_t layer, size_t head, size_t b0,
               size_t b1) {
  Half sum0 = {}, sum1 = {};
  for (size_t b = b0; b < b1; ++b) {
    const uint8_t* piece = PieceAt(p, b, layer, head);
    const uint8_t* next = p.ahead != 0 && b + p.ahead < b1
                              ? PieceAt(p, b + p.ahead, layer, head)
                              : nullptr;
    for (size_t off = 0; off < p.piece; off += 64) {
      if (next != nullptr) __builtin_prefetch(next + off, 0, 2);
      Half lo, hi;
      memcpy(&lo, piece + off, 32);
      memcpy(&hi, piece + off + 32, 32);
      sum0 += lo;
      sum1 += hi;
    }
  }
  return sum0 + sum1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s block|head PIECE_BYTES THREADS AHEAD\n",
            argv[0]);
    return 2;
  }
  Pattern p;
  p.head_major = std::string(argv[1]) == "head";
  p.piece = strtoul(argv[2], nullptr, 10);
  const size_t threads = strtoul(argv[3], nullptr, 10);
  p.ahead = strtoul(argv[4], nullptr, 10);
  if (p.piece == 0 || p.piece % 64 != 0 || threads == 0 || threads > 64) {
    fprintf(stderr, "PIECE_BYTES must be a multiple of 64, THREADS 1-64\n");
    return 2;
  }
  const size_t bytes = kLayers * kHeads * kBlocks * p.piece;
  const size_t huge = size_t{2} << 20;
  uint8_t* pool = static_cast<uint8_t*>(
      aligned_alloc(huge, (bytes + huge - 1) / huge * huge));
  if (pool == nullptr) return 1;
  madvise(pool, bytes, MADV_HUGEPAGE);
  memset(pool, 1, bytes);
  p.pool = pool;

  const size_t calls = 6 * kLayers;  // every layer six times: from DRAM
  std::vector<float> sinks(threads);
  auto worker = [&](size_t t) {
    Half sum = {};
    for (size_t call = 0; call < calls; ++call) {
      for (size_t task = t; task < kHeads * kSplits; task += threads) {
        const size_t per = kBlocks / kSplits, s = task % kSplits;
        sum += ReadRange(p, call % kLayers, task / kSplits, s * per,
                         (s + 1) * per);
      }
    }
    sinks[t] = sum[0];
  };
  double best = 0.0, total = 0.0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool_threads;
    for (size_t t = 1; t < threads; ++t) pool_threads.emplace_back(worker, t);
    worker(0);
    for (std::thread& th : pool_threads) th.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    const double gbs = calls * kHeads * kBlocks * p.piece / seconds / 1e9;
    best = std::max(best, gbs);
    total += gbs;
  }
  printf(
      "%s-major, %zu-byte pieces, %zu threads, prefetch %zu ahead: "
      "best %.1f GB/s, mean %.1f (checksum %g)\n",
      p.head_major ? "head" : "block", p.piece, threads, p.ahead, best,
      total / 5, static_cast<double>(sinks[0]));
  free(pool);
  return 0;
}
