#!/usr/bin/env bash
# Measures `klcal calibrate` on the CPU: throughput from the page cache vs the CPU backend's
# in-memory rate, and peak RSS on a 4 GiB input. Usage: scripts/bench-cli.sh [KLCAL_BINARY]
# Writes 1 GiB and 4 GiB fp32 .npy files under ${TMPDIR:-/tmp} and deletes them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
klcal=${1:-build/ci/apps/klcal}
if [ ! -x "$klcal" ]; then
  echo "bench-cli.sh: $klcal not found; build it (cmake --build BUILD --target klcal_cli) and pass its path" >&2
  exit 1
fi
if [ ! -x /usr/bin/time ]; then
  echo "bench-cli.sh: /usr/bin/time is missing (apt-get install time)" >&2
  exit 1
fi
threads=${KLCAL_BENCH_THREADS:-0}
dir=$(mktemp -d "${TMPDIR:-/tmp}/klcal-bench-XXXXXX")
trap 'rm -rf "$dir"' EXIT

gen() {  # gen FILE MiB: Gaussian fp32, written with write() in 64 MiB slices as np.save does
  # (bounded memory; a file written through a memory map instead leaves its page-cache pages in
  # a shape that is slower to map and to copy, which would measure the kernel, not klcal)
  python3 - "$1" "$2" <<'PY'
import sys, numpy as np
path, mib = sys.argv[1], int(sys.argv[2])
n = mib << 18
rng = np.random.default_rng(7)
step = 16 << 20
with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    for i in range(0, n, step):
        f.write(rng.standard_normal(min(step, n - i), dtype=np.float32).tobytes())
PY
}

rate() {  # rate BYTES SECONDS -> MiB/s
  python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]) / 1048576:.1f}')" "$1" "$2"
}

field() {  # field LOG NAME: a value from /usr/bin/time -v output
  grep -F "$2" "$1" | head -n1 | awk -F': ' '{print $2}'
}

wall_s() {  # m:ss.ss or h:mm:ss -> seconds
  python3 -c "
import sys
p = [float(x) for x in sys.argv[1].split(':')]
s = 0.0
for x in p: s = s * 60 + x
print(s)" "$1"
}

echo "== machine: $(nproc) CPUs, klcal threads=${threads} (0 = all)"
echo "== in-memory rate of the CPU backend (stats pass + 2048-bin histogram pass, 1 GiB fp32)"
mem_line=$("$klcal" bench-histogram --mib 1024 --threads "$threads")
echo "$mem_line"
mem_rate=$(echo "$mem_line" | sed -E 's/.*whole buffer ([0-9.e+]+) MiB\/s.*/\1/')

echo "== generating 1 GiB and 4 GiB fp32 .npy in $dir"
gen "$dir/one_gib.npy" 1024
gen "$dir/four_gib.npy" 4096
sync  # write-back of the fresh files must not compete with the timed runs

run() {  # run FILE LOG: calibrate from the page cache (file read once before); best of 3 runs
  cat "$1" >/dev/null
  local best="" k
  for k in 1 2 3; do
    /usr/bin/time -v "$klcal" calibrate --device cpu --threads "$threads" --quiet "$1" 2>"$2.$k"
    local s
    s=$(wall_s "$(field "$2.$k" "Elapsed (wall clock) time (h:mm:ss or m:ss)")")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$s" "$best"; then
      best=$s
      cp "$2.$k" "$2"
    fi
  done
}

run "$dir/one_gib.npy" "$dir/one.log"
s1=$(wall_s "$(field "$dir/one.log" "Elapsed (wall clock) time (h:mm:ss or m:ss)")")
r1=$(rate $((1024 << 20)) "$s1")
rss1=$(field "$dir/one.log" "Maximum resident set size (kbytes)")
echo "calibrate 1 GiB from the page cache: ${s1} s, ${r1} MiB/s, peak RSS $((rss1 / 1024)) MiB"

rm -f "$dir/one_gib.npy"
run "$dir/four_gib.npy" "$dir/four.log"
s4=$(wall_s "$(field "$dir/four.log" "Elapsed (wall clock) time (h:mm:ss or m:ss)")")
r4=$(rate $((4096 << 20)) "$s4")
rss4=$(field "$dir/four.log" "Maximum resident set size (kbytes)")
echo "calibrate 4 GiB from the page cache: ${s4} s, ${r4} MiB/s, peak RSS $((rss4 / 1024)) MiB"

python3 - "$mem_rate" "$r1" "$rss4" <<'PY'
import sys
mem, r1, rss = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]) / 1024
ratio = r1 / mem
print(f"ratio calibrate(page cache) / in-memory: {ratio:.2f}  (target >= 0.70: {'ok' if ratio >= 0.7 else 'MISSED'})")
print(f"peak RSS on 4 GiB input: {rss:.1f} MiB  (target < 256 MiB: {'ok' if rss < 256 else 'MISSED'})")
PY
