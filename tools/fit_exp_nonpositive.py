#!/usr/bin/env python3
"""Fits the polynomial of include/qkern/kernels/exp_nonpositive-inl.h.

e^r ~ 1 + r + c2 r^2 + ... + c6 r^6 on |r| <= 0.3467 (ln2 / 2 plus the
rounding of x log2 e for |x| <= 128), minimax in relative error by Lawson's
iteration (reweighted least squares on Chebyshev points). The leading 1, 1
keep e^0 exactly 1. Prints the coefficients rounded to f32, as C hex floats.
tools/exp_nonpositive_sweep.cc measures the resulting kernel over every f32.
Needs numpy.
"""
import numpy as np

HALF_RANGE = 0.3467
DEGREE = 6


def main():
    r = np.cos(np.linspace(0.0, np.pi, 4001)) * HALF_RANGE
    r = r[np.abs(r) > 1e-12]
    f = np.exp(r)
    # Unknowns c2..c6 of (e^r - 1 - r) = sum c_k r^k, weighted by 1 / e^r.
    a = np.stack([r**k for k in range(2, DEGREE + 1)], axis=1) / f[:, None]
    b = (f - 1.0 - r) / f
    w = np.full(r.shape, 1.0 / r.size)
    for _ in range(200):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
        err = np.abs(a @ c - b)
        w = w * err
        w /= w.sum()
    c32 = c.astype(np.float32).astype(np.float64)
    print(f"max relative error: {np.max(np.abs(a @ c - b)):.3g} "
          f"(f32 coefficients {np.max(np.abs(a @ c32 - b)):.3g})")
    for k, v in zip(range(2, DEGREE + 1), c32):
        print(f"c{k} = {float(v).hex()}  ({float(v)!r})")


if __name__ == "__main__":
    main()
