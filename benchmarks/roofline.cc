// Ceilings: read bandwidth, int8 dot peak and f32 FMA peak, measured with
// per-target Highway loops (this file expands foreach_target itself, so it
// must not include qkern/dispatch.h; the matmul benchmarks live in another
// translation unit of the same binary).
#include "roofline.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "roofline.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "qkern/kernels/int8_dot-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sums `n` floats with 4 independent accumulators (enough loads in flight
// to saturate the memory system; the adds are never the bottleneck).
float ReadSum(const float* HWY_RESTRICT p, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::Add(s0, hn::LoadU(d, p + i));
    s1 = hn::Add(s1, hn::LoadU(d, p + i + N));
    s2 = hn::Add(s2, hn::LoadU(d, p + i + 2 * N));
    s3 = hn::Add(s3, hn::LoadU(d, p + i + 3 * N));
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += p[i];
  return hn::GetLane(
             hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)))) +
         tail;
}

#if HWY_TARGET == HWY_SCALAR
uint64_t DotPeakOps(size_t) { return 0; }
#else
// Runs `iters` rounds of 12 independent int8 quad-dot chains (enough to
// cover latency x throughput on every core we know) with the same
// instruction the matmul uses. Returns the ops executed (2 per MAC).
uint64_t DotPeakOps(size_t iters) {
  using ::qkern::HWY_NAMESPACE::DI32;
  using ::qkern::HWY_NAMESPACE::DI8;
  using ::qkern::HWY_NAMESPACE::DU8;
  using ::qkern::HWY_NAMESPACE::VI8;
  using ::qkern::HWY_NAMESPACE::VU8;
  uint64_t ops = 0;
  ::qkern::HWY_NAMESPACE::WithBestDot([&](auto dot) {
    using Dot = decltype(dot);
    const DI32 d32;
    const VU8 u = hn::Set(DU8(), 3);
    const VI8 x = hn::Set(DI8(), -2);
    auto a0 = hn::Zero(d32), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    auto a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    for (size_t i = 0; i < iters; ++i) {
      a0 = Dot::U4(a0, u, x);
      a1 = Dot::U4(a1, u, x);
      a2 = Dot::U4(a2, u, x);
      a3 = Dot::U4(a3, u, x);
      a4 = Dot::U4(a4, u, x);
      a5 = Dot::U4(a5, u, x);
      a6 = Dot::U4(a6, u, x);
      a7 = Dot::U4(a7, u, x);
      a8 = Dot::U4(a8, u, x);
      a9 = Dot::U4(a9, u, x);
      a10 = Dot::U4(a10, u, x);
      a11 = Dot::U4(a11, u, x);
    }
    auto sum = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
                       hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
    sum = hn::Add(sum, hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
    // Keep the result observable.
    if (hn::GetLane(hn::SumOfLanes(d32, sum)) == 12345) ops = 1;
    ops += uint64_t{12} * iters * hn::Lanes(d32) * 4 * 2;
  });
  return ops;
}
#endif

uint64_t FmaPeakFlops(size_t iters) {
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.999f), c = hn::Set(d, 0.001f);
  auto a0 = hn::Set(d, 1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  auto a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  for (size_t i = 0; i < iters; ++i) {
    a0 = hn::MulAdd(a0, m, c);
    a1 = hn::MulAdd(a1, m, c);
    a2 = hn::MulAdd(a2, m, c);
    a3 = hn::MulAdd(a3, m, c);
    a4 = hn::MulAdd(a4, m, c);
    a5 = hn::MulAdd(a5, m, c);
    a6 = hn::MulAdd(a6, m, c);
    a7 = hn::MulAdd(a7, m, c);
    a8 = hn::MulAdd(a8, m, c);
    a9 = hn::MulAdd(a9, m, c);
    a10 = hn::MulAdd(a10, m, c);
    a11 = hn::MulAdd(a11, m, c);
  }
  auto sum = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
                     hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  sum = hn::Add(sum, hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
  const uint64_t flops = uint64_t{12} * iters * hn::Lanes(d) * 2;
  return hn::GetLane(sum) == 12345.0f ? flops + 1 : flops;
}

}  // namespace HWY_NAMESPACE
}  // namespace bench
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <thread>

namespace qkern {
namespace bench {

HWY_EXPORT(ReadSum);
HWY_EXPORT(DotPeakOps);
HWY_EXPORT(FmaPeakFlops);

namespace {

double Seconds(std::chrono::steady_clock::time_point a,
               std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Runs body(thread_index) on `threads` threads started together; returns the
// wall time of the slowest.
template <class Body>
double TimeOnThreads(size_t threads, const Body& body) {
  std::vector<std::thread> pool;
  std::atomic<size_t> ready{0};
  std::atomic<bool> go{false};
  for (size_t t = 1; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load()) {
      }
      body(t);
    });
  }
  while (ready.load() != threads - 1) {
  }
  const auto start = std::chrono::steady_clock::now();
  go.store(true);
  body(0);
  for (auto& th : pool) th.join();
  return Seconds(start, std::chrono::steady_clock::now());
}

template <class Measure>
double Cached(std::map<size_t, double>& cache, size_t threads,
              const Measure& measure) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  return cache[threads] = measure();
}

volatile float g_sink;

// Best of `passes` reads of `buffer`, split between `threads` threads.
double BestReadGBs(const std::vector<float>& buffer, size_t threads,
                   int passes) {
  const size_t per_thread = buffer.size() / threads;
  double best = 0.0;
  for (int pass = 0; pass < passes; ++pass) {
    const double seconds = TimeOnThreads(threads, [&](size_t t) {
      g_sink = HWY_DYNAMIC_DISPATCH(ReadSum)(buffer.data() + t * per_thread,
                                             per_thread);
    });
    best = std::max(best, per_thread * threads * sizeof(float) / seconds / 1e9);
  }
  return best;
}

}  // namespace

double ReadBandwidthGBs(size_t threads) {
  static std::map<size_t, double> cache;
  return Cached(cache, threads, [&] {
    // 1 GiB: far beyond any last-level cache.
    const std::vector<float> buffer(size_t{1} << 28, 1.0f);
    return BestReadGBs(buffer, threads, 5);
  });
}

double ReadBandwidthNowGBs(size_t threads) {
  // 256 MiB: eight times the largest last-level cache we run on, allocated
  // and touched once so later calls time reads only.
  static const std::vector<float> buffer(size_t{1} << 26, 1.0f);
  return BestReadGBs(buffer, threads, 3);
}

size_t ColdBytesFromEnv(const char* env_mib, size_t default_mib) {
  const char* env = getenv(env_mib);
  return (env != nullptr ? static_cast<size_t>(atol(env)) : default_mib) << 20;
}

double MeasureInt8DotPeakGops(size_t threads) {
  const size_t iters = size_t{1} << 22;
  double best = 0.0;
  for (int pass = 0; pass < 3; ++pass) {
    std::atomic<uint64_t> ops{0};
    const double seconds = TimeOnThreads(threads, [&](size_t) {
      ops += HWY_DYNAMIC_DISPATCH(DotPeakOps)(iters);
    });
    best = std::max(best, ops.load() / seconds / 1e9);
  }
  return best;
}

double Int8DotPeakGops(size_t threads) {
  static std::map<size_t, double> cache;
  return Cached(cache, threads,
                [&] { return MeasureInt8DotPeakGops(threads); });
}

double F32FmaPeakGflops(size_t threads) {
  static std::map<size_t, double> cache;
  return Cached(cache, threads, [&] {
    const size_t iters = size_t{1} << 22;
    double best = 0.0;
    for (int pass = 0; pass < 3; ++pass) {
      std::atomic<uint64_t> flops{0};
      const double seconds = TimeOnThreads(threads, [&](size_t) {
        flops += HWY_DYNAMIC_DISPATCH(FmaPeakFlops)(iters);
      });
      best = std::max(best, flops.load() / seconds / 1e9);
    }
    return best;
  });
}

}  // namespace bench
}  // namespace qkern
#endif  // HWY_ONCE
