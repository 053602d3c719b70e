"""Exact all-reduce of klcal calibrators across torch.distributed ranks (docs/distributed.md).

After ``all_reduce(calibrators)`` every rank holds the calibrators of one process over the data of
all ranks, bit for bit (counts, statistics, range; so every method's amax and scale), whatever
the sharding. The protocol is the C++ one (``klcal::all_reduce``): an agreement on a digest of
the tensor list, one MAX and one SUM all-reduce for all the tensors together; a mismatch across
ranks raises the same ``klcal.InvalidArgumentError`` on every rank instead of hanging.

    import torch.distributed as dist, klcal, klcal.distributed
    dist.init_process_group("gloo")                 # or "nccl"
    cals = {"fc1": klcal.Calibrator(bins=2048, range="streaming")}
    cals["fc1"].add(my_shard)
    klcal.distributed.all_reduce(cals)              # now: one process over all shards

The words travel as int64 tensors: on the CPU with gloo (or any CPU backend), on the current
CUDA device with NCCL. GPU calibrators are reduced through a host copy of their state (the C++
``klcal::nccl`` keeps counts on the device).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from . import _klcal
from ._klcal import Calibrator

__all__ = ["all_reduce", "end_range_pass"]


def _items(calibrators) -> list:
    """(name, Calibrator) pairs: a mapping sorted by name (the same order on every rank), or a
    sequence of pairs in its own order."""
    if isinstance(calibrators, Mapping):
        items = sorted(calibrators.items())
    elif isinstance(calibrators, Iterable):
        items = [tuple(p) for p in calibrators]
    else:
        raise TypeError("klcal.distributed: calibrators must be a dict {name: Calibrator} or a "
                        "sequence of (name, Calibrator) pairs")
    for p in items:
        if len(p) != 2 or not isinstance(p[0], str) or not isinstance(p[1], Calibrator):
            raise TypeError("klcal.distributed: expected (name: str, Calibrator) pairs, got "
                            f"{p!r}")
    return items


def _reducers(group):
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("klcal.distributed: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")
    device = None
    if str(dist.get_backend(group)).lower() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())

    def make(op):
        def reduce(words: np.ndarray) -> None:
            # Every value put through MAX is below 2^63 and SUM is modulo 2^64, so int64 is exact.
            host = torch.from_numpy(words.view(np.int64))
            if device is None:
                dist.all_reduce(host, op=op, group=group)
            else:
                dev = host.to(device)
                dist.all_reduce(dev, op=op, group=group)
                host.copy_(dev.cpu())

        return reduce

    return make(dist.ReduceOp.MAX), make(dist.ReduceOp.SUM)


def all_reduce(calibrators, group=None) -> None:
    """All-reduces ``calibrators`` (a dict {name: Calibrator}, or (name, Calibrator) pairs) in
    place across the ranks of ``group`` (default: the world). Collective: every rank calls it
    with the same names, range policies, bins, layouts and fixed ranges; a rank with no data
    passes empty calibrators. Three all-reduces in all."""
    items = _items(calibrators)
    max_u64, sum_u64 = _reducers(group)
    _klcal._all_reduce(items, max_u64, sum_u64)


def _sum_ints(values, group=None) -> list[int]:
    """The element-wise sum of non-negative ``values`` over the ranks of ``group`` (one
    all-reduce, the same transport as the calibrators')."""
    words = np.array(values, dtype=np.uint64)
    if words.size:
        _reducers(group)[1](words)
    return [int(v) for v in words]


def end_range_pass(calibrators, group=None) -> None:
    """Ends the first pass of two-pass calibrators on every rank with the range of all ranks'
    data (MAX of max |x|), so that every rank bins into the same range. Statistics stay local
    until all_reduce() merges them."""
    items = _items(calibrators)
    max_u64, sum_u64 = _reducers(group)
    _klcal._all_reduce(items, max_u64, sum_u64, end_range_pass=True)
