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

# Seed corpus: small valid files of every supported flavour (plus headers near and beyond
# 64 KiB and a zip64 archive with every 32-bit field saturated), with tests/fuzz/*.dict
# (magic numbers, signatures, header keys) guiding the mutations; written by the python zipfile,
# struct and zlib modules only (state files: layout of docs/formats.md, "klcal state file").
corpus="$build/corpus"
rm -rf "$corpus"
mkdir -p "$corpus/npy" "$corpus/npz" "$corpus/state"
python3 - "$corpus" <<'PY'
import io, os, struct, sys, zipfile, zlib
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
    "bf16_v2": npy("<V2", "(3,)", struct.pack("<3H", 0x3f80, 0x7fc0, 0x0001)),
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

# Large headers: a version 1.0 header near its 65535-byte limit, a 2.0 header beyond it.
seeds["f4_v1_big_header"] = npy("<f4", "(4,)" + " " * 60000, f4)
seeds["f4_v2_big_header"] = npy("<f4", "(4,)" + " " * 70000, f4, major=2)
for k in ("f4_v1_big_header", "f4_v2_big_header"):
    open(os.path.join(out, "npy", k), "wb").write(seeds[k])

# A zip64 archive in full, built by hand: every 32-bit size and offset saturated at 0xffffffff
# in the local and central headers with the values in zip64 extra fields, a zip64 end record
# and its locator, and an end record whose entry count and sizes are saturated too.
def zip64_archive(members):
    body, central = b"", b""
    for name, data in members:
        n, crc, size, off = name.encode(), zlib.crc32(data), len(data), len(body)
        local_extra = struct.pack("<HHQQ", 1, 16, size, size)
        body += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc, 0xffffffff,
                            0xffffffff, len(n), len(local_extra)) + n + local_extra + data
        cd_extra = struct.pack("<HHQQQ", 1, 24, size, size, off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc,
                               0xffffffff, 0xffffffff, len(n), len(cd_extra), 0, 0, 0, 0,
                               0xffffffff) + n + cd_extra
    cd_off, cd_size = len(body), len(central)
    eocd64_off = cd_off + cd_size
    eocd64 = struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(members), len(members),
                         cd_size, cd_off)
    locator = struct.pack("<IIQI", 0x07064b50, 0, eocd64_off, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    return body + central + eocd64 + locator + eocd
open(os.path.join(out, "npz", "zip64_full"), "wb").write(
    zip64_archive([("a.npy", seeds["f4_v1"]), ("dir/b: c.npy", seeds["f2"])]))
open(os.path.join(out, "npz", "zip64_big_header"), "wb").write(
    zip64_archive([("big.npy", seeds["f4_v2_big_header"])]))

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
  dict=""
  [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
  "$fuzz_bin/${t}_fuzz" -max_total_time="$secs" -max_len=131072 -rss_limit_mb=2048 \
    -print_final_stats=1 $dict "$build/work-$t" "$corpus/$t" 2>&1 | tail -n 12
done
echo "fuzz.sh: the three fuzzers ran ${secs}s each without a crash"
