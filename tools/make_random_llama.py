#!/usr/bin/env python3
"""Makes a random-weight Llama GGUF, quantized by llama.cpp itself.

Produces (default shape `llama1b`):

    ${XDG_CACHE_HOME:-$HOME/.cache}/qkern/llama1b-random-q4_0.gguf

a Llama-3.2-1B-shaped model (arch llama, 16 layers, dim 2048, 32 q heads /
8 kv heads, head_dim 64, ffn 8192, vocab 128256, rope base 500000 with
Llama-3 rope scaling, tied embeddings, rms eps 1e-5) with random weights,
quantized with llama.cpp's default Q4_0 mix: every 2-D weight Q4_0 except the
tied token_embd, which llama.cpp treats as the output matrix and makes Q6_K.
Use it for speed and memory measurements only: its logits mean nothing.

`--shape smollm2` makes a SmolLM2-135M-shaped file instead (30 layers, dim
576, 9/3 heads, ffn 1536, vocab 49152, rope base 1e5, no rope scaling),
quantized as Q4_1 by default (`smollm2-random-q4_1.gguf`): llama.cpp's mix
then gives the tied token_embd Q8_0 (Q6_K needs rows that are a multiple of
256 and 576 is not), the same types as the real SmolLM2 Q4_1 file.

How it is made:
  1. every tensor is drawn from N(0, 0.02) (norm weights: 1 + N(0, 0.02)),
     seeded, and streamed as F16 (norms and rope_freqs F32) through
     gguf.GGUFWriter into a temporary file next to the output;
  2. llama.cpp's quantizer (llama_cpp.llama_model_quantize, the same code as
     the llama-quantize tool) writes the output with --ftype (Q4_0 = 2,
     Q4_1 = 3 by default for the shape);
  3. the F16 file is deleted (also on failure), the tensor types of the
     result are printed, and unless --no-check llama.cpp loads the result
     and evaluates a few tokens.

Llama-3 rope scaling (factor 32, low_freq_factor 1, high_freq_factor 4,
original context 8192) is stored the way llama.cpp's converter stores it: a
`rope_freqs.weight` F32 tensor of head_dim/2 per-frequency divisors. GGUF
has no standard keys for the four parameters (and `llama.rope.scaling.factor`
would make llama.cpp apply linear scaling on top), so they are only also
recorded, for humans, as `qkern.llama3_rope.*` keys that llama.cpp ignores.

Tokenizer: SmolLM2's real gpt2 BPE vocabulary and merges (read from the
SmolLM2 GGUF that tools/fetch-model.sh fetches), for llama1b padded to
128256 entries with CONTROL tokens `<|reserved_special_token_N|>`, of which
128000 is `<|begin_of_text|>` (BOS, added), 128001 `<|end_of_text|>` and
128009 `<|eot_id|>` (EOS). tokenizer.ggml.pre is "llama-bpe". It loads and
tokenizes; it is not Llama 3's vocabulary.

Requires: pip install gguf numpy llama-cpp-python. Rerun:

    python3 tools/make_random_llama.py                   # llama1b, Q4_0
    python3 tools/make_random_llama.py --shape smollm2   # SmolLM2, Q4_1

Prints the output path on stdout (logs go to stderr). Deterministic for a
given --seed, numpy and llama.cpp version. An existing output is kept unless
--force.
"""

import argparse
import ctypes
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qkern"

SHAPES = {
    "llama1b": dict(
        name="llama1b-random", n_layer=16, dim=2048, n_head=32, n_kv=8,
        head_dim=64, ffn=8192, vocab=128256, rope_base=500000.0,
        rope_llama3=dict(factor=32.0, low_freq_factor=1.0,
                         high_freq_factor=4.0, original_context=8192),
        ctx=131072, eps=1e-5, ftype="Q4_0"),
    "smollm2": dict(
        name="smollm2-random", n_layer=30, dim=576, n_head=9, n_kv=3,
        head_dim=64, ffn=1536, vocab=49152, rope_base=100000.0,
        rope_llama3=None, ctx=8192, eps=1e-5, ftype="Q4_1"),
}
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "F16": 1}  # enum llama_ftype


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def llama3_rope_divisors(head_dim, base, factor, low_freq_factor,
                         high_freq_factor, original_context):
    """Per-frequency divisors of Llama 3's rope scaling (Meta's formula):
    high frequencies unchanged, low ones divided by `factor`, a smooth
    blend in between. llama.cpp divides each rope angle by these."""
    out = []
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    for i in range(0, head_dim, 2):
        freq = 1.0 / base ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def smollm2_tokenizer():
    path = subprocess.run([str(ROOT / "tools/fetch-model.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    return list(tokens), [int(t) for t in types], list(merges)


def tensor_plan(s):
    """(name, numpy shape, kind) in file order; kind: w (F16 weight),
    n (F32 norm), r (F32 rope divisors)."""
    d, hd = s["dim"], s["head_dim"]
    plan = [("token_embd.weight", (s["vocab"], d), "w")]
    if s["rope_llama3"]:
        plan.append(("rope_freqs.weight", (hd // 2,), "r"))
    for i in range(s["n_layer"]):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (d,), "n"),
            (b + "attn_q.weight", (s["n_head"] * hd, d), "w"),
            (b + "attn_k.weight", (s["n_kv"] * hd, d), "w"),
            (b + "attn_v.weight", (s["n_kv"] * hd, d), "w"),
            (b + "attn_output.weight", (d, s["n_head"] * hd), "w"),
            (b + "ffn_norm.weight", (d,), "n"),
            (b + "ffn_gate.weight", (s["ffn"], d), "w"),
            (b + "ffn_up.weight", (s["ffn"], d), "w"),
            (b + "ffn_down.weight", (d, s["ffn"]), "w"),
        ]
    plan.append(("output_norm.weight", (d,), "n"))
    return plan


def write_f16(path, s, seed, std):
    tokens, types, merges = smollm2_tokenizer()
    if s["vocab"] > len(tokens):
        special = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>",
                   128009: "<|eot_id|>"}
        for i in range(len(tokens), s["vocab"]):
            tokens.append(special.get(i, f"<|reserved_special_token_{i}|>"))
            types.append(int(gguf.TokenType.CONTROL))
        bos, eos, add_bos = 128000, 128009, True
    else:
        bos, eos, add_bos = 1, 2, False  # SmolLM2's own
    assert len(tokens) == s["vocab"] and len(set(tokens)) == len(tokens)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(s["name"] + " (random weights, qkern tools/make_random_llama.py)")
    w.add_context_length(s["ctx"])
    w.add_block_count(s["n_layer"])
    w.add_embedding_length(s["dim"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_kv"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_rope_freq_base(s["rope_base"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_vocab_size(s["vocab"])
    w.add_file_type(FTYPES["F16"])
    if s["rope_llama3"]:
        for k, v in s["rope_llama3"].items():
            w.add_float32(f"qkern.llama3_rope.{k}", float(v))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe" if s["vocab"] > 49152 else "smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(add_bos)

    plan = tensor_plan(s)
    for name, shape, kind in plan:
        dt = np.float16 if kind == "w" else np.float32
        w.add_tensor_info(name, shape, np.dtype(dt),
                          int(np.prod(shape)) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(seed)
    n_params = 0
    for name, shape, kind in plan:
        if kind == "r":
            t = llama3_rope_divisors(s["head_dim"], s["rope_base"],
                                     **s["rope_llama3"])
        elif kind == "n":
            t = 1.0 + std * rng.standard_normal(shape, dtype=np.float32)
        else:
            t = np.empty(shape, dtype=np.float16)
            rows = max(1, (1 << 24) // shape[1])  # ~64 MB of f32 at a time
            for r0 in range(0, shape[0], rows):
                blk = rng.standard_normal((min(rows, shape[0] - r0), shape[1]),
                                          dtype=np.float32)
                blk *= std
                t[r0:r0 + len(blk)] = blk
        n_params += t.size
        w.write_tensor_data(t)
    w.close()
    return n_params


def quantize(src, dst, ftype, nthread):
    import llama_cpp
    llama_cpp.llama_backend_init()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = nthread
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                        ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize returned {rc}")


def tensor_types(path):
    r = gguf.GGUFReader(path)
    by_role = Counter()
    for t in r.tensors:
        role = t.name.split(".", 2)[2] if t.name.startswith("blk.") else t.name
        by_role[(role, t.tensor_type.name)] += 1
    return by_role


def smoke_test(path):
    """llama.cpp loads the file and evaluates a few tokens."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2,
                          verbose=False)
    toks = llm.tokenize(b"Hello world, this is a test.", add_bos=True,
                        special=True)
    llm.eval(toks)
    logits = np.ctypeslib.as_array(
        llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    assert np.isfinite(logits).all(), "non-finite logits"
    log(f"llama.cpp smoke test: {len(toks)} tokens {toks[:8]}..., logits "
        f"finite, std {logits.std():.3f}, argmax {int(logits.argmax())}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=SHAPES, default="llama1b")
    ap.add_argument("--ftype", choices=FTYPES,
                    help="quantization (default: Q4_0 for llama1b, Q4_1 "
                    "for smollm2)")
    ap.add_argument("--out", type=Path, help="output path (default: cache dir)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="overwrite output")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the llama.cpp load + eval smoke test")
    a = ap.parse_args()

    s = SHAPES[a.shape]
    ftype = a.ftype or s["ftype"]
    out = a.out or CACHE / f"{s['name']}-{ftype.lower()}.gguf"
    if out.exists() and not a.force:
        log(f"{out} exists (use --force to remake)")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".f16.tmp")
        try:
            t0 = time.time()
            n = write_f16(tmp, s, a.seed, a.std)
            log(f"wrote F16 {tmp} ({tmp.stat().st_size / 2**30:.2f} GiB, "
                f"{n / 1e6:.1f} M params) in {time.time() - t0:.0f} s")
            t0 = time.time()
            quantize(tmp, out, FTYPES[ftype], a.threads)
            log(f"quantized to {ftype} in {time.time() - t0:.0f} s: "
                f"{out.stat().st_size / 2**20:.1f} MiB")
        finally:
            tmp.unlink(missing_ok=True)

    log("tensor types (role: type x count):")
    for (role, ty), n in sorted(tensor_types(out).items()):
        log(f"  {role:24s} {ty:5s} x{n}")
    if not a.no_check:
        smoke_test(out)
    print(out)


if __name__ == "__main__":
    main()
