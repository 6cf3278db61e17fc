#!/usr/bin/env bash
# tools/perf/record.sh OUT — on the GPU host, in one call: the measurements behind the plots of
# docs/performance.md (jitattn bench, .gpu/anchors.py and tools/perf/memory_record.py over the same
# shapes), then the plots where the host has matplotlib (else draw them here from OUT's JSON):
#   source .gpu/setup.sh && tools/perf/record.sh $OUT
#   python3 tools/perf/plot_record.py --bench OUT/record_bench.json --anchors OUT/record_anchors.json \
#     --memory OUT/record_memory.json --masks OUT/record_masks.json --card "NVIDIA H200" --date YYYY-MM-DD \
#     --out docs/plots/record
set -uo pipefail
out=${1:?usage: tools/perf/record.sh OUT}
mkdir -p "$out"
seqlens=${RECORD_SEQLENS:-1024,2048,4096,8192,16384}
dims=${RECORD_HEAD_DIMS:-64,128,256}
mask_dim=${RECORD_MASK_HEAD_DIM:-128}
export LD_LIBRARY_PATH=/opt/gpu-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1
cmake --build build -j16 2>&1 | grep -E "error|undefined" | head
mkdir -p -m 700 /tmp/jitattn-caches
export JITATTN_CACHE=/tmp/jitattn-caches/record.sqlite
build/tools/jitattn bench --dtype bf16 --head-dims "$dims" --seqlens "$seqlens" --causal both --reps 20 --bwd \
  --json "$out/record_bench.json" | grep -vE "^first call"
python3 .gpu/anchors.py --head-dims "$dims" --seqlens "$seqlens" --out "$out/record_anchors.json" 2>&1 |
  grep -E "^(flash|cudnn|efficient|flex)"
PYTHONPATH=$PWD/api/python JITATTN_LIBRARY=$PWD/build/libjitattn.so \
  python3 tools/perf/memory_record.py --head-dims "$dims" --seqlens "$seqlens" --out "$out/record_memory.json"
PYTHONPATH=$PWD/api/python JITATTN_LIBRARY=$PWD/build/libjitattn.so \
  python3 tools/perf/mask_record.py --head-dim "$mask_dim" --seqlens "$seqlens" --out "$out/record_masks.json" 2>&1 |
  grep -E "^(jitattn|flex) "
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if python3 -c "import matplotlib" 2>/dev/null; then
  python3 tools/perf/plot_record.py --bench "$out/record_bench.json" --anchors "$out/record_anchors.json" \
    --memory "$out/record_memory.json" --masks "$out/record_masks.json" --card "$card" --date "$(date +%F)" --out "$out/record"
else
  echo "no matplotlib here: draw the plots from $out/record_*.json with tools/perf/plot_record.py (card: $card)"
fi
