#!/usr/bin/env bash
# GPU checks of klcal: tests (gpu + slow), compute-sanitizer, GPU benchmarks, summary. Two modes.
#
# Prebuilt (the one for the device tool; docs/benchmarking.md):
#   scripts/gpu-check.sh --prebuilt DIR --out OUT
#   DIR  a folder made by scripts/gpu-pack.sh (programs built elsewhere for sm_90a, preset
#        h200-prebuilt); nothing is compiled. Runs, each phase with its own timeout and all of it
#        within GPU_CHECK_BUDGET seconds (default 285): a loader check, every gpu_*/slow_* test
#        program (in parallel), the GPU benchmarks restricted to the target cases (alone on the
#        GPU), compute-sanitizer memcheck/racecheck/synccheck on filtered test sets. Writes
#        OUT/summary.md (one PASS/FAIL/SKIP row per target and per step) and OUT/gpu-check.tar.gz
#        (every log, the benchmark JSON, the summary). Without a GPU every GPU step is SKIP and
#        both files are still written. Exit 1 when a step FAILs (a missed target alone: exit 0).
#   Environment: GPU_CHECK_BUDGET (285), GPU_CHECK_TEST_JOBS (4), GPU_CHECK_SAN_JOBS (6),
#     BENCH_MIN_TIME (0.05), BENCH_REPETITIONS (3).
#
# Native (builds on the GPU machine itself; needs GTest and Google Benchmark there):
#   scripts/gpu-check.sh [OUT_DIR] [--dry-run]
#   OUT_DIR   where logs and benchmark JSON go (default: docs/gpu-results)
#   --dry-run print the steps without running them (works without a GPU)
#   Environment: BUILD_DIR (default build-gpu), JOBS (default nproc), BENCH_MAX_LOG2N (default 28),
#     BENCH_MIN_TIME (seconds per benchmark, default 0.02), BENCH_TIMEOUT (per program, default 200).
#   Budget: under 8 minutes on one H200 (build ~3 min, tests ~1 min, sanitizers ~1 min,
#   benchmarks ~3 min); every phase has its own timeout so a hang cannot eat the rest.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=""
DRY=0
PREBUILT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --prebuilt) PREBUILT="${2:?--prebuilt needs a folder}"; shift ;;
    --prebuilt=*) PREBUILT="${1#*=}" ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done

# =============================== prebuilt mode =================================================

# Benchmark cases of the targets (names from bench/gpu_histogram_bench.cu, gpu_search_bench.cu).
# Histogram: fp32 at 2^28 elements (1 GiB), fp16/bf16 at 2^30 (2 GiB): every dtype reads >= 1 GiB.
# KLCAL_BENCH_MAX_LOG2N=30 registers those sizes.
PB_N32=268435456
PB_N16=1073741824
PB_HIST_FILTER="^(klcal|cub)/f32/bins:2048/abs_normal/n:$PB_N32\$"
PB_HIST_FILTER+="|^klcal/f32/bins:2048/(uniform|zeros50|one_bin)/n:$PB_N32\$"
PB_HIST_FILTER+="|^klcal/f32/bins:8001/abs_normal/n:$PB_N32\$"
PB_HIST_FILTER+="|^klcal/(f16|bf16)/bins:2048/abs_normal/n:$PB_N16\$"
PB_HIST_FILTER+="|^ceiling/f32/n:$PB_N32\$|^ceiling/(f16|bf16)/n:$PB_N16\$|^batched_100x1M/"
PB_SEARCH_FILTER='^search/(tensorrt/bins:2048/histograms:(1|1000)(/multi_kernel)?|mxnet/bins:8001/histograms:(1|100))$'
# compute-sanitizer test sets, small sizes: histogram kernels (every dtype, both layouts, batched,
# fold, stats) and search kernels (fused and multi-kernel paths; tensorrt, mxnet, mse, percentile).
PB_SAN_HIST='*byte_misaligned*:*batched_order*:*zero_elements*:*fold_pow2*:*stats_accumulate*:*side_stream*:*edge_values*'
PB_SAN_SEARCH='*exact_ties*:*one_bin_per_level*:*mse_ties*:*some_candidates_infinite*:*degenerate_histograms*:*percentile_exact_both_paths*:*zero_tasks*:*size_query*'

pb_now() { date +%s; }

# pb_step NAME STATUS SECONDS DETAIL: one row of the step table.
pb_step() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$PB_L/steps.tsv"
  printf '  %-32s %-4s %4ss  %s\n' "$1" "$2" "$3" "$4"
  [ "$2" = FAIL ] && PB_FAILED=1
  return 0
}

# pb_limit WANT RESERVE: the seconds a step may take, leaving RESERVE for the phases after it.
pb_limit() {
  local left=$((PB_DEADLINE - $(pb_now) - $2))
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

# pb_launch NAME LIMIT CMD...: CMD in the background under timeout; log $PB_L/NAME.log, exit
# status, seconds and limit in $PB_L/NAME.rc.
pb_launch() {
  local name="$1" limit="$2"
  shift 2
  (
    s=$(pb_now)
    timeout --kill-after=10 "$limit" "$@" >"$PB_L/$name.log" 2>&1
    rc=$?
    echo "$rc $(($(pb_now) - s)) $limit" >"$PB_L/$name.rc"
  ) &
}

# pb_wait_slots N: returns once fewer than N background jobs run.
pb_wait_slots() {
  while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n 2>/dev/null || sleep 1; done
}

# pb_gtest_result NAME KIND: classifies a finished gtest program (KIND test) or sanitizer run.
pb_gtest_result() {
  local name="$1" kind="$2" log="$PB_L/$1.log" rc secs limit
  read -r rc secs limit <"$PB_L/$name.rc"
  local passed skipped failed why san="" first
  passed=$(grep -aoE '^\[  PASSED  \] [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
  skipped=$(grep -aoE '^\[  SKIPPED \] [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
  failed=$(grep -aoE '^\[  FAILED  \] [0-9]+ test' "$log" | tail -1 | grep -oE '[0-9]+' | head -1)
  passed=${passed:-0} skipped=${skipped:-0} failed=${failed:-0}
  if [ "$kind" = sanitizer ]; then
    san=$(grep -aoE '(ERROR|RACECHECK|SYNCCHECK) SUMMARY: .*' "$log" | tail -1)
    if grep -aqiE 'device not supported|not supported on this (device|platform)' "$log"; then
      pb_step "$name" SKIP "$secs" "compute-sanitizer does not support this device/runtime"
      return
    fi
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    pb_step "$name" FAIL "$secs" "timeout after ${limit}s ($passed passed before)"
  elif [ "$rc" = 126 ] || [ "$rc" = 127 ]; then
    pb_step "$name" FAIL "$secs" "did not start: $(grep -a -m1 -iE 'error|not found' "$log" | cut -c1-140)"
  elif [ "$rc" != 0 ]; then
    first=$(grep -aoE '^\[  FAILED  \] [A-Za-z0-9_./]+' "$log" | grep -vE '\] [0-9]+$' |
      awk '!seen[$0]++' | head -3 |
      sed 's/.*\] //' | paste -sd, -)
    pb_step "$name" FAIL "$secs" "rc=$rc, $failed failed${first:+ ($first)}${san:+; $san}"
  elif [ "$passed" = 0 ] && [ "$skipped" != 0 ]; then
    why=$(awk '/Skipped$/ { getline; print; exit }' "$log" | cut -c1-90)
    pb_step "$name" SKIP "$secs" "all $skipped tests skipped${why:+: $why}"
  elif [ "$passed" = 0 ]; then
    pb_step "$name" SKIP "$secs" "no test ran"
  else
    [ "$skipped" != 0 ] && why=", $skipped skipped" || why=""
    pb_step "$name" PASS "$secs" "$passed passed$why${san:+; $san}"
  fi
}

prebuilt_main() {
  if [ -z "$OUT" ]; then
    echo "gpu-check: --prebuilt DIR needs --out OUT" >&2
    return 2
  fi
  local DIR W
  DIR="$(cd "$PREBUILT" 2>/dev/null && pwd)" || {
    echo "gpu-check: no folder $PREBUILT (make it with scripts/gpu-pack.sh)" >&2
    return 2
  }
  mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
  W="$(mktemp -d "${TMPDIR:-/tmp}/klcal-gpu-check.XXXXXX")"
  PB_L="$W/gpu-check"
  mkdir -p "$PB_L"
  : >"$PB_L/steps.tsv"
  PB_FAILED=0
  local T0 budget
  T0=$(pb_now)
  budget="${GPU_CHECK_BUDGET:-285}"
  PB_DEADLINE=$((T0 + budget))
  local min_time="${BENCH_MIN_TIME:-0.05}" reps="${BENCH_REPETITIONS:-3}"
  local test_jobs="${GPU_CHECK_TEST_JOBS:-4}" san_jobs="${GPU_CHECK_SAN_JOBS:-6}"
  export KLCAL_TEST_DATA_DIR="$DIR/data"
  cd "$W" || return 2

  echo "== gpu-check --prebuilt $DIR (budget ${budget}s, logs in $PB_L)"
  [ -f "$DIR/MANIFEST.txt" ] && cp "$DIR/MANIFEST.txt" "$PB_L/MANIFEST.txt"
  local have_gpu=0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && have_gpu=1
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -n) $(uname -r) $(uname -m)"
    (. /etc/os-release 2>/dev/null && echo "os: $PRETTY_NAME")
    echo "glibc: $(ldd --version 2>/dev/null | head -1)"
    if [ "$have_gpu" = 1 ]; then
      nvidia-smi -L
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
        --format=csv 2>&1
    else
      echo "gpu: none visible (nvidia-smi missing or failed)"
    fi
    echo "compute-sanitizer: $(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo missing)"
  } >"$PB_L/device.txt" 2>&1
  sed 's/^/  /' "$PB_L/device.txt"

  shopt -s nullglob
  local tests=("$DIR"/gpu_*_test "$DIR"/slow_*_test) benches=("$DIR"/gpu_*_bench)
  shopt -u nullglob
  local f name t missing lim

  # 0. The programs load (RUNPATH $ORIGIN finds the packed libbenchmark; compat/ only if needed).
  echo "== steps"
  t=$(pb_now)
  if ! command -v ldd >/dev/null 2>&1; then
    pb_step loader SKIP 0 "ldd missing"
  elif [ ${#tests[@]} -eq 0 ] || [ ${#benches[@]} -eq 0 ]; then
    pb_step loader FAIL 0 "no gpu_*_test or gpu_*_bench programs in $DIR"
  else
    missing=$(for f in "${tests[@]}" "${benches[@]}"; do ldd "$f" 2>&1 | grep 'not found' | sed "s|^|$(basename "$f"): |"; done)
    if [ -z "$missing" ]; then
      pb_step loader PASS $(($(pb_now) - t)) "${#tests[@]} test + ${#benches[@]} bench programs load with this machine's libraries"
    else
      echo "$missing" >"$PB_L/loader.log"
      export LD_LIBRARY_PATH="$DIR/compat${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      missing=$(for f in "${tests[@]}" "${benches[@]}"; do ldd "$f" 2>&1 | grep 'not found'; done)
      if [ -z "$missing" ]; then
        pb_step loader PASS $(($(pb_now) - t)) "loads with the packed compat/ libraries (loader.log)"
      else
        echo "$missing" >>"$PB_L/loader.log"
        pb_step loader FAIL $(($(pb_now) - t)) "$(echo "$missing" | head -1 | cut -c1-140)"
      fi
    fi
  fi

  # 1. Every gpu/slow test program, in parallel (reserve: benches 70 s, sanitizers 60 s).
  for f in "${tests[@]}"; do
    name="test-$(basename "$f")"
    lim=$(pb_limit "$([[ $f == */slow_* ]] && echo 150 || echo 120)" 130)
    if [ "$lim" -lt 15 ]; then pb_step "$name" SKIP 0 "out of time budget"; continue; fi
    pb_wait_slots "$test_jobs"
    pb_launch "$name" "$lim" "$f" --gtest_output="json:$PB_L/$name.json"
  done
  wait
  for f in "${tests[@]}"; do
    name="test-$(basename "$f")"
    [ -f "$PB_L/$name.rc" ] && pb_gtest_result "$name" test
  done

  # 2. Benchmarks, alone on the GPU, target cases only (reserve: sanitizers 60 s).
  local b filter want json rc secs nb ne
  for b in "${benches[@]}"; do
    name="$(basename "$b")"
    case "$name" in
      gpu_histogram_bench) filter="$PB_HIST_FILTER" want=90 ;;
      gpu_search_bench) filter="$PB_SEARCH_FILTER" want=45 ;;
      *) filter="." want=45 ;;
    esac
    lim=$(pb_limit "$want" 60)
    if [ "$lim" -lt 15 ]; then pb_step "bench-$name" SKIP 0 "out of time budget"; continue; fi
    json="$PB_L/$name.json"
    pb_launch "bench-$name" "$lim" env KLCAL_BENCH_MAX_LOG2N=30 "$b" \
      --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
      --benchmark_repetitions="$reps" --benchmark_out="$json" --benchmark_out_format=json
    wait
    read -r rc secs _ <"$PB_L/bench-$name.rc"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      pb_step "bench-$name" FAIL "$secs" "timeout after ${lim}s"
    elif [ "$rc" != 0 ]; then
      pb_step "bench-$name" FAIL "$secs" "rc=$rc: $(grep -a -m1 -iE 'error|fail' "$PB_L/bench-$name.log" | cut -c1-140)"
    elif [ ! -s "$json" ]; then
      pb_step "bench-$name" SKIP "$secs" "$(grep -a -m1 -iE 'skipped|no CUDA' "$PB_L/bench-$name.log" | cut -c1-100)"
    else
      nb=$(grep -c '"run_type": "iteration"' "$json")
      ne=$(grep -c '"error_occurred": true' "$json")
      if [ "$ne" != 0 ]; then
        pb_step "bench-$name" FAIL "$secs" "$ne benchmark runs reported an error (see the JSON)"
      else
        pb_step "bench-$name" PASS "$secs" "$nb runs ($reps repetitions, min_time ${min_time}s)"
      fi
    fi
  done

  # 3. compute-sanitizer, in parallel, on small filtered test sets.
  local san="" tool part prog filt r runs=()
  san="$(command -v compute-sanitizer 2>/dev/null)"
  [ -z "$san" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && san=/usr/local/cuda/bin/compute-sanitizer
  for tool in memcheck racecheck synccheck; do
    for part in histogram search; do runs+=("$tool:$part"); done
  done
  for r in "${runs[@]}"; do
    tool="${r%%:*}" part="${r#*:}"
    name="sanitizer-$tool-$part"
    prog="$DIR/gpu_${part}_test"
    if [ "$part" = histogram ]; then filt="$PB_SAN_HIST"; else filt="$PB_SAN_SEARCH"; fi
    if [ "$have_gpu" = 0 ]; then pb_step "$name" SKIP 0 "no GPU"; continue; fi
    if [ -z "$san" ]; then pb_step "$name" SKIP 0 "compute-sanitizer not installed"; continue; fi
    if [ ! -x "$prog" ]; then pb_step "$name" FAIL 0 "$(basename "$prog") not in the pack"; continue; fi
    lim=$(pb_limit 150 0)
    if [ "$lim" -lt 15 ]; then pb_step "$name" SKIP 0 "out of time budget"; continue; fi
    pb_wait_slots "$san_jobs"
    pb_launch "$name" "$lim" "$san" --tool "$tool" --error-exitcode 1 --print-limit 50 \
      "$prog" --gtest_filter="$filt"
  done
  wait
  for r in "${runs[@]}"; do
    name="sanitizer-${r%%:*}-${r#*:}"
    [ -f "$PB_L/$name.rc" ] && pb_gtest_result "$name" sanitizer
  done

  # 4. summary.md (targets read from the benchmark JSON) and the tarball.
  local total=$(($(pb_now) - T0))
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$PB_L" "$total" "$have_gpu" "$DIR" <<'PY' || echo "gpu-check: summary failed" >&2
import json, os, sys

L, total, have_gpu, pack = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
PEAK = 4.8e12  # H200 HBM3e, bytes/s (vendor figure)
N32, N16 = 268435456, 1073741824


def load(name):
    p = os.path.join(L, name)
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        return None
    try:
        with open(p) as f:
            return json.load(f)
    except ValueError as e:
        return {"_error": str(e)}


def runs(d):
    """name -> run (the median aggregate when repetitions ran, else the first iteration run)."""
    out, med, err = {}, {}, {}
    for b in (d or {}).get("benchmarks", []):
        key = b.get("run_name", b["name"])
        if b.get("error_occurred"):
            err[key] = {"error": b.get("error_message", "error")}
        elif b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                med[key] = b
        else:
            out.setdefault(key, b)
    out.update(med)
    out.update(err)  # an error in any repetition decides
    return out


steps = []
with open(os.path.join(L, "steps.tsv")) as f:
    for line in f:
        p = line.rstrip("\n").split("\t")
        if len(p) == 4:
            steps.append(p)
step_of = {s[0]: s for s in steps}
hist_d, search_d = load("gpu_histogram_bench.json"), load("gpu_search_bench.json")
H, S = runs(hist_d), runs(search_d)


class Skip(Exception):
    pass


def need(table, d, step, name):
    if d is None:
        s = step_of.get(step)
        raise Skip("no benchmark JSON (" + (s[1] + ": " + s[3] if s else step + " did not run") + ")")
    if "_error" in d:
        raise Skip("unreadable JSON: " + d["_error"])
    r = table.get(name)
    if r is None:
        raise Skip("no benchmark " + name + " in the JSON")
    if "error" in r:
        raise ValueError(name + ": " + r["error"])
    return r


def bw(name):
    return need(H, hist_d, "bench-gpu_histogram_bench", name)["bytes_per_second"]


def us(table, d, step, name):
    r = need(table, d, step, name)
    f = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[r.get("time_unit", "ns")]
    return r["real_time"] * f


def tbs(x):
    return f"{x / 1e12:.2f} TB/s"


def t_peak(name, frac, label):
    def f():
        v = bw(name)
        return v >= frac * PEAK, f"{tbs(v)} = {100 * v / PEAK:.1f} % of 4.8 TB/s"
    return f


def t_fp32():
    k = bw(f"klcal/f32/bins:2048/abs_normal/n:{N32}")
    c = bw(f"cub/f32/bins:2048/abs_normal/n:{N32}")
    return (k >= 0.8 * PEAK and k >= 2 * c,
            f"{tbs(k)} = {100 * k / PEAK:.1f} % of peak, {k / c:.2f}x CUB ({tbs(c)})")


def t_ratio(name, base, frac):
    def f():
        a, b = bw(name), bw(base)
        return a >= frac * b, f"{tbs(a)} vs {tbs(b)} = {100 * a / b:.1f} %"
    return f


def t_time(table, d, step, name, limit_us):
    def f():
        v = us(table, d, step, name)
        return v <= limit_us, f"{v:.1f} us"
    return f


HB, SB = "bench-gpu_histogram_bench", "bench-gpu_search_bench"
u32 = f"klcal/f32/bins:2048/uniform/n:{N32}"
targets = [
    ("histogram fp32, 2048 bins, |N(0,1)|, 1 GiB: >= 80 % of 4.8 TB/s and >= 2x CUB", t_fp32),
    ("histogram fp16, 2048 bins, |N(0,1)|, 2 GiB: >= 70 % of 4.8 TB/s",
     t_peak(f"klcal/f16/bins:2048/abs_normal/n:{N16}", 0.7, "fp16")),
    ("histogram bf16, 2048 bins, |N(0,1)|, 2 GiB: >= 70 % of 4.8 TB/s",
     t_peak(f"klcal/bf16/bins:2048/abs_normal/n:{N16}", 0.7, "bf16")),
    ("histogram fp32 50 % zeros >= 90 % of uniform (2048 bins, 1 GiB)",
     t_ratio(f"klcal/f32/bins:2048/zeros50/n:{N32}", u32, 0.9)),
    ("histogram fp32 one bin >= 70 % of uniform (2048 bins, 1 GiB)",
     t_ratio(f"klcal/f32/bins:2048/one_bin/n:{N32}", u32, 0.7)),
    ("histogram fp32 8001 bins (signed) >= 90 % of 2048 bins (|N(0,1)|, 1 GiB)",
     t_ratio(f"klcal/f32/bins:8001/abs_normal/n:{N32}", f"klcal/f32/bins:2048/abs_normal/n:{N32}", 0.9)),
    ("batched histogram 100 x 1M fp32, one call: <= 150 us",
     t_time(H, hist_d, HB, "batched_100x1M/f32/one_call", 150)),
    ("search tensorrt 2048 bins, one histogram: <= 20 us",
     t_time(S, search_d, SB, "search/tensorrt/bins:2048/histograms:1", 20)),
    ("search tensorrt 2048 bins, 1000 histograms: <= 1 ms",
     t_time(S, search_d, SB, "search/tensorrt/bins:2048/histograms:1000", 1000)),
    ("search mxnet 8001 bins, one histogram: <= 100 us",
     t_time(S, search_d, SB, "search/mxnet/bins:8001/histograms:1", 100)),
    ("search mxnet 8001 bins, 100 histograms: <= 2 ms (design.md)",
     t_time(S, search_d, SB, "search/mxnet/bins:8001/histograms:100", 2000)),
]


def cell(s):
    return str(s).replace("|", "\\|")


rows = []
for label, fn in targets:
    try:
        ok, text = fn()
        rows.append((label, "PASS" if ok else "FAIL", text))
    except Skip as e:
        rows.append((label, "SKIP", str(e)))
    except (ValueError, KeyError, ZeroDivisionError) as e:
        rows.append((label, "FAIL", "benchmark error: " + str(e)))

info = []
for name in (f"ceiling/f32/n:{N32}", f"ceiling/f16/n:{N16}", f"ceiling/bf16/n:{N16}"):
    if name in H and "bytes_per_second" in H[name]:
        info.append(f"- {name}: {tbs(H[name]['bytes_per_second'])} (16-byte streaming read, same run)")
if "batched_100x1M/f32/100_calls" in H and "real_time" in H["batched_100x1M/f32/100_calls"]:
    info.append(f"- batched_100x1M/f32/100_calls: {H['batched_100x1M/f32/100_calls']['real_time']:.1f} "
                f"{H['batched_100x1M/f32/100_calls'].get('time_unit', '')}")
for name in ("search/tensorrt/bins:2048/histograms:1/multi_kernel",
             "search/tensorrt/bins:2048/histograms:1000/multi_kernel"):
    if name in S and "real_time" in S[name]:
        info.append(f"- {name}: {S[name]['real_time']:.1f} {S[name].get('time_unit', '')}")
for d, n in ((hist_d, "gpu_histogram_bench"), (search_d, "gpu_search_bench")):
    ctx = (d or {}).get("context", {})
    if ctx:
        info.append(f"- {n} context: device {ctx.get('device')}, cc {ctx.get('compute_capability')}, "
                    f"theoretical bandwidth {ctx.get('theoretical_bandwidth_GBps', '-')} GB/s, "
                    f"{ctx.get('date', '')}")

manifest = ""
mp = os.path.join(L, "MANIFEST.txt")
if os.path.exists(mp):
    with open(mp) as f:
        manifest = "; ".join(l.strip() for l in f.readlines()[1:4])
with open(os.path.join(L, "device.txt")) as f:
    dev = [l.strip() for l in f if l.startswith("GPU ")]
lines = [
    "# klcal gpu-check (prebuilt)",
    "",
    f"- pack: {pack} ({manifest or 'no MANIFEST.txt'})",
    f"- device: {dev[0] if dev else 'no GPU visible'}",
    f"- total: {total} s; numbers: medians of the repetitions, benchmark JSON in gpu-check.tar.gz",
    "",
    "| target | result | measured |",
    "|---|---|---|",
]
lines += [f"| {cell(a)} | {b} | {cell(c)} |" for a, b, c in rows]
lines += ["", "| step | result | seconds | detail |", "|---|---|---|---|"]
lines += [f"| {cell(a)} | {b} | {c} | {cell(d)} |" for a, b, c, d in steps]
if info:
    lines += ["", "Other figures of the same run (no target):", ""] + info
counts = {k: sum(1 for r in rows if r[1] == k) + sum(1 for s in steps if s[1] == k)
          for k in ("PASS", "FAIL", "SKIP")}
lines += ["", f"Rows: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP."]
with open(os.path.join(L, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
PY
  fi
  if [ ! -s "$PB_L/summary.md" ]; then  # no python3: the steps alone
    {
      echo "# klcal gpu-check (prebuilt)"
      echo
      echo "| target | result | measured |"
      echo "|---|---|---|"
      echo "| every target | SKIP | python3 missing or failed: no JSON evaluation |"
      echo
      echo "| step | result | seconds | detail |"
      echo "|---|---|---|---|"
      awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$PB_L/steps.tsv"
    } >"$PB_L/summary.md"
  fi
  cp "$PB_L/summary.md" "$OUT/summary.md"
  tar -C "$W" -czf "$OUT/gpu-check.tar.gz" gpu-check
  echo
  echo "== summary ($total s): $OUT/summary.md, $OUT/gpu-check.tar.gz ($(du -k "$OUT/gpu-check.tar.gz" | cut -f1) KiB)"
  cat "$PB_L/summary.md"
  cd / && rm -rf "$W"
  return $PB_FAILED
}

if [ -n "$PREBUILT" ]; then
  prebuilt_main
  exit $?
fi

# =============================== native mode ===================================================

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
