"""klcal.Calibrator.add from Python against the C++ CPU backend, and the per-call overhead.

1. Throughput: 2^24 fp32 |N(0,1)| values, 2048-bin abs histogram, one thread, the second pass
   of range="two-pass" (histogram only: the exact call bench/cpu_bench.cpp's
   bm_histogram/0/0/0/1/1 times, klcal::cpu::histogram_accumulate without statistics). Both
   sides are timed in CPU seconds of the calling thread (immune to other load on a shared
   machine). With --cpu-bench PATH the C++ number comes from that binary on the same machine.
2. Overhead: wall-clock time per add() of a small contiguous tensor (NumPy; torch when
   installed), i.e. import + checks + GIL release + binning of a few values.

Usage: python3 bench/python_bench.py [--cpu-bench build/x/bench/cpu_bench] [--json out.json]
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np

import klcal


def best_thread_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def python_add_seconds(x, repeat):
    c = klcal.Calibrator(bins=2048, range="two-pass", threads=1)
    c.add_range(x)
    c.end_range_pass()
    return best_thread_time(lambda: c.add(x), repeat)


def python_fixed_add_seconds(x, repeat):
    # Fixed range: one pass computes the histogram and the exact statistics.
    c = klcal.Calibrator(bins=2048, range=(0.0, 5.0), threads=1)
    return best_thread_time(lambda: c.add(x), repeat)


def cpp_add_seconds(cpu_bench):
    """Per-iteration CPU time of bm_histogram (cpu, f32, abs 2048, |N(0,1)|, 1 thread)."""
    out = subprocess.run(
        [cpu_bench, "--benchmark_filter=^bm_histogram/0/0/0/1/1/", "--benchmark_format=json",
         "--benchmark_repetitions=5", "--benchmark_report_aggregates_only=true"],
        check=True, capture_output=True, text=True).stdout
    runs = json.loads(out)["benchmarks"]
    # min over repetitions is not an aggregate Google Benchmark reports; the median is.
    med = next(b for b in runs if b.get("aggregate_name") == "median")
    unit = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[med["time_unit"]]
    return med["cpu_time"] * unit


def per_call_us(add, x, calls):
    for _ in range(1000):
        add(x)
    t0 = time.perf_counter()
    for _ in range(calls):
        add(x)
    return (time.perf_counter() - t0) / calls * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--small", type=int, default=64, help="elements of the small tensor")
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--cpu-bench", help="bench/cpu_bench binary for the C++ number")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal(args.n, dtype=np.float32))
    res = {"n": args.n, "klcal_version": klcal.__version__, "built_with_cuda": klcal.built_with_cuda}
    py = python_add_seconds(x, args.repeat)
    res["python_add_s"] = py
    res["python_add_Gelem_per_s"] = args.n / py / 1e9
    res["python_fixed_add_s"] = python_fixed_add_seconds(x, args.repeat)
    if args.cpu_bench:
        cpp = cpp_add_seconds(args.cpu_bench) * args.n / (1 << 24)
        res["cpp_add_s"] = cpp
        res["python_over_cpp"] = py / cpp

    small = np.abs(rng.standard_normal(args.small, dtype=np.float32))
    c = klcal.Calibrator(bins=2048, range=(0.0, 8.0), threads=1)
    res["small_numpy_add_us"] = per_call_us(c.add, small, args.calls)
    try:
        import torch

        t = torch.from_numpy(small)
        res["small_torch_add_us"] = per_call_us(c.add, t, args.calls)
    except ImportError:
        pass
    cals = [klcal.Calibrator(bins=2048, range=(0.0, 8.0), threads=1) for _ in range(100)]
    xs = [small] * 100
    t0 = time.perf_counter()
    for _ in range(args.calls // 100):
        klcal.add_many(cals, xs)
    res["small_numpy_add_many_us_per_tensor"] = (time.perf_counter() - t0) / (args.calls // 100 * 100) * 1e6

    for k, v in res.items():
        print(f"{k:36s} {v:.4g}" if isinstance(v, float) else f"{k:36s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
