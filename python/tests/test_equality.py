"""Results of klcal.Calibrator against the C++ `klcal` tool (bit for bit) and against the
independent NumPy reference python_ref/klcal_ref.py (counts exact, searches within the
tolerance of docs/testing.md)."""

import json
import math
import pathlib
import subprocess

import ml_dtypes
import numpy as np
import pytest

import klcal

# (layout, range, rules, bins, methods the tool supports for that rule set)
SETUPS = [
    ("abs", "two-pass", "tensorrt", 2048, ["entropy", "percentile", "mse", "max"]),
    ("abs", "streaming", "tensorrt", 1024, ["entropy", "percentile", "mse", "max"]),
    ("signed", "two-pass", "mxnet", 1001, ["entropy", "max"]),
]
DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def batches(dtype, seed=11):
    """Two batches with a post-ReLU spike, a heavy tail, NaN/Inf and -0.0."""
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.standard_normal(30000), 0) * 1.5
    b = rng.standard_t(3, 20000)
    b[:7] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-30, -2.5]
    return [a.astype(np.float32).astype(DTYPES[dtype]), b.astype(np.float32).astype(DTYPES[dtype])]


def calibrate(xs, layout, rng, bins):
    c = klcal.Calibrator(bins=bins, range=rng, layout=layout)
    if rng == "two-pass":
        for x in xs:
            c.add_range(x)
        c.end_range_pass()
    for x in xs:
        c.add(x)
    return c


def run_cli(cli, tmp_path, xs, rules, bins, rng, methods):
    """Writes each batch as <dir i>/t.npy (float16 or float32; bf16 as its exact fp32 widening)
    and runs `klcal calibrate`; returns its JSON for tensor t and its histogram counts."""
    files = []
    for i, x in enumerate(xs):
        d = tmp_path / f"batch{i}"
        d.mkdir()
        arr = x.astype(np.float32) if x.dtype == ml_dtypes.bfloat16 else x
        np.save(d / "t.npy", arr)
        files.append(str(d / "t.npy"))
    out = tmp_path / "out.json"
    curves = tmp_path / "curves"
    cmd = [cli, "calibrate", "--device", "cpu", "--quiet", "--rules", rules, "--bins", str(bins),
           "--range", rng, "--method", ",".join(methods), "--json", str(out),
           "--curves", str(curves)] + files
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    doc = json.loads(out.read_text())
    hist = np.loadtxt(curves / "t.histogram.csv", delimiter=",", skiprows=1, dtype=np.float64)
    counts = np.array([int(v) for v in hist[:, 2]], dtype=np.uint64)
    return doc["tensors"]["t"], counts


def f32_hex(v):
    return format(int(np.float32(v).view(np.uint32)), "x")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_bit_equal_to_cli(klcal_cli, tmp_path, dtype, setup):
    layout, rng, rules, bins, methods = setup
    xs = batches(dtype)
    c = calibrate(xs, layout, rng, bins)
    tensor, counts = run_cli(klcal_cli, tmp_path, xs, rules, bins, rng, methods)
    np.testing.assert_array_equal(c.counts, counts)
    st = c.stats
    assert tensor["stats"]["finite"] == st.finite_count
    assert (tensor["stats"]["nan"], tensor["stats"]["inf"]) == (st.nan_count, st.inf_count)
    assert tensor["stats"]["max_abs"] == st.max_abs
    assert (tensor["histogram"]["lo"], tensor["histogram"]["hi"]) == c.range
    by_method = tensor["methods"]
    for m in methods:
        got = c.compute(m, rules=rules)
        want = by_method[m] if isinstance(by_method, dict) else next(x for x in by_method if x["method"] == m)
        assert got.amax == want["amax"], m
        assert f32_hex(got.scale) == want["scale_hex"] or (got.scale == 0 and want["scale_hex"] == "0"), m
        assert got.index == want["index"], m
        assert got.score == want["score"], m
        assert got.clipped_fraction == want["clipped_fraction"], m
        assert got.degenerate == want["degenerate"], m


def test_bf16_equals_its_widening():
    """bf16 input bins exactly like its fp32 widening (what the CLI comparison relies on)."""
    for layout, rng, rules, bins, methods in SETUPS:
        xs = batches("bf16")
        a = calibrate(xs, layout, rng, bins)
        b = calibrate([x.astype(np.float32) for x in xs], layout, rng, bins)
        np.testing.assert_array_equal(a.counts, b.counts)
        for m in methods:
            assert a.compute(m, rules=rules).amax == b.compute(m, rules=rules).amax


# ---- against the NumPy reference ----------------------------------------------------------------

TOL = lambda ref: 1e-9 + 1e-9 * abs(ref)  # docs/testing.md, fast paths vs the reference


def ref_histogram(ref, xs, dtype, layout, rng, bins):
    raw = [x.view(np.uint16) if dtype == "bf16" else x for x in xs]
    if rng == "streaming":
        return ref.streaming(raw, dtype, bins)
    return ref.two_pass(raw, dtype, bins, layout)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(
    "setup",
    [("abs", "two-pass", "tensorrt", 512, ["entropy", "percentile", "mse", "max"]),
     # fewer values than 4 per bin: the CPU backend's one-sub-histogram path
     ("abs", "two-pass", "tensorrt", 2048, ["entropy", "max"]),
     ("abs", "streaming", "tensorrt", 256, ["entropy", "percentile", "max"]),
     ("signed", "two-pass", "mxnet", 257, ["entropy", "max"])],
    ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}",
)
def test_against_numpy_reference(klcal_ref, dtype, setup):
    layout, rng, rules, bins, methods = setup
    xs = [x[:6000] for x in batches(dtype, seed=5)]
    c = calibrate(xs, layout, rng, bins)
    h = ref_histogram(klcal_ref, xs, dtype, layout, rng, bins)
    np.testing.assert_array_equal(c.counts, h.counts)
    st = c.stats
    assert (st.finite_count, st.nan_count, st.inf_count) == (h.finite_count, h.nan_count, h.inf_count)
    assert st.max_abs == float(h.max_abs) and c.range == (float(h.lo), float(h.hi))
    for m in methods:
        start = 64 if m in ("entropy", "mse") and rules == "tensorrt" else 128
        kw = dict(start_bin=start) if rules == "tensorrt" else {}
        got = c.compute(m, rules=rules, curve=m in ("entropy", "mse"), **kw)
        want = klcal_ref.search(h, method=m, rules=rules, **kw)
        assert got.degenerate == want["degenerate"], m
        if m in ("entropy", "mse"):
            curve = np.array(want["curve"])
            assert len(got.curve) == len(curve)
            finite = np.isfinite(curve)
            np.testing.assert_array_equal(np.isfinite(got.curve), finite)
            assert np.all(np.abs(got.curve[finite] - curve[finite]) <= 1e-9 + 1e-9 * np.abs(curve[finite]))
            # The chosen candidate is optimal under the reference curve within the tolerance.
            best = np.nanmin(np.where(finite, curve, np.inf))
            pick = int(np.argmin(np.abs(got.curve - got.score)))
            assert curve[pick] <= best + TOL(best), m
            if got.index == want["index"]:
                assert got.amax == want["amax"] and got.scale == float(want["scale"])
        else:
            assert (got.index, got.amax, got.scale) == (want["index"], want["amax"], float(want["scale"])), m
            assert math.isclose(got.clipped_fraction, want["clipped_fraction"], rel_tol=1e-12, abs_tol=1e-15)
