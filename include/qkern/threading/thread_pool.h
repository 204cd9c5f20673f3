// A small thread pool tuned for LLM decode: many short parallel regions
// (one every 20-50 us), so waking workers must cost far less than a futex
// round trip, yet an idle pool must not burn CPU on a phone.
//
// Workers spin for ~100 us after each region, watching a generation counter,
// then park on a condition variable. Tasks are claimed one at a time from an
// atomic counter, so uneven cores (big.LITTLE) balance themselves.
//
//   qkern::ThreadPool pool(qkern::ThreadPool::DefaultNumThreads());
//   qkern::ParallelRunner runner = pool.Runner();
//   qkern::ParallelFor(&runner, rows, [&](size_t row, size_t worker) {...});
#ifndef QKERN_THREADING_THREAD_POOL_H_
#define QKERN_THREADING_THREAD_POOL_H_

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "qkern/threading/parallel.h"

#if defined(__linux__)
#include <sched.h>
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || \
    defined(_M_IX86)
#include <emmintrin.h>
#elif defined(_MSC_VER) && defined(_M_ARM64)
#include <intrin.h>
#endif

namespace qkern {
namespace detail {

// Tells the core we are busy-waiting: saves power and frees the pipeline for
// an SMT sibling. Its duration differs wildly between CPUs (a few ns to
// ~40 ns), which is why the spin loops below are bounded by time.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || \
    defined(_M_IX86)
  _mm_pause();
#elif defined(_MSC_VER) && defined(_M_ARM64)
  __yield();
#elif defined(__aarch64__) || \
    (defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7)
  __asm__ __volatile__("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// What the OS tells us about one logical CPU; 0 / -1 mean "unknown".
struct CpuDesc {
  int cpu = 0;
  long package_id = -1;
  long core_id = -1;
  unsigned long capacity = 0;      // Linux cpu_capacity, biggest core = 1024.
  unsigned long max_freq_khz = 0;  // cpufreq cpuinfo_max_freq.
};

// Counts physical performance cores among `cpus`.
//
// Little cores are left out because a region waits for its slowest task and
// they share little bandwidth. Only the slowest tier is dropped, and only when
// it is clearly slower than the next: phones now have prime + big + little
// clusters, and Intel "favored cores" report a slightly higher max frequency
// than their peers, so "keep only the fastest" would often leave 1-2 cores.
// cpu_capacity (uarch x frequency) is preferred over frequency because some
// SoCs clock their little cores almost as high as their big ones.
// SMT siblings share (package_id, core_id) and count once.
inline size_t CountPerformanceCores(const std::vector<CpuDesc>& cpus) {
  if (cpus.empty()) return 0;
  const bool have_capacity =
      std::all_of(cpus.begin(), cpus.end(),
                  [](const CpuDesc& c) { return c.capacity != 0; });
  const bool have_freq =
      std::all_of(cpus.begin(), cpus.end(),
                  [](const CpuDesc& c) { return c.max_freq_khz != 0; });
  auto speed = [&](const CpuDesc& c) -> unsigned long {
    if (have_capacity) return c.capacity;
    return have_freq ? c.max_freq_khz : 0;
  };

  std::vector<unsigned long> tiers;
  for (const CpuDesc& c : cpus) tiers.push_back(speed(c));
  std::sort(tiers.begin(), tiers.end());
  tiers.erase(std::unique(tiers.begin(), tiers.end()), tiers.end());
  unsigned long min_speed = 0;
  // "Clearly slower": below 85% of the next tier (E-cores ~80% of P-core max
  // frequency; little cores 20-60% of big-core capacity).
  if (tiers.size() >= 2 && tiers[0] * 100 < tiers[1] * 85) {
    min_speed = tiers[1];
  }

  std::vector<std::pair<long, long>> cores;
  for (const CpuDesc& c : cpus) {
    if (speed(c) < min_speed) continue;
    // Without topology each logical CPU is its own core; negative keys
    // cannot collide with real core ids.
    if (c.core_id < 0) {
      cores.emplace_back(-1, -1 - static_cast<long>(c.cpu));
    } else {
      cores.emplace_back(c.package_id, c.core_id);
    }
  }
  std::sort(cores.begin(), cores.end());
  return static_cast<size_t>(std::unique(cores.begin(), cores.end()) -
                             cores.begin());
}

#if defined(__linux__)
// Reads one unsigned number from a sysfs file.
inline bool ReadSysfsNumber(int cpu, const char* leaf, long* value) {
  char path[160];
  std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/%s", cpu,
                leaf);
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  const bool ok = std::fscanf(f, "%ld", value) == 1;
  std::fclose(f);
  return ok;
}

// Describes the CPUs this process may run on; empty if unknown.
inline std::vector<CpuDesc> DescribeAllowedCpus() {
  std::vector<CpuDesc> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    CpuDesc d;
    d.cpu = cpu;
    long v;
    if (ReadSysfsNumber(cpu, "topology/physical_package_id", &v)) {
      d.package_id = v;
    }
    if (ReadSysfsNumber(cpu, "topology/core_id", &v)) d.core_id = v;
    if (ReadSysfsNumber(cpu, "cpu_capacity", &v) && v > 0) {
      d.capacity = static_cast<unsigned long>(v);
    }
    if (ReadSysfsNumber(cpu, "cpufreq/cpuinfo_max_freq", &v) && v > 0) {
      d.max_freq_khz = static_cast<unsigned long>(v);
    }
    cpus.push_back(d);
  }
  return cpus;
}
#endif  // __linux__

}  // namespace detail

// Runs ParallelRunner tasks on num_threads - 1 worker threads plus the thread
// that calls Run (worker 0).
//
// Thread safety: Run / Runner().run may be called from several host threads at
// once; the calls are serialized (one region at a time), so worker indices stay
// exclusive. (ParallelFor runs a single-task loop on the caller without asking
// the pool, so that one is not serialized.) Run is not reentrant: a task must
// not call Run on its own pool (that deadlocks). A task that throws ends the
// program: workers may still be using ctx, so unwinding is not safe.
class ThreadPool {
 public:
  // num_threads counts the calling thread; 0 is treated as 1 (no workers).
  explicit ThreadPool(size_t num_threads) {
    const size_t num_workers = num_threads > 1 ? num_threads - 1 : 0;
    workers_.reserve(num_workers);
    try {
      for (size_t i = 1; i <= num_workers; ++i) {
        workers_.emplace_back([this, i] { WorkerLoop(i); });
      }
    } catch (...) {
      StopAndJoin();
      throw;
    }
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  ~ThreadPool() {
    // Taking run_mu_ waits for a region in flight on another thread.
    std::lock_guard<std::mutex> lock(run_mu_);
    StopAndJoin();
  }

  size_t NumThreads() const { return workers_.size() + 1; }

  // The runner stays valid as long as the pool lives.
  ParallelRunner Runner() {
    ParallelRunner runner;
    runner.self = this;
    runner.num_workers = NumThreads();
    runner.run = &RunThunk;
    return runner;
  }

  // Calls task(ctx, i, worker) for every i in [0, num_tasks), returning once
  // all have finished. Does not allocate.
  void Run(size_t num_tasks, TaskFn task, void* ctx) noexcept {
    if (num_tasks == 0) return;
    std::lock_guard<std::mutex> lock(run_mu_);
    if (num_tasks == 1 || workers_.empty()) {
      for (size_t i = 0; i < num_tasks; ++i) task(ctx, i, 0);
      return;
    }
    // The claim word holds a 32-bit task index; split absurdly large runs.
    size_t begin = 0;
    while (begin != num_tasks) {
      const size_t n = std::min<size_t>(num_tasks - begin, kMaxTasksPerRegion);
      RunRegion(begin, static_cast<uint32_t>(n), task, ctx);
      begin += n;
    }
  }

  // Physical performance cores we may run on (never 0). On Linux: the CPUs in
  // our affinity mask, minus a clearly slower little-core tier, with SMT
  // siblings counted once. Elsewhere: std::thread::hardware_concurrency().
  static size_t DefaultNumThreads() {
    size_t n = 0;
#if defined(__linux__)
    const std::vector<detail::CpuDesc> cpus = detail::DescribeAllowedCpus();
    n = detail::CountPerformanceCores(cpus);
#endif
    if (n == 0) n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
  }

 private:
  // The claim word packs (generation << 32 | next task index), so one CAS
  // both claims a task and proves the region is still the one whose task,
  // ctx and size the worker read. kClosed marks a region being set up.
  static constexpr uint32_t kClosed = 0xFFFFFFFFu;
  static constexpr size_t kMaxTasksPerRegion = kClosed - 1;
  // How long an idle worker (or a waiting caller) spins before parking:
  // longer than the gap between decode regions, short enough that an idle
  // pool goes quiet almost at once.
  static constexpr std::chrono::microseconds kSpinTime{100};
  // 128 covers adjacent-line prefetch on x86 and Apple's 128-byte lines.
  static constexpr size_t kCacheLine = 128;

  static uint64_t Pack(uint32_t gen, uint32_t index) {
    return (static_cast<uint64_t>(gen) << 32) | index;
  }
  static uint32_t Gen(uint64_t word) {
    return static_cast<uint32_t>(word >> 32);
  }
  static uint32_t Index(uint64_t word) { return static_cast<uint32_t>(word); }

  static void RunThunk(void* self, size_t num_tasks, TaskFn task,
                       void* ctx) noexcept {
    static_cast<ThreadPool*>(self)->Run(num_tasks, task, ctx);
  }

  // Spins until `done` returns true or kSpinTime passed; returns done().
  template <class Done>
  static bool SpinUntil(const Done& done) {
    const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
    for (uint32_t i = 1;; ++i) {
      if (done()) return true;
      detail::CpuRelax();
      // Reading the clock costs ~20 ns; do it every few dozen pauses.
      if (i % 32 == 0 && std::chrono::steady_clock::now() > deadline) {
        return done();
      }
    }
  }

  // Claims and runs tasks of the region `word` belongs to until none are
  // left; returns how many this thread ran.
  static uint32_t ClaimAndRun(std::atomic<uint64_t>& claim, uint64_t word,
                              uint32_t num_tasks, size_t begin, TaskFn task,
                              void* ctx, size_t worker) {
    const uint32_t gen = Gen(word);
    uint32_t ran = 0;
    while (Index(word) < num_tasks) {
      // Relaxed suffices: the data was published before the region opened
      // (see RunRegion), and a failed CAS only refreshes `word`.
      if (claim.compare_exchange_weak(word, word + 1,
                                      std::memory_order_relaxed)) {
        task(ctx, begin + Index(word), worker);
        ++ran;
        ++word;  // Best guess for the next CAS; a miss reloads it.
      } else if (Gen(word) != gen) {
        break;  // A newer region: ours is fully claimed.
      }
    }
    return ran;
  }

  void RunRegion(size_t begin, uint32_t num_tasks, TaskFn task, void* ctx) {
    if (++gen_ == 0) gen_ = 1;  // Workers start having "seen" generation 0.
    // Seqlock-style publication: close the claim word first. A worker still
    // holding an older word that reads any of the new fields below (release
    // stores, acquire loads) is thereby ordered after the close: its CAS fails.
    claim_.store(Pack(gen_, kClosed), std::memory_order_relaxed);
    task_.store(task, std::memory_order_release);
    ctx_.store(ctx, std::memory_order_release);
    num_tasks_.store(num_tasks, std::memory_order_release);
    begin_.store(begin, std::memory_order_release);
    done_.store(0, std::memory_order_relaxed);
    // seq_cst pairs with the sleepers_ increment in WaitForRegion: either we
    // see the sleeper, or it sees the open region before it waits.
    claim_.store(Pack(gen_, 0), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) != 0) {
      { std::lock_guard<std::mutex> lock(park_mu_); }
      wake_cv_.notify_all();
    }

    const uint32_t ran = ClaimAndRun(claim_, Pack(gen_, 0), num_tasks, begin,
                                     task, ctx, /*worker=*/0);
    if (ran != 0) done_.fetch_add(ran, std::memory_order_acq_rel);

    // Wait only for claimed tasks, not for every worker to show up: a parked
    // worker that wakes late finds nothing to claim and cannot touch ctx.
    auto all_done = [&] {
      return done_.load(std::memory_order_acquire) == num_tasks;
    };
    if (SpinUntil(all_done)) return;
    std::unique_lock<std::mutex> lock(park_mu_);
    caller_waiting_.store(true, std::memory_order_seq_cst);
    done_cv_.wait(lock, [&] {
      return done_.load(std::memory_order_seq_cst) == num_tasks;
    });
    caller_waiting_.store(false, std::memory_order_relaxed);
  }

  // Waits for a region newer than `seen`; false when the pool stops.
  bool WaitForRegion(uint32_t seen, uint64_t* word) {
    auto ready = [&](uint64_t w) {
      return Gen(w) != seen && Index(w) != kClosed;
    };
    const bool spun = SpinUntil([&] {
      *word = claim_.load(std::memory_order_acquire);
      return ready(*word) || stop_.load(std::memory_order_relaxed);
    });
    if (!spun) {
      std::unique_lock<std::mutex> lock(park_mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      wake_cv_.wait(lock, [&] {
        *word = claim_.load(std::memory_order_seq_cst);
        return ready(*word) || stop_.load(std::memory_order_relaxed);
      });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    return !stop_.load(std::memory_order_relaxed);
  }

  void WorkerLoop(size_t worker) {
    uint32_t seen = 0;
    uint64_t word;
    while (WaitForRegion(seen, &word)) {
      seen = Gen(word);
      // These may already belong to a later region; then every CAS fails.
      // (Acquire loads rather than a fence: same cost once per region, and
      // ThreadSanitizer understands them.)
      TaskFn task = task_.load(std::memory_order_acquire);
      void* ctx = ctx_.load(std::memory_order_acquire);
      const uint32_t num_tasks = num_tasks_.load(std::memory_order_acquire);
      const size_t begin = begin_.load(std::memory_order_acquire);
      const uint32_t ran =
          ClaimAndRun(claim_, word, num_tasks, begin, task, ctx, worker);
      if (ran == 0) continue;
      // Only a thread that ran tasks of this region adds to done_, and the
      // caller waits for all of them, so done_ never mixes regions.
      const uint32_t total =
          done_.fetch_add(ran, std::memory_order_seq_cst) + ran;
      if (total == num_tasks &&
          caller_waiting_.load(std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lock(park_mu_); }
        done_cv_.notify_all();
      }
    }
  }

  void StopAndJoin() {
    {
      std::lock_guard<std::mutex> lock(park_mu_);
      stop_.store(true, std::memory_order_relaxed);
    }
    wake_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  // Hot, written by every claim.
  alignas(kCacheLine) std::atomic<uint64_t> claim_{Pack(0, kClosed)};
  // Written once per region (and by each worker at its end).
  alignas(kCacheLine) std::atomic<uint32_t> done_{0};
  // Read-mostly region description.
  alignas(kCacheLine) std::atomic<TaskFn> task_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<size_t> begin_{0};
  std::atomic<uint32_t> num_tasks_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_waiting_{false};

  alignas(kCacheLine) std::mutex run_mu_;  // Serializes host callers.
  uint32_t gen_ = 0;                       // Guarded by run_mu_.
  std::mutex park_mu_;
  std::condition_variable wake_cv_;  // Workers wait for a region.
  std::condition_variable done_cv_;  // The caller waits for the last task.
  std::vector<std::thread> workers_;
};

}  // namespace qkern

#endif  // QKERN_THREADING_THREAD_POOL_H_
