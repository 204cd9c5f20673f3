#!/usr/bin/env python3
"""Summarises a qkern_kernel_bench JSON file: one line per benchmark with its rate
and its fraction of the roof measured in the same run.

usage: bench_report.py bench.json [--plot roofline.png]
"""
import argparse
import json


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json_file")
    parser.add_argument("--plot", help="write a roofline plot (needs matplotlib)")
    args = parser.parse_args()
    with open(args.json_file) as f:
        data = json.load(f)
    ctx = data.get("context", {})
    print(f"\n{ctx.get('host_name', '?')}: {ctx.get('num_cpus', '?')} CPUs, "
          f"{ctx.get('mhz_per_cpu', '?')} MHz")
    rows = []
    for b in data["benchmarks"]:
        name = b["name"]
        label = b.get("label", "")
        if "GB/s" in b and "roof" in b:
            rows.append((name, f"{b['GB/s']:8.2f} GB/s", f"{100 * b['roof']:5.1f}% of read bw", label))
        elif "GOP/s" in b:
            rows.append((name, f"{b['GOP/s']:8.1f} GOP/s", f"{100 * b['dot_peak']:5.1f}% of int8 peak", label))
        elif name.startswith("Roof/"):
            rows.append((name, f"{b['GB/s']:8.2f} GB/s read",
                         f"int8 {b['int8_GOP/s']:.0f} GOP/s, f32 {b['f32_GFLOP/s']:.0f} GFLOP/s", label))
    width = max(len(r[0]) for r in rows) if rows else 0
    for name, rate, frac, label in rows:
        print(f"{name:<{width}}  {rate}  {frac}  {label}")
    if args.plot:
        plot(data, args.plot)


def plot(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    roofs = {b["name"].split(":")[-1]: b for b in data["benchmarks"]
             if b["name"].startswith("Roof/")}
    fig, ax = plt.subplots(figsize=(8, 5))
    for threads, roof in roofs.items():
        bw, peak = roof["GB/s"], roof["int8_GOP/s"]
        xs = [0.1, peak / bw, 1e4]
        ax.plot(xs, [min(x * bw, peak) for x in xs], label=f"roof, {threads} thr")
    for b in data["benchmarks"]:
        name = b["name"]
        if name.startswith("GEMV/") and "GB/s" in b:
            # Each weight byte feeds 2 ops per output row pair (4-bit: 4 ops).
            bits = 8 if "Q8" in name or "INT8" in name else 4
            intensity = 2 * 8 / bits
            ax.scatter(intensity, b["GB/s"] * intensity, s=10, c="tab:blue")
        elif name.startswith("GEMM/") and "GOP/s" in b:
            m = int(name.split("/M:")[1].split("/")[0])
            bits = 8 if "Q8" in name or "INT8" in name else 4
            intensity = 2 * m * 8 / bits
            ax.scatter(intensity, b["GOP/s"], s=10, c="tab:red")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ops per weight byte")
    ax.set_ylabel("GOP/s")
    ax.set_title("qkern matmul roofline (blue: GEMV, red: GEMM)")
    ax.legend()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
