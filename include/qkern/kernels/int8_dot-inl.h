// Per-target int8 "quad dot": the one instruction the quantized matmul is
// built around. For each 32-bit lane i,
//   acc[i] += sum_{j<4} u[4i+j] * x[4i+j]
// with u unsigned weight codes and x signed int8 activations. DotU4 requires
// u <= 15 (4-bit codes), DotU8 accepts u <= 255 (8-bit codes stored with a
// +128 offset). Both are exact: no intermediate saturates.
//
// Highway 1.0.3 has no such op, so each target gets the best instruction it
// has: VNNI vpdpbusd (AVX3_DL), pmaddubsw+pmaddwd (SSSE3..AVX3), SDOT / USDOT
// (NEON with dotprod / i8mm, chosen at run time), SVE sdot, and plain lane
// arithmetic elsewhere. The dotprod/i8mm/VNNI instructions are emitted with
// inline asm so that no function needs target attributes beyond Highway's.
//
// Arm i8mm also has a 2x2 int8 matrix multiply (USMMLA, SVE svusmmla) that
// does twice the work of USDOT per instruction; it needs its own weight
// layout (PanelLayout::kMmla8), so its wrapper (MmlaNeon / MmlaSve) is used
// by matmul_mmla-inl.h, and UseMmla() says whether the running CPU and the
// dot path mask select it.

#if defined(QKERN_KERNELS_INT8_DOT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKERN_KERNELS_INT8_DOT_INL_H_
#undef QKERN_KERNELS_INT8_DOT_INL_H_
#else
#define QKERN_KERNELS_INT8_DOT_INL_H_
#endif

#include <stdint.h>
#include <string.h>

#include <hwy/highway.h>

#include "qkern/kernels/dot_path.h"
#include "qkern/kernels/matmul_types.h"

// AVX3_DL on Linux also drives Intel AMX-INT8 tiles for prefill
// (matmul_amx-inl.h); detected here with the other optional sub-paths.
#undef QKERN_HAVE_AMX_PATH
#if HWY_TARGET == HWY_AVX3_DL && defined(__linux__) && \
    (defined(__GNUC__) || defined(__clang__))
#define QKERN_HAVE_AMX_PATH 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define QKERN_HAVE_AMX_PATH 0
#endif

#if (HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE ||       \
     HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 ||     \
     HWY_TARGET == HWY_SVE2_128) &&                             \
    defined(__linux__)
#include <sys/auxv.h>
#endif

HWY_BEFORE_NAMESPACE();
namespace qkern {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
// One-lane vectors cannot hold a 4-byte quad: the matmul has a plain C++
// tile for this target instead (see matmul-inl.h).
struct DotScalar {
  static constexpr const char* kName = "scalar";
};
using DotDefault = DotScalar;
#else

using DI32 = hn::ScalableTag<int32_t>;
using DU8 = hn::Repartition<uint8_t, DI32>;
using DI8 = hn::Repartition<int8_t, DI32>;
using VI32 = hn::Vec<DI32>;
using VU8 = hn::Vec<DU8>;
using VI8 = hn::Vec<DI8>;

// Four consecutive int8 activations replicated into every 32-bit lane.
HWY_INLINE VI8 BroadcastQuad(const int8_t* HWY_RESTRICT x) {
  int32_t quad;
  memcpy(&quad, x, sizeof(quad));
  return hn::BitCast(DI8(), hn::Set(DI32(), quad));
}

// Portable fallback: unpack the four bytes of each lane with shifts.
struct DotLanes {
  static constexpr const char* kName = "lanes";
  template <int kByte>
  static HWY_INLINE VI32 Term(VU8 u, VI8 x) {
    const DI32 d32;
    const auto u32 = hn::BitCast(hn::RebindToUnsigned<DI32>(), u);
    const VI32 uj = hn::BitCast(
        d32, hn::And(hn::ShiftRight<8 * kByte>(u32),
                     hn::Set(hn::RebindToUnsigned<DI32>(), 0xFFu)));
    const VI32 xj =
        hn::ShiftRight<24>(hn::ShiftLeft<24 - 8 * kByte>(hn::BitCast(d32, x)));
    return hn::Mul(uj, xj);
  }
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    const VI32 s01 = hn::Add(Term<0>(u, x), Term<1>(u, x));
    const VI32 s23 = hn::Add(Term<2>(u, x), Term<3>(u, x));
    return hn::Add(acc, hn::Add(s01, s23));
  }
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) { return U8(acc, u, x); }
};

#if HWY_TARGET == HWY_AVX3_DL

struct DotVnni {
  static constexpr const char* kName = "avx512-vnni";
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    __m512i r = acc.raw;
    asm("vpdpbusd %2, %1, %0" : "+v"(r) : "v"(u.raw), "v"(x.raw));
    return VI32{r};
  }
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) { return U8(acc, u, x); }
};
using DotDefault = DotVnni;

#elif HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || \
    HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3

// pmaddubsw saturates pairs to int16: exact for 4-bit codes (2*15*128), so
// 8-bit codes are split into nibbles and the high half weighted by 16.
struct DotMaddubs {
#if HWY_TARGET == HWY_AVX3
  static constexpr const char* kName = "avx512-maddubs";
  using Raw = __m512i;
  static HWY_INLINE Raw Maddubs(Raw a, Raw b) { return _mm512_maddubs_epi16(a, b); }
  static HWY_INLINE Raw Madd(Raw a, Raw b) { return _mm512_madd_epi16(a, b); }
  static HWY_INLINE Raw Set16(short v) { return _mm512_set1_epi16(v); }
  static HWY_INLINE Raw Add32(Raw a, Raw b) { return _mm512_add_epi32(a, b); }
#elif HWY_TARGET == HWY_AVX2
  static constexpr const char* kName = "avx2-maddubs";
  using Raw = __m256i;
  static HWY_INLINE Raw Maddubs(Raw a, Raw b) { return _mm256_maddubs_epi16(a, b); }
  static HWY_INLINE Raw Madd(Raw a, Raw b) { return _mm256_madd_epi16(a, b); }
  static HWY_INLINE Raw Set16(short v) { return _mm256_set1_epi16(v); }
  static HWY_INLINE Raw Add32(Raw a, Raw b) { return _mm256_add_epi32(a, b); }
#else
  static constexpr const char* kName = "ssse3-maddubs";
  using Raw = __m128i;
  static HWY_INLINE Raw Maddubs(Raw a, Raw b) { return _mm_maddubs_epi16(a, b); }
  static HWY_INLINE Raw Madd(Raw a, Raw b) { return _mm_madd_epi16(a, b); }
  static HWY_INLINE Raw Set16(short v) { return _mm_set1_epi16(v); }
  static HWY_INLINE Raw Add32(Raw a, Raw b) { return _mm_add_epi32(a, b); }
#endif
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) {
    const Raw pairs = Maddubs(u.raw, x.raw);
    return VI32{Add32(acc.raw, Madd(pairs, Set16(1)))};
  }
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    const DU8 du8;
    const VU8 lo = hn::And(u, hn::Set(du8, 0x0F));
    const VU8 hi = hn::And(
        hn::BitCast(du8, hn::ShiftRight<4>(
                             hn::BitCast(hn::Repartition<uint16_t, DU8>(), u))),
        hn::Set(du8, 0x0F));
    const Raw sum_lo = Madd(Maddubs(lo.raw, x.raw), Set16(1));
    const Raw sum_hi = Madd(Maddubs(hi.raw, x.raw), Set16(16));
    return VI32{Add32(acc.raw, Add32(sum_lo, sum_hi))};
  }
};
using DotDefault = DotMaddubs;

#elif HWY_TARGET == HWY_NEON

// Plain ARMv8.0 NEON (Cortex-A53 class): widening multiplies and pairwise
// adds. Codes <= 15 fit int8, so smull is exact; 8-bit codes are split.
struct DotNeonPlain {
  static constexpr const char* kName = "neon";
  static HWY_INLINE int32x4_t Dot4(int32x4_t acc, int8x16_t u, int8x16_t x) {
    const int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(u), vget_low_s8(x)));
    const int32x4_t hi = vpaddlq_s16(vmull_high_s8(u, x));
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
  }
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) {
    return VI32{Dot4(acc.raw, vreinterpretq_s8_u8(u.raw), x.raw)};
  }
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(u.raw, vdupq_n_u8(15)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(u.raw, 4));
    const int32x4_t sum_hi = Dot4(vdupq_n_s32(0), hi, x.raw);
    return VI32{vaddq_s32(Dot4(acc.raw, lo, x.raw), vshlq_n_s32(sum_hi, 4))};
  }
};

#ifndef QKERN_ASM_VREG_NUMBER
// Assembler snippet that sets symbol `var` to the number of vector register
// `reg` ("v0".."v31"). binutils 2.40 rejects `.arch_extension dotprod/i8mm`
// on an armv8-a base, so SDOT and USDOT are emitted as a raw .inst encoding instead.
#define QKERN_ASM_VREG_NUMBER(var, reg)                                  \
  ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23," \
  "24,25,26,27,28,29,30,31\n.ifc " reg ",v\\n\n.set " var                \
  ", \\n\n.endif\n.endr\n"
#endif

// ARMv8.2 dotprod (Cortex-A55/A76 and later): SDOT, signed x signed.
struct DotNeonSdot {
  static constexpr const char* kName = "neon-sdot";
  static HWY_INLINE int32x4_t Sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    // SDOT Vd.4S, Vn.16B, Vm.16B
    asm(QKERN_ASM_VREG_NUMBER("qkern_rd", "%0")
            QKERN_ASM_VREG_NUMBER("qkern_rn", "%1")
                QKERN_ASM_VREG_NUMBER("qkern_rm", "%2")
        ".inst 0x4e809400 | (qkern_rm << 16) | (qkern_rn << 5) | qkern_rd"
        : "+w"(acc)
        : "w"(a), "w"(b));
    return acc;
  }
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) {
    return VI32{Sdot(acc.raw, vreinterpretq_s8_u8(u.raw), x.raw)};
  }
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(u.raw, vdupq_n_u8(15)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(u.raw, 4));
    const int32x4_t sum_hi = Sdot(vdupq_n_s32(0), hi, x.raw);
    return VI32{vaddq_s32(Sdot(acc.raw, lo, x.raw), vshlq_n_s32(sum_hi, 4))};
  }
};


// ARMv8.6 i8mm: USDOT multiplies unsigned by signed bytes directly.
struct DotNeonUsdot {
  static constexpr const char* kName = "neon-i8mm-usdot";
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    int32x4_t r = acc.raw;
    // USDOT Vd.4S, Vn.16B, Vm.16B
    asm(QKERN_ASM_VREG_NUMBER("qkern_rd", "%0")
            QKERN_ASM_VREG_NUMBER("qkern_rn", "%1")
                QKERN_ASM_VREG_NUMBER("qkern_rm", "%2")
        ".inst 0x4e809c00 | (qkern_rm << 16) | (qkern_rn << 5) | qkern_rd"
        : "+w"(r)
        : "w"(u.raw), "w"(x.raw));
    return VI32{r};
  }
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) { return U8(acc, u, x); }
};
using DotDefault = DotNeonPlain;

// ARMv8.6 i8mm: USMMLA. Per 128 bits, u and x are each 2 rows x 8 bytes and
//   acc[2i + j] += sum_{k<8} u[8i + k] * x[8j + k]
// (u unsigned, x signed; exact in int32).
struct MmlaNeon {
  static constexpr const char* kName = "neon-i8mm-usmmla";
  static HWY_INLINE VI32 Acc(VI32 acc, VU8 u, VI8 x) {
    int32x4_t r = acc.raw;
    // USMMLA Vd.4S, Vn.16B, Vm.16B
    asm(QKERN_ASM_VREG_NUMBER("qkern_rd", "%0")
            QKERN_ASM_VREG_NUMBER("qkern_rn", "%1")
                QKERN_ASM_VREG_NUMBER("qkern_rm", "%2")
        ".inst 0x4e80ac00 | (qkern_rm << 16) | (qkern_rn << 5) | qkern_rd"
        : "+w"(r)
        : "w"(u.raw), "w"(x.raw));
    return VI32{r};
  }
};
using MmlaOp = MmlaNeon;

#elif HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || \
    HWY_TARGET == HWY_SVE_256 || HWY_TARGET == HWY_SVE2_128

// SVE's signed dot product is part of the base ISA.
struct DotSve {
  static constexpr const char* kName = "sve-sdot";
  static HWY_INLINE VI32 U4(VI32 acc, VU8 u, VI8 x) {
    return svdot_s32(acc, svreinterpret_s8_u8(u), x);
  }
  static HWY_INLINE VI32 U8(VI32 acc, VU8 u, VI8 x) {
    const svint8_t lo = svreinterpret_s8_u8(svand_n_u8_x(svptrue_b8(), u, 15));
    const svint8_t hi = svreinterpret_s8_u8(svlsr_n_u8_x(svptrue_b8(), u, 4));
    const svint32_t sum_hi = svdot_s32(svdup_n_s32(0), hi, x);
    return svadd_s32_x(svptrue_b32(), svdot_s32(acc, lo, x),
                       svlsl_n_s32_x(svptrue_b32(), sum_hi, 4));
  }
};
using DotDefault = DotSve;

#ifndef QKERN_ASM_ZREG_NUMBER
// Sets symbol `var` to the number of SVE register `reg` ("z0".."z31"), as
// QKERN_ASM_VREG_NUMBER does for NEON registers.
#define QKERN_ASM_ZREG_NUMBER(var, reg)                                  \
  ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23," \
  "24,25,26,27,28,29,30,31\n.ifc " reg ",z\\n\n.set " var                \
  ", \\n\n.endif\n.endr\n"
#endif

// SVE i8mm: USMMLA on every 128-bit segment (same 2x2 tile as MmlaNeon).
// GCC 12 accepts svusmmla_s32 only under +i8mm, and binutils 2.40 then
// rejects the SVE form on an armv8-a base, so it is a raw .inst encoding.
struct MmlaSve {
  static constexpr const char* kName = "sve-i8mm-usmmla";
  static HWY_INLINE VI32 Acc(VI32 acc, VU8 u, VI8 x) {
    // USMMLA Zda.S, Zn.B, Zm.B
    asm(QKERN_ASM_ZREG_NUMBER("qkern_zd", "%0")
            QKERN_ASM_ZREG_NUMBER("qkern_zn", "%1")
                QKERN_ASM_ZREG_NUMBER("qkern_zm", "%2")
        ".inst 0x45809800 | (qkern_zm << 16) | (qkern_zn << 5) | qkern_zd"
        : "+w"(acc)
        : "w"(u), "w"(x));
    return acc;
  }
};
using MmlaOp = MmlaSve;

#else
using DotDefault = DotLanes;
#endif
#endif  // HWY_TARGET == HWY_SCALAR

#if HWY_TARGET == HWY_NEON
// NEON is one Highway target, but dotprod (ARMv8.2) and i8mm (ARMv8.6) are
// optional: detect once.
HWY_INLINE uint32_t NeonHardwareDotFeatures() {
#if defined(__linux__)
  static const uint32_t features = [] {
    uint32_t f = 0;
    const unsigned long hwcap = getauxval(AT_HWCAP);
    const unsigned long hwcap2 = getauxval(AT_HWCAP2);
    if (hwcap & (1ul << 20)) f |= kDotPathArmDotprod;  // HWCAP_ASIMDDP
    if (hwcap2 & (1ul << 13)) {                         // HWCAP2_I8MM
      f |= kDotPathArmI8mm | kDotPathArmMmla;
    }
    return f;
  }();
  return features;
#else
  return 0;
#endif
}
// What the CPU has and the test mask allows.
HWY_INLINE uint32_t NeonDotFeatures() {
  return NeonHardwareDotFeatures() & DotPathMask();
}
#endif

#if HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || \
    HWY_TARGET == HWY_SVE_256 || HWY_TARGET == HWY_SVE2_128
// svdot is base SVE; the SVE form of i8mm is optional (A64FX lacks it).
HWY_INLINE uint32_t SveHardwareDotFeatures() {
#if defined(__linux__)
  static const uint32_t features = [] {
    const unsigned long hwcap2 = getauxval(AT_HWCAP2);
    return (hwcap2 & (1ul << 9))  // HWCAP2_SVEI8MM
               ? uint32_t{kDotPathArmI8mm | kDotPathArmMmla}
               : uint32_t{0};
  }();
  return features;
#else
  return 0;
#endif
}
#endif

#if QKERN_HAVE_AMX_PATH
// True when the CPU has AMX-TILE and AMX-INT8, the OS enables their state
// (XCR0 bits 17 and 18) and Linux grants this process the tile data
// (arch_prctl ARCH_REQ_XCOMP_PERM; without it the first tile instruction
// faults). Checked once.
HWY_INLINE bool AmxHardwareReady() {
  static const bool ready = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if ((d & (1u << 24)) == 0 || (d & (1u << 25)) == 0) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || (c & (1u << 27)) == 0) {
      return false;  // no OSXSAVE: xgetbv would fault
    }
    uint32_t xcr0_lo = 0, xcr0_hi = 0;
    asm volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & (3u << 17)) != (3u << 17)) return false;
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtileData = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0;
  }();
  return ready;
}

// AMX runs prefill calls (M >= 16) when the CPU has it and the dot path mask
// allows it; decode and short calls keep the VNNI tiles.
HWY_INLINE bool UseAmx(size_t m) {
  return m >= kAmxTileRows && (DotPathMask() & kDotPathX86Amx) != 0 &&
         AmxHardwareReady();
}

#else
HWY_INLINE bool UseAmx(size_t /*m*/) { return false; }
#endif  // QKERN_HAVE_AMX_PATH

// True where this target has an MMLA wrapper and the CPU has i8mm.
HWY_INLINE bool MmlaSupported() {
#if HWY_TARGET == HWY_NEON
  return (NeonHardwareDotFeatures() & kDotPathArmMmla) != 0;
#elif HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || \
    HWY_TARGET == HWY_SVE_256 || HWY_TARGET == HWY_SVE2_128
  return (SveHardwareDotFeatures() & kDotPathArmMmla) != 0;
#else
  return false;
#endif
}

// True when the matmul should pack PanelLayout::kMmla8 and run MMLA: the CPU
// has it and the dot path mask allows both i8mm and the MMLA sub-path.
HWY_INLINE bool UseMmla() {
  const uint32_t need = kDotPathArmI8mm | kDotPathArmMmla;
  return MmlaSupported() && (DotPathMask() & need) == need;
}

// Calls func(Dot{}) with the best int8 dot implementation this CPU allows
// (chosen at run time only inside the NEON target).
template <class Func>
HWY_INLINE void WithBestDot(const Func& func) {
#if HWY_TARGET == HWY_NEON
  const uint32_t f = NeonDotFeatures();
  if (f & kDotPathArmI8mm) return func(DotNeonUsdot());
  if (f & kDotPathArmDotprod) return func(DotNeonSdot());
  return func(DotNeonPlain());
#else
  return func(DotDefault());
#endif
}

HWY_INLINE const char* DotPathName() {
#if HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE || \
    HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 || \
    HWY_TARGET == HWY_SVE2_128
  if (UseMmla()) return MmlaOp::kName;
#endif
#if QKERN_HAVE_AMX_PATH
  if (UseAmx(kAmxTileRows)) return "avx512-vnni-amx";
#endif
  const char* name = "";
  WithBestDot([&](auto dot) { name = decltype(dot)::kName; });
  return name;
}

}  // namespace HWY_NAMESPACE
}  // namespace qkern
HWY_AFTER_NAMESPACE();

#endif  // include guard (toggle)
