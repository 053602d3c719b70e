"""Data-parallel calibration under torchrun: each rank calibrates its shard of the calibration
set, and klcal.distributed.all_reduce makes every rank hold the result of one process over all
shards, bit for bit (docs/distributed.md).

Usage: torchrun --standalone --nproc_per_node=4 python/examples/torchrun_calibrate.py
(NCCL and the GPUs when klcal has CUDA and there are GPUs, else gloo on the CPU.)
"""

import torch
import torch.distributed as dist
from torch import nn

import klcal
import klcal.distributed


def calibrate(model, batches, device, range_="streaming"):
    """Streaming calibrators on the input of every Linear layer, fed by forward pre-hooks."""
    cals, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            cals[name] = klcal.Calibrator(bins=2048, range=range_, device=device)
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, n=name: cals[n].add(args[0])))
    with torch.no_grad():
        for x in batches:
            model(x.to(device))
    for h in hooks:
        h.remove()
    return cals


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

    mine = calibrate(model, data[rank::world], device)  # this rank's shard only
    klcal.distributed.all_reduce(mine)                   # three all-reduces for all layers

    one = calibrate(model, data, device)  # for the demonstration: one process over everything
    exact = all(mine[n].state() == one[n].state() for n in one)
    if rank == 0:
        for name, c in mine.items():
            r = c.compute("entropy")
            print(f"layer {name}: amax={r.amax:.6g} scale={r.scale:.6g} ({world} ranks)")
        print(f"all-reduced equals one process: {'yes' if exact else 'NO'}")
    dist.destroy_process_group()
    if not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
