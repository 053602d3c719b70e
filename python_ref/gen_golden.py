"""Writes the golden files tests/data/<case>.golden (format: docs/testing.md) from klcal_ref.

Deterministic: fixed seeds, no time stamps, so regenerating gives identical files (with one NumPy
build byte for byte; across builds the fp64 KL/MSE values may move in the last bits).
Usage: python3 python_ref/gen_golden.py [--out DIR]
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klcal_ref as kr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "tests", "data")

# Random (non-constructed) searches must not have a candidate this close to the minimum, so
# that summation-order differences (tolerance 1e-12 + 1e-10 |ref|) cannot change the index.
ENTROPY_NEAR_TIE = 1e-9
MSE_NEAR_TIE_REL = 1e-7

OPTION_ORDER = ("start_bin", "stride", "bits", "unsigned", "zero_bin", "percentile")


def hx32(x):
    return "%08x" % kr.f32_bits(x)


def hx64(x):
    return "%016x" % kr.f64_bits(x)


# ---------------------------------------------------------------------------------------------
# Input helpers (all return raw bit patterns)
# ---------------------------------------------------------------------------------------------

def f32b(x):
    return np.asarray(x, dtype=np.float32).reshape(-1).view(np.uint32)


def f16b(x):
    return np.asarray(x, dtype=np.float16).reshape(-1).view(np.uint16)


def bf16b(x):
    """Truncate fp32 values to bf16 bit patterns (every pattern is a valid bf16)."""
    return (f32b(x) >> np.uint32(16)).astype(np.uint16)


def u16(*vals):
    return np.array(vals, dtype=np.uint16)


def u32(*vals):
    return np.array(vals, dtype=np.uint32)


def bits_to_tokens(arr, dtype):
    width = 8 if dtype == "f32" else 4
    return ["%0*x" % (width, int(v)) for v in arr]


# ---------------------------------------------------------------------------------------------
# Case writer
# ---------------------------------------------------------------------------------------------

class Case:
    def __init__(self, name, description, dtype="f32", layout="abs", range_kind="fixed", bins=2048,
                 lo=None, hi=None, batches=(), counts=None, max_abs=0.0, two_pass=False,
                 searches=(), hist_error=None):
        self.name = name
        self.description = description
        self.dtype = dtype
        self.layout = layout
        self.range_kind = range_kind
        self.bins = bins
        self.lo = lo
        self.hi = hi
        self.batches = [np.asarray(b) for b in batches]
        self.counts = counts
        self.max_abs = max_abs
        self.two_pass = two_pass
        self.searches = list(searches)
        self.hist_error = hist_error


def S(method="entropy", rules="tensorrt", tie=False, error=None, **opts):
    """One search block: method, rules, options (start_bin, stride, bits, unsigned, zero_bin,
    percentile), tie=True for constructed exact ties, error=<errc> when it must fail."""
    return dict(method=method, rules=rules, tie=tie, error=error, opts=opts)


def _build_hist(case):
    if case.range_kind == "counts":
        return kr.Histogram.from_counts(np.asarray(case.counts, dtype=np.uint64), case.lo, case.hi,
                                        case.layout, case.max_abs)
    if case.range_kind == "streaming":
        h = kr.Histogram(case.bins, streaming=True)
    else:
        if case.two_pass:
            hi = kr.two_pass_range(kr.batch_max_abs(case.batches, case.dtype))
            case.hi = hi
            case.lo = np.float32(0.0) if case.layout == "abs" else -hi
        h = kr.Histogram(case.bins, case.lo, case.hi, case.layout)
    for b in case.batches:
        h.add(b, case.dtype)
    return h


def _check_near_ties(case, spec, res):
    curve = res["curve"]
    if not curve or spec["tie"] or res["degenerate"]:
        return
    best = res["score"]
    if spec["method"] == "entropy":
        cands = _candidates(case, spec, len(curve))
        thr = ENTROPY_NEAR_TIE
    else:
        cands = _candidates(case, spec, len(curve))
        thr = MSE_NEAR_TIE_REL * abs(best)
    for i, v in zip(cands, curve):
        if i != res["index"] and not math.isinf(v) and abs(v - best) <= thr:
            raise SystemExit(f"{case.name}: near-tie {spec}: candidate {i} score {v!r} vs "
                             f"best {res['index']} {best!r}")


def _candidates(case, spec, n):
    o = spec["opts"]
    if spec["method"] == "entropy" and spec["rules"] == "mxnet":
        return [((1 << o.get("bits", 8)) - 1) // 2 + k for k in range(n)]
    return [o.get("start_bin", 128) + k * o.get("stride", 1) for k in range(n)]


def _run_search(h, spec):
    o = spec["opts"]
    return kr.search(h, spec["method"], spec["rules"], bits=o.get("bits", 8),
                     is_unsigned=bool(o.get("unsigned", 0)), start_bin=o.get("start_bin", 128),
                     stride=o.get("stride", 1), zero_bin=o.get("zero_bin", "copy_next"),
                     percentile=o.get("percentile", 99.99))


def render(case):
    out = ["klcal-golden 1", "# generated by python_ref/gen_golden.py (NumPy reference); do not edit",
           f"case {case.name}", f"description {case.description}", f"dtype {case.dtype}",
           f"layout {case.layout}", f"range {case.range_kind}", f"bins {case.bins}"]
    try:
        h = _build_hist(case)
        err = None
    except kr.KlcalError as e:
        h = None
        err = e.errc
    if err != case.hist_error:
        raise SystemExit(f"{case.name}: histogram error {err} != expected {case.hist_error}")
    if case.range_kind == "streaming":
        lo, hi = (np.float32(0.0), h.hi) if h is not None else (np.float32(0.0), case.hi)
    else:
        lo, hi = case.lo, case.hi
    out.append(f"lo {hx32(lo)}")
    out.append(f"hi {hx32(hi)}")
    for b in case.batches:
        out.append(" ".join(["batch", str(len(b))] + bits_to_tokens(b, case.dtype)))
    if err is not None:
        if case.range_kind == "counts":
            raise SystemExit("counts cases cannot carry a histogram error (no counts to give)")
        out.append(f"error {err}")
        out.append("end")
        return "\n".join(out) + "\n"
    nz = np.nonzero(h.counts)[0]
    out.append(" ".join(["counts", str(len(nz))] + [f"{j}:{int(h.counts[j])}" for j in nz]))
    out.append(f"nan_count {h.nan_count}")
    out.append(f"inf_count {h.inf_count}")
    out.append(f"max_abs {hx32(h.max_abs)}")
    for spec in case.searches:
        out.append(f"search {spec['method']} {spec['rules']}")
        for key in OPTION_ORDER:
            if key not in spec["opts"]:
                continue
            v = spec["opts"][key]
            if key == "percentile":
                out.append(f"percentile {hx64(v)}")
            elif key == "unsigned":
                out.append(f"unsigned {int(bool(v))}")
            else:
                out.append(f"{key} {v}")
        try:
            res = _run_search(h, spec)
            serr = None
        except kr.KlcalError as e:
            res = None
            serr = e.errc
        if serr != spec["error"]:
            raise SystemExit(f"{case.name}: search {spec} error {serr} != {spec['error']}")
        if serr is not None:
            out.append(f"error {serr}")
            continue
        _check_near_ties(case, spec, res)
        out.append(f"index {res['index']}")
        out.append(f"amax {hx64(res['amax'])}")
        out.append(f"scale {hx32(res['scale'])}")
        out.append(f"score {hx64(res['score'])}")
        out.append(f"clipped {hx64(res['clipped_fraction'])}")
        out.append(f"degenerate {int(res['degenerate'])}")
        if spec["method"] in ("entropy", "mse"):
            out.append(" ".join(["curve", str(len(res["curve"]))] + [hx64(v) for v in res["curve"]]))
    out.append("end")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

def poisson_counts(rng, density, total):
    """Counts with expectation total * density / sum(density), Poisson noise."""
    d = np.asarray(density, dtype=np.float64)
    return rng.poisson(total * d / d.sum()).astype(np.uint64)


def cases():
    cs = []
    add = cs.append
    P2_M64 = np.float32(2.0 ** -64)

    # --- tensorrt / abs, realistic ------------------------------------------------------------
    rng = np.random.default_rng(101)
    x = rng.standard_normal(4000).astype(np.float32)
    add(Case("trt_f32_normal_twopass", "two-pass abs histogram of 4000 N(0,1) values in two batches",
             bins=2048, two_pass=True, batches=[f32b(x[:1500]), f32b(x[1500:])],
             searches=[S(), S(zero_bin="keep"), S("max"), S("percentile", percentile=99.9), S("percentile"),
                       S("mse")]))

    rng = np.random.default_rng(202)
    x = np.maximum(rng.standard_normal(3000), 0).astype(np.float32)
    add(Case("trt_f32_relu_twopass", "ReLU output (half exact zeros): the zero spike and the zero-bin rules",
             bins=2048, two_pass=True, batches=[f32b(x)],
             searches=[S(), S(zero_bin="keep"), S("percentile", percentile=99.0),
                       S("mse", stride=4), S("max", bits=4, unsigned=1)]))

    rng = np.random.default_rng(303)
    x = rng.laplace(0, 1, 3000).astype(np.float32)
    add(Case("trt_f32_laplace_fixed", "fixed range [0, 6) over Laplace data (clamped tail), 256 bins, stride 3",
             bins=256, lo=0.0, hi=6.0, batches=[f32b(x)],
             searches=[S(start_bin=32, stride=3), S(start_bin=16, bits=4, unsigned=1),
                       S("mse", start_bin=32, bits=4), S("percentile", percentile=99.5), S("max", bits=6)]))

    rng = np.random.default_rng(404)
    centres = (np.arange(2048) + 0.5) / 2048 * 4.0
    counts = poisson_counts(rng, np.exp(-0.5 * centres ** 2), 10_000_000)
    add(Case("trt_counts_dense", "dense half-normal counts (1e7 samples) over [0, 4)", range_kind="counts",
             bins=2048, lo=0.0, hi=4.0, counts=counts,
             searches=[S(), S(bits=7), S(stride=5, start_bin=100), S(unsigned=1), S(zero_bin="keep"),
                       S("mse"), S("mse", bits=6, unsigned=1, stride=3), S("percentile", percentile=99.99)]))

    rng = np.random.default_rng(505)
    centres = (np.arange(2048) + 0.5) / 2048
    shape = np.exp(-6.0 * centres)
    counts = (np.floor(shape * 2.0 ** 40) + rng.integers(0, 2 ** 20, 2048)).astype(np.uint64)
    counts[1500:1510] = 0
    counts[2047] = 2 ** 40
    add(Case("trt_counts_big", "big counts, up to 2^40 per bin (T' about 2^48), with a gap and a last-bin spike",
             range_kind="counts", bins=2048, lo=0.0, hi=1.0, counts=counts,
             searches=[S(), S(bits=6), S("percentile", percentile=99.9), S("mse", stride=2),
                       S("percentile", percentile=100.0)]))

    add(Case("trt_hand_tiny", "B=8, bits=2 (L=2), start_bin=4: the hand-computed case of test_klcal_ref.py",
             range_kind="counts", bins=8, lo=0.0, hi=8.0, counts=[2, 4, 2, 1, 0, 1, 0, 0],
             searches=[S(bits=2, start_bin=4), S(bits=2, start_bin=4, zero_bin="keep"),
                       S("mse", bits=2, start_bin=2), S("percentile", percentile=50.0)]))

    add(Case("trt_tie_units", "unit counts in bins 0..5: KL exactly 0 for every i >= 6, last argmin picks i = B",
             range_kind="counts", bins=16, lo=0.0, hi=16.0, counts=[1] * 6 + [0] * 10,
             searches=[S(bits=2, start_bin=4, tie=True), S(bits=2, start_bin=4, zero_bin="keep", tie=True),
                       S(bits=3, start_bin=2, stride=3, tie=True)]))

    rng = np.random.default_rng(606)
    counts = rng.integers(1, 50, 64).astype(np.uint64)
    counts[rng.random(64) < 0.4] = 0
    counts[60:] = [0, 7, 0, 12]
    add(Case("trt_inf_candidates", "empty bins with tail mass behind them: +inf candidates in the curve",
             range_kind="counts", bins=64, lo=0.0, hi=2.0, counts=counts,
             searches=[S(bits=3, start_bin=8), S(bits=2, start_bin=5, stride=2), S("mse", start_bin=8, bits=3)]))

    add(Case("trt_all_inf", "all mass in the last bin, i = B not a candidate: every KL +inf, degenerate",
             range_kind="counts", bins=16, lo=0.0, hi=1.0, counts=[0] * 15 + [5],
             searches=[S(bits=2, start_bin=4, stride=5), S(bits=2, start_bin=4),
                       S("percentile", percentile=10.0)]))

    rng = np.random.default_rng(707)
    x = rng.standard_normal(1000).astype(np.float32)
    add(Case("trt_start_equals_b", "start_bin = B (one tensorrt candidate, i = B) and start_bin = B-1 for mse",
             bins=128, two_pass=True, batches=[f32b(x)],
             searches=[S(start_bin=128), S("mse", start_bin=127), S(start_bin=120, stride=8)]))

    # --- degenerate ---------------------------------------------------------------------------
    z = np.zeros(64, dtype=np.float32)
    z[::3] = -0.0
    add(Case("all_zeros_f32", "all zeros (some -0.0): two-pass range falls back to [0, 2^-64)",
             bins=2048, two_pass=True, batches=[f32b(z)],
             searches=[S(), S(zero_bin="keep"), S("max"), S("percentile"), S("mse")]))
    add(Case("all_zeros_streaming", "all zeros streaming: e stays -64, everything in bin 0",
             range_kind="streaming", bins=1024, batches=[f32b(z[:10]), f32b(z)],
             searches=[S(), S("max"), S("mse")]))
    add(Case("nan_inf_only", "only NaN and Inf (f16): nothing binned, T = 0, degenerate",
             dtype="f16", bins=16, lo=0.0, hi=1.0, batches=[u16(0x7e00, 0x7c00, 0xfc00, 0xfe01, 0x7d00)],
             searches=[S(bits=2, start_bin=4), S("max"), S("percentile"), S("mse", start_bin=4)]))
    add(Case("empty_two_pass", "no batches at all: range [0, 2^-64), empty histogram",
             bins=256, two_pass=True, batches=[],
             searches=[S(start_bin=128), S("max"), S("percentile", percentile=0.0)]))
    add(Case("single_value", "a single value 3.5, two-pass: lands in the last bin by clamping",
             bins=64, two_pass=True, batches=[f32b([3.5])],
             searches=[S(start_bin=8, bits=3), S(start_bin=8, bits=3, zero_bin="keep"), S("max"),
                       S("percentile"), S("mse", start_bin=8)]))

    # --- binning edges ------------------------------------------------------------------------
    ks = np.arange(0, 11, dtype=np.float32)
    below = np.nextafter(ks, np.float32(-1))
    above = np.nextafter(ks, np.float32(100))
    vals = np.concatenate([ks, below, above, -ks, [-0.0, 1e30, -1e30, 3.4028235e38]]).astype(np.float32)
    add(Case("edges_f32_pow2", "fixed [0, 8), B = 8: values exactly on bin edges and one ulp either side",
             bins=8, lo=0.0, hi=8.0, batches=[f32b(vals)], searches=[S("max")]))
    ks = (np.arange(0, 11, dtype=np.float32) * np.float32(0.3)).astype(np.float32)
    vals = np.concatenate([ks, np.nextafter(ks, np.float32(-1)), np.nextafter(ks, np.float32(9)),
                           np.float32(np.arange(0, 31)) / np.float32(10)]).astype(np.float32)
    add(Case("edges_f32_nonpow2", "fixed [0, 3), B = 10 (scale fp32(10/3)): near-edge values k*0.3 +- 1 ulp",
             bins=10, lo=0.0, hi=3.0, batches=[f32b(vals)], searches=[S("max")]))
    w = np.float32(4.0) / np.float32(7)
    edges = (np.float32(-1.5) + np.arange(8, dtype=np.float32) * w).astype(np.float32)
    vals = np.concatenate([edges, np.nextafter(edges, np.float32(-9)), np.nextafter(edges, np.float32(9)),
                           [-1.5, 2.5, -100.0, 100.0, 0.0, -0.0, -3.4e38, 3.4e38]]).astype(np.float32)
    add(Case("edges_signed", "signed [-1.5, 2.5), B = 7: edges, clamping on both sides; mxnet rejects lo != -hi",
             layout="signed", bins=7, lo=-1.5, hi=2.5, batches=[f32b(vals)],
             searches=[S("max"), S(rules="mxnet", bits=2, error="bins_not_odd")]))

    rng = np.random.default_rng(808)
    x = f32b(rng.standard_normal(1500).astype(np.float32)).copy()
    x[::97] = 0x7fc00000
    x[5::131] = 0xffc00001
    x[7::211] = 0x7f800001  # signalling NaN
    x[11::173] = 0x7f800000
    x[13::149] = 0xff800000
    add(Case("nan_inf_mixed_f32", "N(0,1) with NaNs (quiet, negative, signalling) and +-Inf mixed in, two-pass",
             bins=512, two_pass=True, batches=[x[:700], x[700:]],
             searches=[S(start_bin=64), S("max"), S("percentile", percentile=99.0), S("mse", start_bin=64)]))

    # --- fp16 / bf16 --------------------------------------------------------------------------
    rng = np.random.default_rng(909)
    ext16 = u16(0x7bff, 0xfbff, 0x0001, 0x8001, 0x03ff, 0x0400, 0x8000, 0x0000, 0x7c00, 0xfc00, 0x7e00,
                0x3c00, 0x3c01, 0x7bfe)
    body = f16b(rng.standard_normal(1000) * 1000.0)
    add(Case("f16_extremes_streaming", "fp16 65504, subnormals, -0, Inf, NaN with N(0,1000) data, streaming",
             dtype="f16", range_kind="streaming", bins=1024, batches=[body[:500], ext16, body[500:]],
             searches=[S(), S("max"), S("percentile", percentile=99.0)]))
    add(Case("f16_extremes_fixed", "fp16 extremes in a fixed [0, 65504) range: 65504 lands in the last bin",
             dtype="f16", bins=2048, lo=0.0, hi=65504.0, batches=[ext16, body],
             searches=[S(), S("max")]))
    x = f16b(rng.standard_normal(3000))
    add(Case("f16_normal_twopass", "3000 fp16 N(0,1) values, two-pass", dtype="f16", bins=2048, two_pass=True,
             batches=[x], searches=[S(), S("mse"), S("percentile", percentile=99.9)]))
    x = bf16b(rng.laplace(0, 0.02, 3000).astype(np.float32))
    add(Case("bf16_laplace_twopass", "3000 bf16 Laplace(0.02) values, two-pass", dtype="bf16", bins=2048,
             two_pass=True, batches=[x[:1000], x[1000:]],
             searches=[S(), S(unsigned=1), S("percentile", percentile=99.9), S("max"), S("mse")]))
    extb = u16(0x7f7f, 0xff7f, 0x0001, 0x8001, 0x0080, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x3f80, 0x3f81)
    add(Case("bf16_extremes_streaming", "bf16 max (>= 2^127: e clamps at 127, last bin), subnormals, Inf, NaN",
             dtype="bf16", range_kind="streaming", bins=256,
             batches=[bf16b(rng.standard_normal(300).astype(np.float32)), extb],
             searches=[S("max"), S(start_bin=16, bits=4), S("percentile", percentile=50.0)]))
    add(Case("f32_max_streaming", "f32 max and 2^127 with small values: e = 127, clamped into the last bin",
             range_kind="streaming", bins=64,
             batches=[f32b([1.0, 2.0, 0.5]), u32(0x7f7fffff, 0x7f000000, 0xff000000, 0x7effffff, 0x00000001)],
             searches=[S("max"), S(start_bin=8, bits=3)]))

    # --- streaming -----------------------------------------------------------------------------
    rng = np.random.default_rng(1010)
    batches = [f32b(np.zeros(20)), f32b(np.full(5, 2.0 ** -70)), f32b(rng.standard_normal(200) * 1e-3),
               f32b([]), f32b(rng.standard_normal(300)), f32b(rng.standard_normal(50) * 300.0),
               f32b(rng.standard_normal(300) * 0.5), f32b([2.0 ** 12, 4096.0 - 0.5])]
    add(Case("stream_f32_doublings", "streaming, 8 batches (one empty, one below 2^-64): many doublings",
             range_kind="streaming", bins=512, batches=batches,
             searches=[S(start_bin=64), S("mse", start_bin=64), S("percentile", percentile=99.0), S("max")]))
    batches = [f16b(rng.standard_normal(400) * s) for s in (0.01, 1.0, 40.0)]
    add(Case("stream_f16", "fp16 streaming, three batches of growing scale", dtype="f16",
             range_kind="streaming", bins=2048, batches=batches, searches=[S(), S("max")]))
    batches = [bf16b(rng.standard_normal(500).astype(np.float32) * s) for s in (3.0, 0.1, 1e5)]
    add(Case("stream_bf16", "bf16 streaming, the largest batch in the middle of order", dtype="bf16",
             range_kind="streaming", bins=1024, batches=[batches[0], batches[2], batches[1]],
             searches=[S(start_bin=128), S("percentile", percentile=99.0)]))

    # --- mxnet / signed -----------------------------------------------------------------------
    rng = np.random.default_rng(1111)
    x = rng.standard_normal(4000).astype(np.float32)
    add(Case("mxnet_f32_twopass", "signed two-pass [-max_abs, max_abs), B = 8001, 4000 N(0,1) values",
             layout="signed", bins=8001, two_pass=True, batches=[f32b(x)],
             searches=[S(rules="mxnet"), S("max")]))
    rng = np.random.default_rng(1212)
    centres = (np.arange(8001) + 0.5) * (10.0 / 8001) - 5.0
    counts = poisson_counts(rng, np.exp(-0.5 * (centres / 0.8) ** 2) + 0.3 * np.exp(-np.abs(centres - 1.0)),
                            10_000_000)
    add(Case("mxnet_counts_dense", "dense asymmetric signed counts (1e7 samples) over [-5, 5), B = 8001",
             layout="signed", range_kind="counts", bins=8001, lo=-5.0, hi=5.0, counts=counts,
             searches=[S(rules="mxnet"), S(rules="mxnet", bits=7)]))
    rng = np.random.default_rng(1313)
    x = rng.standard_t(3, 2000).astype(np.float32)
    add(Case("mxnet_small_bins", "signed fixed [-2, 2), B = 101, Student-t data: bits 4, 2 and 6",
             layout="signed", bins=101, lo=-2.0, hi=2.0, batches=[f32b(x)],
             searches=[S(rules="mxnet", bits=4), S(rules="mxnet", bits=2), S(rules="mxnet", bits=6),
                       S("max")]))
    add(Case("mxnet_hand_tiny", "B = 7, bits = 2 (L = 3): the hand-computed case of test_klcal_ref.py",
             layout="signed", range_kind="counts", bins=7, lo=-3.5, hi=3.5, counts=[1, 0, 2, 3, 1, 0, 1],
             searches=[S(rules="mxnet", bits=2)]))
    add(Case("mxnet_tie_units", "unit counts in bins 8..12 of 21: KL exactly 0 from i = 3 on, first argmin",
             layout="signed", range_kind="counts", bins=21, lo=-10.5, hi=10.5,
             counts=[0] * 8 + [1] * 5 + [0] * 8,
             searches=[S(rules="mxnet", bits=2, tie=True), S(rules="mxnet", bits=3, tie=True)]))
    add(Case("mxnet_all_zero", "signed all-zero data, two-pass [-2^-64, 2^-64), B = 255: degenerate",
             layout="signed", bins=255, two_pass=True, batches=[f32b([0.0, -0.0, 0.0])],
             searches=[S(rules="mxnet"), S("max")]))
    add(Case("mxnet_all_inf", "signed mass only in bin 0 (never reaches Q): every candidate +inf, first chosen",
             layout="signed", range_kind="counts", bins=31, lo=-1.0, hi=1.0, counts=[9] + [0] * 30,
             searches=[S(rules="mxnet", bits=3)]))
    rng = np.random.default_rng(1414)
    x = f16b(rng.standard_normal(2000) * 3.0)
    add(Case("mxnet_f16_twopass", "fp16 signed two-pass, B = 1001", dtype="f16", layout="signed", bins=1001,
             two_pass=True, batches=[x], searches=[S(rules="mxnet"), S(rules="mxnet", bits=5)]))
    x = bf16b((rng.standard_normal(2000) * 0.05 + 0.01).astype(np.float32))
    add(Case("mxnet_bf16_fixed", "bf16 signed fixed [-0.25, 0.25), B = 2001 (tails clamp)", dtype="bf16",
             layout="signed", bins=2001, lo=-0.25, hi=0.25, batches=[x], searches=[S(rules="mxnet")]))

    # --- percentile / mse ---------------------------------------------------------------------
    add(Case("pct_boundaries", "percentile exactly on cdf steps (T = 4): >= picks the step",
             range_kind="counts", bins=8, lo=0.0, hi=1.0, counts=[1, 1, 1, 1, 0, 0, 0, 0],
             searches=[S("percentile", percentile=50.0), S("percentile", percentile=0.0),
                       S("percentile", percentile=100.0), S("percentile", percentile=75.0),
                       S("percentile", percentile=62.5), S("percentile"),
                       S("percentile", percentile=25.0, bits=2, unsigned=1)]))
    # Exact percentile (numerics.md 4): 100e9 * S(k+1) >= P * T in integers, P = llround(p * 1e9).
    # S = 9, 100, 900, 999, then 1000 at bin 12; fp64 (S / T >= p / 100) would miss 0.9 and 99.9.
    add(Case("pct_exact_decimal", "999 of 1000 below bin 12: p = 99.9 and 0.9 reach their prefix exactly",
             range_kind="counts", bins=16, lo=0.0, hi=16.0, counts=[9, 91, 800, 99] + [0] * 8 + [1, 0, 0, 0],
             searches=[S("percentile", percentile=99.9), S("percentile", percentile=0.9),
                       S("percentile", percentile=10.0), S("percentile", percentile=90.0),
                       S("percentile", percentile=99.90000001), S("percentile", percentile=100.0),
                       S("percentile", percentile=0.0)]))
    # T = 1e11, so bin k qualifies when S(k+1) >= P. P = 3 for p = 2.5e-9 (p * 1e9 is exactly
    # 2.5: halfway rounds away from zero; to even it would be 2 and pick bin 0). S(3) = 1e11 - 2
    # separates the nine-digit percentiles 99.999999998 (bin 2) and 99.999999999 (bin 3).
    add(Case("pct_exact_units", "T = 1e11: halfway P (p = 2.5e-9) and p with 9 fractional digits",
             range_kind="counts", bins=4, lo=0.0, hi=4.0, counts=[2, 1, 99_999_999_995, 2],
             searches=[S("percentile", percentile=2.5e-9), S("percentile", percentile=99.999999999),
                       S("percentile", percentile=99.999999998), S("percentile", percentile=100.0)]))
    # T = 2^60: a prefix of 2^60 - 1 converts to 2^60 in fp64 but does not reach p = 100.
    add(Case("pct_exact_big", "T = 2^60, 2^60 - 1 in bin 0: p = 100 needs the last count (bin 2)",
             range_kind="counts", bins=4, lo=0.0, hi=1.0, counts=[2 ** 60 - 1, 0, 1, 0],
             searches=[S("percentile", percentile=100.0), S("percentile", percentile=99.999999999)]))
    rng = np.random.default_rng(1515)
    centres = (np.arange(300) + 0.5) / 300
    counts = poisson_counts(rng, np.exp(-4.0 * centres), 1_000_000)
    add(Case("mse_counts", "mse on dense counts, B = 300: bits 4 unsigned, stride 3, start 10",
             range_kind="counts", bins=300, lo=0.0, hi=3.0, counts=counts,
             searches=[S("mse", bits=4, unsigned=1, stride=3, start_bin=10), S("mse", start_bin=1, bits=3),
                       S("mse", start_bin=150, bits=8)]))

    # --- histogram errors ---------------------------------------------------------------------
    one = [f32b([0.5, 1.0])]
    add(Case("err_too_few_bins", "B = 1", bins=1, lo=0.0, hi=1.0, batches=one, hist_error="too_few_bins"))
    add(Case("err_too_many_bins", "B = 2^24 + 1", bins=(1 << 24) + 1, lo=0.0, hi=1.0, batches=one,
             hist_error="too_many_bins"))
    add(Case("err_range_empty", "hi = lo", bins=16, lo=0.0, hi=0.0, batches=one, hist_error="invalid_range"))
    add(Case("err_range_inverted", "signed hi < lo", layout="signed", bins=16, lo=1.0, hi=-1.0, batches=one,
             hist_error="invalid_range"))
    add(Case("err_range_inf", "hi = +inf", bins=16, lo=0.0, hi=np.float32(np.inf), batches=one,
             hist_error="invalid_range"))
    add(Case("err_range_nan", "signed lo = NaN", layout="signed", bins=15, lo=np.float32(np.nan), hi=1.0,
             batches=one, hist_error="invalid_range"))
    add(Case("err_range_abs_lo", "abs layout with lo = 1", bins=16, lo=1.0, hi=2.0, batches=one,
             hist_error="invalid_range"))
    add(Case("err_range_overflow", "signed [-3e38, 3e38): hi - lo overflows fp32", layout="signed", bins=15,
             lo=-3e38, hi=3e38, batches=one, hist_error="invalid_range"))
    add(Case("err_streaming_not_pow2", "streaming with B = 1000", range_kind="streaming", bins=1000,
             hi=P2_M64, batches=one, hist_error="bins_not_power_of_two"))

    # --- search errors ------------------------------------------------------------------------
    add(Case("err_search_abs", "every search error on a valid 8-bin abs histogram", range_kind="counts",
             bins=8, lo=0.0, hi=1.0, counts=[3, 1, 4, 1, 5, 9, 2, 6],
             searches=[S(start_bin=9, error="start_bin_out_of_range"),
                       S(start_bin=0, error="start_bin_out_of_range"),
                       S(start_bin=2, stride=0, error="invalid_stride"),
                       S(start_bin=2, bits=1, error="invalid_bits"),
                       S(start_bin=2, bits=17, error="invalid_bits"),
                       S("mse", start_bin=8, error="start_bin_out_of_range"),
                       S("mse", start_bin=2, stride=0, error="invalid_stride"),
                       S("mse", start_bin=2, bits=17, error="invalid_bits"),
                       S("percentile", percentile=100.5, error="invalid_percentile"),
                       S("percentile", percentile=-0.5, error="invalid_percentile"),
                       S("percentile", percentile=float("nan"), error="invalid_percentile"),
                       S("percentile", percentile=float("inf"), error="invalid_percentile"),
                       S("max", bits=1, error="invalid_bits"),
                       S(start_bin=8, bits=2),
                       S("mse", start_bin=7, bits=2)]))
    add(Case("err_search_signed", "search errors on a valid signed histogram (B = 9, [-1, 1))",
             layout="signed", range_kind="counts", bins=9, lo=-1.0, hi=1.0, counts=[1, 2, 3, 4, 5, 4, 3, 2, 1],
             searches=[S(error="layout_mismatch", start_bin=2),
                       S("percentile", error="layout_mismatch"),
                       S("mse", start_bin=2, error="layout_mismatch"),
                       S(rules="mxnet", bits=2, unsigned=1, error="invalid_option"),
                       S(rules="mxnet", bits=4, error="start_bin_out_of_range"),
                       S(rules="mxnet", bits=1, error="invalid_bits"),
                       S(rules="mxnet", bits=3)]))
    add(Case("err_mxnet_on_abs", "mxnet on an abs histogram (odd B = 255, so only the layout is wrong)",
             range_kind="counts", bins=255, lo=0.0, hi=1.0, counts=[1] * 255,
             searches=[S(rules="mxnet", error="layout_mismatch"), S(start_bin=250)]))
    add(Case("err_mxnet_even_bins", "mxnet on a signed histogram with even B", layout="signed",
             range_kind="counts", bins=8, lo=-1.0, hi=1.0, counts=[1, 2, 3, 4, 4, 3, 2, 1],
             searches=[S(rules="mxnet", bits=2, error="bins_not_odd")]))
    return cs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default tests/data)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    names = set()
    for case in cases():
        assert case.name not in names, case.name
        names.add(case.name)
        text = render(case)
        with open(os.path.join(args.out, case.name + ".golden"), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    print(f"wrote {len(names)} golden files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
