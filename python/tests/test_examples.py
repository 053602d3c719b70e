"""The examples of docs/python.md run as written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import optional_module

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("script,needs", [("torch_calibrate.py", "torch"),
                                          ("onnx_calibrate.py", "onnxruntime")])
def test_example_runs(script, needs, tmp_path):
    optional_module(needs)
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    if script == "torch_calibrate.py":
        assert (tmp_path / "model.cache").read_text().startswith("TRT-8601-EntropyCalibration2\n")
        assert "amax" in r.stdout
    else:
        assert "QDQ vs fp32" in r.stdout
        assert (tmp_path / "net.qdq.onnx").stat().st_size > 0
