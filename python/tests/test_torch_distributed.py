"""klcal.torch.ModelCalibrator unchanged under torch.distributed (4 local gloo processes): a model
whose modules some ranks never reach, or reach first with other shapes, calibrated on random
shards (one rank without any batch) gives on every rank the calibrators, amaxes, cache and JSON
of one process over all the data, bit for bit, for every range policy and method; so does the
HistogramCalibrator drop-in once its calibrator is all-reduced."""

import os
import pickle
import tempfile

import numpy as np
import pytest
from conftest import free_port, init_gloo, optional_module

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn

    import klcal.distributed
    import klcal.torch
except ImportError:  # the tests skip (fail under CI) through optional_module
    torch = dist = mp = nn = None

import klcal

RANKS = 4
EMPTY_RANK = 2
ABS_METHODS = [dict(method="entropy"), dict(method="percentile", percentile=99.9),
               dict(method="mse"), dict(method="max")]
SIGNED_METHODS = [dict(method="entropy", rules="mxnet"), dict(method="max")]
CONFIGS = [  # (name, ModelCalibrator kwargs, methods)
    ("two_pass_abs", dict(bins=2048, range="two-pass"), ABS_METHODS),
    ("streaming_abs", dict(bins=1024, range="streaming"), ABS_METHODS),
    ("fixed_abs", dict(bins=2048, range=(0.0, 3.0)), ABS_METHODS),
    ("two_pass_signed", dict(bins=2047, range="two-pass", layout="signed"), SIGNED_METHODS),
    ("fixed_signed", dict(bins=2001, range=(-2.5, 2.5), layout="signed"), SIGNED_METHODS),
]


if nn is not None:
    class Net(nn.Module):
        """Modules whose use depends on the batch: ``odd`` runs only for odd batch sizes,
        ``big`` only for batches of 6 or more rows, ``never`` on no batch of any rank;
        ``shared`` runs twice per forward."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv1d(1, 2, 3, padding=1)
            self.fc1 = nn.Linear(16, 32)
            self.odd = nn.Linear(32, 32)
            self.big = nn.Linear(32, 32)
            self.never = nn.Linear(32, 32)
            self.shared = nn.Linear(32, 32)
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            h = torch.relu(self.conv(x.unsqueeze(1))).flatten(1)
            h = torch.relu(self.fc1(h))
            if x.shape[0] % 2:
                h = torch.relu(self.odd(h))
            if x.shape[0] >= 6:
                h = self.big(h)
            if x.shape[0] > 1000:
                h = self.never(h)
            h = self.shared(torch.relu(self.shared(h)))
            return self.head(h)


def _batches():
    g = np.random.default_rng(7)
    out = []
    for b in range(14):
        x = g.normal(size=(int(g.integers(1, 9)), 8)).astype(np.float32) * (0.25 + b % 5)
        if b == 3:
            x[0, :3] = [np.nan, np.inf, -np.inf]
        out.append(torch.from_numpy(x))
    return out


def _owners(n):
    """A random owner per batch, never EMPTY_RANK."""
    g = np.random.default_rng(11)
    others = [r for r in range(RANKS) if r != EMPTY_RANK]
    return [others[int(g.integers(0, len(others)))] for _ in range(n)]


def _run(cal, model, batches):
    with torch.no_grad():
        for _ in cal.passes():
            for x in batches:
                model(x)


def _summary(cal, methods):
    """Everything the calibrator gives, as bytes and text, for an exact comparison."""
    return {
        "names": list(cal.calibrators()),
        "states": {n: c.state() for n, c in cal.calibrators().items()},
        "results": [{n: (np.float64(r.amax).tobytes(), np.float32(r.scale).tobytes(), r.index,
                         r.degenerate) for n, r in cal.results(**m).items()} for m in methods],
        "cache": cal.cache_text(**methods[0]),
        "json": cal.json_text([m["method"] for m in methods],
                              **{k: v for m in methods for k, v in m.items() if k != "method"}),
    }


def _worker(rank, port, outdir):
    torch.set_num_threads(1)
    init_gloo(rank, RANKS, port)
    try:
        model = Net().eval()
        batches = _batches()
        mine = [x for x, o in zip(batches, _owners(len(batches))) if o == rank]
        out = {}
        for cname, kwargs, methods in CONFIGS:
            cal = klcal.torch.ModelCalibrator(model, threads=1, **kwargs)  # the user's code
            assert cal.is_distributed
            _run(cal, model, mine)
            out[cname] = _summary(cal, methods)
            path = os.path.join(outdir, f"{cname}.cache")
            cal.write_cache(path, **methods[0])  # every rank calls it; rank 0 writes
        # calibrate() with a loop over this rank's shard only
        out["calibrate"] = klcal.torch.calibrate(model, lambda: [model(x) for x in mine],
                                                 "entropy", bins=2048)
        # A second collect() after the all-reduce adds this rank's new data exactly once.
        cal = klcal.torch.ModelCalibrator(model, threads=1, bins=1024, range="streaming")
        with torch.no_grad():
            for half in (mine[: len(mine) // 2], mine[len(mine) // 2:]):
                with cal.collect():
                    for x in half:
                        model(x)
        out["two_collects"] = _summary(cal, ABS_METHODS)
        # The peers' drop-in is per process; all-reducing its calibrator makes it exact too.
        hist = klcal.torch.HistogramCalibrator(num_bins=1024)
        for x in mine:
            hist.collect(x)
        klcal.distributed.all_reduce({"x": hist.calibrator})
        out["histogram"] = [float(hist.compute_amax(**m)) for m in ABS_METHODS]
        with open(os.path.join(outdir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_model_calibrator_four_gloo_ranks_equal_one_process():
    optional_module("torch")
    assert not dist.is_initialized()
    model = Net().eval()
    batches = _batches()
    owners = _owners(len(batches))
    assert EMPTY_RANK not in owners and len(set(owners)) == RANKS - 1
    # the shards reach modules differently: some rank never runs `odd` or `big`
    reach = {r: {(x.shape[0] % 2 == 1, x.shape[0] >= 6) for x, o in zip(batches, owners) if o == r}
             for r in range(RANKS)}
    assert any(not any(odd for odd, _ in reach[r]) for r in range(RANKS))

    expected = {}
    for cname, kwargs, methods in CONFIGS:
        cal = klcal.torch.ModelCalibrator(model, threads=1, **kwargs)
        assert not cal.is_distributed
        _run(cal, model, batches)
        expected[cname] = _summary(cal, methods)
        assert "never" not in expected[cname]["names"]
        assert {"odd", "big", "shared"} <= set(expected[cname]["names"])
    expected["calibrate"] = klcal.torch.calibrate(model, lambda: [model(x) for x in batches],
                                                  "entropy", bins=2048)
    one = klcal.torch.ModelCalibrator(model, threads=1, bins=1024, range="streaming")
    _run(one, model, batches)
    expected["two_collects"] = _summary(one, ABS_METHODS)
    hist = klcal.torch.HistogramCalibrator(num_bins=1024)
    for x in batches:
        hist.collect(x)
    expected["histogram"] = [float(hist.compute_amax(**m)) for m in ABS_METHODS]

    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(free_port(), d), nprocs=RANKS, join=True)
        for rank in range(RANKS):
            with open(os.path.join(d, f"rank{rank}.pkl"), "rb") as f:
                got = pickle.load(f)
            for key, want in expected.items():
                if isinstance(want, dict) and "states" in want:
                    for field in want:
                        assert got[key][field] == want[field], f"rank {rank} {key}: {field}"
                else:
                    assert got[key] == want, f"rank {rank} {key}"
        for cname, _, _ in CONFIGS:  # only rank 0 wrote, the text of one process
            assert sorted(f for f in os.listdir(d) if f.startswith(cname)) == [f"{cname}.cache"]
            with open(os.path.join(d, f"{cname}.cache")) as f:
                assert f.read() == expected[cname]["cache"]


def test_group_without_init_is_a_clear_error():
    optional_module("torch")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    model = Net().eval()
    cal = klcal.torch.ModelCalibrator(model, range="streaming", distributed=True)
    with pytest.raises(RuntimeError, match="not initialized"):
        with torch.no_grad(), cal.collect():
            model(torch.ones(2, 8))
    with pytest.raises(TypeError, match="distributed"):
        klcal.torch.ModelCalibrator(model, distributed="yes")
