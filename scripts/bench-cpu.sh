#!/usr/bin/env bash
# CPU benchmarks and their NumPy baselines in one run; prints the ratio table of docs/benchmarking.md.
# Usage: scripts/bench-cpu.sh [BUILD_DIR] [OUT_DIR]   (BUILD_DIR must hold a Release build of bench/cpu_bench)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/ci}
out=${2:-build/bench-cpu}
bench="$build/bench/cpu_bench"
[ -x "$bench" ] || { echo "bench-cpu.sh: $bench not found (build target cpu_bench first)" >&2; exit 2; }
mkdir -p "$out"
# The single-thread histogram runs at 2048 abs bins, tensorrt/mxnet/mse searches, the 500 batch.
filter='bm_histogram/[01]/0/0/[0-3]/1/|bm_histogram/0/0/0/[0-3]/2/|bm_search/'
"$bench" --benchmark_filter="$filter" --benchmark_out="$out/cpu_bench.json" \
  --benchmark_out_format=json >"$out/cpu_bench.txt"
python3 python_ref/bench_numpy.py --repeat 3 >"$out/numpy.json"
python3 - "$out/cpu_bench.json" "$out/numpy.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1])); np_ = json.load(open(sys.argv[2]))
rows = {r.get("label", r["name"]): r for r in b["benchmarks"] if r.get("run_type") != "aggregate"}
ctx = b["context"]
print(f"machine: {ctx.get('host_name')} {ctx.get('num_cpus')} CPUs @ {ctx.get('mhz_per_cpu')} MHz, date {ctx.get('date')}")
print("\n| benchmark | rate or time | x reference (same run) |")
print("|---|---|---|")
def t_ms(r):
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[r["time_unit"]]
    return r["real_time" if "/real_time" in r["name"] else "cpu_time"] * unit
for label, r in rows.items():
    if label.startswith("reference"):
        continue
    rate = f"{r['items_per_second']/1e9:.2f} G elem/s" if "bm_histogram" in r["name"] else f"{t_ms(r):.3f} ms"
    xr = r.get("x_vs_ref")
    print(f"| {label} | {rate} | {xr:.1f}x |" if xr else f"| {label} | {rate} | |")
nh = np_["numpy_histogram_abs_2048"]["elements_per_second"]
print(f"\nNumPy {np_['numpy_version']} baselines (same run): numpy.histogram {nh/1e6:.1f} M elem/s;"
      f" tensorrt brute force {np_['tensorrt_entropy_bruteforce_2048']['seconds_per_histogram']:.3f} s;"
      f" mxnet brute force {np_['mxnet_entropy_bruteforce_8001']['seconds_per_histogram']:.3f} s"
      f" ({np_['mxnet_entropy_bruteforce_8001']['note']})")
def find(prefix):
    return next((r for label, r in rows.items() if label.startswith(prefix)), None)
h = find("cpu f32 abs2048 abs_normal threads 1")
if h:
    print(f"histogram f32 |N(0,1)| 2048 bins, 1 thread: {h['items_per_second']/nh:.1f}x numpy.histogram")
z, u = find("cpu f32 abs2048 all_zeros threads 1"), find("cpu f32 abs2048 uniform threads 1")
if z and u:
    print(f"all-zero input rate / uniform rate: {z['items_per_second']/u['items_per_second']:.2f}")
for key, prefix in (("tensorrt_entropy_bruteforce_2048", "cpu tensorrt 2048 histograms 1 threads 1"),
                    ("mxnet_entropy_bruteforce_8001", "cpu mxnet 8001 histograms 1 threads 1")):
    r = find(prefix)
    if r:
        s_np = np_[key]["seconds_per_histogram"]
        print(f"{prefix}: {s_np*1e3/t_ms(r):.0f}x the NumPy brute force ({s_np*1e3:.1f} ms vs {t_ms(r):.3f} ms)")
PY
