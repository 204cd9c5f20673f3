// Optional int8 dot instruction sub-paths inside one Highway target, and a
// mask to turn them off (tests run the fallbacks on CPUs that have the
// extension; benchmarks compare them).
#ifndef QKERN_KERNELS_DOT_PATH_H_
#define QKERN_KERNELS_DOT_PATH_H_

#include <stdint.h>

#include <atomic>

namespace qkern {

enum DotPathBits : uint32_t {
  kDotPathArmDotprod = 1u << 0,  // SDOT (ARMv8.2 dotprod)
  kDotPathArmI8mm = 1u << 1,     // USDOT (ARMv8.6 i8mm)
  // USMMLA (NEON) / svusmmla (SVE) on the 8-byte-row panel layout; needs
  // i8mm too. Off, an i8mm CPU packs the 4-byte-quad layout and runs USDOT
  // (NEON) or svdot (SVE). Read when weights are packed: weights packed
  // under another mask are refused by MatMul, not misread.
  kDotPathArmMmla = 1u << 2,
  // Intel AMX-INT8 tiles for prefill (M >= 16) inside the AVX3_DL target, on
  // the same weight layout as VNNI; off, prefill runs the VNNI tiles.
  kDotPathX86Amx = 1u << 3,
  kDotPathAll = ~0u,
};

namespace detail {
inline std::atomic<uint32_t>& DotPathMaskStorage() {
  static std::atomic<uint32_t> mask{kDotPathAll};
  return mask;
}
}  // namespace detail

// Which optional sub-paths the kernels may use (default: all the CPU has).
inline uint32_t DotPathMask() {
  return detail::DotPathMaskStorage().load(std::memory_order_relaxed);
}
inline void SetDotPathMask(uint32_t mask) {
  detail::DotPathMaskStorage().store(mask, std::memory_order_relaxed);
}

}  // namespace qkern

#endif  // QKERN_KERNELS_DOT_PATH_H_
