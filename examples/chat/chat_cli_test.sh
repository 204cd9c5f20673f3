#!/usr/bin/env bash
# End-to-end checks of the qkern-chat command line: a one-shot reply on the
# real model, and bad input (missing or corrupt model, invalid UTF-8, a
# prompt longer than the context, bad flags) failing with a one-line error
# and a non-zero exit, never a crash.
# Usage: chat_cli_test.sh QKERN_CHAT MODEL
set -uo pipefail
CHAT=$1
MODEL=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0

# expect NAME WANT_STATUS PATTERN -- command...: runs the command, checks the
# exit status (0, 1 or 2) and that stderr matches PATTERN.
expect() {
  local name=$1 want=$2 pattern=$3
  shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"
  local got=$?
  if [ "$got" -ne "$want" ] || ! grep -Eq -- "$pattern" "$TMP/err"; then
    echo "FAIL $name: exit $got (want $want), stderr:"; sed 's/^/  /' "$TMP/err"
    FAILED=1
  else
    echo "ok   $name: $(grep -E -- "$pattern" "$TMP/err" | head -1)"
  fi
}

expect one-shot 0 'reply 16 tok' -- \
  "$CHAT" -m "$MODEL" -p "Tell me about rivers." -n 16 --temp 0 -t 1
# Only the reply on stdout: some text, no status lines.
if [ ! -s "$TMP/out" ] || grep -q 'qkern-chat\|tok/s' "$TMP/out"; then
  echo "FAIL one-shot: stdout is not just the reply: $(cat "$TMP/out")"; FAILED=1
fi

expect missing-model 1 'nonexistent.gguf' -- "$CHAT" -m "$TMP/nonexistent.gguf" -p hi
head -c 100000 "$MODEL" >"$TMP/truncated.gguf"
expect truncated-model 1 'truncated.gguf' -- "$CHAT" -m "$TMP/truncated.gguf" -p hi
printf 'GGUF\x03\x00\x00\x00garbage' >"$TMP/garbage.gguf"
expect garbage-model 1 'garbage.gguf' -- "$CHAT" -m "$TMP/garbage.gguf" -p hi
expect invalid-utf8 1 'not valid UTF-8 \(byte 3' -- "$CHAT" -m "$MODEL" -p $'caf\xc3' -n 4 -t 1
expect prompt-too-long 1 'prompt needs [0-9]+ tokens' -- \
  "$CHAT" -m "$MODEL" -c 32 -t 1 -n 4 -p "$(printf 'word %.0s' $(seq 1 100))"
expect bad-flag 2 'unknown argument' -- "$CHAT" -m "$MODEL" --bogus
expect bad-temp 2 'bad value' -- "$CHAT" -m "$MODEL" --temp -1
expect bad-template 1 'template' -- "$CHAT" -m "$MODEL" --template nosuch -p hi

# Interactive: two turns and a reset through a pipe; the second turn must
# prefill only its own tokens (the first stays in the cache).
printf 'Hello!\nThanks.\n/reset\nHi again.\n' |
  "$CHAT" -m "$MODEL" --temp 0 -n 8 -t 1 >"$TMP/out" 2>"$TMP/err"
status=$?
turns=$(grep -c 'reply [0-9]* tok' "$TMP/err")
if [ "$status" -ne 0 ] || [ "$turns" -ne 3 ] || ! grep -q 'conversation reset' "$TMP/err"; then
  echo "FAIL interactive: exit $status, $turns turns"; sed 's/^/  /' "$TMP/err"; FAILED=1
else
  first=$(grep -o 'prompt [0-9]* tok' "$TMP/err" | sed -n 1p | tr -dc 0-9)
  second=$(grep -o 'prompt [0-9]* tok' "$TMP/err" | sed -n 2p | tr -dc 0-9)
  if [ "$second" -ge "$first" ]; then
    echo "FAIL interactive: turn 2 prefilled $second tokens (turn 1: $first)"; FAILED=1
  else
    echo "ok   interactive: turn 1 prefilled $first tokens, turn 2 only $second"
  fi
fi
exit $FAILED
