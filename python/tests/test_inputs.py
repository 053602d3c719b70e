"""Calibrator.add inputs: dtypes, zero-copy, strides, DLPack producers, devices, bad inputs."""

import gc
import threading

import ml_dtypes
import numpy as np
import pytest

import klcal
from conftest import optional_module

DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def data(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(2)
    x[::97] = 0.0
    x[5] = -0.0
    return x


def counts_of(x, widened=None, **kw):
    """Counts of a fixed-range calibrator after add(x)."""
    c = klcal.Calibrator(bins=kw.pop("bins", 512), range=kw.pop("range", (-8.0, 8.0)),
                         layout=kw.pop("layout", "signed"), **kw)
    c.add(x)
    return c


@pytest.mark.parametrize("name", list(DTYPES))
def test_half_types_equal_their_fp32_widening(name):
    x = data().astype(DTYPES[name])
    wide = x.astype(np.float32)  # exact for f16 and bf16
    a, b = counts_of(x), counts_of(wide)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.stats.max_abs == b.stats.max_abs and a.stats.min == b.stats.min


@pytest.mark.parametrize("name", list(DTYPES))
def test_zero_copy_contiguous(name):
    x = data().astype(DTYPES[name])
    c = klcal.Calibrator(range="streaming")
    c.add(x)
    assert c._last_input() == (x.ctypes.data, False)
    x2 = x.reshape(50, 100)
    c.add(x2)
    assert c._last_input() == (x2.ctypes.data, False)


def test_zero_copy_dense_permutations():
    """Transposed, Fortran-order and reversed arrays fill one dense block: read in place."""
    base = data(6000).reshape(10, 20, 30)
    want = counts_of(base).counts
    for view in (base.T, base.transpose(1, 0, 2), np.asfortranarray(base), base[::-1, :, ::-1]):
        c = counts_of(view)
        ptr, copied = c._last_input()
        assert not copied
        lo = min(view.ctypes.data, base.ctypes.data) if view.base is not None else view.ctypes.data
        assert ptr == (base.ctypes.data if view.base is base else lo)
        np.testing.assert_array_equal(c.counts, want)


def test_strided_input_is_copied_and_correct():
    base = data(6000).reshape(60, 100)
    view = base[::3, 1::2]
    c = counts_of(view)
    ptr, copied = c._last_input()
    assert copied and ptr != view.ctypes.data
    np.testing.assert_array_equal(c.counts, counts_of(np.ascontiguousarray(view)).counts)


def test_overlapping_and_bf16_strided_views():
    """Broadcast views repeat elements (stride 0): every logical element is counted, through a
    copy. A strided bf16 NumPy view is gathered like any other."""
    x = data(1000)
    b = np.broadcast_to(x, (3, x.size))
    c = counts_of(b)
    assert c._last_input()[1] is True
    np.testing.assert_array_equal(c.counts, 3 * counts_of(x).counts)
    h = data(2000).astype(ml_dtypes.bfloat16)
    c = counts_of(h[::2])
    assert c._last_input()[1] is True
    np.testing.assert_array_equal(c.counts, counts_of(h[::2].astype(np.float32)).counts)


def test_zero_d_and_empty():
    c = klcal.Calibrator(range="streaming")
    c.add(np.float32(1.5) * np.ones((), np.float32))  # 0-d: one value
    assert c.stats.finite_count == 1 and c.counts.sum() == 1
    for empty in (np.zeros(0, np.float32), np.zeros((3, 0), np.float16), np.zeros((0,), ml_dtypes.bfloat16)):
        c.add(empty)
    assert c.stats.finite_count == 1 and c.counts.sum() == 1


def test_read_only_input():
    x = data()
    x.setflags(write=False)
    c = klcal.Calibrator(range="streaming")
    c.add(x)
    assert c._last_input() == (x.ctypes.data, False)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(4, np.int32),
        np.zeros(4, np.uint8),
        np.zeros(4, np.float64),
        np.zeros(4, np.bool_),
        np.zeros(4, np.complex64),
        np.zeros(4, ml_dtypes.float8_e4m3fn),
    ],
    ids=lambda a: str(a.dtype),
)
def test_unsupported_dtypes(bad):
    c = klcal.Calibrator(range="streaming")
    with pytest.raises(klcal.DtypeError) as e:
        c.add(bad)
    assert e.value.status == klcal.Errc.invalid_dtype and isinstance(e.value, TypeError)
    assert "float32, float16 and bfloat16" in str(e.value)
    assert c.counts.sum() == 0 and c.stats.finite_count == 0


@pytest.mark.parametrize("bad", [None, 3.0, "abc", [1.0, 2.0], object()], ids=repr)
def test_not_a_tensor(bad):
    with pytest.raises(klcal.DtypeError, match="cannot read"):
        klcal.Calibrator(range="streaming").add(bad)


def test_tensor_released_while_in_use():
    """The input stays alive while another thread bins it, even when its last Python
    reference goes away meanwhile."""
    c = klcal.Calibrator(range=(0.0, 16.0), threads=1)
    x = np.abs(data(1 << 22))
    want = x.size
    t = threading.Thread(target=c.add, args=(x,))
    t.start()
    del x
    gc.collect()
    t.join()
    assert c.counts.sum() == want


def test_inputs_are_released():
    """No reference to the producer is kept after add() returns, also when it raised."""
    import sys

    c = klcal.Calibrator(range="streaming")
    x, bad = data(), np.zeros(8, np.int32)
    before = (sys.getrefcount(x), sys.getrefcount(bad))
    for _ in range(100):
        c.add(x)
        c.add(x[::2])
        with pytest.raises(klcal.DtypeError):
            c.add(bad)
    klcal.add_many([c, c], [x, x])
    assert (sys.getrefcount(x), sys.getrefcount(bad)) == before


def test_used_dlpack_capsule():
    x = data()
    cap = x.__dlpack__()
    c = klcal.Calibrator(range="streaming")
    c.add(cap)
    assert c.counts.sum() == x.size
    with pytest.raises(klcal.DtypeError, match="cannot read"):
        c.add(cap)  # a capsule is consumed once


# ---- DLPack producers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])
def test_torch_cpu_tensors(name):
    torch = optional_module("torch")
    x = data()
    t = torch.from_numpy(x).to(getattr(torch, name))
    c = klcal.Calibrator(bins=512, range=(-8.0, 8.0), layout="signed")
    c.add(t)
    assert c._last_input() == (t.data_ptr(), False)
    wide = t.float().numpy()
    np.testing.assert_array_equal(c.counts, counts_of(wide).counts)
    # Non-contiguous torch views: permuted (zero-copy) and strided (copied).
    m = t.reshape(50, 100)
    c.add(m.t())
    assert c._last_input() == (m.data_ptr(), False)
    c.add(m[:, ::2])
    assert c._last_input()[1] is True


def test_torch_bad_inputs():
    torch = optional_module("torch")
    c = klcal.Calibrator(range="streaming")
    with pytest.raises(klcal.DtypeError, match="int64"):
        c.add(torch.arange(10))
    with pytest.raises(klcal.DtypeError):
        c.add(torch.zeros(3, dtype=torch.float64))
    if torch.cuda.is_available():
        with pytest.raises(klcal.DeviceError, match="calibrator on cpu"):
            c.add(torch.zeros(3, device="cuda"))
    # Tensors that require grad are read as they are (no autograd graph is recorded).
    c.add(torch.ones(4, requires_grad=True))
    assert c.counts.sum() == 4


def test_jax_arrays():
    jnp = optional_module("jax.numpy")
    x = data()
    c = klcal.Calibrator(bins=512, range=(-8.0, 8.0), layout="signed")
    c.add(jnp.asarray(x))
    c.add(jnp.asarray(x, dtype=jnp.bfloat16))
    want = counts_of(x).counts + counts_of(x.astype(ml_dtypes.bfloat16)).counts
    np.testing.assert_array_equal(c.counts, want)


# ---- CUDA (skipped without a device) -----------------------------------------------------------

cuda = pytest.mark.skipif(not klcal.cuda_available(), reason="no CUDA device (or built without CUDA)")


@cuda
@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("rng", ["two-pass", "streaming"])
def test_torch_cuda_equals_cpu(name, rng):
    torch = optional_module("torch")
    x = data(1 << 16)
    t = torch.from_numpy(x).to(getattr(torch, name))
    g = klcal.Calibrator(range=rng, device="cuda")
    h = klcal.Calibrator(range=rng)
    tc = t.cuda()
    if rng == "two-pass":
        g.add_range(tc)
        g.end_range_pass()
        h.add_range(t)
        h.end_range_pass()
    g.add(tc)
    h.add(t)
    assert g._last_input() == (tc.data_ptr(), False)
    np.testing.assert_array_equal(g.counts, h.counts)
    for m in ("entropy", "percentile", "mse", "max"):
        a, b = g.compute(m), h.compute(m)
        assert (a.amax, a.scale, a.index) == (b.amax, b.scale, b.index)


@cuda
def test_torch_cuda_side_stream_and_errors():
    torch = optional_module("torch")
    g = klcal.Calibrator(range="streaming", device="cuda:0")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        t = torch.randn(1 << 20, device="cuda")
        g.add(t)  # on s: the producer's current stream
    g.add(torch.randn(1000, device="cuda"), stream=torch.cuda.current_stream())
    assert g.counts.sum() == (1 << 20) + 1000
    with pytest.raises(klcal.DeviceError, match="calibrator on cuda:0"):
        g.add(np.zeros(3, np.float32))
    with pytest.raises(klcal.InvalidArgumentError, match="contiguous"):
        g.add(torch.randn(100, 100, device="cuda")[:, ::2])
    # Across devices: merge through the state.
    c = klcal.Calibrator(range="streaming")
    c.merge(g)
    np.testing.assert_array_equal(c.counts, g.counts)
    p = klcal.Calibrator.from_state(g.state(), device="cuda")
    np.testing.assert_array_equal(p.counts, g.counts)
