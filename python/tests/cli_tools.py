"""Helpers shared by the integration tests: the klcal CLI binary and a cache reader."""

from __future__ import annotations

import os
import shutil

import pytest


def klcal_cli() -> str:
    """Path of the `klcal` command-line tool built from this repository.

    $KLCAL_CLI (set by .ci/run to the ctest build's binary), else `klcal` on PATH. Without
    either the calling test is skipped, except under CI (CI=true), where it fails.
    """
    path = os.environ.get("KLCAL_CLI") or shutil.which("klcal")
    if path and os.access(path, os.X_OK):
        return path
    if os.environ.get("CI"):
        pytest.fail("KLCAL_CLI is not set to an executable klcal binary")
    pytest.skip("set KLCAL_CLI to a klcal binary (e.g. build/ci/apps/klcal) to run this test")
    raise AssertionError("unreachable")


def parse_cache(text: str) -> dict[str, str]:
    """`{tensor: hex}` of a TensorRT calibration cache (lines split on the last ': ')."""
    lines = text.splitlines()
    assert lines and lines[0].startswith("TRT-"), lines[:1]
    out = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        assert name not in out, name
        out[name] = value
    return out
