#include "qkern/threading/thread_pool.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/threading/parallel.h"

namespace qkern {
namespace {

// qemu-user and sanitizers are 10-50x slower; keep the stress tests short.
int Scaled(int iterations) {
  bool slow = getenv("QKERN_UNDER_EMULATION") != nullptr;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  slow = true;
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
  slow = true;
#endif
#endif
  return slow ? iterations / 10 : iterations;
}

// Records every (task, worker) a region saw and checks the pool's contract:
// each task exactly once, worker indices in range and never shared by two
// threads at the same time, each index bound to one thread.
class RegionChecker {
 public:
  explicit RegionChecker(size_t num_workers)
      : num_workers_(num_workers),
        busy_(new std::atomic<int>[num_workers]),
        owner_(new std::atomic<size_t>[num_workers]) {
    for (size_t w = 0; w < num_workers; ++w) {
      busy_[w].store(0);
      owner_[w].store(0);
    }
  }

  void Reset(size_t num_tasks) {
    counts_.reset(new std::atomic<int>[num_tasks]);
    for (size_t i = 0; i < num_tasks; ++i) counts_[i].store(0);
    num_tasks_ = num_tasks;
  }

  void Task(size_t task, size_t worker) {
    if (task >= num_tasks_) {
      errors_.fetch_add(1);
      return;
    }
    counts_[task].fetch_add(1);
    if (worker >= num_workers_) {
      errors_.fetch_add(1);
      return;
    }
    if (busy_[worker].exchange(1) != 0) errors_.fetch_add(1);
    const size_t me = std::hash<std::thread::id>()(std::this_thread::get_id());
    size_t expected = 0;
    if (!owner_[worker].compare_exchange_strong(expected, me) &&
        expected != me) {
      // Worker indices of a pool are bound to its threads, except index 0,
      // which is whichever host thread is calling.
      if (worker != 0) errors_.fetch_add(1);
    }
    // A little work so that regions overlap across workers.
    volatile uint32_t x = static_cast<uint32_t>(task);
    for (int i = 0; i < 50; ++i) x = x * 1664525u + 1013904223u;
    busy_[worker].store(0);
  }

  void ExpectEachTaskOnce() const {
    for (size_t i = 0; i < num_tasks_; ++i) {
      ASSERT_EQ(counts_[i].load(), 1) << "task " << i;
    }
    EXPECT_EQ(errors_.load(), 0);
  }

  int errors() const { return errors_.load(); }

 private:
  size_t num_workers_;
  std::unique_ptr<std::atomic<int>[]> busy_;
  std::unique_ptr<std::atomic<size_t>[]> owner_;
  std::unique_ptr<std::atomic<int>[]> counts_;
  size_t num_tasks_ = 0;
  std::atomic<int> errors_{0};
};

TEST(ThreadPoolTest, NumThreadsCountsTheCaller) {
  EXPECT_EQ(ThreadPool(0).NumThreads(), 1u);
  EXPECT_EQ(ThreadPool(1).NumThreads(), 1u);
  EXPECT_EQ(ThreadPool(3).NumThreads(), 3u);
  ThreadPool pool(4);
  const ParallelRunner runner = pool.Runner();
  EXPECT_EQ(runner.self, &pool);
  EXPECT_EQ(runner.num_workers, 4u);
  EXPECT_NE(runner.run, nullptr);
}

TEST(ThreadPoolTest, EveryTaskRunsExactlyOnce) {
  for (size_t num_threads : {0, 1, 2, 3, 4, 8}) {
    ThreadPool pool(num_threads);
    const ParallelRunner runner = pool.Runner();
    RegionChecker checker(pool.NumThreads());
    for (size_t num_tasks : {0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 63, 1000}) {
      SCOPED_TRACE(testing::Message()
                   << num_threads << " threads, " << num_tasks << " tasks");
      checker.Reset(num_tasks);
      // Through the raw hook ...
      runner.run(
          runner.self, num_tasks,
          [](void* ctx, size_t task, size_t worker) {
            static_cast<RegionChecker*>(ctx)->Task(task, worker);
          },
          &checker);
      checker.ExpectEachTaskOnce();
      // ... and through ParallelFor.
      checker.Reset(num_tasks);
      ParallelFor(&runner, num_tasks, [&](size_t task, size_t worker) {
        checker.Task(task, worker);
      });
      checker.ExpectEachTaskOnce();
    }
  }
}

TEST(ThreadPoolTest, ResultsAreVisibleToTheCaller) {
  ThreadPool pool(4);
  const ParallelRunner runner = pool.Runner();
  // Plain (non-atomic) writes: the sanitizer build checks the happens-before
  // edges from the tasks back to the caller and into the next region.
  std::vector<uint64_t> values(4096, 0);
  for (int round = 1; round <= 50; ++round) {
    ParallelFor(&runner, values.size(), [&](size_t i, size_t) {
      values[i] += static_cast<uint64_t>(i) * round;
    });
  }
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(values[i], i * (50 * 51 / 2)) << i;
  }
}

TEST(ThreadPoolTest, SingleTaskAndSingleThreadRunInline) {
  const std::thread::id me = std::this_thread::get_id();
  ThreadPool pool(4);
  const ParallelRunner runner = pool.Runner();
  std::thread::id ran_on;
  ParallelFor(&runner, 1, [&](size_t task, size_t worker) {
    EXPECT_EQ(task, 0u);
    EXPECT_EQ(worker, 0u);
    ran_on = std::this_thread::get_id();
  });
  EXPECT_EQ(ran_on, me);

  ThreadPool single(1);
  const ParallelRunner single_runner = single.Runner();
  std::vector<size_t> order;
  single_runner.run(
      single_runner.self, 5,
      [](void* ctx, size_t task, size_t worker) {
        EXPECT_EQ(worker, 0u);
        static_cast<std::vector<size_t>*>(ctx)->push_back(task);
      },
      &order);
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3, 4}));
}

TEST(ThreadPoolTest, NullRunnerRunsSerially) {
  const std::thread::id me = std::this_thread::get_id();
  std::vector<size_t> order;
  ParallelFor(nullptr, 10, [&](size_t task, size_t worker) {
    EXPECT_EQ(worker, 0u);
    EXPECT_EQ(std::this_thread::get_id(), me);
    order.push_back(task);
  });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(NumWorkers(nullptr), 1u);

  ParallelRunner empty;  // run == nullptr also means serial.
  order.clear();
  ParallelFor(&empty, 3, [&](size_t task, size_t) { order.push_back(task); });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2}));
}

TEST(ThreadPoolTest, ManyBackToBackRuns) {
  for (size_t num_threads : {2, 4}) {
    ThreadPool pool(num_threads);
    const ParallelRunner runner = pool.Runner();
    const int runs = Scaled(20000);
    std::atomic<uint64_t> sum{0};
    uint64_t expected = 0;
    for (int r = 0; r < runs; ++r) {
      // 1 .. 2 * threads + 1 tasks: fewer, as many as and more than threads.
      const size_t num_tasks =
          1 + static_cast<size_t>(r) % (2 * num_threads + 1);
      ParallelFor(&runner, num_tasks, [&](size_t task, size_t worker) {
        EXPECT_LT(worker, num_threads);
        sum.fetch_add(task + 1, std::memory_order_relaxed);
      });
      expected += num_tasks * (num_tasks + 1) / 2;
      // The sum must be complete when run returns, not eventually.
      ASSERT_EQ(sum.load(std::memory_order_relaxed), expected) << "run " << r;
    }
  }
}

TEST(ThreadPoolTest, RunsAfterWorkersParked) {
  ThreadPool pool(4);
  const ParallelRunner runner = pool.Runner();
  RegionChecker checker(pool.NumThreads());
  for (int round = 0; round < 3; ++round) {
    checker.Reset(100);
    ParallelFor(&runner, 100, [&](size_t task, size_t worker) {
      checker.Task(task, worker);
    });
    checker.ExpectEachTaskOnce();
    // Far past the spin window: every worker is parked now.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

TEST(ThreadPoolTest, SlowTasksParkTheWaitingCaller) {
  // Tasks longer than the spin window make the caller park on the last one.
  ThreadPool pool(3);
  const ParallelRunner runner = pool.Runner();
  std::atomic<int> ran{0};
  for (int round = 0; round < 5; ++round) {
    ParallelFor(&runner, 6, [&](size_t task, size_t) {
      if (task % 2 == 1)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      ran.fetch_add(1);
    });
    ASSERT_EQ(ran.load(), 6 * (round + 1));
  }
}

TEST(ThreadPoolTest, ConcurrentHostThreadsShareOnePool) {
  ThreadPool pool(4);
  const ParallelRunner runner = pool.Runner();
  // One checker for both hosts: worker indices must stay exclusive across
  // their regions too.
  RegionChecker shared(pool.NumThreads());
  shared.Reset(1);
  std::atomic<int> failures{0};
  auto host = [&](int seed) {
    const int runs = Scaled(2000);
    for (int r = 0; r < runs; ++r) {
      const size_t num_tasks = 1 + static_cast<size_t>(r + seed) % 13;
      std::vector<std::atomic<int>> counts(num_tasks);
      auto body = [&](size_t task, size_t worker) {
        counts[task].fetch_add(1);
        shared.Task(0, worker);
      };
      // The raw hook, not ParallelFor: ParallelFor runs a single task on the
      // calling thread without asking the pool, so it would not be
      // serialized against the other host's region.
      runner.run(
          runner.self, num_tasks,
          [](void* ctx, size_t task, size_t worker) {
            (*static_cast<decltype(body)*>(ctx))(task, worker);
          },
          &body);
      for (auto& c : counts) {
        if (c.load() != 1) failures.fetch_add(1);
      }
    }
  };
  std::thread a(host, 0);
  std::thread b(host, 5);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(shared.errors(), 0);
}

TEST(ThreadPoolTest, ConstructAndDestroyRepeatedly) {
  for (int i = 0; i < Scaled(200); ++i) {
    ThreadPool pool(1 + i % 5);
    if (i % 2 == 0) {
      std::atomic<int> ran{0};
      const ParallelRunner runner = pool.Runner();
      ParallelFor(&runner, 7, [&](size_t, size_t) { ran.fetch_add(1); });
      ASSERT_EQ(ran.load(), 7);
    }
  }
}

TEST(ThreadPoolTest, DefaultNumThreadsIsSane) {
  const size_t n = ThreadPool::DefaultNumThreads();
  EXPECT_GE(n, 1u);
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw != 0) {
    EXPECT_LE(n, hw);
  }
}

detail::CpuDesc Cpu(int cpu, long core, unsigned long freq,
                    unsigned long capacity = 0, long package = 0) {
  detail::CpuDesc d;
  d.cpu = cpu;
  d.package_id = package;
  d.core_id = core;
  d.max_freq_khz = freq;
  d.capacity = capacity;
  return d;
}

TEST(ThreadPoolTest, CountPerformanceCores) {
  using detail::CountPerformanceCores;
  EXPECT_EQ(CountPerformanceCores({}), 0u);

  // Homogeneous 4 cores, each with an SMT sibling.
  std::vector<detail::CpuDesc> smt;
  for (int i = 0; i < 8; ++i) smt.push_back(Cpu(i, i % 4, 3000000));
  EXPECT_EQ(CountPerformanceCores(smt), 4u);

  // Two sockets reuse core ids.
  std::vector<detail::CpuDesc> sockets;
  for (int i = 0; i < 8; ++i) {
    sockets.push_back(Cpu(i, i % 4, 3000000, 0, /*package=*/i / 4));
  }
  EXPECT_EQ(CountPerformanceCores(sockets), 8u);

  // Classic 4+4 big.LITTLE: only the big cluster.
  std::vector<detail::CpuDesc> big_little;
  for (int i = 0; i < 4; ++i) big_little.push_back(Cpu(i, i, 1800000));
  for (int i = 4; i < 8; ++i) big_little.push_back(Cpu(i, i, 2800000));
  EXPECT_EQ(CountPerformanceCores(big_little), 4u);

  // Prime + big + little (1 + 3 + 4): prime and big, not just the prime.
  std::vector<detail::CpuDesc> tri;
  for (int i = 0; i < 4; ++i) tri.push_back(Cpu(i, i, 2000000, 250));
  for (int i = 4; i < 7; ++i) tri.push_back(Cpu(i, i, 2800000, 600));
  tri.push_back(Cpu(7, 7, 3200000, 1024));
  EXPECT_EQ(CountPerformanceCores(tri), 4u);

  // Capacity wins over frequency: little cores clocked close to the big ones.
  std::vector<detail::CpuDesc> close_clocks;
  for (int i = 0; i < 6; ++i) close_clocks.push_back(Cpu(i, i, 2000000, 450));
  for (int i = 6; i < 8; ++i) close_clocks.push_back(Cpu(i, i, 2200000, 1024));
  EXPECT_EQ(CountPerformanceCores(close_clocks), 2u);

  // Intel hybrid: 8 P-cores (SMT, two "favored" at a higher max frequency)
  // and 8 E-cores.
  std::vector<detail::CpuDesc> hybrid;
  for (int i = 0; i < 16; ++i) {
    hybrid.push_back(Cpu(i, i / 2, (i / 2) < 2 ? 5200000 : 4900000));
  }
  for (int i = 16; i < 24; ++i) hybrid.push_back(Cpu(i, 100 + i, 3900000));
  EXPECT_EQ(CountPerformanceCores(hybrid), 8u);

  // Favored cores on a homogeneous part do not shrink the count.
  std::vector<detail::CpuDesc> favored;
  for (int i = 0; i < 8; ++i) {
    favored.push_back(Cpu(i, i, i < 2 ? 5300000 : 5100000));
  }
  EXPECT_EQ(CountPerformanceCores(favored), 8u);

  // No cpufreq and no topology (containers, emulators): every CPU counts.
  std::vector<detail::CpuDesc> unknown;
  for (int i = 0; i < 3; ++i) unknown.push_back(Cpu(i, -1, 0));
  EXPECT_EQ(CountPerformanceCores(unknown), 3u);
}

}  // namespace
}  // namespace qkern
