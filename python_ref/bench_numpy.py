"""NumPy baselines for the benchmark ratios quoted in the docs; prints one JSON object.

(a) numpy.histogram of |x| for n fp32 |N(0,1)| values, 2048 bins over [0, max) -> elements/s
(b) the brute-force tensorrt entropy search of klcal_ref (direct O(i) formula), one 2048-bin
    histogram -> seconds per histogram
(c) the same for the mxnet rule set, 8001 bins (optionally a subset of the candidates,
    extrapolated linearly in the per-candidate cost; the output says which)
Usage: python3 python_ref/bench_numpy.py [--n 16777216] [--repeat 3] [--mxnet-candidates K]
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klcal_ref as kr  # noqa: E402


def best_of(repeat, fn):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mxnet-candidates", type=int, default=0,
                    help="time only this many mxnet candidates (evenly spread) and extrapolate; "
                         "0 = the full search")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x = np.abs(rng.standard_normal(args.n, dtype=np.float32))
    hi = float(x.max())

    def np_hist():
        return np.histogram(np.abs(x), bins=2048, range=(0.0, hi))[0]

    t_hist, _ = best_of(args.repeat, np_hist)

    # the 2048-bin klcal histogram of the same data (two-pass range) for the searches
    h = kr.two_pass([x], "f32", 2048)
    t_trt, r_trt = best_of(args.repeat, lambda: kr.search(h, "entropy", "tensorrt"))

    xs = rng.standard_normal(args.n, dtype=np.float32)
    hs = kr.two_pass([xs], "f32", 8001, "signed")
    levels = 255
    z = 8001 // 2
    all_cands = list(range(levels // 2, z + 1))
    if args.mxnet_candidates and args.mxnet_candidates < len(all_cands):
        idx = np.linspace(0, len(all_cands) - 1, args.mxnet_candidates).round().astype(int)
        subset = [all_cands[i] for i in idx]
        t0 = time.perf_counter()
        for i in subset:
            kr.kl_mxnet_candidate(hs.counts, i, levels)
        t_sub = time.perf_counter() - t0
        t_mx = t_sub * len(all_cands) / len(subset)
        mx_note = f"extrapolated from {len(subset)} of {len(all_cands)} candidates (evenly spread)"
        mx_index = None
    else:
        t_mx, r_mx = best_of(1, lambda: kr.search(hs, "entropy", "mxnet"))
        mx_note = f"one full run, all {len(all_cands)} candidates"
        mx_index = r_mx["index"]

    out = {
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "n": args.n,
        "repeat": args.repeat,
        "numpy_histogram_abs_2048": {
            "seconds": t_hist,
            "elements_per_second": args.n / t_hist,
            "note": "np.histogram(np.abs(x), 2048, range=(0, max)), best of repeat, abs included",
        },
        "tensorrt_entropy_bruteforce_2048": {
            "seconds_per_histogram": t_trt,
            "candidates": 2048 - 128 + 1,
            "index": r_trt["index"],
            "note": "klcal_ref direct O(i) formula, fp64, best of repeat",
        },
        "mxnet_entropy_bruteforce_8001": {
            "seconds_per_histogram": t_mx,
            "candidates": len(all_cands),
            "index": mx_index,
            "note": mx_note,
        },
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
