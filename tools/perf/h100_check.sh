#!/usr/bin/env bash
# tools/perf/h100_check.sh — one call on the GPU host: build, GPU tests, compute-sanitizer,
# first-call/cold/warm timings, jitattn bench and PyTorch's backends side by side.
#   source .gpu/setup.sh && tools/perf/h100_check.sh $OUT
set -uo pipefail
out=${1:-/tmp}
export LD_LIBRARY_PATH=/opt/gpu-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1
cmake --build build -j16 2>&1 | grep -E "error|undefined" | head
export JITATTN_CACHE=/tmp/jitattn-tests.sqlite
echo "== GPU tests"
timeout 300 build/tests/jitattn_gpu_tests 2>&1 | tee "$out/gpu_tests.log" | grep -E "^\[  (PASSED|FAILED) |Failure|seed" | head -20
echo "== compute-sanitizer memcheck"
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 build/tests/jitattn_gpu_tests \
  --gtest_filter="${MEMCHECK_FILTER:-*}" > "$out/memcheck.log" 2>&1
echo "memcheck exit $?: $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)' "$out/memcheck.log" | tr '\n' ' ')"
echo "== compute-sanitizer racecheck (subset)"
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 build/tests/jitattn_gpu_tests \
  --gtest_filter='*SingleQuery*:*Misaligned*:*FullyMasked*:*ThreeDim*:*PaddedAndGappy*' > "$out/racecheck.log" 2>&1
echo "racecheck exit $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)' "$out/racecheck.log" | tr '\n' ' ')"
echo "== first call of a never-seen variant, then a cold process served from SQLite"
rm -f /tmp/jitattn-cold.sqlite*
export JITATTN_CACHE=/tmp/jitattn-cold.sqlite
for i in 1 2; do build/tools/jitattn bench --head-dims 128 --seqlens 4096 --causal yes --reps 5 | grep -E "first call"; done
echo "== bench"
export JITATTN_CACHE=/tmp/jitattn-bench.sqlite
build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 4096,16384 --causal both --reps 30 \
  --json "$out/bench.json" | grep -vE "^first call"
echo "== masks (FlexAttention's document cuts: anchors.py draws them with torch's generator, seed 1)"
lens=$(python3 -c "import torch; M=16384; g=torch.Generator().manual_seed(1); c=sorted(torch.randperm(M-1, generator=g)[:15].add(1).tolist()); print(','.join(str(b-a) for a,b in zip([0]+c, c+[M])))")
build/tools/jitattn bench --masks --seqlens 16384 --head-dims 128 --window 256 --doc-lens "$lens" --reps 30
python3 .gpu/anchors.py --masks --seqlens 16384 --head-dims 128 --window 256 --out "$out/anchors_masks.json" 2>&1 | grep -E "^(flex)"
echo "== anchors"
python3 .gpu/anchors.py --head-dims 64,128 --seqlens 4096,16384 --out "$out/anchors.json" 2>&1 | grep -E "^(flash|cudnn|efficient|flex)"
