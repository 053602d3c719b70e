#!/usr/bin/env bash
# Packs the prebuilt GPU programs of the h200-prebuilt preset into ONE folder that a GPU machine
# with no compiler, GTest or Google Benchmark can run: scripts/gpu-check.sh --prebuilt DIR.
#
# Usage: scripts/gpu-pack.sh [--build] [--strip] [BUILD_DIR [PACK_DIR]]
#   BUILD_DIR  the h200-prebuilt build (default build/h200)
#   PACK_DIR   the folder to (re)create (default build/h200-pack; under build/, so git ignores it
#              and the device tool carries it only when named in `carry`)
#   --build    configure + build the preset first (cmake --preset/--build --preset h200-prebuilt)
#   --strip    strip host symbols (strip --strip-unneeded; keeps the device code and its -lineinfo)
# The folder holds: every gpu_*_test and slow_*_test, every gpu_*_bench, data/ (tests/data/*.golden,
# found through KLCAL_TEST_DATA_DIR at run time), libbenchmark (the bench programs have RUNPATH
# $ORIGIN), compat/ (this machine's libstdc++/libgcc_s/libz, used only when the target's own are too
# old), gpu-check.sh and MANIFEST.txt. Fails when it is 64 MiB or more (the device tool's limit).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="" PACK="" DO_BUILD=0 DO_STRIP=0
for arg in "$@"; do
  case "$arg" in
    --build) DO_BUILD=1 ;;
    --strip) DO_STRIP=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "gpu-pack: unknown option $arg" >&2; exit 2 ;;
    *) if [ -z "$BUILD" ]; then BUILD="$arg"; else PACK="$arg"; fi ;;
  esac
done
BUILD="${BUILD:-$ROOT/build/h200}"
PACK="${PACK:-$ROOT/build/h200-pack}"
LIMIT=$((64 * 1024 * 1024))

if [ "$DO_BUILD" = 1 ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
  (cd "$ROOT" && cmake --preset h200-prebuilt && cmake --build --preset h200-prebuilt)
fi

shopt -s nullglob
TESTS=("$BUILD"/tests/gpu_*_test "$BUILD"/tests/slow_*_test)
BENCHES=("$BUILD"/bench/gpu_*_bench)
if [ ${#TESTS[@]} -eq 0 ] || [ ${#BENCHES[@]} -eq 0 ]; then
  echo "gpu-pack: no gpu test or bench programs in $BUILD; build them first:" >&2
  echo "  cmake --preset h200-prebuilt && cmake --build --preset h200-prebuilt" >&2
  exit 1
fi

rm -rf "$PACK"
mkdir -p "$PACK/data" "$PACK/compat"
for f in "${TESTS[@]}" "${BENCHES[@]}"; do
  [ -x "$f" ] && [ -f "$f" ] || continue
  cp "$f" "$PACK/"
done
cp "$ROOT"/tests/data/*.golden "$PACK/data/"
cp "$ROOT/scripts/gpu-check.sh" "$PACK/gpu-check.sh"
chmod +x "$PACK/gpu-check.sh"

# Shared libraries the programs need that a bare GPU machine may lack.
#  - Google Benchmark: Debian ships it shared only (libbenchmark.so.1debian): copied beside the
#    bench programs, found through their RUNPATH $ORIGIN (preset: CMAKE_BUILD_RPATH=$ORIGIN).
#  - compat/: the C++ runtime and zlib of this build machine. gpu-check.sh puts compat/ on
#    LD_LIBRARY_PATH only if a program does not load with the target's own libraries.
# GTest (static archives, KLCAL_GTEST_STATIC) and the CUDA runtime (cudart_static) are linked in.
lib_of() {  # lib_of PROGRAM SONAME-PREFIX: the resolved path ldd prints, or nothing
  ldd "$1" 2>/dev/null | awk -v p="$2" '$1 ~ "^"p { print $3; exit }'
}
BENCH0="${BENCHES[0]}"
bm="$(lib_of "$BENCH0" libbenchmark)"
if [ -n "$bm" ]; then
  soname="$(ldd "$BENCH0" | awk '$1 ~ /^libbenchmark/ { print $1; exit }')"
  cp -L "$bm" "$PACK/$soname"
fi
for so in libstdc++.so.6 libgcc_s.so.1 libz.so.1; do
  p="$(lib_of "${TESTS[0]}" "${so//+/\\+}")"
  [ -n "$p" ] && cp -L "$p" "$PACK/compat/$so"
done

[ "$DO_STRIP" = 1 ] && for f in "$PACK"/gpu_* "$PACK"/slow_*; do strip --strip-unneeded "$f"; done

# Checks: no shared GTest, RUNPATH $ORIGIN on the benches, everything resolves from the folder.
bad=0
for f in "$PACK"/gpu_* "$PACK"/slow_*; do
  if ldd "$f" | grep -q 'libgtest\|libgmock'; then
    echo "gpu-pack: $(basename "$f") needs a shared GTest library" >&2; bad=1
  fi
  if ldd "$f" | grep -q 'libcudart\.so'; then
    echo "gpu-pack: $(basename "$f") needs the shared CUDA runtime" >&2; bad=1
  fi
done
for f in "$PACK"/gpu_*_bench; do
  if ! readelf -d "$f" | grep -Eq '(RUNPATH|RPATH).*\$ORIGIN'; then
    echo "gpu-pack: $(basename "$f") has no RUNPATH \$ORIGIN (configure with the h200-prebuilt preset)" >&2
    bad=1
  fi
  bmp="$(lib_of "$f" libbenchmark)"
  case "$bmp" in
    "$PACK"/*) ;;
    *) echo "gpu-pack: $(basename "$f") resolves libbenchmark to '$bmp', not the packed copy" >&2; bad=1 ;;
  esac
done

# MANIFEST.txt: what was built from what, and what the programs need from the target's loader.
{
  echo "klcal prebuilt GPU pack"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "branch: $(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
  echo "packed: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) ($(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"))"
  echo "build: $BUILD"
  sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=/cuda architectures: /p; s/^CMAKE_BUILD_TYPE:[A-Z]*=/build type: /p; s/^CMAKE_CUDA_COMPILER_VERSION:[A-Z]*=/nvcc: /p' \
    "$BUILD/CMakeCache.txt" 2>/dev/null
  echo "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*, V[0-9.]*' || echo '?')"
  glibc="$(for f in "$PACK"/gpu_* "$PACK"/slow_* "$PACK"/lib*.so*; do objdump -T "$f"; done 2>/dev/null |
    grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
  cxx="$(for f in "$PACK"/gpu_* "$PACK"/slow_* "$PACK"/lib*.so*; do objdump -T "$f"; done 2>/dev/null |
    grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1)"
  echo "needs: $glibc (system glibc), $cxx (system libstdc++ or compat/)"
  echo "stripped: $DO_STRIP"
  echo
  echo "files:"
  (cd "$PACK" && find . -type f ! -name MANIFEST.txt ! -path './data/*' | sort | xargs sha256sum)
  echo "data: $(ls "$PACK/data" | wc -l) golden files"
} >"$PACK/MANIFEST.txt"

size=$(du -sb "$PACK" | cut -f1)
printf 'gpu-pack: %s: %d files, %d bytes (%.1f MiB; limit 64 MiB)\n' "$PACK" \
  "$(find "$PACK" -type f | wc -l)" "$size" "$(echo "$size / 1048576" | bc -l)"
(cd "$PACK" && ls -la --block-size=K . compat | sed 's/^/  /')
if [ "$size" -ge "$LIMIT" ]; then
  echo "gpu-pack: the pack is over 64 MiB: run again with --strip" >&2
  bad=1
fi
exit $bad
