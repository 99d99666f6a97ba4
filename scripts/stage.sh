#!/usr/bin/env bash
# Run one stage of the build with a visible start line, its duration and its verdict.
# Usage: scripts/stage.sh NAME COMMAND [ARGS...]
set -uo pipefail
name=$1; shift
start=$(date +%s)
printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$name"
# Each stage's output is also kept, so `make test` can repeat the end of a failed one last.
mkdir -p .cache/logs
log=".cache/logs/${name// /_}.log"
if [ -n "${STAGE_LOG_ONLY:-}" ]; then
  # Stages running side by side (make test): their output would interleave, so it goes to the log only.
  "$@" > "$log" 2>&1
  rc=$?
else
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
fi
secs=$(( $(date +%s) - start ))
if [ "$rc" -eq 0 ]; then
  printf '<== %s: ok in %ss\n' "$name" "$secs"
else
  printf '<== %s: FAILED (exit %s) after %ss\n' "$name" "$rc" "$secs" >&2
fi
mkdir -p .cache
printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$log" >> .cache/stages.tsv
exit "$rc"
