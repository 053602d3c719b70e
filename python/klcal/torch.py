"""PyTorch integration: calibrate a model's activations inside the user's own loop.

Two entry points:

* :class:`ModelCalibrator` attaches forward pre-hooks to a model's modules (by default the
  inputs of ``nn.Linear`` and every ``nn.Conv*``), bins every input tensor where it lives (CPU or
  CUDA, on the caller's current stream, without a copy for contiguous tensors), and gives
  ``{name: amax}``, a TensorRT calibration cache and the JSON document of the ``klcal`` tool.
  Under a data-parallel launch (``torchrun``: ``torch.distributed`` initialized) the same code
  gives every rank the result of one process over all ranks' data (docs/distributed.md).
* :class:`HistogramCalibrator` has the interface of the ``HistogramCalibrator`` of NVIDIA's
  ModelOpt and pytorch-quantization (``collect(x)``, ``compute_amax(method, ...)``,
  ``reset()``), with exact ``uint64`` counts.

See docs/python.md for examples and for the differences from the peers' numbers.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from . import Calibrator, Error, _export
from ._export import with_context as _with_context

__all__ = ["ModelCalibrator", "HistogramCalibrator", "calibrate", "DEFAULT_MODULE_TYPES"]

#: Modules whose inputs are calibrated by default: ``nn.Linear`` and every convolution
#: (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` and their lazy forms).
DEFAULT_MODULE_TYPES: tuple[type, ...] = (nn.Linear, nn.modules.conv._ConvNd)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _device_name(x: torch.Tensor) -> str:
    if x.device.type == "cuda":
        return f"cuda:{x.device.index if x.device.index is not None else torch.cuda.current_device()}"
    if x.device.type == "cpu":
        return "cpu"
    raise TypeError(f"tensors on device '{x.device}' are not supported (only cpu and cuda)")


def _prepare(x: Any, what: str) -> torch.Tensor:
    """The tensor klcal bins for ``x``: detached; float64 narrowed and non-contiguous CUDA
    tensors made contiguous (both are copies on the tensor's own device; nothing else is)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    x = x.detach()
    if x.dtype == torch.float64:
        x = x.float()
    elif x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{what}: dtype {x.dtype} cannot be calibrated (float32, float16, bfloat16 or "
            "float64 are accepted)"
        )
    if x.device.type == "cuda" and not x.is_contiguous():
        x = x.contiguous()
    return x


class _Tensor:
    """One calibrated tensor: its calibrator (created on the first input's device), the
    number of inputs seen, and where they came from. Under torch.distributed, ``calibrator`` and
    ``calls`` are this rank's own and ``reduced`` / ``total_calls`` those of all ranks."""

    __slots__ = ("name", "module", "calibrator", "calls", "reduced", "total_calls")

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.calibrator: Calibrator | None = None
        self.calls = 0
        self.reduced: Calibrator | None = None
        self.total_calls = 0


class ModelCalibrator:
    """Calibrates the inputs of a model's modules through forward pre-hooks.

    Args:
        model: the ``nn.Module``.
        types: module classes whose inputs are calibrated (default
            :data:`DEFAULT_MODULE_TYPES`). Pass ``(nn.Module,)`` to select by name only.
        names: a regular expression (``re.search``) a module's qualified name must match, or
            ``None`` for every module of ``types``.
        exclude: a regular expression of qualified names to leave out.
        bins, range, layout, threads: as for :class:`klcal.Calibrator`. ``range="two-pass"``
            (default) runs the user's loop twice: first for the exact range, then to bin;
            ``"streaming"`` or a fixed ``(lo, hi)`` needs one pass.
        distributed: ``None`` (default): data-parallel when ``torch.distributed`` is initialized
            or ``group`` is given; ``True``: always (torch.distributed must be initialized);
            ``False``: never (each rank calibrates its own data alone).
        group: the ``torch.distributed`` process group (default: the world).

    Data-parallel (every rank runs the same code on its shard of the data): every selected
    module has a calibrator on every rank, whether or not this rank's shard reached it; the
    range pass ends with :func:`klcal.distributed.end_range_pass` (all ranks bin into the
    range of all the data) and each binning pass with :func:`klcal.distributed.all_reduce`, so
    that results, cache and JSON on every rank are those of one process over all ranks' data,
    bit for bit. The ends of ``range_pass()``, ``collect()`` and ``passes()`` are therefore
    collective: every rank of the group must reach them (calibrating on some ranks only needs
    ``distributed=False`` or a ``group`` of those ranks). A calibrator this rank never fed is
    created on ``cuda:<current device>`` when the group's backend is NCCL and klcal has CUDA,
    else on the CPU, and moves to the device of the first input it receives. Only rank 0 writes
    files (``write_cache``, ``write_json``) unless ``all_ranks=True``.

    Only the first positional input of each module call is calibrated; a module called several
    times per forward pass (a shared block) pools all calls into one histogram. Each tensor is
    binned on its own device (a CUDA tensor on the caller's current stream) by a calibrator
    created on the first input's device; float64 inputs are converted to float32 and
    non-contiguous CUDA tensors made contiguous first (copies on their device); every other
    input is read in place. Use with ``torch.no_grad()`` (or ``torch.inference_mode()``).

    Typical use::

        cal = klcal.torch.ModelCalibrator(model)
        for _ in cal.passes():          # two passes for range="two-pass", else one
            for x in loader:
                model(x)
        amax = cal.compute("entropy")   # {module name: amax}
        cal.write_cache("model.cache")
    """

    def __init__(self, model: nn.Module, *, types: Sequence[type] | type | None = None,
                 names: str | None = None, exclude: str | None = None, bins: int = 2048,
                 range: str | tuple[float, float] = "two-pass", layout: str = "abs",
                 threads: int = 0, distributed: bool | None = None, group: Any = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if types is None:
            types = DEFAULT_MODULE_TYPES
        elif isinstance(types, type):
            types = (types,)
        types = tuple(types)
        for t in types:
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                raise TypeError(f"types: {t!r} is not a torch.nn.Module subclass")
        name_re = re.compile(names) if names is not None else None
        exclude_re = re.compile(exclude) if exclude is not None else None
        self._tensors: dict[str, _Tensor] = {}
        for name, module in model.named_modules():
            if not name or not isinstance(module, types):
                continue
            if name_re is not None and not name_re.search(name):
                continue
            if exclude_re is not None and exclude_re.search(name):
                continue
            self._tensors[name] = _Tensor(name, module)
        if not self._tensors:
            raise ValueError(
                "no module of the model matches: types="
                f"{[t.__name__ for t in types]}, names={names!r}, exclude={exclude!r}"
            )
        # Validate the calibrator options once, up front (a bad option must not surface in the
        # middle of the user's loop).
        probe = Calibrator(bins=bins, range=range, layout=layout, device="cpu", threads=threads)
        self._bins, self._range, self._layout, self._threads = bins, range, layout, threads
        self._policy = probe.policy
        self._pass: str | None = None  # "range" or "bins" while hooks are attached
        self._range_done = self._policy != "two-pass"
        self._handles: list[Any] = []
        if distributed not in (None, True, False):
            raise TypeError(f"distributed: expected None, True or False, got {distributed!r}")
        self._distributed, self._group = distributed, group

    # ---- passes ------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Qualified names of the calibrated modules, in the model's order."""
        return list(self._tensors)

    @property
    def needs_range_pass(self) -> bool:
        """True while a two-pass calibrator still needs its first (range) pass."""
        return not self._range_done

    def _hook(self, t: _Tensor) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if not args:
                raise TypeError(f"module '{t.name}': called without a positional input")
            x = _prepare(args[0], f"module '{t.name}' input")
            try:
                device = _device_name(x)
                if t.calibrator is None:
                    t.calibrator = self._new_calibrator(device)
                elif t.calls == 0 and t.calibrator.device != device:
                    # Created for a collective on a rank that had not seen this module yet:
                    # move it (and the range the ranks agreed on) to the data's device.
                    t.calibrator = Calibrator.from_state(t.calibrator.state(), device=device,
                                                         threads=self._threads)
                if self._pass == "range":
                    t.calibrator.add_range(x)
                else:
                    t.calibrator.add(x)
            except Error as e:
                raise _with_context(e, f"module '{t.name}'") from e
            t.calls += 1
        return hook

    @contextmanager
    def _attached(self, kind: str) -> Iterator[None]:
        if self._pass is not None:
            raise RuntimeError("a calibration pass is already running")
        self._pass = kind
        try:
            for t in self._tensors.values():
                self._handles.append(t.module.register_forward_pre_hook(self._hook(t)))
            yield
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._pass = None

    def _new_calibrator(self, device: str) -> Calibrator:
        return Calibrator(bins=self._bins, range=self._range, layout=self._layout, device=device,
                          threads=self._threads)

    # ---- data-parallel -----------------------------------------------------------------------

    @property
    def is_distributed(self) -> bool:
        """True when the passes end with collectives over ``torch.distributed`` (see the class)."""
        if self._distributed is not None:
            return self._distributed
        if self._group is not None:
            return True
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()

    def _default_device(self) -> str:
        """Where a calibrator this rank never fed lives: the current GPU with NCCL, else CPU."""
        import torch.distributed as dist

        from . import cuda_available

        if (dist.is_initialized() and str(dist.get_backend(self._group)).lower() == "nccl"
                and cuda_available()):
            return f"cuda:{torch.cuda.current_device()}"
        return "cpu"

    def _local_items(self) -> list[tuple[str, Calibrator]]:
        """Every selected module's calibrator (created where missing), in the model's order:
        the same names on every rank, whatever each rank's data reached."""
        for t in self._tensors.values():
            if t.calibrator is None:
                t.calibrator = self._new_calibrator(self._default_device())
        return [(n, t.calibrator) for n, t in self._tensors.items()]

    def _all_reduce(self) -> None:
        """Every rank's calibrators and call counts summed into ``reduced`` / ``total_calls``
        (copies: the local ones keep this rank's data, so a later collect() stays exact)."""
        from . import distributed

        items = [(n, Calibrator.from_state(c.state(), device=c.device, threads=self._threads))
                 for n, c in self._local_items()]
        distributed.all_reduce(items, group=self._group)
        calls = distributed._sum_ints([self._tensors[n].calls for n, _ in items],
                                      group=self._group)
        for (n, c), k in zip(items, calls):
            self._tensors[n].reduced, self._tensors[n].total_calls = c, k

    @contextmanager
    def range_pass(self) -> Iterator[None]:
        """The first pass of ``range="two-pass"``: statistics only. Ends the range on exit
        (data-parallel: with the range of every rank's data, a collective)."""
        if self._range_done:
            raise RuntimeError(
                f"range_pass: not needed (range={self._range!r}, or the range pass already ran)"
            )
        with self._attached("range"):
            yield
        if self.is_distributed:
            from . import distributed

            distributed.end_range_pass(self._local_items(), group=self._group)
        else:
            for t in self._tensors.values():
                if t.calibrator is not None:
                    t.calibrator.end_range_pass()
        self._range_done = True

    @contextmanager
    def collect(self) -> Iterator[None]:
        """The binning pass: every forward call inside the block is binned (data-parallel: then
        all-reduced over the ranks on exit, a collective)."""
        if not self._range_done:
            raise RuntimeError("collect: run the range pass first (range='two-pass')")
        with self._attached("bins"):
            yield
        if self.is_distributed:
            self._all_reduce()

    def passes(self) -> Iterator[str]:
        """Yields once per pass the range policy needs (``"range"`` then ``"bins"`` for two-pass,
        ``"bins"`` otherwise), with the hooks attached while the caller runs its loop."""
        if not self._range_done:
            with self.range_pass():
                yield "range"
        with self.collect():
            yield "bins"

    def reset(self) -> None:
        """Forgets everything collected (the hooks stay detached)."""
        for t in self._tensors.values():
            t.calibrator, t.calls, t.reduced, t.total_calls = None, 0, None, 0
        self._range_done = self._policy != "two-pass"

    # ---- results -----------------------------------------------------------------------------

    def _views(self) -> dict[str, tuple[Calibrator | None, int]]:
        """``{name: (calibrator, calls)}``: all ranks' after a data-parallel collect(), else
        this process's."""
        if any(t.reduced is not None for t in self._tensors.values()):
            return {n: (t.reduced, t.total_calls) for n, t in self._tensors.items()}
        return {n: (t.calibrator, t.calls) for n, t in self._tensors.items()}

    def calibrators(self) -> dict[str, Calibrator]:
        """``{name: klcal.Calibrator}`` of the modules that saw at least one input (data-parallel:
        the all-reduced ones, on any rank)."""
        return {n: c for n, (c, k) in self._views().items() if c is not None and k}

    def _seen(self) -> dict[str, tuple[Calibrator, int]]:
        seen = {n: (c, k) for n, (c, k) in self._views().items() if c is not None and k}
        if not seen:
            raise RuntimeError("nothing collected: run the model inside passes() / collect()")
        if not self._range_done:
            raise RuntimeError("the range pass has run but not the binning pass")
        return seen

    def _writes(self, all_ranks: bool) -> bool:
        """Whether this process writes files: always unless data-parallel on a rank other than
        0 of the group without ``all_ranks``."""
        if all_ranks or not self.is_distributed:
            return True
        import torch.distributed as dist

        return dist.get_rank(self._group) == 0

    def results(self, method: str = "entropy", **options: Any) -> dict[str, Any]:
        """``{name: klcal.Result}`` for one method; ``options`` as for ``Calibrator.compute``."""
        o = _export.options_for(method, **options)[0]
        return {n: c.compute(**o.compute_kwargs()) for n, (c, _) in self._seen().items()}

    def compute(self, method: str = "entropy", **options: Any) -> dict[str, float]:
        """``{name: amax}`` (modules that never ran are left out)."""
        return {n: r.amax for n, r in self.results(method, **options).items()}

    def cache_text(self, method: str = "entropy", *, trt_version: str = "8601",
                   rename: Callable[[str], str] | None = None, **options: Any) -> str:
        """The TensorRT calibration cache; ``rename`` maps module names to network tensor names."""
        res = self.results(method, **options)
        pairs = [((rename(n) if rename else n), float(r.scale)) for n, r in res.items()]
        return _export.cache_text(pairs, method, trt_version)

    def write_cache(self, path: str, method: str = "entropy", *, force: bool = False,
                    trt_version: str = "8601", rename: Callable[[str], str] | None = None,
                    all_ranks: bool = False, **options: Any) -> None:
        """Writes the cache atomically (``FileExistsError`` for an existing file unless ``force``).
        Data-parallel: only rank 0 of the group writes unless ``all_ranks``."""
        text = self.cache_text(method, trt_version=trt_version, rename=rename, **options)
        if self._writes(all_ranks):
            _export.write_text(path, text, force=force)

    def reports(self, methods: str | Sequence[str] = "entropy", **options: Any) -> list:
        """One :class:`klcal._export.TensorReport` per module, as the JSON document lists them."""
        opts = _export.options_for(methods, **options)
        out = []
        for n, (c, calls) in self._seen().items():
            module = self._tensors[n].module
            out.append(_export.TensorReport(
                name=n, options=opts, results=[c.compute(**o.compute_kwargs()) for o in opts],
                spec=(c.layout, c.bins, *c.range), stats=c.stats, range=c.policy,
                sources=[f"input of {type(module).__name__} '{n}' ({calls} calls)"]))
        return out

    def json_text(self, methods: str | Sequence[str] = "entropy", **options: Any) -> str:
        """The ``klcal-calibration 1`` JSON document (docs/cli.md) of every module."""
        reports = self.reports(methods, **options)
        names = []
        for d in sorted({c.device for c, _ in self._seen().values()}):
            # As the klcal tool says it: "cpu", or "gpu (<device name>)".
            names.append("cpu" if d == "cpu" else
                         f"gpu ({torch.cuda.get_device_name(torch.device(d))})")
        return _export.json_text(reports, device=", ".join(names))

    def write_json(self, path: str, methods: str | Sequence[str] = "entropy", *,
                   force: bool = False, all_ranks: bool = False, **options: Any) -> None:
        """Writes the JSON document atomically (``FileExistsError`` unless ``force``).
        Data-parallel: only rank 0 of the group writes unless ``all_ranks``."""
        text = self.json_text(methods, **options)
        if self._writes(all_ranks):
            _export.write_text(path, text, force=force)


def calibrate(model: nn.Module, loop: Callable[[], Any], method: str = "entropy", *,
              types: Sequence[type] | type | None = None, names: str | None = None,
              exclude: str | None = None, bins: int = 2048,
              range: str | tuple[float, float] = "two-pass", distributed: bool | None = None,
              group: Any = None, **options: Any) -> dict[str, float]:
    """Runs ``loop()`` once per pass with hooks attached and returns ``{name: amax}``.

    ``loop`` runs the user's calibration data through ``model`` (it is called twice for
    ``range="two-pass"``, so it must see the same data each time). Under torch.distributed
    (``distributed``, ``group``: as for :class:`ModelCalibrator`) each rank's ``loop`` runs its
    own shard and every rank returns the amaxes of all ranks' data.
    """
    cal = ModelCalibrator(model, types=types, names=names, exclude=exclude, bins=bins,
                          range=range, distributed=distributed, group=group)
    with torch.no_grad():
        for _ in cal.passes():
            loop()
    return cal.compute(method, **options)


class HistogramCalibrator:
    """A drop-in for ``HistogramCalibrator`` of ModelOpt / pytorch-quantization.

    Same constructor and methods: ``collect(x)`` adds a tensor (absolute values), ``compute_amax(
    method, *, stride=1, start_bin=128, percentile=99.99)`` returns the amax as a 0-d float32
    CPU tensor (``None`` before any data), ``reset()`` forgets the data. Methods: ``"entropy"``,
    ``"mse"``, ``"percentile"`` with the peers' rules (docs/numerics.md 2 and 4), and ``"max"``.

    The histogram is klcal's streaming one (``num_bins`` must be a power of two): exact
    ``uint64`` counts whose range doubles by exact pairwise folds, so any batch order and split
    gives the same counts. The peers count in float32 (``torch.histc``, exact only up to 2^24
    per bin) and grow the range by appending bins of the first batch's width, so their
    histogram, and hence their amax, depends on the first batch. On the same histogram the
    methods pick the same bin (docs/python.md). ``grow_method`` and ``torch_hist`` are accepted
    and ignored; ``skip_zeros=True`` drops exact zeros (a filtered copy); per-channel ``axis`` is
    not supported (as in the peers).
    """

    def __init__(self, num_bits: int = 8, axis: Any = None, unsigned: bool = False,
                 num_bins: int = 2048, grow_method: Any = None, skip_zeros: bool = False,
                 torch_hist: bool = True) -> None:
        if axis is not None:
            raise NotImplementedError("Calibrator histogram collection only supports per tensor "
                                      "scaling (axis=None)")
        if not isinstance(num_bits, int) or isinstance(num_bits, bool):
            raise TypeError(f"num_bits: expected an int, got {num_bits!r}")
        self._num_bits = num_bits
        self._axis = axis
        self._unsigned = bool(unsigned)
        self._num_bins = int(num_bins)
        self._skip_zeros = bool(skip_zeros)
        self._calibrator = Calibrator(bins=self._num_bins, range="streaming")
        self._empty = True

    @property
    def num_bits(self) -> int:
        return self._num_bits

    @property
    def axis(self) -> Any:
        return self._axis

    @property
    def unsigned(self) -> bool:
        return self._unsigned

    @property
    def calibrator(self) -> Calibrator:
        """The underlying :class:`klcal.Calibrator` (streaming, abs layout)."""
        return self._calibrator

    def collect(self, x: torch.Tensor) -> None:
        """Adds the absolute values of ``x`` to the histogram, on ``x``'s device."""
        x = _prepare(x, "HistogramCalibrator.collect")
        if self._skip_zeros:
            x = x[x != 0]
        device = _device_name(x)
        if self._empty and device != self._calibrator.device:
            self._calibrator = Calibrator(bins=self._num_bins, range="streaming", device=device)
        self._calibrator.add(x)
        self._empty = False

    def reset(self) -> None:
        """Forgets the collected histogram."""
        self._calibrator.reset()
        self._empty = True

    def compute_amax(self, method: str, *, stride: int = 1, start_bin: int = 128,
                     percentile: float = 99.99) -> torch.Tensor | None:
        """The amax of ``method`` on the collected histogram as a 0-d float32 tensor."""
        if method not in ("entropy", "mse", "percentile", "max"):
            raise TypeError(f"Unknown calibration method {method}")
        if not 0 <= percentile <= 100:
            raise ValueError("Invalid percentile. Must be in range 0 <= percentile <= 100.")
        if self._empty:
            s = self._calibrator.stats  # data may have come by klcal.distributed.all_reduce
            if s.finite_count + s.nan_count + s.inf_count == 0:
                return None
        kw: dict[str, Any] = {"bits": self._num_bits, "unsigned": self._unsigned}
        if method in ("entropy", "mse"):
            kw.update(start_bin=start_bin, stride=stride)
        elif method == "percentile":
            kw["percentile"] = percentile
        r = self._calibrator.compute(method=method, **kw)
        return torch.tensor(r.amax, dtype=torch.float32)

    def histogram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(counts, bin_edges)`` as the peers keep them: int64 counts and ``bins + 1`` float64
        edges over ``[0, hi]``."""
        lo, hi = self._calibrator.range
        counts = torch.from_numpy(self._calibrator.counts.astype("int64"))
        edges = torch.linspace(lo, hi, self._num_bins + 1, dtype=torch.float64)
        return counts, edges

    def __repr__(self) -> str:
        return (f"klcal.torch.HistogramCalibrator(num_bits={self._num_bits}, "
                f"unsigned={self._unsigned}, num_bins={self._num_bins}, "
                f"device='{self._calibrator.device}')")
