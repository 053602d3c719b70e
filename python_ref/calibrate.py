"""Command-line calibration with the NumPy reference, for end-to-end cross-checks of the CLI.

python3 python_ref/calibrate.py [--method entropy|max|percentile|mse] [--rules tensorrt|mxnet]
    [--bins N] [--start-bin N] [--stride N] [--bits N] [--unsigned] [--percentile P]
    [--range two-pass|streaming] --json OUT FILE.npy|FILE.npz|DIR ...

Tensor name = .npy file stem, or .npz member name; the same name in several files means several
batches of one tensor, taken in sorted file order. A DIR stands for its *.npy and *.npz files.
Supported array dtypes: float32 (f32), float16 (f16). Errors: one line on stderr, exit 1.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klcal_ref as kr  # noqa: E402


def _files(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(os.path.join(p, f) for f in os.listdir(p) if f.endswith((".npy", ".npz")))
        else:
            out.append(p)
    return sorted(out)


def _dtype_name(a):
    if a.dtype == np.float32:
        return "f32"
    if a.dtype == np.float16:
        return "f16"
    raise kr.KlcalError("invalid_dtype", f"unsupported array dtype {a.dtype}")


def load_tensors(paths):
    """{name: (dtype, [batch arrays])} in sorted file order."""
    tensors = {}
    for path in _files(paths):
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                items = [(name, z[name]) for name in z.files]
        elif path.endswith(".npy"):
            items = [(os.path.splitext(os.path.basename(path))[0], np.load(path, allow_pickle=False))]
        else:
            raise kr.KlcalError("invalid_option", f"not a .npy/.npz file or directory: {path}")
        for name, arr in items:
            if name.endswith(".npy"):
                name = name[:-4]
            dt = _dtype_name(arr)
            if name in tensors and tensors[name][0] != dt:
                raise kr.KlcalError("invalid_dtype", f"tensor {name}: batches of different dtypes")
            tensors.setdefault(name, (dt, []))[1].append(np.ascontiguousarray(arr).reshape(-1))
    return tensors


def calibrate_tensor(dtype, batches, args):
    signed = args.rules == "mxnet"
    bins = args.bins if args.bins is not None else (8001 if signed else 2048)
    if args.range == "streaming":
        if signed:
            raise kr.KlcalError("layout_mismatch", "streaming ranges need the abs layout (tensorrt rules)")
        h = kr.streaming(batches, dtype, bins)
    else:
        h = kr.two_pass(batches, dtype, bins, "signed" if signed else "abs")
    r = kr.search(h, args.method, args.rules, bits=args.bits, is_unsigned=args.unsigned,
                  start_bin=args.start_bin, stride=args.stride, zero_bin=args.zero_bin,
                  percentile=args.percentile)
    return {
        "amax": float(r["amax"]),
        "scale": float(r["scale"]),
        "index": int(r["index"]),
        "score": float(r["score"]),
        "clipped_fraction": float(r["clipped_fraction"]),
        "degenerate": bool(r["degenerate"]),
        "elements": int(sum(b.size for b in batches)),
        "nan_count": int(h.nan_count),
        "inf_count": int(h.inf_count),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="NumPy reference calibration (klcal python_ref)")
    ap.add_argument("--method", default="entropy", choices=kr.METHODS)
    ap.add_argument("--rules", default="tensorrt", choices=kr.RULES)
    ap.add_argument("--bins", type=int, default=None)
    ap.add_argument("--start-bin", dest="start_bin", type=int, default=128)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--unsigned", action="store_true")
    ap.add_argument("--zero-bin", dest="zero_bin", default="copy_next", choices=kr.ZERO_BIN)
    ap.add_argument("--percentile", type=float, default=99.99)
    ap.add_argument("--range", default="two-pass", choices=("two-pass", "streaming"))
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("inputs", nargs="+", help=".npy / .npz files or directories")
    args = ap.parse_args(argv)
    try:
        tensors = load_tensors(args.inputs)
        out = {"tensors": {name: calibrate_tensor(dt, batches, args)
                           for name, (dt, batches) in sorted(tensors.items())}}
    except (kr.KlcalError, OSError) as e:  # KlcalError messages start with the errc name
        print(f"calibrate.py: error: {e}", file=sys.stderr)
        return 1
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True)  # +inf scores are written as Infinity
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
