// The parallel-for hook every multi-threaded qkern entry point runs through.
//
// A host runtime that already owns threads plugs them in by filling a
// ParallelRunner; qkern never creates threads behind the caller's back. A null
// runner means "run on the calling thread".
#ifndef QKERN_THREADING_PARALLEL_H_
#define QKERN_THREADING_PARALLEL_H_

#include <stddef.h>

#include <utility>

namespace qkern {

// Runs task(ctx, task_index, worker_index) for every task_index in
// [0, num_tasks). worker_index is in [0, num_workers) and identifies the thread
// (so tasks may use per-worker scratch). Must return only after all tasks ran.
using TaskFn = void (*)(void* ctx, size_t task_index, size_t worker_index);

struct ParallelRunner {
  void* self = nullptr;
  size_t num_workers = 1;
  void (*run)(void* self, size_t num_tasks, TaskFn task, void* ctx) = nullptr;
};

// Calls func(task_index, worker_index) for each task, on `runner` if given.
template <class Func>
void ParallelFor(const ParallelRunner* runner, size_t num_tasks,
                 const Func& func) {
  if (num_tasks == 0) return;
  if (runner == nullptr || runner->run == nullptr || num_tasks == 1 ||
      runner->num_workers <= 1) {
    for (size_t i = 0; i < num_tasks; ++i) func(i, size_t{0});
    return;
  }
  auto trampoline = [](void* ctx, size_t task, size_t worker) {
    (*static_cast<const Func*>(ctx))(task, worker);
  };
  runner->run(runner->self, num_tasks, trampoline,
              const_cast<void*>(static_cast<const void*>(&func)));
}

inline size_t NumWorkers(const ParallelRunner* runner) {
  return (runner == nullptr || runner->run == nullptr) ? 1
                                                        : runner->num_workers;
}

}  // namespace qkern

#endif  // QKERN_THREADING_PARALLEL_H_
