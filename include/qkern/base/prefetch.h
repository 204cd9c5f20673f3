// Software prefetch hints shared by the kernels.
#ifndef QKERN_BASE_PREFETCH_H_
#define QKERN_BASE_PREFETCH_H_

namespace qkern {

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
