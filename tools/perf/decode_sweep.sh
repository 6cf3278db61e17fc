#!/usr/bin/env bash
# Decode tile/pipeline sweep on the GPU host: each config's kernels in their own fresh cache DB
# (every first call a compile), then the anchors on the same shapes. JITATTN_DECODE_TMA=on|off:
# the tma (tensor maps) or mma (cp.async) decode family on sm_90.
#   source .gpu/setup.sh && tools/perf/decode_sweep.sh $OUT "off:m16n128w8 on:m16n128w8:4"
set -uo pipefail
out=${1:-/tmp}
configs=${2:-"off:m16n128w8 on:m16n128w8"}
lens=${DECODE_SWEEP_LENS:-4096,32768}
caches=/tmp/jitattn-caches
mkdir -p -m 700 "$caches"
for c in $configs; do
  IFS=: read -r mode tile splits <<< "$c"  # tma on|off:tile[:splits]
  rm -rf "$caches"/sweep.sqlite*
  echo "== $mode $tile ${splits:+splits $splits}"
  env ${splits:+JITATTN_DECODE_SPLITS=$splits} JITATTN_CACHE=$caches/sweep.sqlite JITATTN_DECODE_TMA=$mode JITATTN_DECODE_TILE=$tile \
    build/tools/jitattn bench --decode --batch "${DECODE_SWEEP_BATCH:-8}" --heads 32 --kv-heads 8 --head-dim 128 \
    --dtype bf16 --kv-lens "$lens" --page-size 256 --layouts ${DECODE_SWEEP_LAYOUTS:-dense paged} 2>&1 | grep -E "^(first call|jitattn)"
done
python3 .gpu/anchors.py --decode --decode-batch "${DECODE_SWEEP_BATCH:-8}" --decode-heads 32,8 --kv-lens "$lens" \
  --out "$out/anchors_decode_sweep.json" 2>&1 | grep -E "^(flash|cudnn)"
