#!/usr/bin/env python3
"""klcal beside the peers' histogram calibrators: the same data, collect + entropy amax.

Contenders (each in a fresh process, so that peak memory is its own):
  klcal          klcal.Calibrator(range="streaming"): add() per batch, compute("entropy")
  klcal.torch    klcal.torch.HistogramCalibrator: collect(tensor) per batch, compute_amax
  modelopt       ModelOpt's HistogramCalibrator (pip nvidia-modelopt): collect + compute_amax
  onnxruntime    onnxruntime.quantization's HistogramCollector(method="entropy"): collect per
                 batch + compute_collection_result()

Data: `--batches` batches of `--batch` float32 values (Gaussian, a different scale per batch, so
that every contender has to grow its range), generated once per process from a fixed seed before
the clock starts. Histogram bins: 2048 for all; entropy with the peers' defaults (ModelOpt:
start_bin 128, stride 1; onnxruntime: 128 quantized bins). Time: wall clock of collect +
search, best of `--repeat` for klcal, of `--peer-repeat` (default 1: a ModelOpt entropy search over
its grown histogram takes minutes) for the peers. Peak memory: the growth of the process's peak resident set (VmHWM,
reset through /proc/self/clear_refs) over its resident set once the data exists.

Usage: python3 bench/python_peers.py [--batches 16] [--batch 1048576] [--repeat 3]
       [--peer-repeat 1] [--only NAME] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CONTENDERS = ["klcal", "klcal.torch", "modelopt", "onnxruntime"]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _data(batches: int, batch: int):
    import numpy as np

    rng = np.random.default_rng(20260101)
    return [(rng.standard_normal(batch, dtype=np.float32) * (1.0 + 0.05 * k)) for k in
            range(batches)]


def _run_one(name: str, batches: int, batch: int, repeat: int) -> dict:
    """Runs in the child process: returns time, peak memory and the amax."""
    data = _data(batches, batch)
    if name == "klcal":
        import klcal

        def run():
            c = klcal.Calibrator(bins=2048, range="streaming")
            for x in data:
                c.add(x)
            return c.compute(method="entropy").amax
    elif name == "klcal.torch":
        import torch

        import klcal.torch as kt
        tensors = [torch.from_numpy(x) for x in data]

        def run():
            c = kt.HistogramCalibrator(num_bins=2048)
            for t in tensors:
                c.collect(t)
            return float(c.compute_amax("entropy"))
    elif name == "modelopt":
        import torch
        from modelopt.torch.quantization.calib import HistogramCalibrator
        tensors = [torch.from_numpy(x) for x in data]

        def run():
            c = HistogramCalibrator(num_bits=8, axis=None, unsigned=False, num_bins=2048)
            for t in tensors:
                c.collect(t)
            return float(c.compute_amax("entropy"))
    elif name == "onnxruntime":
        import contextlib
        import io

        from onnxruntime.quantization.calibrate import HistogramCollector

        def run():
            c = HistogramCollector(method="entropy", symmetric=True, num_bins=2048,
                                   num_quantized_bins=128, percentile=99.999, scenario="same")
            with contextlib.redirect_stdout(io.StringIO()):  # it prints progress lines
                for x in data:
                    c.collect({"t": [x]})
                r = c.compute_collection_result()
            return float(max(abs(float(r["t"][0])), abs(float(r["t"][1]))))
    else:
        raise SystemExit(f"unknown contender {name}")

    base = _status("VmRSS")
    can_reset = _reset_peak()
    best = float("inf")
    amax = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        amax = run()
        best = min(best, time.perf_counter() - t0)
    peak = _status("VmHWM") - base if can_reset else None
    return {"name": name, "seconds": best, "peak_bytes": peak, "amax": amax,
            "elements": batches * batch}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--batch", type=int, default=1 << 20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--peer-repeat", type=int, default=1)
    p.add_argument("--only", action="append", choices=CONTENDERS)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(_run_one(a.child, a.batches, a.batch, a.repeat)))
        return 0
    rows = []
    for name in a.only or CONTENDERS:
        repeat = a.repeat if name.startswith("klcal") else a.peer_repeat
        r = subprocess.run([sys.executable, __file__, "--child", name, "--batches",
                            str(a.batches), "--batch", str(a.batch), "--repeat", str(repeat)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"name": name, "error": last})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    n = a.batches * a.batch
    print(f"{a.batches} batches x {a.batch} fp32 values ({n} values, {n * 4 / 2**20:.0f} MiB), "
          f"2048 bins, collect + entropy amax, best of {a.repeat} (klcal) / {a.peer_repeat} "
          "(peers)")
    base = next((r["seconds"] for r in rows if r.get("name") == "klcal" and "seconds" in r), None)
    if a.markdown:
        print("\n| contender | time (s) | vs klcal | peak extra memory (MiB) | amax |")
        print("|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            line = (f"| {r['name']} | failed: {r['error']} | | | |" if a.markdown
                    else f"{r['name']:<12} failed: {r['error']}")
            print(line)
            continue
        mem = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f}"
        ratio = f"{r['seconds'] / base:.1f}x" if base else ""
        if a.markdown:
            print(f"| {r['name']} | {r['seconds']:.3f} | {ratio} | {mem} | {r['amax']:.6g} |")
        else:
            print(f"{r['name']:<12} {r['seconds']:9.3f} s  {ratio:>8}  peak +{mem} MiB  "
                  f"amax {r['amax']:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
