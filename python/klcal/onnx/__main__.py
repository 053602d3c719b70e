"""``python -m klcal.onnx MODEL --inputs DIR_OR_NPZ [...]``: calibrate an ONNX model's activations.

Exit status as the ``klcal`` tool: 0 success, 2 usage (bad option value), 3 input/output (missing
or unreadable file, inputs that do not match the model, an existing output without --force),
4 internal (onnxruntime or klcal failed in a way the inputs do not explain).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Any, Iterator

import numpy as np

PROG = "python -m klcal.onnx"


class _Usage(Exception):
    pass


class _IOError(Exception):
    pass


class _Internal(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Calibrate every activation of an ONNX model that onnxruntime's static "
        "quantization would quantize, with klcal's histograms and threshold search, and write a "
        "TensorRT calibration cache, the klcal JSON document, onnxruntime's range file and/or a "
        "QDQ model.",
        epilog="Inputs: an .npz file is one batch (one member per model input, named after it); a "
        "directory holds one batch per .npz file (sorted by name), or, for a model with one "
        "input, one batch per .npy file. --batch N splits every array along its first axis.")
    p.add_argument("model", help="the .onnx model (never modified)")
    p.add_argument("--inputs", required=True, action="append", metavar="DIR_OR_NPZ",
                   help="calibration batches (repeatable)")
    p.add_argument("--cache", help="write a TensorRT calibration cache")
    p.add_argument("--json", help="write the klcal JSON document (docs/cli.md)")
    p.add_argument("--ort-ranges", help="write the ranges for quantize_static("
                   "calibration_cache_path=...)")
    p.add_argument("--qdq", help="write a QDQ model quantized by onnxruntime with klcal's scales")
    p.add_argument("--method", default="entropy",
                   help="entropy (default), percentile, mse or max; a comma list writes every "
                   "method to the JSON, the first to the other outputs")
    p.add_argument("--bins", type=int, default=2048)
    p.add_argument("--range", default="two-pass", choices=["two-pass", "streaming"])
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--start-bin", type=int, default=128)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--op-types", help="comma list of node types to calibrate and quantize "
                   "(default: every node, as quantize_static)")
    p.add_argument("--per-channel", action="store_true", help="per-channel weights in --qdq")
    p.add_argument("--exact-scales", action="store_true",
                   help="--qdq: every activation keeps its own klcal scale (by default "
                   "onnxruntime gives a Relu's input its output's range)")
    p.add_argument("--batch", type=int, default=0, metavar="N",
                   help="split every input array into batches of N along its first axis")
    p.add_argument("--trt-version", default="8601")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--quiet", "-q", action="store_true", help="no table, no progress bar")
    return p


def _batch_files(spec: str, single_input: str | None) -> list[tuple[str, str]]:
    """``(path, kind)`` of every batch file named by one --inputs value."""
    if os.path.isdir(spec):
        npz = sorted(glob.glob(os.path.join(glob.escape(spec), "*.npz")))
        npy = sorted(glob.glob(os.path.join(glob.escape(spec), "*.npy")))
        if npz and npy:
            raise _IOError(f"{spec}: holds both .npz and .npy files; keep one kind")
        if npy and single_input is None:
            raise _IOError(f"{spec}: .npy batches need a model with exactly one input "
                           "(use .npz files named after the inputs)")
        if not npz and not npy:
            raise _IOError(f"{spec}: no .npz or .npy file in this directory")
        return [(f, "npz") for f in npz] + [(f, "npy") for f in npy]
    if not os.path.exists(spec):
        raise _IOError(f"{spec}: no such file or directory")
    if spec.endswith(".npz"):
        return [(spec, "npz")]
    if spec.endswith(".npy"):
        if single_input is None:
            raise _IOError(f"{spec}: a .npy batch needs a model with exactly one input")
        return [(spec, "npy")]
    raise _IOError(f"{spec}: not a directory, .npz or .npy file")


def _load_batch(path: str, kind: str, inputs: list[str]) -> dict[str, np.ndarray]:
    try:
        if kind == "npy":
            return {inputs[0]: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            feed = {k: z[k] for k in z.files}
    except Exception as e:
        raise _IOError(f"{path}: cannot read ({e})") from e
    missing = [n for n in inputs if n not in feed]
    unknown = [k for k in feed if k not in inputs]
    if missing or unknown:
        raise _IOError(f"{path}: members {sorted(feed)} do not match the model inputs {inputs}"
                       + (f" (missing {missing})" if missing else "")
                       + (f" (unknown {unknown})" if unknown else ""))
    return feed


def _split(feed: dict[str, np.ndarray], n: int, path: str) -> Iterator[dict[str, np.ndarray]]:
    if n <= 0:
        yield feed
        return
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in feed.items()}
    if any(v is None for v in lengths.values()) or len(set(lengths.values())) != 1:
        raise _IOError(f"{path}: --batch needs arrays with the same first dimension, got "
                       f"{lengths}")
    total = next(iter(lengths.values()))
    for start in range(0, total, n):
        yield {k: v[start:start + n] for k, v in feed.items()}


class _Feeds:
    """Re-iterable batches: files are read one at a time, on every pass."""

    def __init__(self, files: list[tuple[str, str]], inputs: list[str], batch: int) -> None:
        self.files, self.inputs, self.batch = files, inputs, batch

    def __len__(self) -> int:
        if self.batch > 0:
            raise TypeError("the number of batches is known only after reading the files")
        return len(self.files)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for path, kind in self.files:
            yield from _split(_load_batch(path, kind, self.inputs), self.batch, path)


def _check_output(path: str | None, flag: str, force: bool, model: str) -> None:
    from .. import _export

    if path is None:
        return
    try:
        _export.check_output(path, force, protect=[model])
    except (ValueError, OSError) as e:
        raise _IOError(f"{flag} {e}") from e


def _table(cal: Any, method: str, options: dict[str, Any]) -> None:
    from .. import _export

    res = cal.results(method, **options)
    width = max([len("tensor")] + [len(n) for n in res])
    print(f"{'tensor':<{width}}  {'amax':>12}  {'scale':>9}  {'clip%':>7}")
    for n, r in res.items():
        star = "*" if r.degenerate else " "
        print(f"{n:<{width}}  {r.amax:>12.6g}  {_export.scale_hex(r.scale):>9}  "
              f"{100 * r.clipped_fraction:>7.4f}{star}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except _Usage as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except _IOError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 3
    except _Internal as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    from .. import Error
    from .. import _export
    from . import OnnxCalibrator

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    options = dict(rules="tensorrt", bits=args.bits, start_bin=args.start_bin,
                   stride=args.stride, percentile=args.percentile)
    try:
        _export.options_for(methods, **options)
    except ValueError as e:
        raise _Usage(f"--method {args.method}: {e}") from e
    if not 2 <= args.bins <= 1 << 24:
        raise _Usage(f"--bins {args.bins}: must be between 2 and 16777216")
    if not 0 <= args.percentile <= 100:
        raise _Usage(f"--percentile {args.percentile}: must be between 0 and 100")
    if not 2 <= args.bits <= 16:
        raise _Usage(f"--bits {args.bits}: must be between 2 and 16")
    if args.batch < 0:
        raise _Usage(f"--batch {args.batch}: must be positive")
    try:
        _export.cache_text([], "entropy", args.trt_version)
    except ValueError as e:
        raise _Usage(f"--trt-version: {e}") from e
    if not os.path.isfile(args.model):
        raise _IOError(f"{args.model}: no such model file")
    for path, flag in ((args.cache, "--cache"), (args.json, "--json"),
                       (args.ort_ranges, "--ort-ranges"), (args.qdq, "--qdq")):
        _check_output(path, flag, args.force, args.model)
    op_types = [t.strip() for t in args.op_types.split(",")] if args.op_types else None

    if args.range == "streaming" and args.bins & (args.bins - 1):
        raise _Usage(f"--range streaming needs a power-of-two --bins (got {args.bins}; try "
                     f"{1 << args.bins.bit_length()})")
    try:
        cal = OnnxCalibrator(args.model, op_types=op_types, bins=args.bins, range=args.range)
    except Error as e:
        raise _Usage(str(e)) from e
    except FileNotFoundError as e:
        raise _IOError(str(e)) from e
    except ValueError as e:
        raise _IOError(f"{args.model}: {e}") from e
    inputs = cal.input_names
    files: list[tuple[str, str]] = []
    for spec in args.inputs:
        files += _batch_files(spec, inputs[0] if len(inputs) == 1 else None)
    feeds = _Feeds(files, inputs, args.batch)
    try:
        cal.run(feeds, progress=not args.quiet)
        first = methods[0]
        if not args.quiet:
            _table(cal, first, options)
        if args.cache:
            cal.write_cache(args.cache, first, force=args.force, trt_version=args.trt_version,
                            **options)
        if args.json:
            cal.write_json(args.json, methods, force=args.force, **options)
        if args.ort_ranges:
            cal.write_ort_ranges(args.ort_ranges, first, force=args.force, **options)
    except Error as e:
        raise _Internal(str(e)) from e
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, OSError) as e:
        raise _IOError(str(e)) from e
    if args.qdq:
        try:
            cal.quantize(args.qdq, first, force=args.force, exact_scales=args.exact_scales,
                         per_channel=args.per_channel, op_types_to_quantize=op_types)
        except (FileExistsError, OSError) as e:
            raise _IOError(f"--qdq {args.qdq}: {e}") from e
        except Exception as e:  # onnxruntime.quantization raises many types
            raise _Internal(f"--qdq {args.qdq}: onnxruntime quantize_static failed: "
                            f"{type(e).__name__}: {e}") from e
    if not args.quiet:
        for path, what in ((args.cache, "TensorRT calibration cache"),
                           (args.json, "klcal JSON"), (args.ort_ranges, "onnxruntime ranges"),
                           (args.qdq, "QDQ model")):
            if path:
                print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
