#!/usr/bin/env bash
# tools/perf/ab.sh — on the GPU host: the same commands against a baseline tree and this one, in
# one call, so that a change's effect is a ratio taken side by side on one card.
#   git archive COMMIT | (rm -rf .ab-base && mkdir .ab-base && tar -x -C .ab-base)   # here; carry it
#   source .gpu/setup.sh && tools/perf/ab.sh OUT 'CMD' ['CMD' ...]
# Each tree is built into its own build/; every CMD runs with TREE (.ab-base, then .) naming the
# tree, PYTHONPATH and JITATTN_LIBRARY pointing into it, and a cache DB of its own — the base
# first, then this tree, and again in that order when AB_ROUNDS=2.
set -uo pipefail
out=$1
shift
export LD_LIBRARY_PATH=/opt/gpu-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
caches=/tmp/jitattn-caches
mkdir -p -m 700 "$caches"
for tree in .ab-base .; do
  [ -d "$tree" ] || { echo "no $tree"; exit 1; }
  [ -f "$tree/build/build.ninja" ] || cmake -S "$tree" -B "$tree/build" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.$(basename "$tree").log" 2>&1
  cmake --build "$tree/build" -j16 2>&1 | grep -E "error|FAILED" | head
done
for round in $(seq 1 "${AB_ROUNDS:-1}"); do
  for cmd in "$@"; do
    for tree in .ab-base .; do
      name=$([ "$tree" = . ] && echo new || echo base)
      echo "== [$name] $cmd"
      (export TREE=$tree PYTHONPATH=$PWD/$tree/api/python JITATTN_LIBRARY=$PWD/$tree/build/libjitattn.so \
         JITATTN_CACHE=$caches/ab.$name.sqlite; eval "$cmd") 2>&1 | grep -viE "warn"
    done
  done
done
