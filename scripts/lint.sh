#!/usr/bin/env bash
# Lint gate: clang-format check of every tracked C++/CUDA source, clang-tidy on the host sources.
#
# Usage: scripts/lint.sh BUILD_DIR
#   BUILD_DIR  a CMake build folder configured with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON; configuring
#              is enough (clang-tidy needs compile_commands.json, not the objects). A host-only
#              folder (-DKLCAL_ENABLE_CUDA=OFF) is the intended input; with a CUDA one, the host
#              variant of each file is checked (-UKLCAL_WITH_CUDA) and .cu files are ignored.
# Checks: (a) clang-format --dry-run --Werror on all tracked *.cpp *.hpp *.cu *.cuh *.h;
#         (b) clang-tidy (.clang-tidy, warnings are errors) on src/ apps/ reference/ tests/ bench/
#             *.cpp found in BUILD_DIR/compile_commands.json, skipping files that include CUDA
#             headers without a KLCAL_WITH_CUDA guard (tests/gpu_*.cpp, ...).
# Environment: CLANG_FORMAT (default clang-format), CLANG_TIDY (default clang-tidy),
#   RUN_CLANG_TIDY (default run-clang-tidy; xargs is used when it is missing), LINT_JOBS (default 2).
# Exit status: 0 clean, 1 a check failed, 2 usage error or missing tool.
# .clang-format and .clang-tidy were tuned with LLVM 14 (Debian bookworm); another major version
# may format a few constructs differently.
set -uo pipefail

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,18p' "$0"
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
if ! BUILD="$(cd "$1" 2>/dev/null && pwd -P)"; then
  echo "lint: no such build folder: $1" >&2
  exit 2
fi
DB="$BUILD/compile_commands.json"
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy}
RUN_CLANG_TIDY=${RUN_CLANG_TIDY:-run-clang-tidy}
JOBS=${LINT_JOBS:-2}

for tool in "$CLANG_FORMAT" "$CLANG_TIDY" git; do
  command -v "$tool" >/dev/null || { echo "lint: $tool not found" >&2; exit 2; }
done
if [ ! -f "$DB" ]; then
  echo "lint: $DB not found (configure with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)" >&2
  exit 2
fi
cd "$ROOT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
echo "lint: $("$CLANG_FORMAT" --version | head -n 1); $("$CLANG_TIDY" --version | grep -m1 -i version)"

# ---- (a) clang-format ----
fmt_bad=()
fmt_total=0
while IFS= read -r -d '' f; do
  fmt_total=$((fmt_total + 1))
  if ! "$CLANG_FORMAT" --dry-run --Werror "$f" >/dev/null 2>&1; then
    n=$("$CLANG_FORMAT" "$f" | diff "$f" - | grep -c '^<')
    fmt_bad+=("$f ($n lines)")
  fi
done < <(git ls-files -z -- '*.cpp' '*.hpp' '*.cu' '*.cuh' '*.h')
fmt_time=$(elapsed)
if [ ${#fmt_bad[@]} -eq 0 ]; then
  echo "lint: clang-format: $fmt_total files clean (${fmt_time}s)"
else
  echo "lint: clang-format: ${#fmt_bad[@]} of $fmt_total files need formatting (${fmt_time}s):"
  printf '  %s\n' "${fmt_bad[@]}"
  echo "  fix: $CLANG_FORMAT -i <files>   (see the diff: $CLANG_FORMAT <file> | diff <file> -)"
fi

# ---- (b) clang-tidy on host sources ----
# Every source file in the compile database, absolute, once each.
sed -n 's/^[[:space:]]*"file":[[:space:]]*"\(.*\)",\{0,1\}[[:space:]]*$/\1/p' "$DB" |
  xargs -r -d '\n' realpath -m -- | sort -u > "$TMP/db_files"
needs_cuda() {
  grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([a-z_]*cuda[a-z_]*\.h|gpu_fixture\.hpp|[^>"]*\.cuh)[>"]' "$1" &&
    ! grep -qE '^[[:space:]]*#[[:space:]]*(ifdef[[:space:]]+KLCAL_WITH_CUDA|if[[:space:]]+defined\(?[[:space:]]*KLCAL_WITH_CUDA)' "$1"
}
tidy_files=()
skipped=()
while IFS= read -r -d '' f; do
  if needs_cuda "$f"; then
    skipped+=("$f (needs the CUDA headers)")
  elif ! grep -qxF "$ROOT/$f" "$TMP/db_files"; then
    skipped+=("$f (not in $DB)")
  else
    tidy_files+=("$ROOT/$f")
  fi
done < <(git ls-files -z -- 'src/*.cpp' 'apps/*.cpp' 'reference/*.cpp' 'tests/*.cpp' 'bench/*.cpp')
if [ ${#skipped[@]} -gt 0 ]; then
  echo "lint: clang-tidy skips ${#skipped[@]} files:"
  printf '  %s\n' "${skipped[@]#"$ROOT/"}"
fi
tidy_rc=0
if [ ${#tidy_files[@]} -eq 0 ]; then
  echo "lint: clang-tidy: no host source of $ROOT in $DB" >&2
  tidy_rc=1
  : > "$TMP/tidy.log"
else
  t0=$(date +%s)
  if command -v "$RUN_CLANG_TIDY" >/dev/null; then
    regexes=()
    for f in "${tidy_files[@]}"; do regexes+=("^$(printf '%s' "$f" | sed 's/[.[\*^$()+?{}|]/\\&/g')\$"); done
    "$RUN_CLANG_TIDY" -clang-tidy-binary "$(command -v "$CLANG_TIDY")" -p "$BUILD" -j "$JOBS" \
      -quiet -extra-arg=-UKLCAL_WITH_CUDA "${regexes[@]}" > "$TMP/tidy.log" 2>&1 || tidy_rc=1
    runner="$RUN_CLANG_TIDY -j $JOBS"
  else
    mkdir -p "$TMP/logs"
    printf '%s\0' "${tidy_files[@]}" | xargs -0 -n 1 -P "$JOBS" sh -c \
      '"$0" -p "$1" --quiet --extra-arg=-UKLCAL_WITH_CUDA "$3" > "$2/$(printf %s "$3" | tr / _).log" 2>&1' \
      "$CLANG_TIDY" "$BUILD" "$TMP/logs" || tidy_rc=1
    cat "$TMP"/logs/*.log > "$TMP/tidy.log"
    runner="xargs -P $JOBS"
  fi
  sed -i 's/\x1b\[[0-9;]*m//g' "$TMP/tidy.log"  # run-clang-tidy turns colour on
  # Drop the per-file command echo and clang's "N warnings generated." noise.
  grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^([^ ]*/)?clang-tidy(-[0-9]+)? ' \
    "$TMP/tidy.log" | sed "s|$ROOT/||g"
  echo "lint: clang-tidy: ${#tidy_files[@]} files via $runner ($(( $(date +%s) - t0 ))s)"
fi
grep -oE "^[^ :]+:[0-9]+:[0-9]+: (warning|error): .*\[[^]]+\]$" "$TMP/tidy.log" |
  sed -E "s|^$ROOT/||; s|^([^:]+:[0-9]+:[0-9]+): [a-z]+: .*\[([^],]+)[],].*$|\1 \2|" | sort -u \
  > "$TMP/findings"
nfind=$(wc -l < "$TMP/findings")
if [ "$nfind" -gt 0 ]; then
  tidy_rc=1
  echo "lint: clang-tidy: $nfind findings:"
  sed 's/^/  /' "$TMP/findings"
elif [ "$tidy_rc" -ne 0 ]; then
  echo "lint: clang-tidy failed without a diagnostic (see the output above)"
else
  echo "lint: clang-tidy: clean"
fi

# ---- summary ----
echo
status=0
if [ ${#fmt_bad[@]} -gt 0 ]; then
  echo "lint: FAILED clang-format (${#fmt_bad[@]} files)"
  status=1
fi
if [ "$tidy_rc" -ne 0 ]; then
  echo "lint: FAILED clang-tidy ($nfind findings)"
  status=1
fi
[ $status -eq 0 ] && echo "lint: OK"
echo "lint: $(elapsed)s"
exit $status
