#!/usr/bin/env bash
# The README's second command: build everything and run the whole test suite (GPU tests skip
# where there is no CUDA driver), then the validation tests again under ASan and UBSan.
# Between the two, the Python package's pytest suite (tests/python). Exits non-zero on any failure.
#   tools/test.sh [ctest args]     the suite, then the sanitized validation tests
#   tools/test.sh --sanitize       only the sanitized validation tests (build-sanitize/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sanitize_only=0
if [ "${1:-}" = "--sanitize" ]; then sanitize_only=1; shift; fi
tools/setup.sh
source build.env
# Where setup.sh installed Debian's ROCm packages, the AMD compile tests must run (not skip).
if dpkg-query -W -f='${Status}' libamdhip64-5 2>/dev/null | grep -q "install ok installed"; then
  export JITATTN_TEST_REQUIRE_HIPRTC=1
fi
# Tests compile into a throwaway cache, never the user's.
export JITATTN_CACHE="$PWD/build/test-cache/kernels.sqlite"
rm -rf build/test-cache
[ $sanitize_only = 1 ] || ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
# The Python package as setup.sh installed it into .venv: import, the C API from Python, biases.
[ $sanitize_only = 1 ] || .venv/bin/python -m pytest -q -p no:cacheprovider tests/python

# Every rule a call must meet, on hostile shapes, strides, pointers and manifests: no overflow,
# no read past an array, no leak. The tests that compile kernels stay in the suite above.
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJITATTN_BUILD_TOOLS=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" >/dev/null
cmake --build build-sanitize -j"$(nproc)" --target jitattn_cpu_tests jitattn_c_api_test
export JITATTN_CACHE="$PWD/build-sanitize/test-cache/kernels.sqlite"
rm -rf build-sanitize/test-cache
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build-sanitize/tests/jitattn_cpu_tests \
  --gtest_filter='Validation*:BackwardValidation*:Bias*:Materialize*:Merge*Validation*:MergeSlicing*:Manifest*:Signature*:HashHex*'
# The C API's own test: every struct it reads, every reason it keeps, under the same sanitizers.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build-sanitize/tests/jitattn_c_api_test
