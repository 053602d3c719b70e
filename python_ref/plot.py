#!/usr/bin/env python3
"""Plots klcal results: one PNG per tensor with its histogram (log counts), every method's
threshold, and the KL / MSE score curves with their minima.

Input is what `klcal calibrate --json FILE --curves DIR` writes:
  python3 python_ref/plot.py --json calib.json --curves curves/ --out plots/
"""
import argparse
import csv
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"entropy": "tab:red", "max": "tab:gray", "percentile": "tab:green", "mse": "tab:purple"}


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    cols = {h: [] for h in head}
    for r in body:
        for h, v in zip(head, r):
            cols[h].append(float(v))
    return cols


def safe_name(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def plot_tensor(name, t, curves_dir, out_dir):
    methods = t.get("methods", {t.get("method", "entropy"): t})
    hist = t.get("histogram", {})
    curve_methods = [m for m, r in methods.items() if r.get("curve_file")]
    ncols = 1 + len(curve_methods)
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2), squeeze=False)
    ax = axes[0][0]
    if hist.get("file") and curves_dir:
        h = read_csv(os.path.join(curves_dir, hist["file"]))
        width = (hist["hi"] - hist["lo"]) / hist["bins"]
        counts = [c if c > 0 else math.nan for c in h["count"]]
        ax.bar(h["lo_edge"], counts, width=width, align="edge", color="tab:blue", linewidth=0)
        ax.set_yscale("log")
    ax.set_title(f"{name}: {hist.get('layout', 'abs')} histogram, {hist.get('bins', '?')} bins")
    ax.set_xlabel("|x|" if hist.get("layout", "abs") == "abs" else "x")
    ax.set_ylabel("count (log)")
    for m, r in methods.items():
        if r.get("amax") is None:
            continue
        ax.axvline(r["amax"], color=COLORS.get(m, "black"), linestyle="--", linewidth=1.2,
                   label=f"{m}: amax {r['amax']:.5g}, clipped {100 * (r.get('clipped_fraction') or 0):.3g}%")
    ax.legend(fontsize=8, loc="upper right")
    for k, m in enumerate(curve_methods, start=1):
        ax = axes[0][k]
        c = read_csv(os.path.join(curves_dir, methods[m]["curve_file"]))
        xs, ys = c["threshold"], c["score"]
        finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
        if finite:
            ax.plot([p[0] for p in finite], [p[1] for p in finite], color=COLORS.get(m, "black"),
                    linewidth=1)
            if all(p[1] > 0 for p in finite):
                ax.set_yscale("log")
        r = methods[m]
        ax.axvline(r["amax"], color="black", linestyle=":", linewidth=1)
        if r.get("score") is not None:
            ax.plot([r["amax"]], [r["score"]], "o", color="black",
                    label=f"minimum {r['score']:.4g} at {r['amax']:.5g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{name}: {'KL divergence' if m == 'entropy' else 'MSE'} per candidate")
        ax.set_xlabel("threshold (amax candidate)")
        ax.set_ylabel("score")
    fig.tight_layout()
    path = os.path.join(out_dir, safe_name(name) + ".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="output of klcal calibrate --json")
    ap.add_argument("--curves", help="directory given to klcal calibrate --curves")
    ap.add_argument("--out", default="plots", help="output directory (default plots/)")
    a = ap.parse_args(argv)
    with open(a.json) as f:
        doc = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    tensors = doc.get("tensors", {})
    if not tensors:
        print(f"{a.json}: no tensors", file=sys.stderr)
        return 1
    for name, t in tensors.items():
        print(plot_tensor(name, t, a.curves, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
