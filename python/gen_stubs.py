"""Writes python/klcal/_klcal.pyi from the installed extension with nanobind's stubgen.

The one build-dependent value (`built_with_cuda`) is written without its value, so that CPU and
CUDA builds produce the same file. python/tests/test_stubs.py regenerates and compares.
Usage: python3 python/gen_stubs.py [OUTPUT]   (default: python/klcal/_klcal.pyi)
"""

import pathlib
import re
import subprocess
import sys
import tempfile


def generate() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "_klcal.pyi"
        subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "klcal._klcal",
                        "-o", str(out)], check=True)
        text = out.read_text()
    return re.sub(r"^built_with_cuda: bool = (True|False)$", "built_with_cuda: bool", text,
                  flags=re.M)


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else \
        pathlib.Path(__file__).resolve().parent / "klcal" / "_klcal.pyi"
    target.write_text(generate())
    print(f"wrote {target}")
