"""The stubs type-check real use with mypy --strict, and catch misuse."""

import subprocess
import sys
import textwrap

from conftest import optional_module

USAGE = """
import numpy as np
import numpy.typing as npt

import klcal

cal = klcal.Calibrator(bins=2048, range="streaming", layout="abs", device="cpu", threads=1)
fixed = klcal.Calibrator(range=(0.0, 4.0))
cal.add(np.ones(8, np.float32))
klcal.add_many([cal, fixed], [np.ones(3, np.float32), np.ones(3, np.float16)], range_pass=False)
r: klcal.Result = cal.compute("entropy", rules="tensorrt", percentile=99.9, bits=8, curve=True)
amax: float = r.amax
idx: int = r.index
curve: npt.NDArray[np.float64] | None = r.curve
counts: npt.NDArray[np.uint64] = cal.counts
st: klcal.Stats = cal.stats
lo, hi = cal.range
data: bytes = cal.state()
again: klcal.Calibrator = klcal.Calibrator.from_state(data, device="cpu")
pairs: list[tuple[str, klcal.Calibrator]] = klcal.load_states(klcal.save_states([("a", cal)]))
try:
    cal.merge(again)
except klcal.InvalidArgumentError as e:
    status: klcal.Errc | None = e.status
    code: int = e.cuda_error
ok: bool = klcal.cuda_available() and klcal.built_with_cuda
"""

MISUSE = """
import klcal

cal = klcal.Calibrator()
x: str = cal.compute().amax
cal.merge(3)
"""


def mypy(tmp_path, source):
    f = tmp_path / "snippet.py"
    f.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), str(f)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_usage_type_checks(tmp_path):
    optional_module("mypy")
    r = mypy(tmp_path, USAGE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_misuse_is_reported(tmp_path):
    optional_module("mypy")
    r = mypy(tmp_path, MISUSE)
    assert r.returncode == 1
    assert 'has type "float", variable has type "str"' in r.stdout
    assert 'incompatible type "int"; expected "Calibrator"' in r.stdout
