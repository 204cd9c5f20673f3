// Which SIMD target and instruction sub-path qkern runs on, and a way to
// force one (tests, benchmarks, A/B comparisons).
#ifndef QKERN_TARGET_H_
#define QKERN_TARGET_H_

#include <stdint.h>

#include <string>
#include <vector>

// dispatch.h first: its per-target expansion must precede any other
// include of hwy/highway.h in the translation unit.
#include "qkern/dispatch.h"
#include "qkern/kernels/matmul_types.h"

#include <hwy/highway.h>
#include <hwy/targets.h>

namespace qkern {

// The Highway targets compiled into this binary that this CPU can run, best
// first (HWY_AVX3_DL, HWY_AVX2, HWY_NEON, HWY_SVE2, ...).
inline std::vector<int64_t> AvailableTargets() {
  std::vector<int64_t> targets;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) targets.push_back(t);
  return targets;
}

// Restricts dispatch to `target` (one HWY_* bit), or restores the automatic
// choice with 0. Not thread-safe with kernels running concurrently.
inline void ForceTarget(int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

// The target the kernels run on now, e.g. "AVX3_DL" or "SVE2".
inline std::string ActiveTargetName() {
  const int64_t best = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(best & ~(best - 1));
}

// The int8 dot instruction path the matmul uses on the active target, e.g.
// "avx512-vnni", "neon-sdot", "sve-sdot".
inline std::string ActiveDotPath() { return detail::DispatchDotPath(); }

}  // namespace qkern

#endif  // QKERN_TARGET_H_
