#!/usr/bin/env bash
# Builds the .npy/.npz/state-file libFuzzer targets with clang (ASan + UBSan), runs each N seconds.
# Usage: scripts/fuzz.sh [SECONDS]   (default 30; .ci/run calls it). Needs clang with libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
build=${KLCAL_FUZZ_BUILD_DIR:-build-fuzz}
cxx=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14 || true)}
if [ -z "$cxx" ]; then
  echo "fuzz.sh: clang++ not found; install clang (libFuzzer) to run the fuzzers" >&2
  exit 1
fi
# The library is instrumented for coverage too (fuzzer-no-link), so mutations can follow the
# parsers' branches; the fuzz targets themselves link libFuzzer (tests/fuzz/CMakeLists.txt).
mkdir -p "$build"
fuzz_bin="$build/tests/fuzz"
if ! { cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DKLCAL_ENABLE_CUDA=OFF -DKLCAL_BUILD_FUZZERS=ON -DKLCAL_BUILD_TESTS=OFF \
         -DKLCAL_BUILD_BENCH=OFF -DKLCAL_BUILD_APPS=OFF \
         -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" &&
       cmake --build "$build" -j2 --target npy_fuzz npz_fuzz state_fuzz; } >"$build/cmake.log" 2>&1; then
  echo "fuzz.sh: building the fuzzers failed; last lines of $build/cmake.log:" >&2
  tail -n 30 "$build/cmake.log" >&2
  exit 1
fi

# Seed corpus: small valid files of every supported flavour, written by the python zipfile,
# struct and zlib modules only (state files: layout of docs/formats.md, "klcal state file").
corpus="$build/corpus"
rm -rf "$corpus"
mkdir -p "$corpus/npy" "$corpus/npz" "$corpus/state"
python3 - "$corpus" <<'PY'
import io, os, struct, sys, zipfile
out = sys.argv[1]
def npy(descr, shape, payload, major=1, fortran=False):
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    pre = 10 if major == 1 else 12
    h += " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    ln = struct.pack("<H", len(h)) if major == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([major, 0]) + ln + h.encode() + payload
f4 = struct.pack("<4f", 1.5, -2.0, 0.0, float("nan"))
seeds = {
    "f4_v1": npy("<f4", "(4,)", f4),
    "f4_v2": npy("<f4", "(2, 2)", f4, major=2),
    "f4_v3": npy("<f4", "(1, 4)", f4, major=3, fortran=True),
    "f2": npy("<f2", "(3,)", struct.pack("<3H", 0x3c00, 0x7c00, 0x0001)),
    "f8": npy("<f8", "(2,)", struct.pack("<2d", 1e300, -0.1)),
    "scalar": npy("<f4", "()", struct.pack("<f", 3.0)),
    "empty": npy("<f4", "(0, 3)", b""),
}
for k, v in seeds.items():
    open(os.path.join(out, "npy", k), "wb").write(v)
for name, comp in (("stored", zipfile.ZIP_STORED), ("deflate", zipfile.ZIP_DEFLATED)):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", comp) as z:
        z.writestr("a.npy", seeds["f4_v1"])
        z.writestr("b:c d.npy", seeds["f2"])
    open(os.path.join(out, "npz", name), "wb").write(b.getvalue())
b = io.BytesIO()
with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("z.npy", "w", force_zip64=True) as f:  # what numpy.savez writes
        f.write(seeds["f8"])
open(os.path.join(out, "npz", "zip64"), "wb").write(b.getvalue())

import zlib
def state_file(records):
    body = b"KLCALST\0" + struct.pack("<III", 1, 0, len(records)) + b"".join(records)
    return body + struct.pack("<I", zlib.crc32(body))
def record(name, policy, layout, done, lo, hi, exponent, stats, counts):
    n = name.encode()
    return (struct.pack("<I", len(n)) + n + struct.pack("<BBBi", policy, layout, done, len(counts))
            + struct.pack("<ffi", lo, hi, exponent) + struct.pack("<QQQfff", *stats)
            + struct.pack("<%dQ" % len(counts), *counts))
inf = float("inf")
empty = (0, 0, 0, 0.0, inf, -inf)
seeds = {
    "empty": state_file([]),
    "fixed": state_file([record("conv1", 0, 0, 1, 0.0, 3.5, -64, (9, 1, 2, 3.0, -3.0, 2.0),
                                [1, 0, 5, 3])]),
    "mixed": state_file([
        record("a/signed", 0, 1, 1, -2.0, 2.0, -64, (3, 0, 0, 1.5, -1.5, 0.5), [1, 1, 1]),
        record("b/before", 1, 1, 0, -2.0 ** -64, 2.0 ** -64, -64, empty, [0] * 5),
        record("c/after", 1, 0, 1, 0.0, 0.75, -64, (4, 0, 1, 0.75, 0.0, 0.75), [2, 0, 2]),
        record("d/stream", 2, 0, 1, 0.0, 2.0 ** 3, 3, (7, 0, 0, 7.5, -7.5, 7.5), [0, 1, 2, 4]),
    ]),
}
for k, v in seeds.items():
    open(os.path.join(out, "state", k), "wb").write(v)
PY

for t in npy npz state; do
  echo "== ${t}_fuzz for ${secs}s"
  mkdir -p "$build/work-$t"
  "$fuzz_bin/${t}_fuzz" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
    -print_final_stats=1 "$build/work-$t" "$corpus/$t" 2>&1 | tail -n 12
done
echo "fuzz.sh: the three fuzzers ran ${secs}s each without a crash"
