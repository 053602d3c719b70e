"""Calibrate a PyTorch model with klcal inside an ordinary loop (docs/python.md, "PyTorch").

Usage: python python/examples/torch_calibrate.py [OUT_DIR]
Writes OUT_DIR/model.cache (TensorRT) and OUT_DIR/model.json (klcal JSON), prints {name: amax}.
"""

import os
import sys
import tempfile

import torch
from torch import nn

import klcal
import klcal.torch


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    # Bin on the GPU when there is one and klcal was built with CUDA; tensors never leave it.
    device = "cuda" if torch.cuda.is_available() and klcal.cuda_available() else "cpu"
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 16 * 16, 10),
    ).eval().to(device)
    loader = [torch.randn(8, 3, 32, 32) for _ in range(10)]  # your calibration data

    # 1. Hooks on every Linear and Conv input; range="two-pass" (default) runs the loop twice.
    cal = klcal.torch.ModelCalibrator(model)
    with torch.no_grad():
        for _ in cal.passes():
            for x in loader:
                model(x.to(device))
    for name, amax in cal.compute("entropy").items():
        print(f"{name:>4}  amax {amax:.6g}")
    cal.write_cache(os.path.join(out_dir, "model.cache"), force=True)
    cal.write_json(os.path.join(out_dir, "model.json"), ["entropy", "percentile", "mse"],
                   force=True)

    # 2. The drop-in for ModelOpt's / pytorch-quantization's HistogramCalibrator.
    calib = klcal.torch.HistogramCalibrator(num_bits=8, unsigned=False, num_bins=2048)
    with torch.no_grad():
        for x in loader:
            calib.collect(model[0](x.to(device)))
    print("conv output amax:", {m: round(calib.compute_amax(m).item(), 6)
                                for m in ("entropy", "percentile", "mse")})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="klcal-torch-"))
