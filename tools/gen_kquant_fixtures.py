#!/usr/bin/env python3
"""Generates tests/data/kquant_fixtures.bin: oracles for the Q5_0, Q5_1, Q4_K,
Q5_K and Q6_K reference dequantizers (include/qkern/quant/kquants_ref.h).

The `gguf` Python package (PyPI) is the oracle. Q5_0 / Q5_1 blocks come from
gguf.quants.quantize applied to seeded random float32 rows. gguf 0.19 has no
quantizer for the K types (it raises NotImplementedError), so their blocks are
seeded random bytes with finite f16 scales: that reaches every bit pattern of
the packed scales, mins and high bits, which is what a dequantizer can get
wrong; the Q5_0 / Q5_1 sections end with random-byte blocks for the same
reason. Every block is then dequantized with gguf.quants.dequantize;
gguf_test.cc checks that qkern::ref produces the same float bits.

    python3 tools/gen_kquant_fixtures.py [--out PATH]

Deterministic for a given numpy + gguf version.

File format (all integers little-endian, no padding anywhere):

    char[8]  magic          "QKKFIX01"
    u32      version        1
    u32      n_sections
    n_sections times:
      u32    ggml_type      GGMLQuantizationType: Q5_0 6, Q5_1 7, Q4_K 12,
                            Q5_K 13, Q6_K 14
      u32    block_values   values per block (32 or 256)
      u32    block_bytes    bytes per block (22, 24, 144, 176, 210)
      u32    n_blocks
      u8     blocks[n_blocks * block_bytes]
      f32    dequant[n_blocks * block_values]   gguf.quants.dequantize(blocks)
"""

import argparse
import os
import struct

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

SEED = 20240823
MAGIC = b"QKKFIX01"
VERSION = 1
Q = gguf.GGMLQuantizationType

# (type, blocks quantized from floats, blocks of random bytes). Sized to keep
# the file under 150 KB.
PLAN = (
    (Q.Q5_0, 80, 16),
    (Q.Q5_1, 80, 16),
    (Q.Q4_K, 0, 28),
    (Q.Q5_K, 0, 28),
    (Q.Q6_K, 0, 28),
)

# Byte offsets of the f16 scale fields inside each block type.
F16_FIELDS = {
    Q.Q5_0: (0,),
    Q.Q5_1: (0, 2),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


def float_rows(rng, n_blocks, block):
    """Inputs from several regimes: normal, wide dynamic range, all equal,
    one outlier, all zero and tiny (f16-subnormal scales)."""
    rows = []
    kinds = ("normal", "lognormal", "constant", "outlier", "zero", "tiny")
    for i in range(n_blocks):
        kind = kinds[i % len(kinds)]
        if kind == "normal":
            x = rng.standard_normal(block)
        elif kind == "lognormal":
            x = rng.choice([-1.0, 1.0], block) * 10.0 ** rng.uniform(-4, 3, block)
        elif kind == "constant":
            x = np.full(block, rng.uniform(-5, 5))
        elif kind == "outlier":
            x = rng.standard_normal(block) * 0.01
            x[rng.integers(block)] = rng.uniform(-50, 50)
        elif kind == "zero":
            x = np.zeros(block)
        else:
            x = rng.standard_normal(block) * 1e-6
        rows.append(x.astype(np.float32))
    return np.stack(rows) if rows else np.zeros((0, block), np.float32)


def random_f16(rng):
    """A finite f16 bit pattern: mostly realistic scales, sometimes any
    finite value (subnormals, huge, signed zeros)."""
    pick = rng.integers(8)
    if pick == 0:
        return int(rng.choice([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x7BFF]))
    if pick == 1:
        while True:
            bits = int(rng.integers(0, 1 << 16))
            if (bits & 0x7C00) != 0x7C00:  # not Inf / NaN
                return bits
    value = np.float16(rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-5, -0.5))
    return int(np.array([value]).view(np.uint16)[0])


def random_blocks(rng, qtype, n_blocks):
    _, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    for b in range(n_blocks):
        for off in F16_FIELDS[qtype]:
            blocks[b, off:off + 2] = np.frombuffer(
                struct.pack("<H", random_f16(rng)), np.uint8)
    return blocks


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.normpath(os.path.join(
        here, "..", "tests", "data", "kquant_fixtures.bin")))
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    out = bytearray(MAGIC)
    out += struct.pack("<II", VERSION, len(PLAN))
    for qtype, n_quantized, n_random in PLAN:
        block_values, block_bytes = GGML_QUANT_SIZES[qtype]
        parts = []
        if n_quantized:
            x = float_rows(rng, n_quantized, block_values)
            parts.append(quantize(x, qtype).reshape(n_quantized, block_bytes))
        parts.append(random_blocks(rng, qtype, n_random))
        blocks = np.ascontiguousarray(np.concatenate(parts), dtype=np.uint8)
        n_blocks = blocks.shape[0]
        deq = dequantize(blocks.reshape(-1), qtype).astype(np.float32)
        assert deq.size == n_blocks * block_values
        assert np.all(np.isfinite(deq)), qtype.name
        out += struct.pack("<IIII", int(qtype), block_values, block_bytes,
                           n_blocks)
        out += blocks.tobytes()
        out += deq.astype("<f4").tobytes()

    assert len(out) < 150 * 1024, len(out)
    with open(args.out, "wb") as f:
        f.write(out)
    print(f"wrote {args.out}: {len(out)} bytes")


if __name__ == "__main__":
    main()
