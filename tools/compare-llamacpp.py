#!/usr/bin/env python3
"""Compares qkern's decoder speed with llama.cpp's on the same GGUF.

For each thread count, runs

    qkern-bench -m MODEL -p 512 -n 128 -t T -r REPS --json
        (build-main/benchmarks/qkern-bench unless --qkern-bench; prints a
        JSON array with one object per thread count: model, threads,
        prefill_tok_s, decode_tok_s, ttft_ms, peak_rss_mb, ...)
    tools/llamacpp-bench.sh -m MODEL -p 512 -n 128 -t T -r REPS
        (llama.cpp's llama-bench, JSON: avg_ts of the pp512 and tg128 tests)

and prints a table of both with the ratios qkern / llama.cpp for prefill
and decode (> 1: qkern is faster). llama.cpp's peak RSS is the llama-bench
process's ru_maxrss; its "ttft" is derived, 512 / prefill tok/s (llama-bench
does not measure it). --json prints the rows as JSON instead.

Rerun:

    python3 tools/compare-llamacpp.py [-m MODEL] [-t 1,2] [-r 3] [--json]
        [--qkern-bench PATH] [--skip-qkern] [--skip-llamacpp]

MODEL defaults to the SmolLM2 Q4_1 file from tools/fetch-model.sh. A missing
qkern-bench is reported and its columns left empty. Run on a quiet machine:
a busy one moves both figures by tens of percent.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_measured(cmd):
    """Runs cmd; returns (stdout, peak RSS in MiB of the process)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}")
    return out, ru.ru_maxrss / 1024.0


def qkern_row(binary, model, p, n, t, reps):
    out, _ = run_measured([binary, "-m", model, "-p", str(p), "-n", str(n),
                           "-t", str(t), "-r", str(reps), "--json"])
    j = json.loads(out)[0]
    return {k: j.get(k) for k in
            ("prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mb",
             "decode_gb_s", "roof_fraction")}


def llamacpp_row(model, p, n, t, reps):
    out, rss = run_measured([str(ROOT / "tools/llamacpp-bench.sh"), "-m", model,
                             "-p", str(p), "-n", str(n), "-t", str(t),
                             "-r", str(reps)])
    tests = json.loads(out)
    pp = next(x for x in tests if x["n_prompt"] == p and x["n_gen"] == 0)
    tg = next(x for x in tests if x["n_gen"] == n and x["n_prompt"] == 0)
    return {"prefill_tok_s": pp["avg_ts"], "prefill_sd": pp["stddev_ts"],
            "decode_tok_s": tg["avg_ts"], "decode_sd": tg["stddev_ts"],
            "ttft_ms": 1000.0 * p / pp["avg_ts"], "peak_rss_mb": rss,
            "build": llamacpp_build(pp),
            "cpu": pp.get("cpu_info", "?")}


def llamacpp_build(test):
    """llama.cpp's commit, or (an sdist has no git) the sdist it came from."""
    commit = test.get("build_commit", "unknown")
    if commit != "unknown":
        return f"{commit} ({test.get('build_number')})"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    sdist = cache / "qkern/llama.cpp-src/.from-sdist"
    return "from " + (sdist.read_text().strip() if sdist.exists() else "?")


def ratio(a, b):
    return a / b if a and b else None


def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model")
    ap.add_argument("-t", "--threads", default="1,2",
                    help="comma-separated thread counts")
    ap.add_argument("-p", type=int, default=512, help="prompt tokens")
    ap.add_argument("-n", type=int, default=128, help="generated tokens")
    ap.add_argument("-r", "--reps", type=int, default=3,
                    help="repetitions (both benchmarks)")
    ap.add_argument("--qkern-bench", default=str(ROOT / "build-main/benchmarks/qkern-bench"))
    ap.add_argument("--skip-qkern", action="store_true")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    model = a.model or subprocess.run(
        [str(ROOT / "tools/fetch-model.sh")], check=True, capture_output=True,
        text=True).stdout.strip()
    have_qkern = not a.skip_qkern and os.access(a.qkern_bench, os.X_OK)
    if not a.skip_qkern and not have_qkern:
        print(f"compare-llamacpp: no qkern-bench at {a.qkern_bench}; "
              "qkern columns left empty", file=sys.stderr)
    if not a.skip_llamacpp:  # build outside the measured runs
        subprocess.run([str(ROOT / "tools/llamacpp-bench.sh"), "--build-only"],
                       check=True, stdout=subprocess.DEVNULL)

    rows = []
    for t in [int(x) for x in a.threads.split(",")]:
        row = {"model": Path(model).name, "threads": t, "p": a.p, "n": a.n}
        if have_qkern:
            row["qkern"] = qkern_row(a.qkern_bench, model, a.p, a.n, t, a.reps)
        if not a.skip_llamacpp:
            row["llamacpp"] = llamacpp_row(model, a.p, a.n, t, a.reps)
        q, l = row.get("qkern", {}), row.get("llamacpp", {})
        row["ratio_prefill"] = ratio(q.get("prefill_tok_s"), l.get("prefill_tok_s"))
        row["ratio_decode"] = ratio(q.get("decode_tok_s"), l.get("decode_tok_s"))
        rows.append(row)

    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"model {Path(model).name}, prefill = pp{a.p}, decode = tg{a.n}; "
          "tok/s; ratio = qkern / llama.cpp")
    if rows and "llamacpp" in rows[0]:
        print(f"llama.cpp build {rows[0]['llamacpp']['build']}, "
              f"{rows[0]['llamacpp']['cpu']}")
    hdr = (f"{'thr':>3} | {'prefill qkern':>13} {'llama.cpp':>15} {'ratio':>6} | "
           f"{'decode qkern':>12} {'llama.cpp':>13} {'ratio':>6} | "
           f"{'ttft ms q/l':>13} | {'rss MiB q/l':>11}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        q, l = r.get("qkern", {}), r.get("llamacpp", {})
        lpp = (f"{l['prefill_tok_s']:.1f}±{l['prefill_sd']:.1f}" if l else "-")
        ltg = (f"{l['decode_tok_s']:.1f}±{l['decode_sd']:.1f}" if l else "-")
        print(f"{r['threads']:>3} | {fmt(q.get('prefill_tok_s'), '.1f'):>13} "
              f"{lpp:>15} {fmt(r['ratio_prefill'], '.2f'):>6} | "
              f"{fmt(q.get('decode_tok_s'), '.1f'):>12} {ltg:>13} "
              f"{fmt(r['ratio_decode'], '.2f'):>6} | "
              f"{fmt(q.get('ttft_ms'), '.0f'):>6}/{fmt(l.get('ttft_ms'), '.0f'):<6} | "
              f"{fmt(q.get('peak_rss_mb'), '.0f'):>5}/{fmt(l.get('peak_rss_mb'), '.0f'):<5}")


if __name__ == "__main__":
    main()
