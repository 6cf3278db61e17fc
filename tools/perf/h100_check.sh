#!/usr/bin/env bash
# tools/perf/h100_check.sh — on the GPU host: build, GPU tests, compute-sanitizer,
# first-call/cold/shipped timings, prewarm throughput, jitattn bench and PyTorch's backends
# side by side. Phases (default: all): tests stress sanitize deploy bench masks anchors decode
# python training variants parts ring
#   source .gpu/setup.sh && tools/perf/h100_check.sh $OUT tests sanitize
set -uo pipefail
out=${1:-/tmp}
shift || true
phases=${*:-tests stress sanitize deploy bench masks anchors decode python training variants parts ring}
has() { [[ " $phases " == *" $1 "* ]]; }
export LD_LIBRARY_PATH=/opt/gpu-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1
cmake --build build -j16 2>&1 | grep -E "error|undefined" | head
# Cache DBs live in a directory only we can write (jitattn refuses a user DB in a world-writable
# directory such as /tmp itself).
caches=/tmp/jitattn-caches
mkdir -p -m 700 "$caches"
export JITATTN_CACHE=$caches/tests.sqlite

# The GPU tests as 12 gtest shards at once (their first calls compile in parallel).
run_gpu_tests() {  # label filter [binary]
  rm -f "$out"/gpu_tests.*[0-9].log
  for i in $(seq 0 11); do
    GTEST_TOTAL_SHARDS=12 GTEST_SHARD_INDEX=$i timeout ${TESTS_TIMEOUT:-420} build/tests/${3:-jitattn_gpu_tests} \
      --gtest_filter="$2" > "$out/gpu_tests.$i.log" 2>&1 &
  done
  wait
  cat "$out"/gpu_tests.[0-9]*.log > "$out/gpu_tests.$1.log"
  rm -f "$out"/gpu_tests.*[0-9].log
  local log="$out/gpu_tests.$1.log"
  echo "passed: $(grep -cE '^\[       OK' "$log"), failed: $(grep -cE '^\[  FAILED  \].*\(' "$log"), skipped: $(grep -cE '^\[  SKIPPED' "$log")"
  grep -E '^\[  FAILED  \].*\(' "$log" | head -30
  grep -E "Failure|Which is|error|Expected|Actual|could not store" -A3 "$log" | cut -c1-400 | head -80
  echo "test cache: $(build/tools/jitattn ls 2>/dev/null | head -1)"
}

if has tests; then
  echo "== GPU tests"
  run_gpu_tests all "${TESTS_FILTER:-*}"
  # On sm_90a the tma family (warp-specialized) serves f16/bf16 forwards at head dims 64..256 (the
  # run above), the cp.async wgmma family paged keys and left windows; it and the mma family (every
  # other arch and head dim) get the forward tests on this card too.
  echo "== forward GPU tests with JITATTN_FWD_BLOCKS=5 (each persistent tma block computes many work items)"
  (export JITATTN_FWD_BLOCKS=5; run_gpu_tests fwd_blocks5 "${BLOCKS_TESTS_FILTER:-ForwardGpu.*:BiasGpu.*:MergeGpu.*:*VariantGpu.*:*BlockSparseGpu.*}")
  echo "== forward GPU tests with JITATTN_FWD_FAMILY=wgmma"
  (export JITATTN_FWD_FAMILY=wgmma; run_gpu_tests wgmma "${MMA_TESTS_FILTER:-ForwardGpu.*:BiasGpu.*:MergeGpu.*}")
  echo "== forward GPU tests with JITATTN_FWD_FAMILY=mma"
  (export JITATTN_FWD_FAMILY=mma; run_gpu_tests mma "${MMA_TESTS_FILTER:-ForwardGpu.*:BiasGpu.*:MergeGpu.*}")
  # The backward's dK/dV kernel on sm_90a is the wgmma family at head dims 64/64, 128/64 and 128/128; the mma family
  # (other archs and head dims) gets the backward tests on this card too.
  echo "== backward GPU tests with JITATTN_BWD_FAMILY=mma"
  (export JITATTN_BWD_FAMILY=mma; run_gpu_tests bwd_mma "${BWD_MMA_TESTS_FILTER:-BackwardGpu.*:*BackwardFamily*:*VariantGpu.*}")
  echo "== decode GPU tests (the split count as the host chooses it, then every call split in 3)"
  run_gpu_tests decode "${DECODE_TESTS_FILTER:-*}" jitattn_decode_gpu_tests
  (export JITATTN_DECODE_SPLITS=3; run_gpu_tests decode_forced_splits "${DECODE_TESTS_FILTER:-*}" jitattn_decode_gpu_tests)
fi

if has ring; then
  echo "== ring attention: R ranks simulated on this GPU (and NCCL where two GPUs are), then Python"
  NCCL_NVLS_ENABLE=0 run_gpu_tests ring "${RING_TESTS_FILTER:-*}" jitattn_ring_gpu_tests
fi

if has stress; then
  echo "== stress: the randomized backward family again, fresh seeds"
  for r in $(seq ${STRESS_RUNS:-2}); do
    JITATTN_TEST_FAMILY_CASES=${STRESS_CASES:-90} timeout 300 build/tests/jitattn_gpu_tests \
      --gtest_filter='Dtypes/BackwardFamilyRandom.*:BackwardFamilyGpu.*' > "$out/stress.$r.log" 2>&1
    echo "run $r: $(grep -E '^\[  (PASSED|FAILED)' "$out/stress.$r.log" | tr '\n' ' ') $(grep -m1 'seed' "$out/stress.$r.log")"
    grep -E "Failure|case [0-9]+$" -A3 "$out/stress.$r.log" | cut -c1-300 | head -24
  done
fi

if has sanitize; then
  echo "== compute-sanitizer memcheck"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 build/tests/jitattn_gpu_tests \
    --gtest_filter="${MEMCHECK_FILTER:-*}" > "$out/memcheck.log" 2>&1
  echo "memcheck exit $?: $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -1) $(grep -cE '^\[       OK' "$out/memcheck.log") ok, $(grep -E '^\[  (PASSED|FAILED)' "$out/memcheck.log" | tr '\n' ' ')"
  echo "== compute-sanitizer memcheck, decode (split in 3)"
  JITATTN_DECODE_SPLITS=3 timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 build/tests/jitattn_decode_gpu_tests \
    --gtest_filter="${DECODE_MEMCHECK_FILTER:-*}" > "$out/memcheck_decode.log" 2>&1
  echo "memcheck exit $?: $(grep -E 'ERROR SUMMARY' "$out/memcheck_decode.log" | tail -1) $(grep -cE '^\[       OK' "$out/memcheck_decode.log") ok, $(grep -E '^\[  (PASSED|FAILED)' "$out/memcheck_decode.log" | tr '\n' ' ')"
  echo "== compute-sanitizer racecheck, decode (subset, split in 3)"
  JITATTN_DECODE_SPLITS=3 timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 build/tests/jitattn_decode_gpu_tests \
    --gtest_filter="${DECODE_RACECHECK_FILTER:-DecodeGpu.*}" > "$out/racecheck_decode.log" 2>&1
  echo "racecheck exit $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck_decode.log" | tail -1) $(grep -cE '^\[       OK' "$out/racecheck_decode.log") ok, $(grep -E '^\[  (PASSED|FAILED)' "$out/racecheck_decode.log" | tr '\n' ' ')"
  echo "== compute-sanitizer racecheck (subset)"
  timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 build/tests/jitattn_gpu_tests \
    --gtest_filter="${RACECHECK_FILTER:-*SingleQuery*:*Misaligned*:*FullyMasked*:*PaddedAndGappy*}" > "$out/racecheck.log" 2>&1
  echo "racecheck exit $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck.log" | tail -1) $(grep -cE '^\[       OK' "$out/racecheck.log") ok, $(grep -E '^\[  (PASSED|FAILED)' "$out/racecheck.log" | tr '\n' ' ')"
fi

if has deploy; then
  echo "== first call of a never-seen variant, then cold processes served from the user DB and from a shipped DB"
  rm -f $caches/cold.sqlite* $caches/app.sqlite $caches/empty.sqlite*
  export JITATTN_CACHE=$caches/cold.sqlite
  # f16, K = 72, top-left causal without LSE: no test compiles this signature.
  for i in 1 2; do JITATTN_VERBOSE=1 build/tools/jitattn bench --dtype f16 --head-dims 72 --hidden 2304 --seqlens 4096 --causal yes --reps 5 2>&1 | grep -E "first call|compiled"; done
  build/tools/jitattn export --out $caches/app.sqlite | tail -1
  JITATTN_CACHE=$caches/empty.sqlite JITATTN_CACHE_RO=$caches/app.sqlite JITATTN_JIT=off \
    build/tools/jitattn bench --dtype f16 --head-dims 72 --hidden 2304 --seqlens 4096 --causal yes --reps 5 | grep -E "first call" | sed 's/^/shipped DB, JITATTN_JIT=off: /'
  echo "== prewarm throughput, 16 cores"
  cat > /tmp/prewarm.json <<'EOF'
{"kernels": [{"dtype": ["bf16", "f16"], "head_dim": [56, 120], "bias": ["none", "causal", "bd_causal", "local_br"], "lse": [false, true], "arch": "sm_90a"}]}
EOF
  rm -f $caches/prewarm16.sqlite*
  JITATTN_CACHE=$caches/prewarm16.sqlite build/tools/jitattn prewarm --manifest /tmp/prewarm.json --jobs 16 2>&1 | tail -1
fi

if has bench; then
  echo "== bench (forward and backward)"
  export JITATTN_CACHE=$caches/bench.sqlite
  build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 4096,16384 --causal both --reps 20 --bwd \
    --json "$out/bench.json" | grep -vE "^first call"
  echo "-- JITATTN_FWD_FAMILY=wgmma (the cp.async wgmma forward in the same call)"
  JITATTN_FWD_FAMILY=wgmma build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 4096,16384 --causal both --reps 20 |
    grep -vE "^first call"
  echo "-- head dims 80, 96, 112 and 160 (H = 16): the tma kernels' padded panels, then the mma.sync kernels (JITATTN_FWD_FAMILY=mma)"
  for d in 80 96 112 160; do
    build/tools/jitattn bench --dtype bf16 --head-dims $d --hidden $((16 * d)) --seqlens 4096,16384 --causal both --reps 10 | grep " fwd "
    JITATTN_FWD_FAMILY=mma build/tools/jitattn bench --dtype bf16 --head-dims $d --hidden $((16 * d)) --seqlens 4096,16384 \
      --causal both --reps 10 | grep " fwd "
  done
  for t in ${FWD_TILES:-}; do
    echo "-- JITATTN_TILE=$t"
    JITATTN_TILE=$t build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 4096,16384 --causal both --reps 20 | grep -vE "^first call"
  done
  echo "-- JITATTN_BWD_FAMILY=mma (the mma.sync backward in the same call)"
  JITATTN_BWD_FAMILY=mma build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 4096,16384 --causal both --reps 20 --bwd |
    grep " bwd "
  echo "-- dropout 0.1 (wgmma, then mma)"
  build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 16384 --causal no --reps 10 --bwd --dropout 0.1 | grep " bwd "
  JITATTN_BWD_FAMILY=mma build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 16384 --causal no --reps 10 --bwd \
    --dropout 0.1 | grep " bwd "
  for t in ${BWD_TILES:-}; do
    echo "-- JITATTN_BWD_TILE=$t"
    JITATTN_BWD_TILE=$t build/tools/jitattn bench --dtype bf16 --head-dims 64,128 --seqlens 4096 --causal both --reps 20 --bwd | grep " bwd "
  done
fi

if has masks; then
  echo "== masks (FlexAttention's document cuts: anchors.py draws them with torch's generator, seed 1)"
  export JITATTN_CACHE=$caches/bench.sqlite
  lens=$(python3 -c "import torch; M=16384; g=torch.Generator().manual_seed(1); c=sorted(torch.randperm(M-1, generator=g)[:15].add(1).tolist()); print(','.join(str(b-a) for a,b in zip([0]+c, c+[M])))")
  build/tools/jitattn bench --masks --seqlens 16384 --head-dims 128 --window 256 --doc-lens "$lens" --reps 30
  for t in ${MASK_TILES:-}; do
    echo "-- JITATTN_TILE=$t"
    JITATTN_TILE=$t build/tools/jitattn bench --masks --seqlens 16384 --head-dims 128 --window 256 --doc-lens "$lens" --reps 30 | grep mask=
  done
  python3 .gpu/anchors.py --masks --seqlens 16384 --head-dims 128 --window 256 --out "$out/anchors_masks.json" 2>&1 | grep -E "^(flex)"
fi

if has anchors; then
  echo "== anchors"
  python3 .gpu/anchors.py --head-dims 64,128 --seqlens 4096,16384 --out "$out/anchors.json" 2>&1 | grep -E "^(flash|cudnn|efficient|flex)"
fi

if has decode; then
  echo "== decode (bf16, hd128, 32/8 heads; TB/s = K + V read once; jitattn and SDPA both timed as triton's do_bench)"
  # The first run has a fresh empty cache (--cold): each layout's first call compiles a never-seen decode variant.
  export JITATTN_CACHE=$caches/bench.sqlite
  rm -f "$out"/decode_jitattn.B*.json "$out"/anchors_decode.B*.json
  for bn in 8:4096,32768 1:131072 64:2048; do
    b=${bn%%:*} n=${bn#*:}
    cold=""; [ "$b" = 8 ] && cold="--cold"
    build/tools/jitattn bench --decode $cold --batch "$b" --heads 32 --kv-heads 8 --head-dim 128 --dtype bf16 \
      --kv-lens "$n" --page-size 256 --json "$out/decode_jitattn.B$b.json" 2>&1 | grep -E "^(first call|jitattn)"
    if [ -n "${DECODE_PREFILL:-}" ]; then  # the prefill kernels on the same shapes, for reference
      JITATTN_DECODE=off build/tools/jitattn bench --decode --batch "$b" --kv-lens "$n" --page-size 256 2>&1 |
        grep -E "^jitattn " | sed 's/^jitattn  /prefill  /'
    fi
    python3 .gpu/anchors.py --decode --decode-batch "$b" --decode-heads 32,8 --kv-lens "$n" \
      --out "$out/anchors_decode.B$b.json" 2>&1 | grep -E "^(flash|cudnn)"
  done
  python3 tools/perf/decode_summary.py "$out"
fi

# ---- the Python layer (PYTHONPATH over the source tree, the library just built) ----------------
export PYTHONPATH=$PWD/api/python JITATTN_LIBRARY=$PWD/build/libjitattn.so
if has python || has training || has variants || has parts; then
  python3 -c "import pytest" 2>/dev/null || pip install -q --no-index --find-links .gpu/wheels pytest 2>&1 | grep -v WARNING
fi

if has python; then
  echo "== Python tests (GPU included)"
  timeout ${PYTEST_TIMEOUT:-420} python3 -m pytest -q -p no:cacheprovider tests/python 2>&1 | grep -vi warning | tail -${PYTEST_TAIL:-15}
  echo "== Python overhead and TFLOP/s (C++ bench of the same shape after it)"
  timeout 150 python3 tools/perf/python_check.py 2>&1 | tail -12
  build/tools/jitattn bench --dtype bf16 --head-dims 128 --hidden 2048 --seqlens 8192 --causal both --reps 20 --bwd 2>&1 |
    grep -vE "^first call" | tail -4
fi

if has training; then
  echo "== small GPT, jitattn vs SDPA under bf16 autocast (issue 12), and the GPT block (issue 15)"
  timeout 300 python3 tools/perf/gpt_compare.py "$out" --steps ${GPT_STEPS:-300} 2>&1 | grep -vi warning | tail -22
  timeout 400 python3 examples/gpt_block.py --compare --out "$out/gpt_block" ${GPT_BLOCK_ARGS:-} 2>&1 | grep -vi warning | tail -25
fi

if has variants; then
  echo "== user variants vs FlexAttention"
  timeout 400 python3 tools/perf/variant_bench.py --out "$out/variant_bench.json" 2>&1 | grep -vi warning | tail -40
fi

if has parts; then
  echo "== every registered part: runtime and peak memory"
  timeout 300 python3 -m jitattn.bench --seq-lens ${PARTS_SEQ_LENS:-1024,2048,4096} --import tests/python/parts/softcap.py \
    --out "$out/parts_bench" 2>&1 | grep -vi warning | tail -40
fi
