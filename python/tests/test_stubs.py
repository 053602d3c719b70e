"""The committed type stubs python/klcal/_klcal.pyi match the built extension."""

import importlib.util
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent


def test_stubs_up_to_date():
    if importlib.util.find_spec("nanobind") is None:
        pytest.skip("nanobind not installed")
    sys.path.insert(0, str(HERE.parent))
    try:
        import gen_stubs
    finally:
        sys.path.pop(0)
    committed = (HERE.parent / "klcal" / "_klcal.pyi").read_text()
    assert gen_stubs.generate() == committed, (
        "python/klcal/_klcal.pyi is stale: run python3 python/gen_stubs.py after installing")


def test_stubs_cover_the_api():
    text = (HERE.parent / "klcal" / "_klcal.pyi").read_text()
    for name in ("class Calibrator", "def add(self, x: object, *, stream", "def compute(",
                 "def counts(self, /) -> numpy.typing.NDArray", "def add_many(", "class Result",
                 "def from_state(data: bytes"):
        assert name in text, name
