#!/usr/bin/env bash
# Builds the klcal tool (Release, CUDA when nvcc is available) and runs `klcal demo` end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
build=${KLCAL_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DKLCAL_BUILD_TESTS=OFF -DKLCAL_BUILD_BENCH=OFF \
  >/dev/null
cmake --build "$build" -j2 --target klcal_cli >/dev/null
exec "$build/apps/klcal" demo "$@"
