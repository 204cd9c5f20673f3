#!/usr/bin/env bash
# Runs llama.cpp's own benchmark, llama-bench, on a GGUF and prints its JSON
# (a list with one object per test: prompt processing "pp" and generation
# "tg", avg_ts = tokens/s). The baseline for tools/compare-llamacpp.py.
#
# llama-bench is built from the llama.cpp source vendored in the
# llama-cpp-python sdist from PyPI (the same llama.cpp as the Python oracle
# when that is installed: the sdist version matches it), Release, -march=
# native, CPU only, static, into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/qkern/llama.cpp-build
# and reused from there on later runs (delete the folder to rebuild). Nothing
# of llama.cpp lands in the qkern tree.
#
# Usage:
#   tools/llamacpp-bench.sh -m MODEL [-p 512] [-n 128] [-t THREADS] [-r REPS]
#                           [other llama-bench arguments...]
#   tools/llamacpp-bench.sh --build-only
# Defaults: -p 512 -n 128 -t 2 -r 3. -t and -p/-n take llama-bench's lists
# too (-t 1,2). Environment: JOBS (build parallelism, default 2),
# LLAMA_CPP_PYTHON_VERSION (sdist to build, default: the installed
# llama_cpp's version, else the newest). Build logs go to stderr, the JSON
# to stdout.
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/qkern"
SRC="$CACHE/llama.cpp-src"
BUILD="$CACHE/llama.cpp-build"
BENCH="$BUILD/bin/llama-bench"
JOBS=${JOBS:-2}

build() {
  if [ -x "$BENCH" ]; then return; fi
  local ver=${LLAMA_CPP_PYTHON_VERSION:-}
  if [ -z "$ver" ]; then
    ver=$(python3 -c 'import llama_cpp; print(llama_cpp.__version__)' \
      2>/dev/null || true)
  fi
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "llamacpp-bench: fetching llama-cpp-python ${ver:-(latest)} sdist" >&2
    python3 -m pip download --quiet --no-deps --no-binary :all: \
      --disable-pip-version-check -d "$tmp" \
      "llama-cpp-python${ver:+==$ver}" >&2
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
    rm -rf "$SRC"
    mkdir -p "$CACHE"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$SRC"
    basename "$tmp"/llama_cpp_python-*.tar.gz > "$SRC/.from-sdist"
  fi
  echo "llamacpp-bench: building llama-bench from $(cat "$SRC/.from-sdist")" \
    "with -j$JOBS" >&2
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENCL=OFF \
    -DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_BLAS=OFF -DGGML_RPC=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >&2
  cmake --build "$BUILD" --target llama-bench -j"$JOBS" >&2
}

if [ "${1:-}" = "--build-only" ]; then
  build
  echo "$BENCH"
  exit 0
fi

MODEL="" P=512 N=128 T=2 R=3
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    -m|--model) MODEL=$2; shift 2 ;;
    -p|--n-prompt) P=$2; shift 2 ;;
    -n|--n-gen) N=$2; shift 2 ;;
    -t|--threads) T=$2; shift 2 ;;
    -r|--repetitions) R=$2; shift 2 ;;
    -o|--output) echo "llamacpp-bench: output is always json" >&2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
if [ -z "$MODEL" ]; then
  echo "llamacpp-bench: -m MODEL is required (see --help)" >&2
  exit 2
fi

build
exec "$BENCH" -m "$MODEL" -p "$P" -n "$N" -t "$T" -r "$R" -o json \
  ${EXTRA[@]+"${EXTRA[@]}"}
