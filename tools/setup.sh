#!/usr/bin/env bash
# tools/setup.sh — install what a fresh Debian machine lacks, then build jitattn into build/.
# Used by tools/demo.sh and tools/test.sh (the README's two commands); safe to run again.
# Then installs the Python package (api/python) into .venv/ with build/'s library bundled.
#
# Needs: Debian packages below, and the CUDA toolkit's headers and NVRTC (no GPU, no driver).
# Without a toolkit in $CUDA_HOME or /usr/local/cuda, NVIDIA's cuda-nvrtc and cuda-runtime
# wheels from PyPI are unpacked into .deps/cuda (headers + libnvrtc only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(cmake ninja-build g++ pkg-config libsqlite3-dev libssl-dev libxxhash-dev libgtest-dev libcli11-dev nlohmann-json3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_install() {
  echo "setup: installing $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
[ ${#missing[@]} -gt 0 ] && apt_install "${missing[@]}"

# AMD (docs/amd.md): hiprtc and the device libraries of Debian 12's ROCm 5.2.3, so the tests compile
# every AMD kernel for gfx90a and gfx1030 without an AMD GPU, and llvm-15's llvm-objdump for the
# MFMA disassembly test: about 140 MB, 15 s to install. Skipped with JITATTN_NO_ROCM=1, or where
# the distribution has no such packages.
rocm_packages=(libamdhip64-5 libhiprtc-builtins5 libamd-comgr2 rocm-device-libs llvm-15)
if [ "${JITATTN_NO_ROCM:-0}" != 1 ]; then
  rocm_missing=()
  for p in "${rocm_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || rocm_missing+=("$p")
  done
  if [ ${#rocm_missing[@]} -gt 0 ]; then
    [ -n "$(apt-cache policy libamdhip64-5 2>/dev/null | grep -v '(none)' | grep Candidate)" ] || $sudo apt-get update -qq
    if apt-cache show libamdhip64-5 >/dev/null 2>&1; then
      apt_install "${rocm_missing[@]}"
    else
      echo "setup: no ROCm packages in this distribution's archive; the AMD compile tests will skip"
    fi
  fi
fi

have_cuda() { [ -f "$1/include/cuda.h" ] && [ -f "$1/include/nvrtc.h" ]; }
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
if ! have_cuda "$cuda_home"; then
  cuda_home="$PWD/.deps/cuda/nvidia/cu13"
  if ! have_cuda "$cuda_home"; then
    command -v unzip >/dev/null && python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip unzip ca-certificates
    echo "setup: no CUDA toolkit found; fetching NVRTC and the CUDA headers from PyPI into .deps/cuda"
    mkdir -p .deps/wheels .deps/cuda
    python3 -m pip download -q --no-deps --only-binary=:all: -d .deps/wheels \
      "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-runtime==13.0.*"
    for w in .deps/wheels/*.whl; do unzip -qo "$w" -d .deps/cuda; done
  fi
fi
export CUDA_HOME="$cuda_home"
echo "export CUDA_HOME=\"$cuda_home\"" > build.env  # read by demo.sh and test.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

# The Python package, into .venv/ (Debian's system Python refuses pip installs), bundling the
# library just built instead of building it again: `pip install .` alone builds its own
# (pyproject.toml). pytest is for tools/test.sh.
command -v python3 >/dev/null || apt_install python3
if [ ! -x .venv/bin/python ]; then  # Debian's python3 has venv but not ensurepip's wheels without python3-venv
  python3 -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; python3 -m venv .venv; }
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" pytest "scikit-build-core>=0.10"
"${pip[@]}" --no-build-isolation -C build-dir=build/python \
  -C cmake.define.JITATTN_PYTHON_PREBUILT="$PWD/build/libjitattn.so" .
