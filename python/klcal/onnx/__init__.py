"""ONNX Runtime integration: calibrate every activation that static quantization would quantize.

:class:`OnnxCalibrator` runs an ONNX model with onnxruntime on the caller's input feeds, one batch
at a time, with the activations exposed as extra outputs of a copy of the model (the caller's
model is never modified), and bins each activation into a :class:`klcal.Calibrator`. Memory is one
batch's activations plus one histogram per tensor, whatever the number of batches. It writes

* a TensorRT calibration cache and the JSON document of the ``klcal`` tool, and
* the ranges in the JSON form ``onnxruntime.quantization.quantize_static(...,
  calibration_cache_path=...)`` reads (``write_ort_ranges``), or directly a QDQ model whose
  activation scales are klcal's (``quantize``).

The command line form is ``python -m klcal.onnx`` (docs/python.md).
"""

from __future__ import annotations

import copy
import inspect
import os
import shutil
import tempfile
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from .. import Calibrator, Error, _export, add_many
from .._export import with_context as _with_context

__all__ = ["OnnxCalibrator", "activation_names", "calibrate"]

_CALIBRATED_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        return onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX model ({e})") from e


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as e:
        raise ValueError(f"ONNX shape inference failed: {e}") from e


def activation_names(model: str | os.PathLike | onnx.ModelProto,
                     op_types: Sequence[str] | None = None) -> list[str]:
    """The tensors ``onnxruntime.quantization`` calibrates, in graph order.

    The rule of onnxruntime's calibrators: every input and output of a node (of ``op_types``,
    or of every node when ``None``) whose type is float32 or float16 after shape inference and
    that is not an initializer. ``quantize_static(op_types_to_quantize=...)`` passes its op types
    here, so the same ``op_types`` gives the same tensors.
    """
    m = _inferred(_load(model))
    g = m.graph
    types: dict[str, Any] = {vi.name: vi for vi in g.value_info}
    types.update({vi.name: vi for vi in g.output})
    types.update({vi.name: vi for vi in g.input})
    initializers = {i.name for i in g.initializer}
    wanted = set(op_types) if op_types else None
    out: list[str] = []
    seen: set[str] = set()
    for node in g.node:
        if wanted is not None and node.op_type not in wanted:
            continue
        for name in list(node.input) + list(node.output):
            if name in seen or name in initializers or name not in types:
                continue
            t = types[name].type
            if t.HasField("tensor_type") and t.tensor_type.elem_type in _CALIBRATED_TYPES:
                out.append(name)
                seen.add(name)
    return out


def _one_shot(feeds: Any) -> bool:
    """True for feeds that can be read only once (an iterator or a ``CalibrationDataReader``)."""
    if hasattr(feeds, "get_next"):
        return True
    if callable(feeds):
        return False
    return iter(feeds) is feeds


def _iterate(feeds: Any) -> Iterator[Mapping[str, Any]]:
    """Feeds from an iterable, a callable returning one, or an onnxruntime
    ``CalibrationDataReader`` (``get_next()`` until ``None``)."""
    if callable(feeds) and not hasattr(feeds, "get_next"):
        feeds = feeds()
    if hasattr(feeds, "get_next"):
        while True:
            f = feeds.get_next()
            if f is None:
                return
            yield f
        return
    yield from feeds


def _length(feeds: Any) -> int | None:
    try:
        return len(feeds)
    except Exception:  # no __len__, or one that raises (CalibrationDataReader's default)
        return None


class OnnxCalibrator:
    """Histograms of a model's activations, collected with onnxruntime one batch at a time.

    Args:
        model: path of an ``.onnx`` file or a ``ModelProto`` (not modified).
        op_types: node types whose inputs and outputs are calibrated (onnxruntime's
            ``op_types_to_quantize``); ``None`` for every node, as ``quantize_static`` does.
        tensors: explicit tensor names instead of :func:`activation_names`.
        bins, range, threads: as for :class:`klcal.Calibrator` (``range="two-pass"`` runs the
            feeds twice; ``"streaming"`` once).
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        session_options: an ``onnxruntime.SessionOptions``.

    Use ``run(feeds)`` for everything at once, or ``range_pass(feeds)`` then ``collect(feeds)``.
    ``feeds`` is an iterable of ``{input name: numpy array}`` dicts (one batch each), a callable
    that returns such an iterable, or an onnxruntime ``CalibrationDataReader``; a two-pass run
    reads it twice, so a one-shot iterator needs ``range="streaming"``.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, *,
                 op_types: Sequence[str] | None = None, tensors: Sequence[str] | None = None,
                 bins: int = 2048, range: str | tuple[float, float] = "two-pass",
                 threads: int = 0, providers: Sequence[Any] | None = None,
                 session_options: Any = None) -> None:
        import onnxruntime as ort

        self.model_path = None if isinstance(model, onnx.ModelProto) else os.fspath(model)
        original = _load(model)
        names = list(tensors) if tensors is not None else activation_names(original, op_types)
        if not names:
            raise ValueError("the model has no float activation to calibrate")
        augmented = copy.deepcopy(original)
        inferred = _inferred(original)
        known = {vi.name: vi for vi in list(inferred.graph.value_info) +
                 list(inferred.graph.input) + list(inferred.graph.output)}
        outputs = {o.name for o in augmented.graph.output}
        for n in names:
            if n not in known:
                raise ValueError(f"tensor '{n}' is not in the model (or has no inferred type)")
            if n not in outputs:
                vi = known[n]
                augmented.graph.output.append(
                    onnx.helper.make_tensor_value_info(n, vi.type.tensor_type.elem_type, None))
        self.names = names
        self.input_names = [i.name for i in original.graph.input
                            if i.name not in {x.name for x in original.graph.initializer}]
        try:
            self._session = ort.InferenceSession(
                augmented.SerializeToString(), sess_options=session_options,
                providers=list(providers) if providers else ["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"onnxruntime cannot load the model: {e}") from e
        self._model = original
        self._calibrators = {n: Calibrator(bins=bins, range=range, threads=threads)
                             for n in names}
        self._policy = self._calibrators[names[0]].policy
        self._range = range
        self._range_done = self._policy != "two-pass"
        self._batches = 0

    # ---- collection --------------------------------------------------------------------------

    @property
    def policy(self) -> str:
        return self._policy

    @property
    def calibrators(self) -> dict[str, Calibrator]:
        """``{tensor name: klcal.Calibrator}`` in graph order."""
        return dict(self._calibrators)

    def _run(self, feed: Mapping[str, Any], index: int) -> list[np.ndarray]:
        if not isinstance(feed, Mapping):
            raise TypeError(f"batch {index}: a feed must be a dict of input name -> array, "
                            f"got {type(feed).__name__}")
        missing = [n for n in self.input_names if n not in feed]
        unknown = [k for k in feed if k not in self.input_names]
        if missing or unknown:
            raise ValueError(f"batch {index}: inputs do not match the model (missing "
                             f"{missing}, unknown {unknown}; the model takes {self.input_names})")
        try:
            return self._session.run(self.names, {k: np.asarray(v) for k, v in feed.items()})
        except Exception as e:
            raise ValueError(f"batch {index}: onnxruntime failed: {e}") from e

    def add_batch(self, feed: Mapping[str, Any], *, range_pass: bool = False) -> None:
        """Runs one batch and adds every activation (to the range pass when ``range_pass``)."""
        outs = self._run(feed, self._batches)
        cals = [self._calibrators[n] for n in self.names]
        try:  # one call for every activation of the batch: all checked first, one GIL release
            add_many(cals, outs, range_pass=range_pass)
        except Error as e:
            raise _with_context(e, f"batch {self._batches}") from e
        self._batches += 1

    def _pass(self, feeds: Any, range_pass: bool, progress: bool, label: str) -> int:
        it = _iterate(feeds)
        total = _length(feeds)
        bar = None
        if progress:
            try:
                from tqdm import tqdm
            except ImportError:  # the bar is optional: pip install tqdm
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=total, unit="batch", desc=label, disable=None, leave=False)
        count = 0
        try:
            for feed in it:
                self.add_batch(feed, range_pass=range_pass)
                count += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if count == 0:
            raise ValueError(f"{label}: the feeds yielded no batch")
        return count

    def range_pass(self, feeds: Any, *, progress: bool = False) -> int:
        """First pass of ``range="two-pass"``: statistics of every batch; returns the count."""
        if self._range_done:
            raise RuntimeError(f"range_pass: not needed (range={self._range!r} or already run)")
        n = self._pass(feeds, True, progress, "klcal range pass")
        for c in self._calibrators.values():
            c.end_range_pass()
        self._range_done = True
        return n

    def collect(self, feeds: Any, *, progress: bool = False) -> int:
        """The binning pass over every batch; returns the number of batches."""
        if not self._range_done:
            raise RuntimeError("collect: run range_pass(feeds) first (range='two-pass')")
        return self._pass(feeds, False, progress, "klcal histograms")

    def run(self, feeds: Any, *, progress: bool = False) -> "OnnxCalibrator":
        """All passes the range policy needs over ``feeds``; returns ``self``."""
        if not self._range_done:
            if _one_shot(feeds):
                raise ValueError(
                    "range='two-pass' reads the feeds twice, but they are a one-shot iterator: "
                    "pass a list, a callable that returns a new iterator, or use "
                    "range='streaming'")
            self.range_pass(feeds, progress=progress)
        self.collect(feeds, progress=progress)
        return self

    # ---- results -----------------------------------------------------------------------------

    def _check_done(self) -> None:
        if not self._range_done or self._batches == 0:
            raise RuntimeError("nothing collected yet: call run(feeds) first")

    def results(self, method: str = "entropy", **options: Any) -> dict[str, Any]:
        """``{tensor: klcal.Result}`` for one method (options as for ``Calibrator.compute``)."""
        self._check_done()
        o = _export.options_for(method, **options)[0]
        return {n: c.compute(**o.compute_kwargs()) for n, c in self._calibrators.items()}

    def compute(self, method: str = "entropy", **options: Any) -> dict[str, float]:
        """``{tensor: amax}``."""
        return {n: r.amax for n, r in self.results(method, **options).items()}

    def cache_text(self, method: str = "entropy", *, trt_version: str = "8601",
                   **options: Any) -> str:
        """The TensorRT calibration cache (tensor names are the ONNX tensor names)."""
        return _export.cache_text(_export.scales_of(self.results(method, **options)), method,
                                  trt_version)

    def _protect(self) -> list[str]:
        return [self.model_path] if self.model_path else []

    def write_cache(self, path: str | os.PathLike, method: str = "entropy", *,
                    force: bool = False, trt_version: str = "8601", **options: Any) -> None:
        """Writes the cache atomically (``FileExistsError`` unless ``force``)."""
        _export.write_text(path, self.cache_text(method, trt_version=trt_version, **options),
                           force=force, protect=self._protect())

    def json_text(self, methods: str | Sequence[str] = "entropy", **options: Any) -> str:
        """The ``klcal-calibration 1`` JSON document (docs/cli.md)."""
        self._check_done()
        opts = _export.options_for(methods, **options)
        reports = []
        for n, c in self._calibrators.items():
            reports.append(_export.TensorReport(
                name=n, options=opts, results=[c.compute(**o.compute_kwargs()) for o in opts],
                spec=(c.layout, c.bins, *c.range), stats=c.stats, range=c.policy,
                sources=[f"{self.model_path or 'model'}:{n} ({self._batches} batches)"]))
        return _export.json_text(reports, device="cpu")

    def write_json(self, path: str | os.PathLike, methods: str | Sequence[str] = "entropy", *,
                   force: bool = False, **options: Any) -> None:
        """Writes the JSON document atomically (``FileExistsError`` unless ``force``)."""
        _export.write_text(path, self.json_text(methods, **options), force=force,
                           protect=self._protect())

    def tensors_data(self, method: str = "entropy", **options: Any) -> Any:
        """The ranges as ``onnxruntime.quantization.TensorsData``: ``[-amax, amax]`` per tensor
        (symmetric, as TensorRT uses them), labelled ``CalibrationMethod.MinMax``."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        data = {}
        for n, r in self.results(method, **options).items():
            a = np.float32(r.amax)
            data[n] = TensorData(lowest=np.array(-a, dtype=np.float32),
                                 highest=np.array(a, dtype=np.float32))
        return TensorsData(CalibrationMethod.MinMax, data)

    def ort_ranges_text(self, method: str = "entropy", **options: Any) -> str:
        """The JSON that ``quantize_static(calibration_cache_path=...)`` loads."""
        import json

        from onnxruntime.quantization import calibrate as ort_calibrate

        encoder = getattr(ort_calibrate, "CalibrationCacheEncoder", None)
        if encoder is None or not hasattr(ort_calibrate, "load_tensors_data"):
            raise RuntimeError("this onnxruntime cannot read calibration range files "
                               "(quantize_static has no calibration_cache_path): upgrade it, or "
                               "use quantize() / tensors_data()")
        payload = self.tensors_data(method, **options).to_dict()
        payload["smooth_quant"] = False
        return json.dumps(payload, cls=encoder)

    def write_ort_ranges(self, path: str | os.PathLike, method: str = "entropy", *,
                         force: bool = False, **options: Any) -> None:
        """Writes :meth:`ort_ranges_text` atomically. Use it with
        ``quantize_static(model, out, calibration_cache_path=path,
        calibrate_method=CalibrationMethod.MinMax, extra_options={"ActivationSymmetric": True})``."""
        _export.write_text(path, self.ort_ranges_text(method, **options), force=force,
                           protect=self._protect())

    def quantize(self, model_output: str | os.PathLike, method: str = "entropy", *,
                 exact_scales: bool = False, force: bool = False,
                 extra_options: Mapping[str, Any] | None = None, **quantize_kwargs: Any) -> None:
        """Writes a quantized model with ``onnxruntime.quantization.quantize_static`` whose
        activation ranges are klcal's.

        ``quantize_kwargs`` go to ``quantize_static`` (``quant_format`` QDQ, ``activation_type``
        and ``weight_type`` QInt8, ``per_channel``, ``op_types_to_quantize``, ...). Activations
        are symmetric (``ActivationSymmetric``): onnxruntime's int8 scale from ``[-amax, amax]``
        is klcal's fp32 scale bit for bit, except where onnxruntime gives a tensor its
        neighbour's range (the input of a Relu or Clip takes the output's, so that the pair can
        fuse). ``exact_scales=True`` keeps every tensor's own klcal scale instead (a
        ``TensorQuantOverrides`` entry with zero point 0 for int8 activations).
        """
        from onnxruntime.quantization import CalibrationMethod, QuantType, quantize_static

        if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
            raise RuntimeError("this onnxruntime's quantize_static cannot take precomputed "
                               "ranges (no calibration_cache_path): upgrade onnxruntime")
        for k in ("calibration_data_reader", "calibration_cache_path", "calibrate_method"):
            if k in quantize_kwargs:
                raise TypeError(f"quantize: '{k}' is set by klcal")
        out = _export.check_output(model_output, force, self._protect())
        opts = dict(extra_options or {})
        opts.setdefault("ActivationSymmetric", True)
        activation_type = quantize_kwargs.get("activation_type", QuantType.QInt8)
        if exact_scales and activation_type == QuantType.QInt8:
            overrides = dict(opts.get("TensorQuantOverrides", {}))
            for n, r in self.results(method).items():
                if n not in overrides and not r.degenerate:
                    overrides[n] = [{"scale": np.array(r.scale, dtype=np.float32),
                                     "zero_point": np.array(0, dtype=np.int8)}]
            opts["TensorQuantOverrides"] = overrides
        with tempfile.TemporaryDirectory(prefix="klcal-onnx-") as tmp:
            ranges = os.path.join(tmp, "ranges.json")
            with open(ranges, "w", encoding="utf-8") as f:
                f.write(self.ort_ranges_text(method))
            staged = os.path.join(tmp, "model.onnx")
            quantize_static(self._model, staged, calibration_data_reader=None,
                            calibration_cache_path=ranges,
                            calibrate_method=CalibrationMethod.MinMax, extra_options=opts,
                            **quantize_kwargs)
            onnx.checker.check_model(staged)

            def copy_staged(f: Any) -> None:
                with open(staged, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)

            _export.write_atomic(out, copy_staged, force, self._protect())


def calibrate(model: str | os.PathLike | onnx.ModelProto, feeds: Any, method: str = "entropy",
              *, bins: int = 2048, range: str | tuple[float, float] = "two-pass",
              op_types: Sequence[str] | None = None, progress: bool = False,
              **options: Any) -> dict[str, float]:
    """``{tensor: amax}`` of every activation of ``model`` over ``feeds``."""
    cal = OnnxCalibrator(model, op_types=op_types, bins=bins, range=range)
    cal.run(feeds, progress=progress)
    return cal.compute(method, **options)
