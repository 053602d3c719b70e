"""klcal.distributed over torch.distributed with 4 local gloo processes: random shardings reduce
to one process over all the data, bit for bit; mismatches fail on every rank."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, init_gloo, optional_module

try:
    import torch.distributed as dist
    import torch.multiprocessing as mp
except ImportError:  # the tests that need torch skip (fail under CI) through optional_module
    dist = mp = None

import klcal
import klcal.distributed

RANKS = 4
CONFIGS = [  # (name, Calibrator kwargs, compute kwargs)
    ("fixed_abs", dict(bins=2048, range=(0.0, 3.0)),
     [dict(method="entropy"), dict(method="percentile"), dict(method="mse"), dict(method="max")]),
    ("fixed_signed", dict(bins=8001, range=(-2.5, 2.5), layout="signed"),
     [dict(method="entropy", rules="mxnet")]),
    ("two_pass_abs", dict(bins=2048, range="two-pass"),
     [dict(method="entropy"), dict(method="percentile"), dict(method="mse"), dict(method="max")]),
    ("two_pass_signed", dict(bins=8001, range="two-pass", layout="signed"),
     [dict(method="entropy", rules="mxnet")]),
    ("streaming", dict(bins=2048, range="streaming"),
     [dict(method="entropy"), dict(method="percentile"), dict(method="mse"), dict(method="max")]),
]


def _data(seed):
    g = np.random.default_rng(seed)
    kinds = [
        g.normal(size=int(g.integers(1, 3000))).astype(np.float32) * 4,
        np.maximum(g.normal(size=int(g.integers(1, 3000))), 0).astype(np.float32) * 1e-3,
        np.ldexp(g.normal(size=int(g.integers(1, 3000))),
                 g.integers(-100, 100, size=1)[0]).astype(np.float32),
        np.zeros(int(g.integers(1, 100)), np.float32),
    ]
    kinds[0][:2] = [np.nan, -np.inf]
    return kinds


def _shards(n, seed):
    """Random batches of [0, n), each owned by a random rank (rank 2 never owns one)."""
    g = np.random.default_rng(seed)
    out, at = [], 0
    while at < n:
        k = int(g.integers(1, 700))
        owner = int(g.integers(0, RANKS))
        out.append((at, min(n, at + k), 3 if owner == 2 else owner))
        at += k
    return out


def _same_result(a, b):
    return (np.float64(a.amax).tobytes() == np.float64(b.amax).tobytes()
            and np.float32(a.scale).tobytes() == np.float32(b.scale).tobytes()
            and a.index == b.index)


def _worker(rank, port, errfile):
    init_gloo(rank, RANKS, port)
    failures = []
    try:
        for seed in (1,):
            tensors = _data(seed)
            for cname, kwargs, methods in CONFIGS:
                cals = {f"t{i}": klcal.Calibrator(threads=1, **kwargs) for i in range(len(tensors))}
                shards = {f"t{i}": _shards(len(x), seed * 100 + i) for i, x in enumerate(tensors)}
                two_pass = kwargs["range"] == "two-pass"

                def feed(range_pass):
                    for i, x in enumerate(tensors):
                        for b, e, owner in shards[f"t{i}"]:
                            if owner == rank:
                                c = cals[f"t{i}"]
                                (c.add_range if range_pass else c.add)(x[b:e])

                if two_pass:
                    feed(True)
                    klcal.distributed.end_range_pass(cals)
                feed(False)
                klcal.distributed.all_reduce(cals)
                for i, x in enumerate(tensors):
                    one = klcal.Calibrator(threads=1, **kwargs)
                    if two_pass:
                        one.add_range(x)
                        one.end_range_pass()
                    one.add(x)
                    got = cals[f"t{i}"]
                    where = f"{cname} seed {seed} t{i} rank {rank}"
                    if got.state() != one.state():
                        failures.append(f"{where}: state differs")
                    for m in methods:
                        if not _same_result(got.compute(**m), one.compute(**m)):
                            failures.append(f"{where} {m}: result differs")

        # A different name on rank 1: the same error on every rank, nothing changed.
        cals = [("a" if rank != 1 else "b", klcal.Calibrator(bins=256, range="streaming"))]
        before = cals[0][1].state()
        try:
            klcal.distributed.all_reduce(cals)
            failures.append(f"rank {rank}: no error for mismatched names")
        except klcal.InvalidArgumentError as e:
            if "the ranks hold different calibrator sets" not in str(e):
                failures.append(f"rank {rank}: unexpected message {e}")
        if cals[0][1].state() != before:
            failures.append(f"rank {rank}: a failed all_reduce changed the calibrator")
    finally:
        dist.destroy_process_group()
    if failures:
        with open(f"{errfile}.{rank}", "w") as f:
            f.write("\n".join(failures))


def test_four_gloo_ranks_equal_one_process():
    optional_module("torch")
    with tempfile.TemporaryDirectory() as d:
        errfile = os.path.join(d, "failures")
        mp.spawn(_worker, args=(free_port(), errfile), nprocs=RANKS, join=True)
        found = [open(os.path.join(d, f)).read() for f in sorted(os.listdir(d))]
        assert found == [], "\n".join(found)


def test_torchrun_example(tmp_path):
    optional_module("torch")
    example = Path(__file__).resolve().parents[1] / "examples" / "torchrun_calibrate.py"
    cache = tmp_path / "model.cache"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=4", str(example), str(cache)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all-reduced equals one process: yes" in out.stdout
    assert out.stdout.count("layer ") == 3  # printed by rank 0 only
    # written once, by rank 0: the header and one line per Linear layer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cache"]
    lines = cache.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2" and [x.split(":")[0] for x in lines[1:]] == [
        "0", "2", "4"]


def test_not_initialized_is_a_clear_error():
    optional_module("torch")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    with pytest.raises(RuntimeError, match="not initialized"):
        klcal.distributed.all_reduce({"a": klcal.Calibrator()})


def test_bad_items_are_type_errors():
    with pytest.raises(TypeError):
        klcal.distributed.all_reduce([("a", 3)])
