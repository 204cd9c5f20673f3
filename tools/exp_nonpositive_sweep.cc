// Measures ExpNonPositive's error (include/qkern/kernels/exp_nonpositive-inl.h)
// over every f32 x in [-87, 0] against double exp, with its steps in scalar
// code: once with fused multiply-adds, once with a rounded product and sum
// (the targets without FMA). About a minute:
//   g++ -O2 -ffp-contract=off tools/exp_nonpositive_sweep.cc -o /tmp/sweep
//   /tmp/sweep
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

template <bool kFused>
float MulAdd(float a, float b, float c) {
  if (kFused) return fmaf(a, b, c);
  volatile float product = a * b;  // rounded on its own
  return product + c;
}

template <bool kFused>
float ExpNonPositive(float x) {
  x = fmaxf(x, -128.0f);
  const float n = nearbyintf(x * 1.44269504088896341f);
  float r = MulAdd<true>(-n, 0.693359375f, x);  // exact either way
  r = MulAdd<kFused>(n, 2.12194440e-4f, r);
  float p = 0x1.6a23f0p-10f;
  p = MulAdd<kFused>(p, r, 0x1.123a0cp-7f);
  p = MulAdd<kFused>(p, r, 0x1.5558f2p-5f);
  p = MulAdd<kFused>(p, r, 0x1.555492p-3f);
  p = MulAdd<kFused>(p, r, 0x1.fffffcp-2f);
  p = MulAdd<kFused>(p, r, 1.0f);
  p = MulAdd<kFused>(p, r, 1.0f);
  const int32_t bits = (static_cast<int32_t>(fmaxf(n, -127.0f)) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

template <bool kFused>
void Sweep(const char* name) {
  double worst = 0.0;
  float worst_x = 0.0f;
  for (uint32_t bits = 0x80000000u;; ++bits) {
    float x;
    memcpy(&x, &bits, sizeof(x));
    if (x < -87.0f) break;
    const double want = exp(static_cast<double>(x));
    const double err = fabs(ExpNonPositive<kFused>(x) - want) / want;
    if (err > worst) {
      worst = err;
      worst_x = x;
    }
  }
  printf("%s: max relative error %.3g = %.3f u at x = %.9g\n", name, worst,
         worst * 16777216.0, worst_x);
}

int main() {
  Sweep<true>("fused multiply-add");
  Sweep<false>("separate product and sum");
  printf("exp(0) = %a, exp(-88) = %a, exp(-128) = %a\n",
         ExpNonPositive<true>(0.0f), ExpNonPositive<true>(-88.0f),
         ExpNonPositive<true>(-128.0f));
  return 0;
}
