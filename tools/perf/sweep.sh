#!/usr/bin/env bash
# tools/perf/sweep.sh — on the GPU host: time the forward for several tile configs
# (JITATTN_TILE) next to PyTorch's backends on the same card, same run.
#   tools/perf/sweep.sh OUTDIR "HD:TILE ..."      e.g. "128:m128n64w8 64:m128n64w4"
set -uo pipefail
out=${1:-.}
configs=${2:-"128:default 64:default"}
mkdir -p -m 700 /tmp/jitattn-caches  # jitattn refuses a user DB in a world-writable directory
export JITATTN_CACHE=/tmp/jitattn-caches/sweep.sqlite
for c in $configs; do
  hd=${c%%:*}
  tile=${c#*:}
  if [ "$tile" = default ]; then unset JITATTN_TILE; else export JITATTN_TILE=$tile; fi
  echo "== hd$hd tile=$tile"
  build/tools/jitattn bench --dtype bf16 --head-dims "$hd" --seqlens 4096,16384 --causal both --reps 20 \
    2>&1 | grep -E "TFLOP|error"
done
