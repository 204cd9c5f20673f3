#!/usr/bin/env bash
# The main job: an offline chat with the bundled test model
# (SmolLM2-135M-Instruct Q4_1, fetched once by tools/fetch-model.sh) on
# qkern's kernels.
#   tools/run-main.sh                 interactive chat on a terminal; with
#                                     stdin not a terminal, one demo prompt
#   tools/run-main.sh "PROMPT"        one reply to PROMPT (greedy), then exit
# Extra qkern-chat options can be passed in QKERN_CHAT_ARGS (e.g. "-t 1").
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(tools/fetch-model.sh)
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DQKERN_BUILD_TESTS=OFF \
  -DQKERN_BUILD_EXAMPLES=ON >/dev/null
cmake --build build-main -j"${JOBS:-2}" --target qkern_chat qkern_model_bench
# shellcheck disable=SC2086
ARGS=(-m "$MODEL" ${QKERN_CHAT_ARGS:-})
if [ $# -gt 0 ]; then
  exec build-main/examples/qkern-chat "${ARGS[@]}" -p "$*" --temp 0 -n 256
elif [ -t 0 ]; then
  exec build-main/examples/qkern-chat "${ARGS[@]}"
else
  build-main/examples/qkern-chat "${ARGS[@]}" --temp 0 -n 128 \
    -p "Explain in three sentences why the sky is blue."
  echo "--- model speed (tools/run-main.sh; qkern-bench, llama-bench style):"
  build-main/benchmarks/qkern-bench -m "$MODEL" -p 512 -n 128 -r 3
fi
