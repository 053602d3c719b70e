"""klcal.Calibrator: construction, range policies, compute, state, pickling, merge, errors."""

import pickle
import threading

import numpy as np
import pytest

import klcal


def gauss(n, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def two_pass(x, bins=2048, layout="abs", batches=1):
    c = klcal.Calibrator(bins=bins, range="two-pass", layout=layout)
    parts = np.array_split(x, batches)
    for p in parts:
        c.add_range(p)
    c.end_range_pass()
    for p in parts:
        c.add(p)
    return c


def test_defaults_and_properties():
    c = klcal.Calibrator()
    assert (c.bins, c.layout, c.policy, c.device, c.threads) == (2048, "abs", "two-pass", "cpu", 0)
    assert c.range_done is False
    assert c.counts.dtype == np.uint64 and c.counts.shape == (2048,) and c.counts.sum() == 0
    s = klcal.Calibrator(bins=1024, range="streaming")
    assert s.policy == "streaming" and s.range_done and s.range == (0.0, 2.0**-64)
    f = klcal.Calibrator(bins=10, range=(-2.0, 2.0), layout="signed", threads=1)
    assert f.policy == "fixed" and f.range == (-2.0, 2.0) and f.layout == "signed"
    assert "klcal.Calibrator(bins=10" in repr(f)


def test_two_pass_range_is_max_abs():
    x = gauss(10000)
    c = two_pass(x)
    assert c.range_done
    assert c.range == (0.0, float(np.abs(x).max()))
    assert c.counts.sum() == x.size
    st = c.stats
    assert st.finite_count == x.size and st.nan_count == 0 and st.inf_count == 0
    assert st.max_abs == float(np.abs(x).max()) and st.min == float(x.min()) and st.max == float(x.max())
    r = c.compute()
    assert isinstance(r, klcal.Result) and 0 < r.amax <= st.max_abs and not r.degenerate
    assert r.scale == float(np.float32(np.float32(r.amax) / np.float32(127)))


def test_batches_equal_one_batch_and_order_free():
    x = gauss(50000, seed=3)
    one = two_pass(x)
    many = two_pass(x, batches=7)
    rev = klcal.Calibrator(range="two-pass")
    for p in reversed(np.array_split(x, 5)):
        rev.add_range(p)
    rev.end_range_pass()
    for p in np.array_split(x, 3)[::-1]:
        rev.add(p)
    for c in (many, rev):
        np.testing.assert_array_equal(c.counts, one.counts)
        assert c.compute().amax == one.compute().amax


def test_compute_options_and_curve():
    c = two_pass(gauss(20000, seed=1))
    e = c.compute(curve=True)
    assert e.curve is not None and e.curve.dtype == np.float64 and len(e.curve) == 2048 - 128 + 1
    assert e.score == e.curve.min()
    assert c.compute().curve is None
    assert c.compute("max").amax == c.stats.max_abs
    p = c.compute("percentile", percentile=99.0)
    assert p.score == 0 and p.amax < c.stats.max_abs
    m = c.compute(method="mse", bits=6, start_bin=64, stride=2)
    assert m.index > 0
    assert c.compute(bits=4, unsigned=True).scale == pytest.approx(c.compute(bits=4, unsigned=True).amax / 15, rel=1e-6)
    assert c.compute(zero_bin="keep").amax > 0


def test_mxnet_needs_signed_odd():
    x = gauss(20000, seed=2)
    c = two_pass(x, bins=8001, layout="signed")
    assert c.range == (-float(np.abs(x).max()), float(np.abs(x).max()))
    r = c.compute(rules="mxnet")
    assert 0 < r.amax <= np.abs(x).max()
    with pytest.raises(klcal.InvalidArgumentError) as e:
        two_pass(x, bins=2048).compute(rules="mxnet")
    assert e.value.status in (klcal.Errc.layout_mismatch, klcal.Errc.bins_not_odd)


def test_streaming_grows_by_powers_of_two():
    c = klcal.Calibrator(bins=2048, range="streaming")
    c.add(np.array([0.3], np.float32))
    assert c.range == (0.0, 0.5)
    c.add(np.array([5.0], np.float32))
    assert c.range == (0.0, 8.0)
    assert c.counts.sum() == 2


def test_nan_inf_counted_not_binned():
    x = np.array([1.0, np.nan, np.inf, -np.inf, -0.5], np.float32)
    c = klcal.Calibrator(bins=16, range=(0.0, 2.0))
    c.add(x)
    st = c.stats
    assert (st.finite_count, st.nan_count, st.inf_count) == (2, 1, 2)
    assert c.counts.sum() == 2 and st.max_abs == 1.0 and st.min == -0.5


def test_state_roundtrip_and_pickle():
    c = two_pass(gauss(30000, seed=4))
    data = c.state()
    assert isinstance(data, bytes) and data[:8] == b"KLCALST\0"
    d = klcal.Calibrator.from_state(data)
    np.testing.assert_array_equal(d.counts, c.counts)
    assert d.policy == "two-pass" and d.range == c.range and d.compute().amax == c.compute().amax
    p = pickle.loads(pickle.dumps(c))
    np.testing.assert_array_equal(p.counts, c.counts)
    assert p.stats.max_abs == c.stats.max_abs and p.threads == c.threads
    # A pickled calibrator continues where it was: more data gives the same as on the original.
    more = gauss(100, seed=5) * np.float32(0.5)
    p.add(more)
    c.add(more)
    np.testing.assert_array_equal(p.counts, c.counts)


def test_save_load_states():
    a, b = two_pass(gauss(1000, seed=6)), klcal.Calibrator(range="streaming")
    b.add(gauss(500, seed=7))
    data = klcal.save_states([("conv1", a), ("fc.out", b)])
    got = klcal.load_states(data)
    assert [n for n, _ in got] == ["conv1", "fc.out"]
    np.testing.assert_array_equal(got[1][1].counts, b.counts)
    one = klcal.Calibrator.from_state(data, name="conv1")
    np.testing.assert_array_equal(one.counts, a.counts)
    with pytest.raises(klcal.InvalidArgumentError, match="2 tensors"):
        klcal.Calibrator.from_state(data)
    with pytest.raises(klcal.InvalidArgumentError, match="no tensor named"):
        klcal.Calibrator.from_state(data, name="nope")
    with pytest.raises(klcal.InvalidArgumentError):  # duplicate names
        klcal.save_states([("x", a), ("x", a)])


def test_corrupt_state_is_format_error():
    data = bytearray(two_pass(gauss(100)).state())
    data[-1] ^= 0xFF
    with pytest.raises(klcal.FormatError) as e:
        klcal.Calibrator.from_state(bytes(data))
    assert e.value.status == klcal.Errc.format_error and isinstance(e.value, ValueError)
    with pytest.raises(klcal.FormatError):
        klcal.Calibrator.from_state(b"")


def test_merge_equals_concatenation():
    x, y = gauss(4000, seed=8), gauss(3000, seed=9, scale=3.0)
    a, b = klcal.Calibrator(range="streaming"), klcal.Calibrator(range="streaming")
    a.add(x)
    b.add(y)
    a.merge(b)
    both = klcal.Calibrator(range="streaming")
    both.add(np.concatenate([x, y]))
    np.testing.assert_array_equal(a.counts, both.counts)
    assert a.range == both.range and a.stats.finite_count == 7000
    with pytest.raises(klcal.InvalidArgumentError, match="itself"):
        a.merge(a)
    with pytest.raises(klcal.InvalidArgumentError, match="different bin counts"):
        a.merge(klcal.Calibrator(bins=1024, range="streaming"))


def test_reset():
    c = two_pass(gauss(1000))
    c.reset()
    assert not c.range_done and c.counts.sum() == 0 and c.stats.finite_count == 0
    s = klcal.Calibrator(range="streaming")
    s.add(gauss(10))
    s.reset()
    assert s.range == (0.0, 2.0**-64) and s.counts.sum() == 0


@pytest.mark.parametrize(
    "kwargs, cls, status",
    [
        (dict(bins=1), klcal.InvalidArgumentError, klcal.Errc.too_few_bins),
        (dict(bins=2**24 + 1), klcal.InvalidArgumentError, klcal.Errc.too_many_bins),
        (dict(bins=1000, range="streaming"), klcal.InvalidArgumentError, klcal.Errc.bins_not_power_of_two),
        (dict(range=(1.0, 1.0)), klcal.InvalidArgumentError, klcal.Errc.invalid_range),
        (dict(range=(-1.0, 1.0)), klcal.InvalidArgumentError, klcal.Errc.invalid_range),  # abs needs lo 0
        (dict(range=(0.0, 0.1)), klcal.InvalidArgumentError, klcal.Errc.invalid_range),  # not fp32
        (dict(range=(0.0, float("inf"))), klcal.InvalidArgumentError, klcal.Errc.invalid_range),
        (dict(range="sometimes"), klcal.InvalidArgumentError, klcal.Errc.invalid_option),
        (dict(range=(1.0,)), klcal.InvalidArgumentError, klcal.Errc.invalid_option),
        (dict(layout="diagonal"), klcal.InvalidArgumentError, klcal.Errc.invalid_option),
        (dict(range="streaming", layout="signed"), klcal.InvalidArgumentError, klcal.Errc.layout_mismatch),
        (dict(device="tpu"), klcal.DeviceError, klcal.Errc.invalid_option),
        (dict(device="cuda:x"), klcal.DeviceError, klcal.Errc.invalid_option),
    ],
)
def test_bad_construction(kwargs, cls, status):
    with pytest.raises(cls) as e:
        klcal.Calibrator(**kwargs)
    assert e.value.status == status and e.value.cuda_error == 0
    assert isinstance(e.value, klcal.Error) and isinstance(e.value, ValueError)
    assert "klcal" in str(e.value)


def test_cuda_device_without_cuda():
    if klcal.cuda_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(klcal.DeviceError, match="cuda"):
        klcal.Calibrator(device="cuda")
    with pytest.raises(klcal.DeviceError):
        klcal.Calibrator(device="cuda:0")


@pytest.mark.parametrize(
    "kwargs, status",
    [
        (dict(method="kl"), klcal.Errc.invalid_option),
        (dict(rules="onnx"), klcal.Errc.invalid_option),
        (dict(zero_bin="drop"), klcal.Errc.invalid_option),
        (dict(bits=1), klcal.Errc.invalid_bits),
        (dict(bits=17), klcal.Errc.invalid_bits),
        (dict(method="percentile", percentile=101.0), klcal.Errc.invalid_percentile),
        (dict(method="percentile", percentile=float("nan")), klcal.Errc.invalid_percentile),
        (dict(start_bin=0), klcal.Errc.start_bin_out_of_range),
        (dict(start_bin=4096), klcal.Errc.start_bin_out_of_range),
        (dict(stride=0), klcal.Errc.invalid_stride),
    ],
)
def test_bad_compute_options(kwargs, status):
    c = two_pass(gauss(1000))
    with pytest.raises(klcal.InvalidArgumentError) as e:
        c.compute(**kwargs)
    assert e.value.status == status


def test_two_pass_protocol_errors_in_python_terms():
    c = klcal.Calibrator()
    with pytest.raises(klcal.InvalidArgumentError, match=r"add_range\(x\) for every batch") as e:
        c.add(gauss(10))
    assert str(e.value).startswith("klcal.Calibrator: ")
    with pytest.raises(klcal.InvalidArgumentError, match="before end_range_pass"):
        c.compute()
    c.end_range_pass()
    with pytest.raises(klcal.InvalidArgumentError, match="called twice"):
        c.end_range_pass()
    with pytest.raises(klcal.InvalidArgumentError, match="after end_range_pass"):
        c.add_range(gauss(10))
    with pytest.raises(klcal.InvalidArgumentError, match="needs two_pass"):
        klcal.Calibrator(range="streaming").add_range(gauss(10))


def test_degenerate_results():
    c = klcal.Calibrator(range="streaming")
    assert c.compute().degenerate and c.compute().scale == 0.0
    c.add(np.zeros(100, np.float32))
    assert c.compute().degenerate


def test_add_many():
    xs = [gauss(1000 + i, seed=i) for i in range(5)]
    cals = [klcal.Calibrator(range="two-pass") for _ in xs]
    klcal.add_many(cals, xs, range_pass=True)
    for c in cals:
        c.end_range_pass()
    klcal.add_many(cals, xs)
    for c, x in zip(cals, xs):
        np.testing.assert_array_equal(c.counts, two_pass(x).counts)
    with pytest.raises(klcal.InvalidArgumentError, match="5 calibrators but 4 tensors"):
        klcal.add_many(cals, xs[:4])
    # Every input is checked before any is binned: a bad last tensor leaves all counts alone.
    before = [c.counts.copy() for c in cals]
    with pytest.raises(klcal.DtypeError):
        klcal.add_many(cals, xs[:4] + [np.zeros(3, np.int64)])
    for c, b in zip(cals, before):
        np.testing.assert_array_equal(c.counts, b)
    # The same calibrator several times.
    s = klcal.Calibrator(range="streaming")
    klcal.add_many([s, s], [xs[0], xs[1]])
    assert s.counts.sum() == xs[0].size + xs[1].size


def test_threads_share_one_calibrator():
    """The GIL is released while binning: concurrent adds are serialised by the calibrator's
    lock and give the same counts as sequential ones."""
    xs = [gauss(200000, seed=i) for i in range(8)]
    shared = klcal.Calibrator(range=(0.0, 8.0), threads=1)
    threads = [threading.Thread(target=shared.add, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seq = klcal.Calibrator(range=(0.0, 8.0), threads=1)
    for x in xs:
        seq.add(x)
    np.testing.assert_array_equal(shared.counts, seq.counts)


def test_errors_hierarchy():
    assert issubclass(klcal.InvalidArgumentError, (klcal.Error, ValueError))
    assert issubclass(klcal.DeviceError, klcal.InvalidArgumentError)
    assert issubclass(klcal.DtypeError, TypeError) and issubclass(klcal.DtypeError, klcal.Error)
    assert issubclass(klcal.FileError, OSError) and issubclass(klcal.OutOfMemoryError, MemoryError)
    assert issubclass(klcal.CudaError, klcal.Error) and issubclass(klcal.FormatError, ValueError)
    assert klcal.Errc.invalid_range.value == 6


def test_build_info():
    assert isinstance(klcal.built_with_cuda, bool)
    assert isinstance(klcal.cuda_available(), bool)
    assert klcal.cuda_available() <= klcal.built_with_cuda
    assert klcal.__version__.count(".") == 2
