#!/usr/bin/env bash
# The kernel benchmark suite: build qkern (Release) and run the benchmarks that
# matter most: the machine's roofs, decode GEMV in the GGUF formats on
# SmolLM2-135M and Llama-3.2-1B shapes, and prefill GEMM. Prints a summary
# (GB/s and fraction of the measured read bandwidth; GOP/s and fraction of
# the measured int8 dot peak) and writes build-main/bench.json.
# Extra arguments go to the benchmark binary (e.g. --benchmark_filter=GEMV).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DQKERN_BUILD_TESTS=OFF \
  -DQKERN_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-main -j"${JOBS:-2}" --target qkern_kernel_bench
FILTER='Roof|GEMV/(Q4_0|Q4_1|Q8_0)/.*(ffn_up|ffn_down|output)|GEMM/(Q4_0|Q8_0)/.*ffn_down.*/M:(16|512)/'
build-main/benchmarks/qkern_kernel_bench --benchmark_filter="$FILTER" \
  --benchmark_min_time=0.3 --benchmark_out=build-main/bench.json \
  --benchmark_out_format=json "$@"
python3 tools/bench_report.py build-main/bench.json
