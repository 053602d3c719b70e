"""klcal._export: the cache and JSON text of the integrations equal the klcal tool's, byte for
byte, including degenerate tensors, NaN/Inf statistics and non-finite numbers."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

import klcal
from klcal import _export

METHODS = ["entropy", "max", "percentile", "mse"]


def test_scale_hex_and_cache_lines():
    # Hand-computed bit patterns: 1/127 (docs/numerics.md 7), zero, the smallest subnormal,
    # 1e-40 (subnormal 0x000116c2: no zero padding), 1.0.
    assert _export.scale_hex(np.float32(1) / np.float32(127)) == "3c010204"
    assert _export.scale_hex(0.0) == "0"
    assert _export.scale_hex(2.0 ** -149) == "1"
    assert _export.scale_hex(np.float32(1e-40)) == "116c2"
    assert _export.scale_hex(1.0) == "3f800000"
    text = _export.cache_text([("a: b", 1.0), ("c", 0.0)], "percentile", "100900")
    assert text == "TRT-100900-MinMaxCalibration\na: b: 3f800000\nc: 0\n"
    with pytest.raises(ValueError, match="trt_version"):
        _export.cache_text([], "entropy", "86")
    with pytest.raises(ValueError, match="line break"):
        _export.cache_text([("a\nb", 1.0)])


def test_json_and_cache_text_equal_the_cli(klcal_cli, tmp_path):
    rng = np.random.default_rng(4)
    tensors = {
        "gauss": rng.standard_normal(5000).astype(np.float32),
        "zeros": np.zeros(100, np.float32),                               # degenerate
        "odd values": np.array([np.nan, np.inf, -2.5, 0.0, 1.0], np.float32),
        "only-nan": np.array([np.nan, np.nan], np.float32),               # min/max -> null
    }
    files = []
    for name, x in tensors.items():
        np.save(tmp_path / f"{name}.npy", x)
        files.append(str(tmp_path / f"{name}.npy"))
    subprocess.run([klcal_cli, "calibrate", "--device", "cpu", "-q", "--method",
                    ",".join(METHODS), "--json", str(tmp_path / "cli.json"), "--cache",
                    str(tmp_path / "cli.cache"), *files], check=True)
    opts = _export.options_for(METHODS)
    reports = []
    for name, x in tensors.items():
        c = klcal.Calibrator()
        c.add_range(x)
        c.end_range_pass()
        c.add(x)
        reports.append(_export.TensorReport(
            name=name, options=opts, results=[c.compute(**o.compute_kwargs()) for o in opts],
            spec=(c.layout, c.bins, *c.range), stats=c.stats, range=c.policy,
            sources=[f"{tmp_path}/{name}.npy"]))
    ours = _export.json_text(reports, device="cpu")
    cli = (tmp_path / "cli.json").read_text()
    # The CLI lists its sources as it opened them; everything else is the same text.
    strip = re.compile(r'"sources": \[[^\]]*\]')
    assert strip.sub("", ours) == strip.sub("", cli)
    assert json.loads(ours)["tensors"]["zeros"]["degenerate"] is True
    assert json.loads(ours)["tensors"]["only-nan"]["stats"]["min"] is None
    pairs = [(r.name, r.results[0].scale) for r in reports]
    assert _export.cache_text(pairs) == (tmp_path / "cli.cache").read_text()
