"""Independent NumPy reference of the klcal numerics contract (docs/numerics.md).

Written only from docs/numerics.md and docs/testing.md, never from the C++ code, so that the
golden files it produces (tests/data/*.golden) check the C++ implementations independently.
Every function here favours the most literal reading of the contract over speed: histogram
binning in explicit fp32 NumPy operations, entropy searches by the direct O(i) formulas.

Invalid input raises KlcalError (a ValueError) whose message starts with the errc name, e.g.
"invalid_range: hi <= lo".
"""

import math

import numpy as np

MAX_BINS = 1 << 24
STREAM_E_MIN = -64
STREAM_E_MAX = 127
MXNET_EPS = 1e-4
PERCENT_UNITS = 100 * 10 ** 9  # 100 percent in the units of P (section 4)

ERRC_NAMES = (
    "too_few_bins", "too_many_bins", "start_bin_out_of_range", "invalid_stride", "invalid_bits",
    "invalid_range", "bins_not_odd", "bins_not_power_of_two", "null_pointer",
    "workspace_too_small", "invalid_percentile", "layout_mismatch", "invalid_dtype",
    "invalid_count", "invalid_option",
)

DTYPES = ("f32", "f16", "bf16")
LAYOUTS = ("abs", "signed")
METHODS = ("entropy", "max", "percentile", "mse")
RULES = ("tensorrt", "mxnet")
ZERO_BIN = ("copy_next", "keep")


class KlcalError(ValueError):
    """Invalid input; `errc` is the name of the klcal::errc value (docs/numerics.md section 6)."""

    def __init__(self, errc, message):
        assert errc in ERRC_NAMES, errc
        super().__init__(f"{errc}: {message}")
        self.errc = errc


def _fail(errc, message):
    raise KlcalError(errc, message)


# ---------------------------------------------------------------------------------------------
# Input widening
# ---------------------------------------------------------------------------------------------

def widen(data, dtype):
    """Return the values of `data` as a float32 array, widened exactly from `dtype`.

    f32: float32 array, uint32 bit patterns, or anything exactly representable in fp32.
    f16: float16 array or uint16 bit patterns.  bf16: uint16 bit patterns only.
    """
    if dtype not in DTYPES:
        _fail("invalid_dtype", f"unknown dtype {dtype!r}")
    a = np.asarray(data)
    if dtype == "f32":
        if a.dtype == np.float32:
            return a.reshape(-1).copy()
        if a.dtype == np.uint32:
            return a.reshape(-1).view(np.float32).copy()
        a64 = np.asarray(a, dtype=np.float64).reshape(-1)
        a32 = a64.astype(np.float32)
        ok = (a32.astype(np.float64) == a64) | (np.isnan(a64) & np.isnan(a32))
        if not np.all(ok):
            _fail("invalid_dtype", "f32 input not exactly representable in fp32")
        return a32
    if dtype == "f16":
        if a.dtype == np.float16:
            return a.reshape(-1).astype(np.float32)
        if a.dtype == np.uint16:
            return a.reshape(-1).view(np.float16).astype(np.float32)
        _fail("invalid_dtype", "f16 input must be float16 or uint16 bit patterns")
    # bf16: the upper half of an fp32 bit pattern, so widening is a 16-bit shift.
    if a.dtype != np.uint16:
        _fail("invalid_dtype", "bf16 input must be uint16 bit patterns")
    return (a.reshape(-1).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32(x):
    """Round a number to fp32 (NumPy scalar)."""
    return np.float32(x)


def f32_bits(x):
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def f64_bits(x):
    return int(np.array([x], dtype=np.float64).view(np.uint64)[0])


def bits_f32(b):
    return np.array([b], dtype=np.uint32).view(np.float32)[0]


def bits_f64(b):
    return float(np.array([b], dtype=np.uint64).view(np.float64)[0])


# ---------------------------------------------------------------------------------------------
# Histograms (section 1)
# ---------------------------------------------------------------------------------------------

def _check_bins(bins):
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool):
        _fail("invalid_option", "bins must be an integer")
    if bins < 2:
        _fail("too_few_bins", f"B = {bins} < 2")
    if bins > MAX_BINS:
        _fail("too_many_bins", f"B = {bins} > 2^24")


def _check_range(lo, hi, layout):
    lo = f32(lo)
    hi = f32(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        _fail("invalid_range", "lo and hi must be finite")
    if not hi > lo:
        _fail("invalid_range", "hi <= lo")
    with np.errstate(over="ignore"):
        width = np.float32(hi - lo)
    if not np.isfinite(width):
        _fail("invalid_range", "hi - lo overflows fp32")
    if layout == "abs" and lo != 0:
        _fail("invalid_range", "the abs layout needs lo = 0")
    return lo, hi


class Histogram:
    """A klcal histogram: uint64 counts plus exact side statistics.

    layout 'abs' bins |x| over [0, hi); 'signed' bins x over [lo, hi).  streaming=True is the
    one-pass power-of-two range policy of section 1.5 (abs layout only).
    """

    def __init__(self, bins, lo=0.0, hi=1.0, layout="abs", streaming=False):
        if layout not in LAYOUTS:
            _fail("invalid_option", f"unknown layout {layout!r}")
        _check_bins(bins)
        self.bins = int(bins)
        self.layout = layout
        self.streaming = bool(streaming)
        if self.streaming:
            if layout != "abs":
                _fail("layout_mismatch", "streaming needs the abs layout")
            if self.bins & (self.bins - 1):
                _fail("bins_not_power_of_two", f"streaming with B = {bins}")
            self.e = STREAM_E_MIN
            self.lo = np.float32(0.0)
            self.hi = np.float32(2.0 ** self.e)
        else:
            self.e = None
            self.lo, self.hi = _check_range(lo, hi, layout)
            with np.errstate(over="ignore"):
                scale = np.float32(np.float32(self.bins) / np.float32(self.hi - self.lo))
            if not np.isfinite(scale):
                _fail("invalid_range", "hi - lo too small: the fp32 bin scale overflows")
        self.counts = np.zeros(self.bins, dtype=np.uint64)
        self.nan_count = 0
        self.inf_count = 0
        self.finite_count = 0
        self.max_abs = np.float32(0.0)
        self.min = np.float32(np.inf)
        self.max = np.float32(-np.inf)

    @classmethod
    def from_counts(cls, counts, lo, hi, layout="abs", max_abs=0.0):
        """A histogram given directly by its counts (golden 'range counts')."""
        counts = np.asarray(counts)
        h = cls(len(counts), lo, hi, layout)
        if counts.dtype.kind == "i" and np.any(counts < 0):
            _fail("invalid_count", "negative count")
        h.counts = counts.astype(np.uint64)
        h.finite_count = int(sum(int(v) for v in h.counts))
        h.max_abs = np.float32(max_abs)
        return h

    def copy(self):
        h = Histogram.__new__(Histogram)
        h.__dict__.update(self.__dict__)
        h.counts = self.counts.copy()
        return h

    # -- binning ------------------------------------------------------------------------------

    def scale(self):
        """scale = fp32(fp32(B) / fp32(hi - lo)) (rule 3)."""
        width = np.float32(self.hi - self.lo)
        return np.float32(np.float32(self.bins) / width)

    def bin_index(self, x):
        """Bin index of each finite float32 value in x (rules 4 and 5), as int64."""
        x = np.asarray(x, dtype=np.float32)
        scale = self.scale()
        with np.errstate(over="ignore"):
            if self.layout == "abs":
                prod = np.multiply(np.abs(x), scale, dtype=np.float32)
            else:
                diff = np.subtract(x, self.lo, dtype=np.float32)
                prod = np.multiply(diff, scale, dtype=np.float32)
        k = np.floor(prod)
        # Clamp in floating point before converting, so huge quotients never overflow an int.
        k = np.minimum(k, np.float32(self.bins - 1))
        k = np.maximum(k, np.float32(0.0))
        assert k.dtype == np.float32
        return k.astype(np.int64)

    def _grow(self, batch_max_abs):
        """Streaming: raise e (pairwise-merging the counts) while batch_max_abs >= hi."""
        half = self.bins // 2
        while batch_max_abs >= self.hi and self.e < STREAM_E_MAX:
            self.e += 1
            merged = self.counts.reshape(half, 2).sum(axis=1, dtype=np.uint64)
            self.counts = np.concatenate([merged, np.zeros(half, dtype=np.uint64)])
            self.hi = np.float32(2.0 ** self.e)

    def add(self, data, dtype="f32"):
        """Bin one batch of values (NaN/Inf only counted)."""
        x = widen(data, dtype)
        nan = np.isnan(x)
        fin = np.isfinite(x)
        self.nan_count += int(nan.sum())
        self.inf_count += int((~fin & ~nan).sum())
        xf = x[fin]
        if xf.size == 0:
            return self
        xf = xf + np.float32(0.0)  # -0.0 + 0.0 = +0.0: "-0.0 is 0"
        batch_max_abs = np.max(np.abs(xf))
        if self.streaming:
            self._grow(batch_max_abs)
        self.max_abs = max(self.max_abs, batch_max_abs)
        self.min = min(self.min, np.min(xf))
        self.max = max(self.max, np.max(xf))
        self.finite_count += int(xf.size)
        idx = self.bin_index(xf)
        self.counts = self.counts + np.bincount(idx, minlength=self.bins).astype(np.uint64)
        return self

    # -- queries --------------------------------------------------------------------------------

    def total(self):
        return int(sum(int(v) for v in self.counts))

    def zero_bin(self):
        """Index of the bin that holds the value 0 (0 for abs)."""
        if self.layout == "abs":
            return 0
        return int(self.bin_index(np.zeros(1, dtype=np.float32))[0])

    def is_empty_or_all_zero(self):
        """Section 5.3: T = 0, or every count outside the bin containing 0 is zero."""
        if self.total() == 0:
            return True
        zb = self.zero_bin()
        rest = np.concatenate([self.counts[:zb], self.counts[zb + 1:]])
        return not np.any(rest != 0)

    def stats(self):
        return dict(finite_count=self.finite_count, nan_count=self.nan_count,
                    inf_count=self.inf_count, max_abs=float(self.max_abs),
                    min=float(self.min), max=float(self.max))


def merge(a, b):
    """Merge two histograms with identical specs (section 1.4); streaming ones are aligned
    to the larger e by pairwise merges first."""
    if a.layout != b.layout or a.bins != b.bins or a.streaming != b.streaming:
        _fail("invalid_option", "merging histograms with different specs")
    a = a.copy()
    b = b.copy()
    if a.streaming:
        target = max(a.e, b.e)
        for h in (a, b):
            while h.e < target:
                h._grow(h.hi)  # forces exactly one step
    elif f32_bits(a.lo) != f32_bits(b.lo) or f32_bits(a.hi) != f32_bits(b.hi):
        _fail("invalid_option", "merging histograms with different ranges")
    a.counts = a.counts + b.counts
    a.nan_count += b.nan_count
    a.inf_count += b.inf_count
    a.finite_count += b.finite_count
    a.max_abs = max(a.max_abs, b.max_abs)
    a.min = min(a.min, b.min)
    a.max = max(a.max, b.max)
    return a


def batch_max_abs(batches, dtype):
    m = np.float32(0.0)
    for data in batches:
        x = widen(data, dtype)
        x = x[np.isfinite(x)]
        if x.size:
            m = max(m, np.max(np.abs(x)))
    return m


def two_pass_range(max_abs):
    """[0, max(max_abs, 2^-64)) (section 1.5)."""
    max_abs = np.float32(max_abs)
    floor = np.float32(2.0 ** STREAM_E_MIN)
    return max_abs if max_abs > floor else floor


def two_pass(batches, dtype, bins, layout="abs"):
    """The two-pass protocol: max_abs of all data, then a fixed [0, max_abs) (abs) or
    [-max_abs, max_abs) (signed) histogram of everything."""
    hi = two_pass_range(batch_max_abs(batches, dtype))
    lo = np.float32(0.0) if layout == "abs" else -hi
    h = Histogram(bins, lo, hi, layout)
    for data in batches:
        h.add(data, dtype)
    return h


def streaming(batches, dtype, bins):
    h = Histogram(bins, streaming=True)
    for data in batches:
        h.add(data, dtype)
    return h


# ---------------------------------------------------------------------------------------------
# Searches (sections 2 to 5)
# ---------------------------------------------------------------------------------------------

def qmax_of(bits, is_unsigned):
    return (1 << bits) - 1 if is_unsigned else (1 << (bits - 1)) - 1


def scale_of(amax, qmax):
    """scale = fp32(fp32(amax) / fp32(qmax)) (section 5.1)."""
    with np.errstate(over="ignore"):
        return np.float32(np.float32(amax) / np.float32(qmax))


def _result(amax, qmax, index, score, clipped, degenerate, curve):
    return dict(amax=float(amax), scale=scale_of(amax, qmax), index=int(index),
                score=float(score), clipped_fraction=float(clipped),
                degenerate=bool(degenerate), curve=[float(v) for v in curve])


def _degenerate_result(curve):
    return dict(amax=0.0, scale=np.float32(0.0), index=0, score=0.0, clipped_fraction=0.0,
                degenerate=True, curve=[float(v) for v in curve])


def _clipped(counts, mask_beyond, total):
    if total == 0:
        return 0.0
    mass = sum(int(v) for v in counts[mask_beyond])
    return float(mass) / float(total)


def kl_tensorrt_candidate(c, i, levels):
    """KL of candidate i under the tensorrt rules, by the direct O(i) formula (section 2.4).

    c: the (zero-bin-modified) uint64 counts.
    """
    total = sum(int(v) for v in c)
    if total == 0:
        return math.inf
    t = sum(int(v) for v in c[i:])
    kept = c[:i]
    P = kept.astype(np.float64)
    P[i - 1] = float(int(kept[i - 1]) + t)
    j = np.arange(i, dtype=np.int64)
    g = (j * levels) // i  # exact integer floor(j * L / i)
    nz = kept > 0
    M = np.bincount(g, weights=kept.astype(np.float64), minlength=levels)
    n = np.bincount(g[nz], minlength=levels)
    Q = np.where(nz, M[g] / np.maximum(n[g], 1), 0.0)
    sum_p = float(total)
    sum_q = float(np.sum(Q))
    if sum_q == 0.0:
        return math.inf
    if np.any((P > 0) & (Q == 0)):
        return math.inf
    m = P > 0
    p = P[m] / sum_p
    q = Q[m] / sum_q
    return float(np.sum(p * np.log(p / q)))


def _smooth(v, eps=MXNET_EPS):
    """MXNet/TVM smoothing on raw values; None when the candidate must be +inf."""
    s = len(v)
    is_zero = v == 0
    zeros = int(is_zero.sum())
    nonzeros = s - zeros
    if nonzeros == 0:
        return None
    d = eps * zeros / nonzeros
    if d >= 1.0:
        return None
    return np.where(is_zero, eps, v - d)


def kl_mxnet_candidate(c, i, levels):
    """KL of half-width i under the mxnet rules, direct formula (section 3)."""
    B = len(c)
    z = B // 2
    s = 2 * i + 1
    first = z - i
    last = z + i  # inclusive
    window = c[first:last + 1]
    P = window.astype(np.float64)
    P[0] = float(sum(int(v) for v in c[:first + 1]))
    P[s - 1] = float(int(c[last]) + sum(int(v) for v in c[last + 1:]))
    W = window.astype(np.float64)
    W[0] = 0.0  # the MXNet/TVM quirk
    m = s // levels
    g = np.minimum(np.arange(s) // m, levels - 1)
    M = np.bincount(g, weights=W, minlength=levels)
    n = np.bincount(g[W != 0], minlength=levels)
    Q = np.where((P != 0) & (n[g] > 0), M[g] / np.maximum(n[g], 1), 0.0)
    Ps = _smooth(P)
    Qs = _smooth(Q)
    if Ps is None or Qs is None:
        return math.inf
    p = Ps / np.sum(Ps)
    q = Qs / np.sum(Qs)
    return float(np.sum(p * np.log(p / q)))


def _check_bits(bits):
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        _fail("invalid_bits", f"bits = {bits} outside 2..16")


def _check_start_stride(start_bin, stride):
    if start_bin < 1:
        _fail("start_bin_out_of_range", f"start_bin = {start_bin} < 1")
    if stride < 1:
        _fail("invalid_stride", f"stride = {stride} < 1")


def _argmin(curve, last):
    """Index of the minimum finite entry; ties to the last (tensorrt) or first (mxnet, mse).
    None when every entry is +inf."""
    best = None
    for k, v in enumerate(curve):
        if math.isinf(v):
            continue
        if best is None or v < curve[best] or (last and v == curve[best]):
            best = k
    return best


def search_entropy_tensorrt(h, bits=8, is_unsigned=False, start_bin=128, stride=1,
                            zero_bin="copy_next"):
    _check_bits(bits)
    if h.layout != "abs":
        _fail("layout_mismatch", "tensorrt entropy needs an abs histogram")
    _check_start_stride(start_bin, stride)
    if zero_bin not in ZERO_BIN:
        _fail("invalid_option", f"unknown zero_bin {zero_bin!r}")
    B = h.bins
    if B < start_bin:
        _fail("start_bin_out_of_range", f"B = {B} < start_bin = {start_bin}")
    levels = (1 << bits) if is_unsigned else (1 << (bits - 1))
    c = h.counts.copy()
    if zero_bin == "copy_next":
        c[0] = c[1]
    cands = list(range(start_bin, B + 1, stride))
    curve = [kl_tensorrt_candidate(c, i, levels) for i in cands]
    if h.is_empty_or_all_zero():
        return _degenerate_result(curve)
    k = _argmin(curve, last=True)
    degenerate = k is None
    if k is None:
        k = len(cands) - 1
    i = cands[k]
    w = float(h.hi) / B
    amax = i * w
    clipped = _clipped(h.counts, np.arange(B) >= i, h.total())
    return _result(amax, qmax_of(bits, is_unsigned), i, curve[k], clipped, degenerate, curve)


def search_entropy_mxnet(h, bits=8, is_unsigned=False):
    _check_bits(bits)
    if h.layout != "signed":
        _fail("layout_mismatch", "mxnet entropy needs a signed histogram")
    if is_unsigned:
        _fail("invalid_option", "mxnet has no unsigned mode")
    B = h.bins
    if B % 2 == 0 or f32_bits(h.lo) != f32_bits(-h.hi):
        _fail("bins_not_odd", "mxnet needs odd B over [-hi, hi)")
    levels = (1 << bits) - 1
    z = B // 2
    if z < levels // 2:
        _fail("start_bin_out_of_range", f"B/2 = {z} < L/2 = {levels // 2}")
    cands = list(range(levels // 2, z + 1))
    curve = [kl_mxnet_candidate(h.counts, i, levels) for i in cands]
    if h.is_empty_or_all_zero():
        return _degenerate_result(curve)
    k = _argmin(curve, last=False)
    degenerate = k is None
    if k is None:
        k = 0
    i = cands[k]
    amax = (i + 0.5) * (2.0 * float(h.hi) / B)
    j = np.arange(B)
    clipped = _clipped(h.counts, (j < z - i) | (j > z + i), h.total())
    return _result(amax, qmax_of(bits, False), i, curve[k], clipped, degenerate, curve)


def percentile_units(p):
    """Section 4: P = llround(p * 1e9), the fp64 product rounded to the nearest integer with
    halfway cases away from zero (Python's round() would round them to even)."""
    x = p * 1e9  # one fp64 multiplication
    f = math.floor(x)
    return int(f) + (1 if x - f >= 0.5 else 0)  # x - f is exact (the fraction of x)


def search_percentile(h, percentile=99.99, bits=8, is_unsigned=False):
    _check_bits(bits)
    if h.layout != "abs":
        _fail("layout_mismatch", "percentile needs an abs histogram")
    p = float(percentile)
    if math.isnan(p) or not 0.0 <= p <= 100.0:
        _fail("invalid_percentile", f"percentile = {percentile}")
    if h.is_empty_or_all_zero():
        return _degenerate_result([])
    B = h.bins
    T = h.total()
    P = percentile_units(p)
    k = None
    running = 0
    for j in range(B):
        running += int(h.counts[j])  # S(j + 1), exact
        if PERCENT_UNITS * running >= P * T:  # Python ints: exact
            k = j
            break
    assert k is not None
    w = float(h.hi) / B
    clipped = _clipped(h.counts, np.arange(B) >= k, T)
    return _result(k * w, qmax_of(bits, is_unsigned), k, 0.0, clipped, False, [])


def search_mse(h, bits=8, is_unsigned=False, start_bin=128, stride=1):
    _check_bits(bits)
    if h.layout != "abs":
        _fail("layout_mismatch", "mse needs an abs histogram")
    _check_start_stride(start_bin, stride)
    B = h.bins
    if B <= start_bin:
        _fail("start_bin_out_of_range", f"B = {B} <= start_bin = {start_bin}")
    qmax = qmax_of(bits, is_unsigned)
    w = float(h.hi) / B
    centres = (np.arange(B, dtype=np.float64) + 0.5) * w
    cf = h.counts.astype(np.float64)
    cands = list(range(start_bin, B, stride))
    curve = []
    for i in cands:
        a = centres[i]
        s = qmax / a
        fq = np.clip(np.rint(centres * s), -qmax, qmax) / s
        curve.append(float(np.sum(cf * (fq - centres) ** 2) / B))
    if h.is_empty_or_all_zero():
        return _degenerate_result(curve)
    k = _argmin(curve, last=False)
    degenerate = k is None  # only with overflowing scores (ranges near the fp32 limit)
    if k is None:
        k = 0
    i = cands[k]
    clipped = _clipped(h.counts, np.arange(B) >= i + 1, h.total())
    return _result(centres[i], qmax, i, curve[k], clipped, degenerate, curve)


def search_max(h, bits=8, is_unsigned=False):
    _check_bits(bits)
    if h.is_empty_or_all_zero():
        return _degenerate_result([])
    return _result(float(h.max_abs), qmax_of(bits, is_unsigned), h.bins, 0.0, 0.0, False, [])


def search(h, method="entropy", rules="tensorrt", bits=8, is_unsigned=False, start_bin=128,
           stride=1, zero_bin="copy_next", percentile=99.99):
    """Dispatch one search. Returns a dict with amax, scale (np.float32), index, score,
    clipped_fraction, degenerate, curve."""
    if method not in METHODS:
        _fail("invalid_option", f"unknown method {method!r}")
    if rules not in RULES:
        _fail("invalid_option", f"unknown rule set {rules!r}")
    if method == "entropy":
        if rules == "tensorrt":
            return search_entropy_tensorrt(h, bits, is_unsigned, start_bin, stride, zero_bin)
        return search_entropy_mxnet(h, bits, is_unsigned)
    if method == "max":
        return search_max(h, bits, is_unsigned)
    if method == "percentile":
        return search_percentile(h, percentile, bits, is_unsigned)
    return search_mse(h, bits, is_unsigned, start_bin, stride)
