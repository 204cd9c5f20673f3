#!/usr/bin/env python3
"""Writes small synthetic GGUF files for tests/gguf_test.cc, each with a
sidecar listing what was written, so the C++ test checks values it did not
compute itself.

    python3 tools/make_gguf.py [--out-dir tests/data]

Files (deterministic for a given numpy + gguf version, each < 100 KB):

  tiny_llama.gguf   A Llama-shaped model (3 blocks, n_embd 32, 4 heads, 2 KV
                    heads, n_ff 256, vocab 64) with llama.* hyperparameters, a
                    GPT-2 style tokenizer (string, INT32 and FLOAT32 arrays,
                    UTF-8 tokens, an empty token) and tensors in F32, F16,
                    BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K.
                    Default alignment (32).
  gguf_misc.gguf    general.alignment = 64; one scalar of every GGUF value
                    type and one array of every element type; tensors of rank
                    1 to 4, an odd row length, and an I8 tensor (a known type
                    qkern does not read).

Tensor data: float types and Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 come from
gguf.quants.quantize of seeded random rows. gguf 0.19 cannot quantize the K
types, so those are random bytes with realistic f16 scales.

Sidecar `<name>.expected` (text, one item per line, single spaces):

    version <n>
    alignment <n>
    n_kv <n>
    n_tensors <n>
    kv <key> <TYPE> <value>              scalar metadata, file order
    arr <key> <ELEMENT_TYPE> <count>     an array, followed by <count> lines
    el <value>
    tensor <name> <TYPE> <n_dims> <ne0> .. <ne[n_dims-1]> <n_bytes>
           <fnv1a64 of the data bytes> <fnv1a64 of the dequantized f32 bytes>

Values: integers in decimal; FLOAT32 / FLOAT64 as the hex of their IEEE bits
(8 / 16 digits); BOOL as 0 / 1; STRING as the hex of its UTF-8 bytes, "-" when
empty. Hashes are 16 hex digits; "dequantized" means gguf.quants.dequantize
(F32 as is, F16 / BF16 widened), and "-" for types qkern does not read.
"""

import argparse
import os
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

SEED = 20240901

# Which offsets in a block hold f16 scales (K types are random bytes
# otherwise).
K_SCALE_FIELDS = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}

QKERN_READS = {Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0,
               Q.Q4_K, Q.Q5_K, Q.Q6_K}


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in bytes(data):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def tensor_bytes(rng, qtype, rows, cols, std=0.5):
    """Returns the tensor's data as uint8 of shape (rows, bytes per row)."""
    x = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
    if qtype == Q.F32:
        data = x
    elif qtype == Q.F16:
        data = x.astype(np.float16)
    elif qtype == Q.I8:
        data = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    elif qtype in K_SCALE_FIELDS:
        block_values, block_bytes = GGML_QUANT_SIZES[qtype]
        n_blocks = rows * cols // block_values
        blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
        for b in range(n_blocks):
            for off in K_SCALE_FIELDS[qtype]:
                scale = np.float16(rng.choice([-1, 1]) * 10 ** rng.uniform(-4, -1))
                blocks[b, off:off + 2] = np.array([scale]).view(np.uint8)
        data = blocks
    else:
        data = quantize(x, qtype)
    return np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)


class Builder:
    """Collects metadata and tensors, writes the GGUF and its sidecar."""

    def __init__(self, arch, alignment=None):
        self.arch = arch
        self.alignment = alignment
        self.kv = []       # (key, value, type, sub_type)
        self.tensors = []  # (name, qtype, ne list, uint8 data)

    def add(self, key, value, vtype, sub_type=None):
        self.kv.append((key, value, vtype, sub_type))

    def tensor(self, rng, name, qtype, shape, std=0.5):
        """shape is numpy order (slowest first); ne is its reverse."""
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        data = tensor_bytes(rng, qtype, rows, shape[-1], std)
        # Byte-shaped like the tensor, so the writer derives the GGUF shape.
        data = data.reshape(*shape[:-1], -1)
        self.tensors.append((name, qtype, list(reversed(shape)), data))

    def write(self, path):
        w = gguf.GGUFWriter(path, self.arch)
        if self.alignment is not None:
            w.add_custom_alignment(self.alignment)
        for key, value, vtype, sub_type in self.kv:
            w.add_key_value(key, value, vtype, sub_type)
        for name, qtype, ne, data in self.tensors:
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        lines = [f"version {gguf.GGUF_VERSION}",
                 f"alignment {self.alignment or gguf.GGUF_DEFAULT_ALIGNMENT}",
                 f"n_kv {len(w.kv_data[0])}",
                 f"n_tensors {len(self.tensors)}"]
        for key, val in w.kv_data[0].items():
            if val.type == V.ARRAY:
                sub = (val.sub_type if val.sub_type is not None
                       else V.get_type(val.value[0]))
                lines.append(f"arr {key} {sub.name} {len(val.value)}")
                lines += [f"el {encode(v, sub)}" for v in val.value]
            else:
                lines.append(f"kv {key} {val.type.name} {encode(val.value, val.type)}")
        for name, qtype, ne, data in self.tensors:
            raw = data.tobytes()
            if qtype in QKERN_READS:
                deq = dequantize(data.reshape(-1), qtype).astype("<f4")
                deq_hash = fnv1a64(deq.tobytes())
            else:
                deq_hash = "-"
            dims = " ".join(str(d) for d in ne)
            lines.append(f"tensor {name} {qtype.name} {len(ne)} {dims} "
                         f"{len(raw)} {fnv1a64(raw)} {deq_hash}")
        with open(os.path.splitext(path)[0] + ".expected", "w") as f:
            f.write(f"# {os.path.basename(path)}: written by tools/make_gguf.py"
                    " (format in its docstring)\n")
            f.write("\n".join(lines) + "\n")
        size = os.path.getsize(path)
        assert size < 100 * 1024, (path, size)
        print(f"wrote {path}: {size} bytes")


def encode(value, vtype):
    if vtype == V.STRING:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return raw.hex() if raw else "-"
    if vtype == V.FLOAT32:
        return struct.pack("<f", value)[::-1].hex()
    if vtype == V.FLOAT64:
        return struct.pack("<d", value)[::-1].hex()
    if vtype == V.BOOL:
        return "1" if value else "0"
    return str(int(value))


def tiny_llama(path):
    rng = np.random.default_rng(SEED)
    n_embd, n_head, n_head_kv, n_ff, n_layer, n_vocab = 32, 4, 2, 256, 3, 64
    head_dim = n_embd // n_head
    b = Builder("llama")
    b.add("general.name", "qkern tiny llama", V.STRING)
    b.add("general.file_type", 1, V.UINT32)
    b.add("general.quantization_version", 2, V.UINT32)
    b.add("llama.context_length", 128, V.UINT32)
    b.add("llama.embedding_length", n_embd, V.UINT32)
    b.add("llama.block_count", n_layer, V.UINT32)
    b.add("llama.feed_forward_length", n_ff, V.UINT32)
    b.add("llama.attention.head_count", n_head, V.UINT32)
    b.add("llama.attention.head_count_kv", n_head_kv, V.UINT32)
    b.add("llama.rope.dimension_count", head_dim, V.UINT32)
    b.add("llama.rope.freq_base", 10000.0, V.FLOAT32)
    b.add("llama.attention.layer_norm_rms_epsilon", 1e-5, V.FLOAT32)
    b.add("llama.vocab_size", n_vocab, V.UINT32)

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pieces = ["", "\u0120", "\u010a", "a", "b", "ab", "\u0120the", "h\u00e9llo",
              "\u65e5\u672c", "\U0001f642", "<0x0A>", "tab\there", "q\"uote"]
    tokens = specials + pieces
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens))]
    token_types = [3] * len(specials) + [1] * (n_vocab - len(specials))
    scores = [float(-i) * 0.25 for i in range(n_vocab)]
    merges = [f"{tokens[3 + i % 10]} {tokens[4 + i % 9]}" for i in range(24)]
    b.add("tokenizer.ggml.model", "gpt2", V.STRING)
    b.add("tokenizer.ggml.pre", "default", V.STRING)
    b.add("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING)
    b.add("tokenizer.ggml.token_type", token_types, V.ARRAY, V.INT32)
    b.add("tokenizer.ggml.scores", scores, V.ARRAY, V.FLOAT32)
    b.add("tokenizer.ggml.merges", merges, V.ARRAY, V.STRING)
    b.add("tokenizer.ggml.bos_token_id", 1, V.UINT32)
    b.add("tokenizer.ggml.eos_token_id", 2, V.UINT32)
    b.add("tokenizer.ggml.padding_token_id", 0, V.UINT32)
    b.add("tokenizer.ggml.add_bos_token", False, V.BOOL)
    b.add("tokenizer.chat_template",
          "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
          "{{ m['content'] }}<|im_end|>\n{% endfor %}", V.STRING)

    b.tensor(rng, "token_embd.weight", Q.F16, (n_vocab, n_embd))
    layer_types = [
        # q, k, v, output, gate, up, down
        (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.BF16, Q.Q5_0, Q.Q5_1, Q.Q4_K),
        (Q.F16, Q.F32, Q.Q5_0, Q.Q5_1, Q.Q4_0, Q.Q4_1, Q.Q5_K),
        (Q.Q8_0, Q.BF16, Q.Q4_1, Q.Q4_0, Q.Q8_0, Q.Q5_0, Q.Q6_K),
    ]
    kv_dim = n_head_kv * head_dim
    for layer, (tq, tk, tv, to, tg, tu, td) in enumerate(layer_types):
        p = f"blk.{layer}."
        b.tensor(rng, p + "attn_norm.weight", Q.F32, (n_embd,))
        b.tensor(rng, p + "attn_q.weight", tq, (n_embd, n_embd))
        b.tensor(rng, p + "attn_k.weight", tk, (kv_dim, n_embd))
        b.tensor(rng, p + "attn_v.weight", tv, (kv_dim, n_embd))
        b.tensor(rng, p + "attn_output.weight", to, (n_embd, n_embd))
        b.tensor(rng, p + "ffn_norm.weight", Q.F32, (n_embd,))
        b.tensor(rng, p + "ffn_gate.weight", tg, (n_ff, n_embd))
        b.tensor(rng, p + "ffn_up.weight", tu, (n_ff, n_embd))
        b.tensor(rng, p + "ffn_down.weight", td, (n_embd, n_ff))
    b.tensor(rng, "output_norm.weight", Q.F32, (n_embd,))
    b.tensor(rng, "output.weight", Q.Q8_0, (n_vocab, n_embd))
    b.write(path)


def tiny_qwen2(path):
    """A 2-layer qwen2: q/k/v biases, NeoX RoPE, MQA, tied output head.

    Matrices are N(0, 1/K) like trained ones, so activations stay O(1) and a
    rounding difference is not amplified layer after layer (the test compares
    with a reference to 1e-3)."""
    rng = np.random.default_rng(SEED + 2)
    n_embd, n_head, n_head_kv, n_ff, n_layer, n_vocab = 64, 4, 1, 128, 2, 64
    head_dim = n_embd // n_head
    b = Builder("qwen2")
    b.add("general.name", "qkern tiny qwen2", V.STRING)
    b.add("qwen2.context_length", 256, V.UINT32)
    b.add("qwen2.embedding_length", n_embd, V.UINT32)
    b.add("qwen2.block_count", n_layer, V.UINT32)
    b.add("qwen2.feed_forward_length", n_ff, V.UINT32)
    b.add("qwen2.attention.head_count", n_head, V.UINT32)
    b.add("qwen2.attention.head_count_kv", n_head_kv, V.UINT32)
    b.add("qwen2.rope.freq_base", 1000000.0, V.FLOAT32)
    b.add("qwen2.attention.layer_norm_rms_epsilon", 1e-6, V.FLOAT32)
    tokens = [f"t{i}" for i in range(n_vocab)]
    b.add("tokenizer.ggml.model", "gpt2", V.STRING)
    b.add("tokenizer.ggml.pre", "qwen2", V.STRING)
    b.add("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING)
    b.add("tokenizer.ggml.merges", ["t 1"], V.ARRAY, V.STRING)
    b.tensor(rng, "token_embd.weight", Q.Q8_0, (n_vocab, n_embd))
    kv_dim = n_head_kv * head_dim
    for layer in range(n_layer):
        p = f"blk.{layer}."
        b.tensor(rng, p + "attn_norm.weight", Q.F32, (n_embd,))
        b.tensor(rng, p + "attn_q.weight", Q.Q4_0, (n_embd, n_embd), std=n_embd ** -0.5)
        b.tensor(rng, p + "attn_q.bias", Q.F32, (n_embd,))
        b.tensor(rng, p + "attn_k.weight", Q.Q4_0, (kv_dim, n_embd), std=n_embd ** -0.5)
        b.tensor(rng, p + "attn_k.bias", Q.F32, (kv_dim,))
        b.tensor(rng, p + "attn_v.weight", Q.Q4_0, (kv_dim, n_embd), std=n_embd ** -0.5)
        b.tensor(rng, p + "attn_v.bias", Q.F32, (kv_dim,))
        b.tensor(rng, p + "attn_output.weight", Q.Q8_0, (n_embd, n_embd), std=n_embd ** -0.5)
        b.tensor(rng, p + "ffn_norm.weight", Q.F32, (n_embd,))
        b.tensor(rng, p + "ffn_gate.weight", Q.Q4_1, (n_ff, n_embd), std=n_embd ** -0.5)
        b.tensor(rng, p + "ffn_up.weight", Q.Q4_1, (n_ff, n_embd), std=n_embd ** -0.5)
        b.tensor(rng, p + "ffn_down.weight", Q.Q4_1, (n_embd, n_ff), std=n_ff ** -0.5)
    b.tensor(rng, "output_norm.weight", Q.F32, (n_embd,))
    b.write(path)


def misc(path):
    rng = np.random.default_rng(SEED + 1)
    b = Builder("misc", alignment=64)
    b.add("misc.u8", 200, V.UINT8)
    b.add("misc.i8", -100, V.INT8)
    b.add("misc.u16", 60000, V.UINT16)
    b.add("misc.i16", -30000, V.INT16)
    b.add("misc.u32", 4000000000, V.UINT32)
    b.add("misc.i32", -2000000000, V.INT32)
    b.add("misc.f32", 3.14159274, V.FLOAT32)
    b.add("misc.bool_true", True, V.BOOL)
    b.add("misc.bool_false", False, V.BOOL)
    b.add("misc.string", "gr\u00fc\u00dfe \u2603 \U0001f600", V.STRING)
    b.add("misc.empty_string", "", V.STRING)
    b.add("misc.long_string", "0123456789" * 30, V.STRING)
    b.add("misc.u64", 2**64 - 1, V.UINT64)
    b.add("misc.i64", -2**63, V.INT64)
    b.add("misc.f64", -2.5e-300, V.FLOAT64)
    b.add("misc.arr_u8", [0, 1, 255], V.ARRAY, V.UINT8)
    b.add("misc.arr_i8", [-128, 0, 127], V.ARRAY, V.INT8)
    b.add("misc.arr_u16", [0, 65535], V.ARRAY, V.UINT16)
    b.add("misc.arr_i16", [-32768, 32767, 5], V.ARRAY, V.INT16)
    b.add("misc.arr_u32", [0, 4294967295], V.ARRAY, V.UINT32)
    b.add("misc.arr_i32", [-2147483648, 2147483647, -1], V.ARRAY, V.INT32)
    b.add("misc.arr_f32", [0.5, -1.25, 1e-38, 3e38], V.ARRAY, V.FLOAT32)
    b.add("misc.arr_bool", [True, False, True], V.ARRAY, V.BOOL)
    b.add("misc.arr_string", ["x", "", "\u00e9t\u00e9", "y" * 40] * 9,
          V.ARRAY, V.STRING)
    b.add("misc.arr_u64", [0, 2**64 - 1], V.ARRAY, V.UINT64)
    b.add("misc.arr_i64", [-2**63, 2**63 - 1], V.ARRAY, V.INT64)
    b.add("misc.arr_f64", [1.0 / 3.0, -0.0], V.ARRAY, V.FLOAT64)

    b.tensor(rng, "rank1.f32", Q.F32, (7,))
    b.tensor(rng, "rank2.f16", Q.F16, (3, 5))
    b.tensor(rng, "rank3.bf16", Q.BF16, (2, 3, 4))
    b.tensor(rng, "rank4.q8_0", Q.Q8_0, (2, 2, 2, 32))
    b.tensor(rng, "rank2.q6_k", Q.Q6_K, (2, 256))
    b.tensor(rng, "unsupported.i8", Q.I8, (10,))
    b.write(path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.path.normpath(
        os.path.join(here, "..", "tests", "data")))
    args = parser.parse_args()
    tiny_llama(os.path.join(args.out_dir, "tiny_llama.gguf"))
    tiny_qwen2(os.path.join(args.out_dir, "tiny_qwen2.gguf"))
    misc(os.path.join(args.out_dir, "gguf_misc.gguf"))


if __name__ == "__main__":
    main()
