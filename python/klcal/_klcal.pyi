"""
klcal: exact, deterministic INT8 calibration (the compiled part; see klcal).
"""

from collections.abc import Sequence
import enum

import numpy
import numpy.typing


class Errc(enum.Enum):
    """Status codes of the library (include/klcal/status.hpp)."""

    ok = 0

    too_few_bins = 1

    too_many_bins = 2

    start_bin_out_of_range = 3

    invalid_stride = 4

    invalid_bits = 5

    invalid_range = 6

    bins_not_odd = 7

    bins_not_power_of_two = 8

    null_pointer = 9

    workspace_too_small = 10

    invalid_percentile = 11

    layout_mismatch = 12

    invalid_dtype = 13

    invalid_count = 14

    invalid_option = 15

    cuda_error = 16

    out_of_memory = 17

    io_error = 18

    format_error = 19

    comm_error = 20

class Stats:
    """Exact statistics of every value added (numerics.md 1.4)."""

    @property
    def finite_count(self) -> int:
        """Values that are neither NaN nor +-Inf."""

    @property
    def nan_count(self) -> int: ...

    @property
    def inf_count(self) -> int: ...

    @property
    def max_abs(self) -> float:
        """Largest finite |x| (0 when none)."""

    @property
    def min(self) -> float:
        """Smallest finite x (+inf when none)."""

    @property
    def max(self) -> float:
        """Largest finite x (-inf when none)."""

    def __repr__(self) -> str: ...

class Result:
    """The threshold one compute() chose (numerics.md 5)."""

    @property
    def amax(self) -> float:
        """Clipping threshold, computed in fp64."""

    @property
    def scale(self) -> float:
        """
        float32(amax) / qmax, correctly rounded to fp32 (returned as a Python float).
        """

    @property
    def index(self) -> int:
        """The method's choice: bin count, bin or half-width (numerics.md 5)."""

    @property
    def score(self) -> float:
        """KL or MSE at the optimum (0 for max and percentile)."""

    @property
    def clipped_fraction(self) -> float:
        """Mass of the bins entirely beyond amax, over the total."""

    @property
    def degenerate(self) -> bool:
        """Empty, all-zero, or every candidate infinite."""

    @property
    def curve(self, /) -> numpy.typing.NDArray[numpy.float64] | None:
        """
        The KL or MSE of every candidate (float64 array) when compute(curve=True), else None.
        """

    def __repr__(self) -> str: ...

class Calibrator:
    """
    Histogram and exact statistics of one tensor, and its threshold search.

    Mirrors klcal::cpu::calibrator (device="cpu") and klcal::calibrator (device="cuda[:N]"): the
    same data in any order and split gives identical counts, statistics and results on both.

    Args:
        bins: histogram bins, 2 .. 2**24 (a power of two for range="streaming"; odd for the mxnet
            rule set).
        range: "two-pass" (add_range() over all data, end_range_pass(), then add() over all data;
            hi = max |x|), "streaming" (one pass, hi a growing power of two, abs layout), or a fixed
            (lo, hi) pair of float32 values.
        layout: "abs" (bins |x| over [0, hi)) or "signed" (bins x over [lo, hi) / [-hi, hi)).
        device: "cpu", "cuda" (the current CUDA device) or "cuda:N".
        threads: CPU threads for histograms and searches; 0 = all hardware threads.
    """

    def __init__(self, bins: int = 2048, range: str | tuple[float, float] = 'two-pass', layout: str = 'abs', device: str = 'cpu', threads: int = 0) -> None: ...

    def add(self, x: object, *, stream: object | None = None) -> None:
        """
        Bins every element of x (NaN and +-Inf are counted, not binned).

        x: a NumPy array or any DLPack producer (torch.Tensor, CuPy, JAX) of float32, float16 or
        bfloat16 (ml_dtypes.bfloat16 for NumPy), any shape (0-d is one value, empty adds nothing), on
        the calibrator's device. Elements that fill one dense block (C or F order, permuted axes) are
        read in place, without a copy; other host arrays are gathered into a temporary copy first; other
        CUDA tensors raise klcal.InvalidArgumentError. The GIL is released while binning.

        stream (CUDA only): None = the producer's current stream (torch, CuPy; the legacy default stream
        for others), or an int cudaStream_t / torch.cuda.Stream / cupy.cuda.Stream. The producer orders
        its pending work before it (DLPack stream protocol); the calibrator orders it after its own
        previous operation. Keep x alive (or on the same stream) until that work has run, as with any
        CUDA kernel.
        """

    def add_range(self, x: object, *, stream: object | None = None) -> None:
        """First pass of range='two-pass': statistics only. Same inputs as add()."""

    def end_range_pass(self, *, stream: object | None = None) -> None:
        """Ends the first pass of range='two-pass': hi = max(max |x|, 2**-64)."""

    def compute(self, method: str = 'entropy', rules: str = 'tensorrt', percentile: float = 99.99, bits: int = 8, unsigned: bool = False, start_bin: int = 128, stride: int = 1, zero_bin: str = 'copy_next', curve: bool = False) -> Result:
        """
        Searches the threshold (docs/numerics.md 2 to 5) and returns a klcal.Result.

        method: "entropy" (KL divergence), "percentile", "mse" or "max". rules: "tensorrt" (abs layout)
        or "mxnet" (signed layout, odd bins). bits 2..16; unsigned: levels 2**bits; start_bin, stride:
        tensorrt entropy and mse candidates; zero_bin: "copy_next" (tensorrt: c[0] := c[1]) or "keep";
        percentile in [0, 100]; curve=True also returns every candidate's score.
        """

    @property
    def counts(self, /) -> numpy.typing.NDArray[numpy.uint64]:
        """A copy of the counts (numpy.uint64 array of `bins` entries)."""

    @property
    def stats(self) -> Stats:
        """A copy of the statistics (klcal.Stats)."""

    def merge(self, other: Calibrator) -> None:
        """
        Adds another calibrator's counts and statistics exactly: same range policy and bins; identical ranges for fixed and two-pass; streaming ranges meet at the larger one. Calibrators on different devices merge through their state.
        """

    def reset(self, *, stream: object | None = None) -> None:
        """
        Back to empty (streaming restarts at hi = 2**-64, two-pass at its first pass).
        """

    def state(self, name: str = 'tensor') -> bytes:
        """
        Everything the calibrator knows as the bytes of a klcal state file with one tensor (docs/formats.md).
        """

    @staticmethod
    def from_state(data: bytes, *, device: str = 'cpu', threads: int = 0, name: str | None = None) -> Calibrator:
        """
        A calibrator that continues from state() bytes (or one named tensor of a state file).
        """

    def __getstate__(self) -> tuple: ...

    def __setstate__(self, arg: tuple, /) -> None: ...

    @property
    def bins(self) -> int: ...

    @property
    def layout(self) -> str:
        """'abs' or 'signed'."""

    @property
    def policy(self) -> str:
        """'fixed', 'two-pass' or 'streaming'."""

    @property
    def range(self) -> tuple[float, float]:
        """
        The current (lo, hi): for streaming hi = 2**e; for two-pass meaningful only once range_done.
        """

    @property
    def range_done(self) -> bool:
        """False only for a two-pass calibrator before end_range_pass()."""

    @property
    def device(self) -> str:
        """'cpu' or 'cuda:N'."""

    @property
    def threads(self) -> int: ...

    def __repr__(self) -> str: ...

def add_many(calibrators: Sequence[Calibrator], tensors: Sequence[object], *, range_pass: bool = False, stream: object | None = None) -> None:
    """
    Adds tensors[i] to calibrators[i] for every i in one call: every input is checked
    before any is binned, and the GIL is released once for the whole batch. range_pass=True calls
    add_range() instead of add(). A calibrator may appear more than once.
    """

def save_states(items: Sequence[tuple[str, Calibrator]]) -> bytes:
    """
    Encodes (name, calibrator) pairs, e.g. list(d.items()) of a dict, as one klcal state file (docs/formats.md); names must be distinct and non-empty.
    """

def load_states(data: bytes, *, device: str = 'cpu', threads: int = 0) -> list[tuple[str, Calibrator]]:
    """
    Decodes a klcal state file into (name, Calibrator) pairs in file order.
    """

built_with_cuda: bool

def format_cache(entries: Sequence[tuple[str, float]], version: str, algorithm: str) -> str:
    """
    The TensorRT calibration cache text: header TRT-<version>-<algorithm>, then one '<name>: <hex of the fp32 scale>' line per entry, in order (docs/numerics.md 7).
    """

def scale_hex(scale: float) -> str:
    """
    Lowercase hex of the fp32 bit pattern of scale, no padding (1/127 -> '3c010204').
    """

def json_number(value: float) -> str:
    """
    A number as the klcal tool writes it in JSON: %.17g, null for NaN and +-Inf.
    """

def json_string(text: str) -> str:
    """
    A JSON string as the klcal tool writes it (quotes included; ", \\ and control characters escaped).
    """

def cuda_available() -> bool:
    """
    True when this klcal was built with its CUDA kernels and a CUDA device is visible (klcal.built_with_cuda says whether the kernels were built).
    """
