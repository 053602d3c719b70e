#!/usr/bin/env bash
# One command on a GPU machine: build, all tests (gpu + slow), compute-sanitizer, benchmarks, summary.
#
# Usage: scripts/gpu-check.sh [OUT_DIR] [--dry-run]
#   OUT_DIR   where logs and benchmark JSON go (default: docs/gpu-results)
#   --dry-run print the steps without running them (works without a GPU)
# Environment: BUILD_DIR (default build-gpu), JOBS (default nproc), BENCH_MAX_LOG2N (default 28),
#   BENCH_MIN_TIME (seconds per benchmark, default 0.02), BENCH_TIMEOUT (per program, default 200).
# Budget: under 8 minutes on one H200 (build ~3 min, tests ~1 min, sanitizers ~1 min,
# benchmarks ~3 min); every phase has its own timeout so a hang cannot eat the rest.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=""
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option $arg" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done
OUT="${OUT:-$ROOT/docs/gpu-results}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
BUILD="${BUILD_DIR:-$ROOT/build-gpu}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 8)}"
MAX_LOG2N="${BENCH_MAX_LOG2N:-28}"
MIN_TIME="${BENCH_MIN_TIME:-0.02}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-200}"

declare -a SUMMARY=()
FAILED=0

# run NAME TIMEOUT_S LOGFILE CMD...: runs one step with a timeout, logs it, records the outcome.
run() {
  local name="$1" limit="$2" log="$3"
  shift 3
  if [ "$DRY" = 1 ]; then
    echo "[dry-run] ($name, ${limit}s) $* > $log"
    SUMMARY+=("$name: dry-run")
    return 0
  fi
  local t0=$SECONDS
  echo "== $name"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local dt=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then
    SUMMARY+=("$name: ok (${dt}s)")
  else
    if [ $rc -eq 124 ]; then
      SUMMARY+=("$name: TIMEOUT after ${limit}s (log: $log)")
    else
      SUMMARY+=("$name: FAILED rc=$rc (${dt}s, log: $log)")
    fi
    FAILED=1
    tail -n 20 "$log" >&2
  fi
  return $rc
}

if [ "$DRY" = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU visible (nvidia-smi failed); use --dry-run to see the steps" >&2
    exit 2
  fi
fi
[ "$DRY" = 0 ] && mkdir -p "$OUT"
START=$SECONDS
[ "$DRY" = 0 ] && nvidia-smi -L | tee "$OUT/device.txt"

# 1. Configure + build. 'native' is right here: this script only runs on the GPU machine.
run configure 120 "$OUT/configure.log" cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DKLCAL_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native -DKLCAL_BUILD_TESTS=ON \
  -DKLCAL_BUILD_BENCH=ON || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }
run build 300 "$OUT/build.log" cmake --build "$BUILD" -j "$JOBS" ||
  { printf '%s\n' "${SUMMARY[@]}"; exit 1; }

# 2. Every test, every label (cpu, gpu, slow).
run ctest 240 "$OUT/ctest.log" ctest --test-dir "$BUILD" --output-on-failure -j 4 --timeout 200

# 3. compute-sanitizer on small filters (memcheck: out-of-bounds/misaligned accesses;
#    racecheck: shared-memory hazards in the privatized histogram).
SAN="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
HIST_FILTER='*byte_misaligned*:*batched_order*:*zero_elements*:*fold_pow2*:*stats_accumulate*:*side_stream*:*edge_values*'
CAL_FILTER='*streaming_equals*:*merge_equals*:*two_pass_equals*'
if [ -x "$BUILD/tests/gpu_histogram_test" ] || [ "$DRY" = 1 ]; then
  for tool in memcheck racecheck; do
    run "sanitizer-$tool-histogram" 120 "$OUT/sanitizer-$tool-histogram.log" "$SAN" \
      --tool "$tool" --error-exitcode 1 "$BUILD/tests/gpu_histogram_test" \
      --gtest_filter="$HIST_FILTER"
    run "sanitizer-$tool-calibrator" 120 "$OUT/sanitizer-$tool-calibrator.log" "$SAN" \
      --tool "$tool" --error-exitcode 1 "$BUILD/tests/gpu_calibrator_test" \
      --gtest_filter="$CAL_FILTER"
  done
fi

# 4. Benchmarks: every bench executable, JSON per program.
if [ "$DRY" = 1 ]; then
  BENCHES=("$BUILD/bench/gpu_histogram_bench")
else
  mapfile -t BENCHES < <(find "$BUILD/bench" -maxdepth 1 -type f -perm -u+x -name '*bench*' | sort)
fi
for b in "${BENCHES[@]}"; do
  name="$(basename "$b")"
  run "bench-$name" "$BENCH_TIMEOUT" "$OUT/$name.log" \
    env KLCAL_BENCH_MAX_LOG2N="$MAX_LOG2N" "$b" --benchmark_min_time="$MIN_TIME" \
    --benchmark_out="$OUT/$name.json" --benchmark_out_format=json
done

# 5. Summary.
echo
echo "== gpu-check summary ($((SECONDS - START))s, results in $OUT)"
printf '  %s\n' "${SUMMARY[@]}"
if [ "$DRY" = 0 ] && [ -f "$OUT/ctest.log" ]; then
  grep -E "tests passed|tests failed|Skipped|Not Run" "$OUT/ctest.log" | sed 's/^/  ctest: /'
fi
if [ "$DRY" = 0 ] && [ -f "$OUT/gpu_histogram_bench.json" ] && command -v python3 >/dev/null; then
  python3 - "$OUT/gpu_histogram_bench.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ctx = d.get("context", {})
print(f"  device: {ctx.get('device')}  theoretical: {ctx.get('theoretical_bandwidth_GBps')} GB/s")
rows = {}
for b in d.get("benchmarks", []):
    if "bytes_per_second" not in b: continue
    rows[b["name"]] = b["bytes_per_second"] / 1e9
# Largest n per (dtype, bins, dist): klcal vs cub vs the streaming-read ceiling.
best = {}
for name, gbs in rows.items():
    p = name.split("/")
    if p[0] in ("klcal", "cub"):
        key = tuple(p[1:4]); n = int(p[4].split(":")[1])
        if n >= best.get(key, (0,))[0]: best[key] = (n, )
for key, (n,) in sorted(best.items()):
    t = key[0]
    k = rows.get(f"klcal/{'/'.join(key)}/n:{n}"); c = rows.get(f"cub/{'/'.join(key)}/n:{n}")
    ceil = rows.get(f"ceiling/{t}/n:{n}")
    print(f"  {'/'.join(key):28s} n={n:>11d}  klcal {k or 0:7.1f} GB/s  cub {c or 0:7.1f}  ceiling {ceil or 0:7.1f}")
for name in ("batched_100x1M/f32/one_call", "batched_100x1M/f32/100_calls"):
    if name in rows: print(f"  {name:28s} {rows[name]:7.1f} GB/s")
PY
fi
exit $FAILED
