// Software prefetch hints shared by the kernels.
#ifndef QKERN_BASE_PREFETCH_H_
#define QKERN_BASE_PREFETCH_H_

#include <stddef.h>
#include <stdlib.h>

#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#endif

namespace qkern {

// True on Intel x86 CPUs (CPUID vendor "GenuineIntel").
inline bool IsIntelCpu() {
#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  return ebx == 0x756e6547u && edx == 0x49656e69u && ecx == 0x6c65746eu;
#else
  return false;
#endif
}

// How far ahead of its weight stream the decode GEMV prefetches into L1.
// The best distance depends on the core (GEMV on Llama-3.2-1B shapes, weights
// from DRAM, 1 thread):
// - Zen 5: 8 KiB took the GEMV from ~83% to ~95% of the read roof.
// - Intel Xeon (AVX-512 + AMX VM, 2026-12-05, roof ~15 GB/s): Q4_0 ran at
//   14-15 GB/s with 1-3 KiB, 13 without prefetch, 11-12 with 8-16 KiB.
//   There the L2 streamer already pulls the stream from DRAM, and a far L1
//   prefetch holds one of the few L1 fill buffers for a whole DRAM latency.
// Other CPUs keep the Zen 5 figure. The environment variable
// QKERN_GEMV_PREFETCH_BYTES (read once; 0 turns the prefetch off) or the
// macro QKERN_PREFETCH_BYTES override it, for tuning on a new core.
inline size_t DecodePrefetchBytes() {
#ifdef QKERN_PREFETCH_BYTES
  return QKERN_PREFETCH_BYTES;
#else
  static const size_t bytes = [] {
    const char* env = getenv("QKERN_GEMV_PREFETCH_BYTES");
    if (env != nullptr && *env != '\0') return static_cast<size_t>(atol(env));
    return IsIntelCpu() ? size_t{2048} : size_t{8192};
  }();
  return bytes;
#endif
}

// Starts loading the cache line at `p` into L2 (x86 prefetcht1, Arm
// PLDL2KEEP), for streams that keep many lines in flight: a prefetch into L1
// holds one of the core's few L1 miss buffers until its line arrives, while
// L2 tracks several times more misses. Used by decode attention; L1 against
// L2 there has not been re-measured since the fix below (the earlier
// comparison ran without the loops' prefetches). The GEMV keeps L1: L2
// measured 1.2-2.2x slower on its weight stream.
//
// Inline asm where we can: GCC 12 deleted the attention kernel's loops whose
// bodies were only __builtin_prefetch calls (its K and V prefetches compiled
// to nothing), while asm volatile is always kept.
inline void PrefetchToL2(const void* p) {
#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  asm volatile("prfm pldl2keep, [%0]" : : "r"(p));
#elif defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, /*rw=*/0, /*locality=*/2);
#else
  (void)p;
#endif
}

}  // namespace qkern

#endif  // QKERN_BASE_PREFETCH_H_
