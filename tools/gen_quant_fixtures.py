#!/usr/bin/env python3
"""Generates tests/data/quant_fixtures.bin: GGUF block quantization oracles.

The `gguf` Python package (PyPI) quantizes a fixed, seeded set of float32
inputs to Q4_0, Q4_1 and Q8_0 and dequantizes the result again; tests/
quant_test.cc checks that qkern::ref produces the same block bytes and the
same float bits. Run from anywhere:

    python3 tools/gen_quant_fixtures.py [--out PATH]

The output is deterministic for a given numpy + gguf version.

File format (all integers little-endian, no padding anywhere):

    char[8]  magic            "QKQFIX01"
    u32      version          1
    u32      n_blocks         inputs are n_blocks * 32 float32 values
    u32      n_cases          number of input categories
    u32      n_types          number of quantized sections that follow
    n_cases times:
      u8     name_len
      char   name[name_len]   category name, no terminator
    u8       case_of_block[n_blocks]   index into the names above
    f32      input[n_blocks * 32]
    n_types times:
      u32    ggml_type        GGMLQuantizationType: Q4_0 2, Q4_1 3, Q8_0 8
      u32    block_bytes      bytes per 32-value block (18, 20, 34)
      u8     blocks[n_blocks * block_bytes]   gguf.quants.quantize(input)
      f32    dequant[n_blocks * 32]           gguf.quants.dequantize(blocks)

Every block is quantized under every type, including the categories built
for one type's rounding (their names end in the type they target).

Blocks that mix +0.0 and -0.0 are deliberately absent: numpy's vectorized
min/argmax pick the sign of a zero extreme differently from ggml's scalar
loop (e.g. an all -0.0 block gets Q4_0 d = +0 from gguf, -0 from ggml), and
qkern follows ggml there. quant_test.cc covers that case on its own.
"""

import argparse
import fractions
import hashlib
import itertools
import os
import struct
import sys
import warnings

import numpy as np
import gguf
from gguf.quants import dequantize, quantize

QK = 32
SEED = 20240607
MAGIC = b"QKQFIX01"
VERSION = 1
TYPES = (
    gguf.GGMLQuantizationType.Q4_0,
    gguf.GGMLQuantizationType.Q4_1,
    gguf.GGMLQuantizationType.Q8_0,
)

f32 = np.float32


def log_uniform(rng, lo_exp, hi_exp, size=None):
    return 10.0 ** rng.uniform(lo_exp, hi_exp, size)


def ulp_jitter(rng, x, max_ulps):
    """Moves each value by up to max_ulps float32 steps either way."""
    x = x.astype(f32)
    steps = rng.integers(-max_ulps, max_ulps + 1, x.shape)
    for i in np.ndindex(x.shape):
        toward = f32(np.inf) if steps[i] > 0 else f32(-np.inf)
        for _ in range(abs(int(steps[i]))):
            x[i] = np.nextafter(x[i], toward)
    return x


def place_extreme(rng, block, value):
    block[rng.integers(QK)] = value
    return block


# --- input categories: each returns one block of 32 float32 values ----------


def case_normal(rng):
    return (rng.standard_normal(QK) * log_uniform(rng, -3, 2)).astype(f32)


def case_uniform(rng):
    a = log_uniform(rng, -2, 2)
    return rng.uniform(-a, a, QK).astype(f32)


def case_outliers(rng):
    x = rng.standard_normal(QK).astype(f32)
    idx = rng.choice(QK, rng.integers(1, 4), replace=False)
    x[idx] *= f32(100.0)
    return x * f32(log_uniform(rng, -2, 1))


def case_zero(rng):
    return np.zeros(QK, f32)


CONSTANTS = itertools.cycle(
    [1.0, -1.0, 0.1, -3.7, 65504.0, -65504.0, 1e-7, 2.0**-24])


def case_constant(rng):
    return np.full(QK, next(CONSTANTS), f32)


def case_tiny(rng):
    # Scales of about 1e-10..4e-7: f16 subnormals (below 6.1e-5), or zero.
    return (rng.standard_normal(QK) * log_uniform(rng, -8, -6)).astype(f32)


def case_negative_dominant(rng):
    s = log_uniform(rng, -2, 1)
    x = -np.abs(rng.standard_normal(QK)) * s
    x[rng.choice(QK, 4, replace=False)] *= -0.3  # a few small positives
    return x.astype(f32)


def case_positive_only(rng):
    s = log_uniform(rng, -2, 1)
    return (s + np.abs(rng.standard_normal(QK)) * s).astype(f32)


def case_equal_extremes(rng):
    # +a and -a both reach the absolute maximum: Q4_0 must take the sign of
    # the first one, and the other one is clipped a full step.
    a = f32(log_uniform(rng, -1, 1))
    x = rng.uniform(-0.9, 0.9, QK).astype(f32) * a
    i, j = sorted(rng.choice(QK, 2, replace=False))
    sign = f32(1 if rng.integers(2) else -1)
    x[i], x[j] = sign * a, -sign * a
    return x


def exact_midpoints_q4_0(rng):
    # d = max / -8 = 2^k exactly, so x * id + 8.5 lands on integers.
    p = f32(2.0 ** rng.integers(-6, 6))
    x = (rng.integers(-8, 8, QK) + 0.5).astype(f32) * p
    return place_extreme(rng, x, f32(-8) * p)


def exact_midpoints_q4_1(rng):
    p = f32(2.0 ** rng.integers(-6, 6))
    x = (rng.integers(0, 15, QK) + 0.5).astype(f32) * p
    x[:2] = (f32(0), f32(15) * p)
    rng.shuffle(x)
    return x


def exact_midpoints_q8_0(rng):
    p = f32(2.0 ** rng.integers(-6, 6))
    x = (rng.integers(-127, 127, QK) + 0.5).astype(f32) * p
    return place_extreme(rng, x, f32(127 if rng.integers(2) else -127) * p)


def fma_flips(x, lo, inv, c):
    """True if trunc((x - lo) * inv + c) changes when the multiply-add is
    fused into one rounding (what -ffp-contract=fast does on Arm)."""
    diff = f32(x - lo)
    return np.trunc(diff * inv + f32(c)) != np.trunc(fused(diff, inv, c))


def near_midpoint_values(rng, targets, lo, inv, c):
    """Values with (x - lo) * inv within a few ulps of targets k + 0.5. Where
    some neighbour of the nearest value rounds differently when fused, pick
    one of those: a contracted quantizer then writes a different code."""
    out = []
    for t in targets:
        x0 = f32(lo + t / np.float64(inv))
        cands, a, b = [x0], x0, x0
        for _ in range(48):
            a, b = np.nextafter(a, f32(-np.inf)), np.nextafter(b, f32(np.inf))
            cands += [a, b]
        flips = [x for x in cands if fma_flips(x, lo, inv, c)]
        if flips and rng.random() < 0.75:
            out.append(flips[rng.integers(len(flips))])
        else:
            out.append(cands[rng.integers(5)])
    return np.array(out, f32)


def near_midpoints_q4_0(rng):
    e = f32(log_uniform(rng, -2, 2) * (1 if rng.integers(2) else -1))
    inv = f32(1) / (e / f32(-8))
    targets = rng.integers(-8, 8, QK) + 0.5
    x = near_midpoint_values(rng, targets, f32(0), inv, 8.5)
    return place_extreme(rng, x, e)


def near_midpoints_q4_1(rng):
    # Adding 0.5 is exact once the product is >= 0.5, so fusing can only
    # change a code near (x - lo) * id = 0.5, and only where x - lo is fine
    # grained: keep lo small and aim half the values at the first step.
    hi = f32(log_uniform(rng, -1, 1))
    lo = f32(-hi * rng.uniform(0, 0.01))
    inv = f32(1) / ((hi - lo) / f32(15))
    targets = np.where(rng.random(QK) < 0.5, 0, rng.integers(0, 15, QK)) + 0.5
    x = near_midpoint_values(rng, targets, lo, inv, 0.5)
    x = np.clip(x, lo, hi)
    x[:2] = (lo, hi)
    rng.shuffle(x)
    return x


def near_midpoints_q8_0(rng):
    e = f32(log_uniform(rng, -2, 2))
    inv = f32(1) / (e / f32(127))
    targets = rng.integers(-127, 127, QK) + 0.5
    x = ulp_jitter(rng, targets / np.float64(inv), 2)
    return place_extreme(rng, x, e * f32(1 if rng.integers(2) else -1))


# Scales (and the Q4_1 minimum) that are exact f16 ties: 1 + 2^-11 rounds down
# to 1, 1 + 3 * 2^-11 up to 1 + 2^-9, 3 * 2^-25 up to the second subnormal.
TIE_SCALES = [1 + 2.0**-11, 1 + 3 * 2.0**-11, 3 * 2.0**-25, 2.0**-25]


def scale_tie_q4_0(rng):
    s = f32(TIE_SCALES[rng.integers(4)])
    x = rng.uniform(-7, 7, QK).astype(f32) * s
    return place_extreme(rng, x, f32(-8) * s)


def scale_tie_q4_1(rng):
    lo = f32(-(1 + 2.0**-11))  # ties to -1
    hi = lo + f32(15) * f32(1 + 3 * 2.0**-11)  # (hi - lo) / 15 is a tie too
    x = rng.uniform(lo, hi, QK).astype(f32)
    x[:2] = (lo, hi)
    rng.shuffle(x)
    return x


def scale_tie_q8_0(rng):
    s = f32(TIE_SCALES[rng.integers(4)])
    x = rng.uniform(-120, 120, QK).astype(f32) * s
    return place_extreme(rng, x, f32(127) * s)


def case_large(rng):
    # Near f16 max: the Q4_1 minimum and constant blocks stay finite.
    x = rng.uniform(3e4, 65504, QK) * rng.choice([-1, 1], QK)
    x[rng.integers(QK)] = -65504.0 if rng.integers(2) else 65504.0
    return x.astype(f32)


F16_OVERFLOW = itertools.cycle([
    8 * 65510.0,  # Q4_0 d = -65510 rounds down to the largest f16
    8 * 65520.0,  # exactly the tie that rounds to infinity
    1e6,          # every f16 parameter overflows
])


def case_f16_overflow(rng):
    a = next(F16_OVERFLOW)
    x = rng.uniform(-0.9, 0.9, QK).astype(f32) * f32(a)
    return place_extreme(rng, x, f32(a))


CASES = [
    ("normal", case_normal, 40),
    ("uniform", case_uniform, 8),
    ("outliers", case_outliers, 16),
    ("zero", case_zero, 3),
    ("constant", case_constant, 8),
    ("tiny", case_tiny, 16),
    ("negative_dominant", case_negative_dominant, 10),
    ("positive_only", case_positive_only, 4),
    ("equal_extremes", case_equal_extremes, 4),
    ("midpoint_q4_0", exact_midpoints_q4_0, 4),
    ("midpoint_q4_1", exact_midpoints_q4_1, 4),
    ("midpoint_q8_0", exact_midpoints_q8_0, 4),
    ("near_midpoint_q4_0", near_midpoints_q4_0, 4),
    ("near_midpoint_q4_1", near_midpoints_q4_1, 4),
    ("near_midpoint_q8_0", near_midpoints_q8_0, 4),
    ("scale_tie_q4_0", scale_tie_q4_0, 2),
    ("scale_tie_q4_1", scale_tie_q4_1, 2),
    ("scale_tie_q8_0", scale_tie_q8_0, 4),
    ("large", case_large, 8),
    ("f16_overflow", case_f16_overflow, 3),
]


def build_inputs():
    rng = np.random.default_rng(SEED)
    blocks, case_ids = [], []
    for case_id, (_, make, count) in enumerate(CASES):
        for _ in range(count):
            block = np.asarray(make(rng), f32)
            assert block.shape == (QK,) and np.all(np.isfinite(block))
            # See the module docstring: no -0.0 in the fixtures.
            block[block == 0] = f32(0)
            blocks.append(block)
            case_ids.append(case_id)
    return np.concatenate(blocks), np.array(case_ids, np.uint8)


# --- diagnostics: would an FMA-contracted C++ build be caught? ---------------


def round_f32(q):
    """Rounds an exact rational to float32, ties to even."""
    if q == 0:
        return f32(0)
    sign, a = (-1, -q) if q < 0 else (1, q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if fractions.Fraction(2) ** e > a:
        e -= 1
    quantum = fractions.Fraction(2) ** (max(e, -126) - 23)
    n, rem = divmod(a, quantum)
    if rem * 2 > quantum or (rem * 2 == quantum and n % 2 == 1):
        n += 1
    return f32(float(sign * n * quantum))


def fused(a, b, c):
    F = fractions.Fraction
    return round_f32(F(float(a)) * F(float(b)) + F(float(c)))


def count_fma_sensitive(x):
    """Codes a quantizer that fused `a * b + c` would get wrong. (The
    dequantizers' products q * d are exact in f32, so fusing cannot change
    them.)"""
    flips = {"Q4_0": 0, "Q4_1": 0}
    with np.errstate(all="ignore"):
        for v in x.reshape(-1, QK):
            d = v[np.argmax(np.abs(v))] / f32(-8)
            inv = f32(0) if d == 0 else f32(1) / d
            flips["Q4_0"] += sum(bool(fma_flips(xi, f32(0), inv, 8.5))
                                 for xi in v)
            lo, hi = v.min(), v.max()
            d = (hi - lo) / f32(15)
            inv = f32(0) if d == 0 else f32(1) / d
            flips["Q4_1"] += sum(bool(fma_flips(xi, lo, inv, 0.5)) for xi in v)
    return flips


def main():
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "..", "tests", "data", "quant_fixtures.bin")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args()

    x, case_ids = build_inputs()
    n_blocks = len(case_ids)
    out = bytearray()
    out += MAGIC
    out += struct.pack("<4I", VERSION, n_blocks, len(CASES), len(TYPES))
    for name, _, _ in CASES:
        out += struct.pack("<B", len(name)) + name.encode("ascii")
    out += case_ids.tobytes()
    out += x.astype("<f4").tobytes()

    sections = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # f16_overflow blocks overflow on purpose.
        warnings.simplefilter("ignore", RuntimeWarning)
        for qtype in TYPES:
            blocks = quantize(x, qtype)
            block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
            assert blocks.dtype == np.uint8
            assert blocks.size == n_blocks * block_bytes
            y = dequantize(blocks, qtype).astype(f32)
            assert y.shape == x.shape
            sections[qtype.name] = blocks
            out += struct.pack("<2I", int(qtype), block_bytes)
            out += blocks.tobytes() + y.astype("<f4").tobytes()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(out)

    print(f"wrote {os.path.normpath(args.out)}: {len(out)} bytes, "
          f"sha256 {hashlib.sha256(out).hexdigest()[:16]}")
    print(f"  numpy {np.__version__}, seed {SEED}, {n_blocks} blocks "
          f"({n_blocks * QK} float32 values)")
    for name, _, count in CASES:
        print(f"  {count:3d} blocks  {name}")
    for qtype in TYPES:
        print(f"  {qtype.name}: {sections[qtype.name].size} block bytes "
              f"+ {x.size * 4} dequantized bytes")
    flips = count_fma_sensitive(x)
    print("  codes a build that fuses the quantizer's multiply-add gets "
          "wrong: " + ", ".join(f"{k} {v}" for k, v in flips.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
