"""klcal.torch: ModelCalibrator against the klcal CLI on dumped activations, and the
HistogramCalibrator drop-in against ModelOpt's on the same histogram."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import optional_module, parse_cache

torch = optional_module("torch")
from torch import nn  # noqa: E402

import klcal  # noqa: E402
import klcal.torch as kt  # noqa: E402

METHODS = ["entropy", "percentile", "mse", "max"]


class Net(nn.Module):
    """A small real network: two convolutions, two linear layers, ReLUs, one shared block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(x)


def _model_and_batches(n_batches=3, batch=4):
    torch.manual_seed(20260101)
    model = Net().eval()
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(batch, 3, 16, 16, generator=g) * (1 + k) for k in range(n_batches)]
    return model, batches


def _dump_inputs(model, batches, names, root):
    """np.save of every selected module's input, one directory per batch (the CLI's layout)."""
    store = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, n=n: store.__setitem__(n, args[0].detach().numpy().copy()))
        for n, m in model.named_modules() if n in names]
    dirs = []
    with torch.no_grad():
        for k, x in enumerate(batches):
            store.clear()
            model(x)
            d = root / f"batch{k}"
            d.mkdir()
            for n in names:
                np.save(d / f"{n}.npy", store[n])
            dirs.append(str(d))
    for h in handles:
        h.remove()
    return dirs


def test_model_calibrator_matches_cli_on_dumped_activations(klcal_cli, tmp_path):
    cli = klcal_cli
    model, batches = _model_and_batches()
    cal = kt.ModelCalibrator(model)
    assert cal.names == ["conv1", "conv2", "fc1", "fc2"]
    passes = []
    with torch.no_grad():
        for p in cal.passes():
            passes.append(p)
            for x in batches:
                model(x)
    assert passes == ["range", "bins"]
    dirs = _dump_inputs(model, batches, cal.names, tmp_path)

    cal.write_cache(tmp_path / "torch.cache")
    cal.write_json(tmp_path / "torch.json", METHODS)
    subprocess.run([cli, "calibrate", "--device", "cpu", "-q", "--method", ",".join(METHODS),
                    "--cache", str(tmp_path / "cli.cache"), "--json", str(tmp_path / "cli.json"),
                    *dirs], check=True)

    # The cache: same header, same scale bits for every tensor.
    ours = (tmp_path / "torch.cache").read_text()
    theirs = (tmp_path / "cli.cache").read_text()
    assert ours.splitlines()[0] == theirs.splitlines()[0] == "TRT-8601-EntropyCalibration2"
    assert parse_cache(ours) == parse_cache(theirs)
    assert len(parse_cache(ours)) == 4

    # amax of every method equals the CLI's, and the JSON documents agree field by field.
    j_ours = json.loads((tmp_path / "torch.json").read_text())
    j_cli = json.loads((tmp_path / "cli.json").read_text())
    assert j_ours["format"] == j_cli["format"]
    s_ours, s_cli = dict(j_ours["settings"]), dict(j_cli["settings"])
    s_ours.pop("device"), s_cli.pop("device")
    assert s_ours == s_cli
    assert set(j_ours["tensors"]) == set(j_cli["tensors"])
    for name, t_cli in j_cli["tensors"].items():
        t = dict(j_ours["tensors"][name])
        t_cli = dict(t_cli)
        t.pop("sources"), t_cli.pop("sources")
        assert t == t_cli, name
    for m in METHODS:
        amax = cal.compute(m)
        for name in cal.names:
            assert amax[name] == j_cli["tensors"][name]["methods"][m]["amax"], (m, name)


def test_inputs_are_read_in_place_on_their_device():
    model, batches = _model_and_batches(n_batches=1)
    cal = kt.ModelCalibrator(model, range="streaming")
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0]))
             for n, m in model.named_modules() if n in ("conv1", "fc2")]
    with torch.no_grad(), cal.collect():
        model(batches[0])
    for h in hooks:
        h.remove()
    cals = cal.calibrators()
    for n in ("conv1", "fc2"):
        ptr, copied = cals[n]._last_input()
        assert cals[n].device == "cpu"
        assert not copied and ptr == seen[n].data_ptr(), n


def test_selection_by_type_and_name_and_pooling_of_shared_modules():
    model, batches = _model_and_batches(n_batches=2)
    assert kt.ModelCalibrator(model, names=r"^fc").names == ["fc1", "fc2"]
    assert kt.ModelCalibrator(model, types=nn.Conv2d).names == ["conv1", "conv2"]
    assert kt.ModelCalibrator(model, exclude=r"conv").names == ["fc1", "fc2"]
    # The shared ReLU runs three times per forward: one histogram pools all calls.
    cal = kt.ModelCalibrator(model, types=nn.ReLU, range="streaming")
    assert cal.names == ["act"]
    with torch.no_grad(), cal.collect():
        for x in batches:
            model(x)
    stats = cal.calibrators()["act"].stats
    expected = sum(4 * (8 * 16 * 16 + 8 * 8 * 8 + 32) for _ in batches)
    assert stats.finite_count == expected
    with pytest.raises(ValueError, match="no module of the model matches"):
        kt.ModelCalibrator(model, names="nothing")


def test_calibrate_helper_runs_the_loop_once_per_pass():
    model, batches = _model_and_batches(n_batches=2)
    calls = []

    def loop():
        calls.append(1)
        for x in batches:
            model(x)

    amax = kt.calibrate(model, loop, "percentile", percentile=99.9)
    assert len(calls) == 2 and set(amax) == {"conv1", "conv2", "fc1", "fc2"}
    calls.clear()
    kt.calibrate(model, loop, range="streaming")
    assert len(calls) == 1


def test_errors_name_the_module_and_nothing_is_overwritten(tmp_path):
    model, batches = _model_and_batches(n_batches=1)
    cal = kt.ModelCalibrator(model, range="streaming")
    with pytest.raises(RuntimeError, match="nothing collected"):
        cal.compute()
    with pytest.raises(RuntimeError, match="range pass"):
        with kt.ModelCalibrator(model).collect():
            pass
    lin = nn.Linear(4, 2)
    c2 = kt.ModelCalibrator(nn.Sequential(lin), range="streaming")
    with pytest.raises(TypeError, match=r"module '0' input: dtype torch.int64"):
        with c2.collect():
            c2_model = nn.Sequential(lin)
            c2_model(torch.ones(3, 4, dtype=torch.int64))
    with torch.no_grad(), cal.collect():
        model(batches[0])
    target = tmp_path / "existing.cache"
    target.write_text("keep me\n")
    with pytest.raises(FileExistsError):
        cal.write_cache(target)
    assert target.read_text() == "keep me\n"
    cal.write_cache(target, force=True)
    assert target.read_text().startswith("TRT-8601-EntropyCalibration2\n")
    with pytest.raises(ValueError, match="bins"):
        kt.ModelCalibrator(model, bins=1)


def test_non_contiguous_and_half_inputs():
    lin = nn.Linear(8, 4)
    model = nn.Sequential(lin)
    cal = kt.ModelCalibrator(model, range="streaming")
    x = torch.randn(8, 6).t()  # non-contiguous view
    assert not x.is_contiguous()
    with torch.no_grad(), cal.collect():
        model(x)
    c = cal.calibrators()["0"]
    assert c.stats.finite_count == 48
    assert c.stats.max_abs == float(x.abs().max())
    h = kt.HistogramCalibrator()
    h.collect(torch.tensor([0.5, -1.5, 2.0], dtype=torch.float16))
    h.collect(torch.tensor([3.0], dtype=torch.bfloat16))
    assert h.calibrator.stats.max_abs == 3.0
    assert h.compute_amax("max").item() == 3.0


# ---- HistogramCalibrator drop-in ---------------------------------------------------------------

def _data():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(4096, generator=g) * s for s in (1.0, 2.5, 0.5)]


def test_histogram_calibrator_interface_and_exact_counts():
    h = kt.HistogramCalibrator(num_bits=8, unsigned=False, num_bins=2048)
    assert h.compute_amax("entropy") is None
    parts = _data()
    for x in parts:
        h.collect(x)
    counts, edges = h.histogram()
    assert counts.sum().item() == sum(x.numel() for x in parts)
    assert edges.numel() == 2049 and edges[0].item() == 0.0
    # Batch order and split do not change anything (exact counts, power-of-two range).
    h2 = kt.HistogramCalibrator()
    allx = torch.cat(parts)
    h2.collect(torch.flip(allx, [0]))
    assert torch.equal(h2.histogram()[0], counts)
    for m in ("entropy", "mse", "percentile", "max"):
        a = h.compute_amax(m)
        assert a.dtype == torch.float32 and a.dim() == 0
        assert a.item() == h2.compute_amax(m).item()
    assert h.compute_amax("max").item() == allx.abs().max().item()
    with pytest.raises(TypeError, match="Unknown calibration method"):
        h.compute_amax("kl")
    with pytest.raises(ValueError, match="percentile"):
        h.compute_amax("percentile", percentile=101)
    with pytest.raises(NotImplementedError):
        kt.HistogramCalibrator(axis=0)
    with pytest.raises(klcal.Error):
        kt.HistogramCalibrator(num_bins=2000)  # streaming needs a power of two
    h.reset()
    assert h.compute_amax("entropy") is None


def test_counts_stay_exact_beyond_float32():
    # 2^24 + 2 values in one bin and one elsewhere: a float32 counter cannot hold these counts
    # (the peers' torch.histc histogram reads back 16777218 and a total of 16777220).
    x = torch.full((2 ** 24 + 3,), 0.25)
    x[0] = 1.0
    h = kt.HistogramCalibrator()
    h.collect(x)
    counts, _ = h.histogram()
    assert counts.sum().item() == 2 ** 24 + 3
    assert counts.max().item() == 2 ** 24 + 2


def _modelopt_histogram_calibrator():
    return optional_module("modelopt.torch.quantization.calib").HistogramCalibrator


@pytest.mark.parametrize("unsigned", [False, True])
def test_same_amax_as_modelopt_on_the_same_histogram(unsigned):
    Peer = _modelopt_histogram_calibrator()
    # 1024 bins: the peer's entropy search is a Python loop, quadratic in the bin count.
    ours = kt.HistogramCalibrator(num_bits=8, unsigned=unsigned, num_bins=1024)
    for x in _data():
        ours.collect(torch.relu(x) if unsigned else x)
    counts, edges = ours.histogram()
    peer = Peer(num_bits=8, unsigned=unsigned, num_bins=1024)
    # Hand the peer klcal's histogram (its own fields, as its collect() leaves them).
    peer._calib_hist = counts.clone()
    peer._calib_bin_edges = edges.clone()
    for method, kw in [("entropy", {}), ("entropy", {"start_bin": 256, "stride": 3}),
                       ("percentile", {"percentile": 99.99}), ("percentile", {"percentile": 99.0})]:
        a = ours.compute_amax(method, **kw).item()
        b = float(peer.compute_amax(method, **kw))
        # Both read the amax off the same bin edge; klcal computes it as i * w in fp64 and
        # rounds to fp32 at the end, the peer reads its float edges array.
        assert a == pytest.approx(b, rel=1e-6), (method, kw, a, b)
    # mse: the peer's rule evaluated with the peer's own fake quantizer. (ModelOpt 0.47's
    # compute_amax("mse") passes num_bits and unsigned into the bias and num_bits positions of
    # fake_tensor_quant, so its own answer is the first candidate whatever the data; see
    # docs/python.md.)
    from modelopt.torch.quantization.tensor_quant import fake_tensor_quant
    centers = ((edges[1:] + edges[:-1]) / 2).float()
    weights = counts.float()
    for start_bin, stride in ((128, 1), (200, 7)):
        scores = []
        for i in range(start_bin, len(centers), stride):
            q = fake_tensor_quant(centers, centers[i], None, 8, unsigned)
            scores.append(float(((q - centers) ** 2 * weights).mean()))
        best = start_bin + stride * int(np.argmin(scores))
        a = ours.compute_amax("mse", start_bin=start_bin, stride=stride).item()
        assert a == pytest.approx(float(centers[best]), rel=1e-6), (start_bin, stride)


def test_modelopt_single_batch_same_edges_same_amax():
    """The other way round: ModelOpt collects one batch itself (range [0, max]); its counts are
    rebuilt in a fixed-range klcal calibrator over the same edges, and both searches agree."""
    Peer = _modelopt_histogram_calibrator()
    x = _data()[0]
    peer = Peer(num_bins=1024)
    peer.collect(x)
    hist = peer._calib_hist.to(torch.int64).numpy().astype(np.uint64)
    hi = float(peer._calib_bin_edges[-1])
    c = klcal.Calibrator(bins=1024, range=(0.0, float(np.float32(hi))))
    # Rebuild the same counts in klcal from bin centres (exact: each centre lies inside its bin).
    centres = ((np.arange(1024) + 0.5) * (np.float32(hi) / 1024)).astype(np.float32)
    c.add(np.repeat(centres, hist.astype(np.int64)))
    assert np.array_equal(c.counts, hist)
    for method in ("entropy", "percentile"):
        a = c.compute(method=method).amax
        b = float(peer.compute_amax(method))
        assert a == pytest.approx(b, rel=1e-6), method


@pytest.mark.skipif(not (torch.cuda.is_available() and klcal.cuda_available()),
                    reason="needs a CUDA device and klcal built with CUDA")
def test_cuda_model_is_binned_on_its_device_like_the_cpu():
    model, batches = _model_and_batches(n_batches=2)
    cpu = kt.ModelCalibrator(model)
    with torch.no_grad():
        for _ in cpu.passes():
            for x in batches:
                model(x)
    gpu_model = Net().cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    gpu = kt.ModelCalibrator(gpu_model)
    seen = {}
    hook = gpu_model.fc2.register_forward_pre_hook(lambda m, a: seen.__setitem__("fc2", a[0]))
    with torch.no_grad():
        for _ in gpu.passes():
            for x in batches:
                gpu_model(x.cuda())
    hook.remove()
    c = gpu.calibrators()["fc2"]
    assert c.device.startswith("cuda")
    ptr, copied = c._last_input()
    assert not copied and ptr == seen["fc2"].data_ptr()
    # GPU and CPU convolutions round differently, so compare the statistics' shape, and the
    # histogram path exactly on the same tensors: a CUDA HistogramCalibrator vs a CPU one.
    h_gpu, h_cpu = kt.HistogramCalibrator(), kt.HistogramCalibrator()
    for x in batches:
        h_gpu.collect(x.cuda())
        h_cpu.collect(x)
    assert h_gpu.calibrator.device.startswith("cuda")
    assert torch.equal(h_gpu.histogram()[0], h_cpu.histogram()[0])
    for m in ("entropy", "percentile", "mse", "max"):
        assert h_gpu.compute_amax(m).item() == h_cpu.compute_amax(m).item()
