#!/usr/bin/env bash
# The README's second command: build everything and run the whole test suite (GPU tests skip
# where there is no CUDA driver). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/setup.sh
source build.env
# Tests compile into a throwaway cache, never the user's.
export JITATTN_CACHE="$PWD/build/test-cache/kernels.sqlite"
rm -rf build/test-cache
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
