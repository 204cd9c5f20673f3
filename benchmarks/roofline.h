// Measured ceilings of this machine, shared by every qkern benchmark so that
// each kernel figure can be reported as a fraction of a roof measured in the
// same process run.
#ifndef QKERN_BENCHMARKS_ROOFLINE_H_
#define QKERN_BENCHMARKS_ROOFLINE_H_

#include <stddef.h>

namespace qkern {
namespace bench {

// STREAM-style read bandwidth (GB/s, 1e9 bytes) with `threads` threads each
// summing its own slice of a buffer much larger than the last-level cache.
// Best of several passes; measured once per thread count and cached.
double ReadBandwidthGBs(size_t threads);

// The same read bandwidth measured now (not cached; best of three passes
// over a 256 MiB buffer kept for the process): on a shared machine the
// roof moves from minute to minute, so a kernel is best compared with a
// roof taken right after it.
double ReadBandwidthNowGBs(size_t threads);

// Peak int8 dot throughput (GOP/s, 1 MAC = 2 ops) of the int8 dot instruction
// the matmul uses on the running target, with `threads` threads. Cached.
double Int8DotPeakGops(size_t threads);
// The same, measured now (not cached): on a shared machine the peak moves
// with the load, so a kernel is best compared with a peak taken right after.
double MeasureInt8DotPeakGops(size_t threads);

// Peak f32 FMA throughput (GFLOP/s), for comparison. Cached.
double F32FmaPeakGflops(size_t threads);

// Bytes a benchmark cycles through so its operands come from DRAM: the
// environment variable `env_mib` (in MiB) when set, e.g. 1 to run warm and
// see a kernel's compute ceiling, else `default_mib`.
size_t ColdBytesFromEnv(const char* env_mib, size_t default_mib);

}  // namespace bench
}  // namespace qkern

#endif  // QKERN_BENCHMARKS_ROOFLINE_H_
