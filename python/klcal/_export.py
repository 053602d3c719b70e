"""Output files of the Python integrations: TensorRT calibration cache and the klcal JSON document.

One writer for ``klcal.torch`` and ``klcal.onnx``. The cache text, scale hex and JSON numbers and
strings come from the library's own writers (``klcal._klcal.format_cache``, ``json_number``,
``json_string``), so the text is the same as the ``klcal`` command line tool writes for the same tensors (docs/cli.md, docs/numerics.md section 7): the cache header
``TRT-<version>-<algorithm>`` and ``<name>: <hex>`` lines, and the ``"klcal-calibration 1"`` JSON
with numbers printed as ``%.17g`` and non-finite numbers as ``null``. Files are replaced
atomically (a temporary file in the same directory renamed over the target), so a reader never
sees a half-written file, and an existing file is only replaced when the caller says so.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Sequence

from . import _klcal

__all__ = [
    "SearchOptions",
    "TensorReport",
    "scale_hex",
    "cache_text",
    "json_text",
    "check_output",
    "write_atomic",
    "write_text",
    "cache_algorithm",
]

_METHODS = ("entropy", "max", "percentile", "mse")


@dataclass(frozen=True)
class SearchOptions:
    """The options of one threshold search, as the CLI records them in ``params``."""

    method: str = "entropy"
    rules: str = "tensorrt"
    bits: int = 8
    unsigned: bool = False
    start_bin: int = 128
    stride: int = 1
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method {self.method!r}: must be one of {', '.join(_METHODS)}")
        if self.rules not in ("tensorrt", "mxnet"):
            raise ValueError(f"rules {self.rules!r}: must be 'tensorrt' or 'mxnet'")

    def compute_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``klcal.Calibrator.compute``."""
        kw: dict[str, Any] = {"method": self.method, "rules": self.rules, "bits": self.bits}
        if self.unsigned:
            kw["unsigned"] = True
        if self.method == "percentile":
            kw["percentile"] = self.percentile
        if self.method in ("entropy", "mse") and (self.start_bin != 128 or self.stride != 1):
            kw["start_bin"] = self.start_bin
            kw["stride"] = self.stride
        return kw


@dataclass
class TensorReport:
    """Everything the JSON document says about one tensor.

    ``results`` holds one ``klcal.Result`` per entry of ``options`` (the first is the headline
    result, the one the cache gets). ``spec`` is ``(layout, bins, lo, hi)``; ``stats`` any object
    with ``finite_count``, ``nan_count``, ``inf_count``, ``min``, ``max``, ``max_abs``.
    """

    name: str
    options: Sequence[SearchOptions]
    results: Sequence[Any]
    spec: tuple
    stats: Any
    range: str = "two-pass"
    sources: Sequence[str] = field(default_factory=list)


def with_context(err: Exception, what: str) -> Exception:
    """The same exception type with ``what`` in front of its message, when the type allows it
    (``klcal.Error`` subclasses keep their class, so callers can still catch them by kind)."""
    try:
        new = type(err)(f"{what}: {err}")
        new.__dict__.update(err.__dict__)  # keeps attributes such as klcal.Error's status
    except Exception:  # an exception type with another constructor: keep it as it is
        return err
    new.__cause__ = err
    return new


def scale_hex(scale: float) -> str:
    """Lowercase hex of the fp32 bit pattern of ``scale``, no padding (1/127 -> ``3c010204``)."""
    return _klcal.scale_hex(scale)


def cache_algorithm(method: str) -> str:
    """The cache header's algorithm tag for a method (numerics.md 7)."""
    return "EntropyCalibration2" if method == "entropy" else "MinMaxCalibration"


def _check_version(version: str) -> str:
    version = str(version)
    if not (version.isdigit() and len(version) in (4, 6)):
        raise ValueError(
            f"trt_version {version!r}: must be 4 digits (TensorRT <= 8, e.g. 8601) "
            "or 6 digits (TensorRT >= 10, e.g. 100900)"
        )
    return version


def cache_text(scales: Iterable[tuple[str, float]], method: str = "entropy",
               trt_version: str = "8601") -> str:
    """The TensorRT calibration cache for ``(name, scale)`` pairs, in the order given."""
    version = _check_version(trt_version)
    entries = []
    for name, scale in scales:
        if "\n" in name or "\r" in name:
            raise ValueError(f"tensor name {name!r}: a cache line cannot hold a line break")
        entries.append((name, scale))
    return _klcal.format_cache(entries, version, cache_algorithm(method))


def _num(v: float) -> str:
    return _klcal.json_number(float(v))


def _str(s: str) -> str:
    return _klcal.json_string(s)


def _params(o: SearchOptions, bins: int, range_: str) -> str:
    p = (f'{{"rules": {_str(o.rules)}, "bins": {bins}, "range": {_str(range_)}, '
         f'"bits": {o.bits}, "unsigned": {"true" if o.unsigned else "false"}')
    if o.method == "entropy" and o.rules == "tensorrt":
        p += f', "start_bin": {o.start_bin}, "stride": {o.stride}, "zero_bin": "copy_next"'
    elif o.method == "mse":
        p += f', "start_bin": {o.start_bin}, "stride": {o.stride}'
    elif o.method == "percentile":
        p += f', "percentile": {_num(o.percentile)}'
    return p + "}"


def _result(r: Any) -> str:
    return (f'"amax": {_num(r.amax)}, "scale": {_num(r.scale)}, '
            f'"scale_hex": {_str(scale_hex(r.scale))}, "zero_point": 0, "index": {int(r.index)}, '
            f'"score": {_num(r.score)}, "clipped_fraction": {_num(r.clipped_fraction)}, '
            f'"degenerate": {"true" if r.degenerate else "false"}, '
            f'"zero_scale": {"true" if r.scale == 0.0 else "false"}')


def json_text(tensors: Sequence[TensorReport], device: str = "cpu") -> str:
    """The ``"klcal-calibration 1"`` document (docs/cli.md) for the tensors, in the order given.

    The settings line describes the first tensor (all tensors of one run share them).
    """
    if not tensors:
        raise ValueError("no tensor to write: calibrate at least one tensor first")
    first = tensors[0]
    methods = ", ".join(_str(o.method) for o in first.options)
    out = [
        "{\n",
        '  "format": "klcal-calibration 1",\n',
        f'  "settings": {{"methods": [{methods}], "rules": {_str(first.options[0].rules)}, '
        f'"bins": {int(first.spec[1])}, "range": {_str(first.range)}, "device": {_str(device)}}},\n',
        '  "tensors": {',
    ]
    for k, t in enumerate(tensors):
        if not t.options or len(t.options) != len(t.results):
            raise ValueError(f"tensor {t.name!r}: one result per method is needed")
        layout, bins, lo, hi = t.spec
        s = t.stats
        elements = int(s.finite_count) + int(s.nan_count) + int(s.inf_count)
        out.append(("\n" if k == 0 else ",\n") + f"    {_str(t.name)}: {{\n      ")
        out.append(_result(t.results[0]))
        out.append(f',\n      "method": {_str(t.options[0].method)}, '
                   f'"params": {_params(t.options[0], int(bins), t.range)},\n')
        out.append(f'      "histogram": {{"layout": {_str(layout)}, "bins": {int(bins)}, '
                   f'"lo": {_num(lo)}, "hi": {_num(hi)}}},\n')
        out.append(f'      "stats": {{"elements": {elements}, "finite": {int(s.finite_count)}, '
                   f'"nan": {int(s.nan_count)}, "inf": {int(s.inf_count)}, "min": {_num(s.min)}, '
                   f'"max": {_num(s.max)}, "max_abs": {_num(s.max_abs)}}},\n')
        out.append('      "sources": [' + ", ".join(_str(x) for x in t.sources) + "],\n")
        out.append('      "methods": {')
        for j, (o, r) in enumerate(zip(t.options, t.results)):
            out.append(("\n" if j == 0 else ",\n") + f"        {_str(o.method)}: {{{_result(r)}, "
                       f'"params": {_params(o, int(bins), t.range)}}}')
        out.append("\n      }\n    }")
    out.append("\n  }\n}\n")
    return "".join(out)


def check_output(path: str | os.PathLike, force: bool = False,
                 protect: Sequence[str | os.PathLike] = ()) -> str:
    """Checks that ``path`` may be written; returns it as a string.

    ``ValueError`` when it is one of the files in ``protect`` (the inputs of the run), whatever
    ``force`` says; ``IsADirectoryError`` for a directory; ``FileExistsError`` when it exists and
    ``force`` is false; ``FileNotFoundError`` when its directory does not exist.
    """
    path = os.fspath(path)
    for p in protect:
        if os.path.exists(path) and os.path.exists(p) and os.path.samefile(path, p):
            raise ValueError(f"{path}: is an input of this run and is never overwritten")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path}: file exists (pass force=True / --force to overwrite)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    return path


def write_atomic(path: str | os.PathLike, fill: Callable[[BinaryIO], None],
                 force: bool = False, protect: Sequence[str | os.PathLike] = ()) -> None:
    """Writes ``path`` atomically after :func:`check_output`: ``fill`` writes the bytes into a
    temporary file in the target's directory, which is flushed and renamed over ``path``. On any
    failure the temporary is removed and ``path`` is left as it was."""
    path = check_output(path, force, protect)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str, force: bool = False,
               protect: Sequence[str | os.PathLike] = ()) -> None:
    """Writes UTF-8 ``text`` to ``path`` with :func:`write_atomic`."""
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data), force, protect)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def options_for(methods: str | Sequence[str], rules: str = "tensorrt", bits: int = 8,
                unsigned: bool = False, start_bin: int = 128, stride: int = 1,
                percentile: float = 99.99) -> list[SearchOptions]:
    """One ``SearchOptions`` per method; ``methods`` is a name, a comma list or a sequence."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not methods:
        raise ValueError("no method given")
    return [SearchOptions(m, rules, bits, unsigned, start_bin, stride, percentile)
            for m in methods]


def scales_of(results: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``(name, scale)`` pairs of ``{name: Result}``, in the mapping's order."""
    return [(name, float(r.scale)) for name, r in results.items()]
