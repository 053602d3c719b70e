"""Data-parallel calibration under torchrun: each rank runs the ordinary klcal.torch code on its
shard of the calibration set; because torch.distributed is initialized, the ModelCalibrator
ends its passes with collectives, so every rank holds the result of one process over all
shards, bit for bit, and rank 0 writes the cache (docs/distributed.md).

Usage: torchrun --standalone --nproc_per_node=4 python/examples/torchrun_calibrate.py [CACHE]
(NCCL and the GPUs when klcal has CUDA and there are GPUs, else gloo on the CPU.)
"""

import sys

import torch
import torch.distributed as dist
from torch import nn

import klcal
import klcal.torch


def calibrate(model, batches, device, distributed=None):
    """The calibration code of a single process, unchanged: two-pass range, Linear inputs."""
    cal = klcal.torch.ModelCalibrator(model, distributed=distributed)
    with torch.no_grad():
        for _ in cal.passes():  # "range", then "bins"; each ends with a collective under torchrun
            for x in batches:
                model(x.to(device))
    return cal


def main() -> None:
    gpu = torch.cuda.is_available() and klcal.cuda_available()
    dist.init_process_group("nccl" if gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = "cpu"
    if gpu:
        torch.cuda.set_device(rank % torch.cuda.device_count())
        device = f"cuda:{torch.cuda.current_device()}"
    torch.manual_seed(0)  # the same model on every rank
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10)).eval().to(device)
    data = [torch.randn(32, 64, generator=torch.Generator().manual_seed(b)) for b in range(24)]

    cal = calibrate(model, data[rank::world], device)  # this rank's shard only
    amax = cal.compute("entropy")                      # the same on every rank
    if len(sys.argv) > 1:
        cal.write_cache(sys.argv[1], force=True)       # written by rank 0 only

    # For the demonstration: one process over everything, without the collectives.
    one = calibrate(model, data, device, distributed=False)
    exact = all(c.state() == one.calibrators()[n].state() for n, c in cal.calibrators().items())
    exact = exact and cal.names == list(one.calibrators())
    if rank == 0:
        for name, a in amax.items():
            print(f"layer {name}: amax={a:.6g} ({world} ranks)")
        print(f"all-reduced equals one process: {'yes' if exact else 'NO'}")
    dist.destroy_process_group()
    if not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
