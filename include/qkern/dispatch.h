// Compiles qkern's kernels for every SIMD target Highway enables and selects
// the best one for the running CPU at the first call.
//
// Define QKERN_STATIC_DISPATCH to compile only the target your compiler flags
// select (e.g. -march=armv8.2-a+dotprod for an Android build): no runtime
// detection, smaller binaries.
//
// Highway's foreach_target.h can be expanded once per translation unit, so a
// file that includes qkern must not run its own foreach_target expansion.
#ifndef QKERN_DISPATCH_H_
#define QKERN_DISPATCH_H_

#if !defined(QKERN_STATIC_DISPATCH)
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "qkern/detail/dispatch_targets.h"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#endif
#include <hwy/highway.h>

#include "qkern/detail/dispatch_targets.h"

#endif  // QKERN_DISPATCH_H_
