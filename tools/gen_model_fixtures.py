#!/usr/bin/env python3
"""Generates tests/data/smollm2_oracle.txt: end-to-end oracles for the decoder.

For a handful of prompts run through SmolLM2-135M-Instruct.Q4_1.gguf (the
file tools/fetch-model.sh fetches), records

  * the prompt's token ids as llama.cpp tokenizes them (parse_special=True,
    no BOS: the file says tokenizer.ggml.add_bos_token = false, and the
    script checks that llama.cpp adds none),
  * a FLOAT reference's next-token distribution after the whole prompt: the
    GGUF's weights dequantized to float32 (the tied Q8_0 token_embd serving
    as the output matrix too) run through transformers' Llama in float32;
    stored as its top-1024 token ids with log-probs (log_softmax over the
    full vocab, in float64), plus the residual mass outside them,
  * llama.cpp's log-probs at the same ids, both argmaxes, and
    KL(float || llama.cpp) over the full vocab,
  * llama.cpp's greedy continuation (argmax of its logits, no penalties),
    up to 32 tokens, with its top-1 minus top-2 logit margin at each step.

A second, independent float reference, a float64 numpy Llama forward pass
written here over gguf.quants.dequantize'd weights (GGUF's own rope
layout: adjacent pairs, no un-permuting), is run too and its KL to the
transformers reference printed: it guards against a loader bug in either.
With --reference numpy it becomes the stored reference (use that where
torch or transformers are not installable); the header names the one used.

Requires: pip install llama-cpp-python gguf numpy transformers torch.
Rerun from anywhere (takes about a minute on 2 cores):

    python3 tools/gen_model_fixtures.py [--out PATH] [--reference numpy]

Prints a summary table per prompt: top-1 agreement float vs llama.cpp and
KL(float || llama.cpp). See FORMAT below (copied into the file's header).
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOPK = 1024
TOPK_POS = 16  # per-position records keep the reference's top 16
N_GREEDY = 32
N_CTX = 1024

PROMPTS = [
    ("english", "The old lighthouse keeper climbed the spiral stairs every "
     "evening, and on the night of the storm he noticed that"),
    ("chatml", "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
     "<|im_start|>assistant\n"),
    ("code", "def binary_search(items, target):\n"
     "    \"\"\"Return the index of target in the sorted list items, or -1."
     "\"\"\"\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n"
     "        mid = (lo + hi) // 2\n"),
    ("long", "Rivers have shaped human history more than almost any other "
     "feature of the landscape. The earliest cities grew up along the banks "
     "of the Tigris and Euphrates, the Nile, the Indus and the Yellow River, "
     "where annual floods left behind fertile silt and where water for "
     "drinking, washing and irrigation was always close at hand. Rivers "
     "were also the first highways: long before roads were paved, boats "
     "carried grain, timber, stone and people far more cheaply than carts "
     "could. Because of this, towns that controlled a crossing or a "
     "confluence often became centres of trade and power, and many of them "
     "are still important today. At the same time, rivers have always been "
     "dangerous neighbours. A single flood could wipe out a harvest, "
     "destroy houses and drown livestock, and the struggle to control water "
     "through dams, levees and canals has driven advances in engineering, "
     "mathematics and government. In the modern world, rivers supply "
     "electricity, cool power stations and carry away waste, but they also "
     "face pollution, over-extraction and the changing patterns of rainfall "
     "that come with a warming climate. Understanding how a river behaves, "
     "from its source in the mountains to its mouth at the sea, is "
     "therefore"),
    ("multilingual", "Bonjour, je m'appelle Marie et j'habite à Paris. "
     "Hallo, ich heiße Jürgen. Hola, ¿cómo estás? Привет, как дела? "
     "こんにちは、元気ですか。 你好，世界。 Translate into English:"),
]

FORMAT = """\
# Format (version 1). Line oriented, fields separated by single spaces;
# lines starting with '#' are comments. After the header lines, one
# block per prompt:
#
#   qkern-smollm2-oracle 2
#   model <file name> <file size in bytes>
#   reference <transformers|numpy> <versions...>     (informational)
#   llamacpp <llama-cpp-python version> n_threads <t> n_batch <b>
#   vocab 49152
#   eog <n> <id>...                     llama.cpp's end-of-generation ids
#   topk 1024
#   prompts <P>
#   then P times:
#     prompt <name>
#     text <rest of line: the prompt as an ASCII JSON string literal;
#           informational, may contain spaces>
#     tokens <n> <id_1> ... <id_n>        llama.cpp tokenization, no BOS
#     ref_argmax <id>                     float reference's argmax
#     llamacpp_argmax <id>                llama.cpp's argmax
#     ref_residual <r_P>                  1 - sum of ref probs over the
#                                         top-k ids (summed over the rest)
#     kl_ref_llamacpp <KL>                KL(ref || llama.cpp), nats, full
#                                         vocab, float64
#     kl_est_ref_llamacpp <est> <bound>   the estimator below applied to
#                                         llama.cpp's logits, and its bound
#     greedy <m> <id>:<margin> ...        llama.cpp greedy tokens after the
#                                         prompt (m <= 32; stops after an
#                                         end-of-generation token, see the
#                                         eog line), each with llama.cpp's
#                                         top-1 minus top-2 logit at that
#                                         step: where it is small, a correct
#                                         implementation may pick the other
#     positions <n> <k>                   then n lines, one per prompt
#                                         position t (its next-token
#                                         distribution, teacher forced):
#       <t> <r_t> <est_t> <id>:<ref_logprob> ... (k pairs)
#                                         the reference's top k, its residual
#                                         mass r_t, and the estimator below
#                                         (with these k ids) for llama.cpp:
#                                         KL between the two distributions
#                                         coarse-grained to k + 1 outcomes
#                                         (the k ids, and all the rest)
#     topk <k>
#     k lines: <id> <ref_logprob> <llamacpp_logprob>
#                                         sorted by ref_logprob descending;
#                                         natural-log probabilities from a
#                                         log_softmax over the full vocab
#     end
#
# Estimating KL(ref || Q) for a model under test Q (e.g. qkern) that has
# its full logits but, of the reference, only this file: let S be the k
# stored ids, p_i = exp(ref_logprob_i), r_P = ref_residual,
# q_i = Q's softmax (computed in double), r_Q = sum of q_j over j not in S
# (sum it directly, do not take 1 - sum over S). Then
#
#   est = sum_{i in S} p_i (log p_i - log q_i) + r_P log(r_P / r_Q)
#
# and, by the log-sum inequality, 0 <= KL(ref || Q) - est, with
#
#   KL - est = sum_{j not in S} p_j log(p_j/q_j) - r_P log(r_P/r_Q)
#           <= r_P * (log p_min - log q_min - log(r_P / r_Q))
#
# where p_min = exp(the last, smallest ref_logprob in the block), which
# bounds every p_j outside S, and q_min = min of q_j over j not in S.
# (Any p_j <= p_min, so each tail term p_j log(p_j/q_j) <= p_j
# (log p_min - log q_min).) The bound is loose; the real error is usually
# far smaller: kl_est_ref_llamacpp shows it for llama.cpp next to the exact
# kl_ref_llamacpp. Log-probs are rounded to 6 decimals, which moves est
# by at most about 1e-6 nats.
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


# ---------------------------------------------------------------- llama.cpp

def llamacpp_run(model_path, prompts, n_threads):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=N_CTX,
                          n_batch=512, n_threads=n_threads, seed=0,
                          logits_all=True, verbose=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token")
    assert add_bos == "false", f"add_bos_token = {add_bos!r}"
    eog = {i for i in range(llm.n_vocab())
           if llama_cpp.llama_vocab_is_eog(llm._model.vocab, i)}
    n_vocab = llm.n_vocab()

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32)

    assert llama_cpp.llama_vocab_get_add_bos(llm._model.vocab) is False
    out = []
    for name, text in prompts:
        toks = llm.tokenize(text.encode(), add_bos=False, special=True)
        # add_bos=True asks llama.cpp to add its special tokens; for this
        # model that must be a no-op.
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == toks
        assert len(toks) + N_GREEDY <= N_CTX
        llm.reset()
        llm.eval(toks)
        logits = last_logits()
        # Every position's row (logits_all), for the per-position records.
        all_logits = np.array(llm.scores[:len(toks)], dtype=np.float32)
        assert np.array_equal(all_logits[-1], logits)
        greedy = []
        cur = logits
        for _ in range(N_GREEDY):
            top2 = np.argsort(cur)[-2:]
            tok = int(top2[1])
            greedy.append((tok, float(cur[top2[1]] - cur[top2[0]])))
            if tok in eog:
                break
            llm.eval([tok])
            cur = last_logits()
        log(f"llama.cpp {name}: {len(toks)} tokens, greedy "
            f"{llm.detokenize([t for t, _ in greedy]).decode(errors='replace')!r}")
        out.append(dict(tokens=toks, logits=logits, greedy=greedy,
                        all_logits=all_logits))
    info = (f"{llama_cpp.__version__} n_threads {n_threads} n_batch 512")
    return out, sorted(eog), info


# ------------------------------------------------------- float references

def transformers_logits(model_path, token_lists):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path.parent), gguf_file=model_path.name,
        dtype=torch.float32)
    model.eval()
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    assert model.config.tie_word_embeddings, "expected tied embeddings"
    assert torch.equal(emb, head), "lm_head is not the token embedding"
    out = []
    with torch.no_grad():
        for toks in token_lists:
            ids = torch.tensor([toks], dtype=torch.long)
            out.append(model(ids).logits[0].double().numpy())
    info = f"transformers {transformers.__version__} torch {torch.__version__} float32"
    return out, info, emb.detach().double().numpy()


class NumpyLlama:
    """Float64 Llama forward pass straight from the GGUF tensors."""

    def __init__(self, model_path):
        import gguf
        r = gguf.GGUFReader(str(model_path))
        f = lambda k: r.fields[k].contents()
        self.n_layer = int(f("llama.block_count"))
        self.n_head = int(f("llama.attention.head_count"))
        self.n_kv = int(f("llama.attention.head_count_kv"))
        self.eps = float(f("llama.attention.layer_norm_rms_epsilon"))
        self.base = float(f("llama.rope.freq_base"))
        self.w = {}
        for t in r.tensors:
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            self.w[t.name] = np.asarray(a, dtype=np.float64)
        self.head_dim = self.w["blk.0.attn_q.weight"].shape[0] // self.n_head
        assert "output.weight" not in self.w  # tied

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x):  # x: [T, H, D]; GGUF layout rotates pairs (2i, 2i+1)
        T, _, D = x.shape
        inv = self.base ** (-np.arange(0, D, 2, dtype=np.float64) / D)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * c - x1 * s
        y[..., 1::2] = x0 * s + x1 * c
        return y

    def logits(self, toks):
        w, D, H, KV = self.w, self.head_dim, self.n_head, self.n_kv
        T = len(toks)
        x = w["token_embd.weight"][toks]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms(x, w[p + "attn_norm.weight"])
            q = self.rope((h @ w[p + "attn_q.weight"].T).reshape(T, H, D))
            k = self.rope((h @ w[p + "attn_k.weight"].T).reshape(T, KV, D))
            v = (h @ w[p + "attn_v.weight"].T).reshape(T, KV, D)
            att = np.empty((T, H, D))
            for hh in range(H):
                g = hh // (H // KV)
                s = q[:, hh] @ k[:, g].T / math.sqrt(D) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, g]
            x = x + att.reshape(T, H * D) @ w[p + "attn_output.weight"].T
            h = self.rms(x, w[p + "ffn_norm.weight"])
            gate = h @ w[p + "ffn_gate.weight"].T
            up = h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        x = self.rms(x, w["output_norm.weight"])
        return x @ w["token_embd.weight"].T  # [T, vocab]


# ------------------------------------------------------------------- output

def kl(lp, lq):
    return float(np.sum(np.exp(lp) * (lp - lq)))


def kl_estimate(lp_ref, lq, ids):
    """The estimator documented in FORMAT, from full arrays."""
    tail = np.ones(len(lp_ref), bool)
    tail[ids] = False
    p = np.exp(lp_ref[ids])
    r_p = float(np.exp(lp_ref[tail]).sum())
    r_q = float(np.exp(lq[tail]).sum())
    est = float(np.sum(p * (lp_ref[ids] - lq[ids])) + r_p * math.log(r_p / r_q))
    bound = r_p * (lp_ref[ids[-1]] - lq[tail].min() - math.log(r_p / r_q))
    return est, float(bound)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests/data/smollm2_oracle.txt")
    ap.add_argument("--model", type=Path, help="default: tools/fetch-model.sh")
    ap.add_argument("--reference", choices=["transformers", "numpy"],
                    default="transformers")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    model = a.model or Path(subprocess.run(
        [str(ROOT / "tools/fetch-model.sh")], check=True, capture_output=True,
        text=True).stdout.strip())

    lc, eog, lc_info = llamacpp_run(model, PROMPTS, a.threads)
    token_lists = [r["tokens"] for r in lc]
    log(f"end-of-generation ids: {eog}")

    log("numpy float64 reference ...")
    npl = NumpyLlama(model)
    np_logits = [npl.logits(t) for t in token_lists]
    np_info = f"numpy {np.__version__} float64"
    if a.reference == "transformers":
        log("transformers float32 reference ...")
        ref_logits, ref_info, emb = transformers_logits(model, token_lists)
        assert np.array_equal(emb, npl.w["token_embd.weight"]), \
            "transformers' embedding differs from gguf's dequantized Q8_0"
        cross = [kl(log_softmax(r[-1]), log_softmax(n[-1]))
                 for r, n in zip(ref_logits, np_logits)]
    else:
        ref_logits, ref_info, cross = np_logits, np_info, None
    del npl

    lines = ["# SmolLM2-135M-Instruct Q4_1 end-to-end oracle, generated by",
             "# tools/gen_model_fixtures.py (see its docstring to rerun).",
             "# ref = float reference: dequantized GGUF weights in float",
             "# arithmetic; llamacpp = llama.cpp through llama-cpp-python.",
             "#", *FORMAT.rstrip("\n").split("\n"),
             "qkern-smollm2-oracle 2",
             f"model {model.name} {model.stat().st_size}",
             f"reference {a.reference} {ref_info}",
             f"llamacpp {lc_info}",
             f"vocab {ref_logits[0].shape[-1]}",
             f"eog {len(eog)} " + " ".join(map(str, eog)),
             f"topk {TOPK}",
             f"prompts {len(PROMPTS)}"]
    summary = []
    pos_kl = []
    for (name, text), r, ref_all in zip(PROMPTS, lc, ref_logits):
        ref = ref_all[-1]
        lp = log_softmax(ref)
        lq = log_softmax(r["logits"])
        ids = np.argsort(-lp, kind="stable")[:TOPK]
        tail = np.ones(len(lp), bool)
        tail[ids] = False
        r_p = float(np.exp(lp[tail]).sum())
        kl_full = kl(lp, lq)
        est, bound = kl_estimate(lp, lq, ids)
        ra, la = int(np.argmax(ref)), int(np.argmax(r["logits"]))
        lines += [f"prompt {name}",
                  f"text {json.dumps(text, ensure_ascii=True)}",
                  f"tokens {len(r['tokens'])} " + " ".join(map(str, r["tokens"])),
                  f"ref_argmax {ra}",
                  f"llamacpp_argmax {la}",
                  f"ref_residual {r_p:.6e}",
                  f"kl_ref_llamacpp {kl_full:.6e}",
                  f"kl_est_ref_llamacpp {est:.6e} {bound:.6e}",
                  f"greedy {len(r['greedy'])} " +
                  " ".join(f"{t}:{m:.4f}" for t, m in r["greedy"])]
        # Every position: the reference's top TOPK_POS, coarse-grained.
        lines.append(f"positions {len(r['tokens'])} {TOPK_POS}")
        for t in range(len(r["tokens"])):
            lpt = log_softmax(ref_all[t])
            lqt = log_softmax(r["all_logits"][t])
            ids_t = np.argsort(-lpt, kind="stable")[:TOPK_POS]
            est_t, _ = kl_estimate(lpt, lqt, ids_t)
            tail_t = np.ones(len(lpt), bool)
            tail_t[ids_t] = False
            r_t = float(np.exp(lpt[tail_t]).sum())
            lines.append(f"{t} {r_t:.6e} {est_t:.6e} " +
                         " ".join(f"{i}:{lpt[i]:.6f}" for i in ids_t))
            pos_kl.append(est_t)
        lines.append(f"topk {TOPK}")
        lines += [f"{i} {lp[i]:.6f} {lq[i]:.6f}" for i in ids]
        lines.append("end")
        summary.append((name, len(r["tokens"]), ra, la, kl_full, est, bound,
                        r_p, float(np.exp(lp[ra])), float(np.exp(lq[la]))))

    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes), reference: {ref_info}")
    print(f"{'prompt':13s} {'ntok':>4s} {'ref top1':>9s} {'lcpp top1':>9s} "
          f"{'agree':>5s} {'KL(ref||lcpp)':>13s} {'est':>10s} {'bound':>9s} "
          f"{'resid':>9s} {'p_ref(top1)':>11s}")
    for i, (name, n, ra, la, k, est, b, rp, pr, pl) in enumerate(summary):
        print(f"{name:13s} {n:4d} {ra:9d} {la:9d} {str(ra == la):>5s} "
              f"{k:13.3e} {est:10.3e} {b:9.2e} {rp:9.2e} {pr:11.4f}")
    print(f"per-position coarse KL(ref || llama.cpp), mean over "
          f"{len(pos_kl)} positions: {np.mean(pos_kl):.4e}")
    if cross is not None:
        print("KL(transformers f32 || numpy f64) per prompt: " +
              " ".join(f"{c:.2e}" for c in cross))


if __name__ == "__main__":
    main()
