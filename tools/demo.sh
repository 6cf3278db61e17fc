#!/usr/bin/env bash
# The README's first command: build everything, then JIT-compile, cache and (on a GPU) run attention.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/setup.sh
source build.env
exec build/tools/jitattn demo
