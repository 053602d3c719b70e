"""Shared fixtures of the klcal Python tests.

Optional producers (torch, JAX, CuPy) and the `klcal` command-line tool are skipped when
missing, except under CI (the environment variable CI is set, as in .ci/run), where a missing
tool, torch or mypy fails the test instead of hiding it. JAX and CuPy are never installed by CI and
stay optional everywhere.
"""

import importlib
import os
import pathlib
import shutil
import socket

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


# What .ci/run installs: missing under CI is a failure.
CI_INSTALLS = {"torch", "mypy", "cli", "onnx", "onnxruntime", "modelopt", "tqdm"}


def _required(what):
    return bool(os.environ.get("CI")) and what in CI_INSTALLS


def optional_module(name):
    """The module, or a skip (a failure under CI for what CI installs)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if _required(name.split(".")[0]):
            pytest.fail(f"{name} is installed by .ci/run but cannot be imported: {e}")
        pytest.skip(f"{name} not installed", allow_module_level=True)


def free_port():
    """A free TCP port on 127.0.0.1 (the rendezvous of local torch.distributed processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_gloo(rank, world_size, port):
    """In a spawned test process: join the local gloo group of ``world_size`` ranks."""
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


@pytest.fixture(scope="session")
def klcal_cli():
    """Path of the C++ `klcal` tool: $KLCAL_CLI, else the first build/*/apps/klcal."""
    path = os.environ.get("KLCAL_CLI")
    if not path:
        found = sorted(ROOT.glob("build/*/apps/klcal")) or [shutil.which("klcal")]
        path = str(found[0]) if found[0] else None
    if not path or not os.access(path, os.X_OK):
        if _required("cli"):
            pytest.fail("under CI the klcal CLI must be found: set KLCAL_CLI")
        pytest.skip("klcal CLI not built (set KLCAL_CLI)")
    return path


@pytest.fixture(scope="session")
def klcal_ref():
    """The independent NumPy reference python_ref/klcal_ref.py."""
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        from python_ref import klcal_ref as ref
    finally:
        sys.path.pop(0)
    return ref


def parse_cache(text):
    """`{tensor: hex}` of a TensorRT calibration cache (each line split on the last ': ')."""
    lines = text.splitlines()
    assert lines and lines[0].startswith("TRT-"), lines[:1]
    out = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        assert name not in out, name
        out[name] = value
    return out
