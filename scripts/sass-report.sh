#!/usr/bin/env bash
# Static machine-code report of the sm_90 kernels of a build (registers, shared memory, spills,
# blocks/SM, SASS instructions per element / candidate); fails when a kernel breaks a limit.
#
#   scripts/sass-report.sh BUILD [--no-search-limits] [--arch sm_90]
#   scripts/sass-report.sh --find-tools     # prints the cuobjdump and nvdisasm it would use
#
# cuobjdump and nvdisasm are looked up on PATH, then in $CUDA_HOME/bin and /usr/local/cuda/bin,
# then in the PyPI packages nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm (CUDA 13 ships them
# there: site-packages/nvidia/cu13/bin; CUDA 12 wheels use nvidia/cuda_<tool>/bin).
# Exit status: 0 = every limit holds, 1 = a limit is broken, 2 = usage, tools or inputs missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}

# Prints the path of tool $1, or nothing.
find_tool() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return
  fi
  for dir in ${CUDA_HOME:+"$CUDA_HOME/bin"} /usr/local/cuda/bin; do
    if [ -x "$dir/$name" ]; then
      echo "$dir/$name"
      return
    fi
  done
  # The wheels install into the 'nvidia' namespace package; its bin folder moved between
  # releases, so every <pkg>/bin/<tool> below each of its path entries is tried.
  "$py" - "$name" 2>/dev/null <<'EOF' || true
import glob, importlib.util, os, sys
spec = importlib.util.find_spec("nvidia")
for root in (spec.submodule_search_locations or []) if spec else []:
    for path in sorted(glob.glob(os.path.join(root, "*", "bin", sys.argv[1]))):
        if os.access(path, os.X_OK):
            print(path)
            sys.exit(0)
EOF
}

cuobjdump=$(find_tool cuobjdump)
nvdisasm=$(find_tool nvdisasm)

if [ "${1:-}" = "--find-tools" ]; then
  if [ -z "$cuobjdump" ] || [ -z "$nvdisasm" ]; then
    echo "sass-report: cuobjdump or nvdisasm not found (pip install nvidia-cuda-cuobjdump" \
      "nvidia-cuda-nvdisasm)" >&2
    exit 2
  fi
  echo "$cuobjdump"
  echo "$nvdisasm"
  exit 0
fi

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD [--no-search-limits] [--arch sm_90] | --find-tools" >&2
  exit 2
fi
if [ -z "$cuobjdump" ] || [ -z "$nvdisasm" ]; then
  echo "sass-report: cuobjdump or nvdisasm not found; install them with" >&2
  echo "  $py -m pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm" >&2
  exit 2
fi
exec "$py" "$here/sass_report.py" --cuobjdump "$cuobjdump" --nvdisasm "$nvdisasm" "$@"
