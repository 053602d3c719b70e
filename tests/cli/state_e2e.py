#!/usr/bin/env python3
"""End-to-end tests of saved histograms: calibrate --save-histograms, search, merge, inspect of
state files, per-tensor failures (exit 3) and check --json over every method."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_e2e as base  # noqa: E402  (run, require, SKIP; exits 77 without numpy)
import numpy as np  # noqa: E402

require = base.require
run = base.run  # run(args, expect_rc=0): klcal's exit status must be expect_rc

# Internal enum names must never reach the user (messages speak in option names).
ENUM_NAMES = ("invalid_range", "start_bin_out_of_range", "layout_mismatch", "bins_not_odd",
              "invalid_option", "klcal::")


def no_enum_names(text):
    for n in ENUM_NAMES:
        require(n not in text, f"internal name {n!r} in a message:\n{text}")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def without_sources(json_bytes):
    """The JSON minus its "sources" lines: the state file does not record where data came from."""
    text = json_bytes.decode()
    lines = [l for l in text.split("\n") if not l.lstrip().startswith('"sources": [')]
    require(len(lines) < len(text.split("\n")), "no sources line found")
    return "\n".join(lines)


def write_halves(d, peak):
    """Three tensors in two halves (directories h1, h2). Every tensor's max |x| is `peak` in
    both halves, so that two-pass ranges of the halves agree bit for bit and merge exactly."""
    rng = np.random.default_rng(20260101)
    for h in ("h1", "h2"):
        os.makedirs(os.path.join(d, h))
    dists = {
        "layer.relu": lambda n: np.maximum(rng.standard_normal(n), 0),
        "layer.gauss": lambda n: rng.standard_normal(n) * 0.7,
        "layer.heavy": lambda n: rng.standard_t(3, n),
    }
    for name, gen in dists.items():
        for h, n in (("h1", 30000), ("h2", 20011)):
            v = np.clip(gen(n), -peak * 0.99, peak * 0.99).astype(np.float32)
            v[0] = np.float32(peak)
            v[1] = np.float32(-peak) if name != "layer.relu" else 0
            v[2] = np.nan if h == "h2" else v[2]
            dtype = np.float16 if name == "layer.gauss" else np.float32
            np.save(os.path.join(d, h, name + ".npy"), v.astype(dtype))


def outputs(prefix, cache=True):
    """The output options; no --cache where the options are not TensorRT's (--bits 8, signed)."""
    return ["--json", prefix + ".json", "--csv", prefix + ".csv", "--curves", prefix + ".curves"
            ] + (["--cache", prefix + ".cache"] if cache else [])


def same_outputs(a, b, what):
    require(os.path.exists(a + ".cache") == os.path.exists(b + ".cache"), f"{what}: caches")
    if os.path.exists(a + ".cache"):
        require(read(a + ".cache") == read(b + ".cache"), f"{what}: caches differ")
    require(read(a + ".csv") == read(b + ".csv"), f"{what}: CSV files differ")
    require(without_sources(read(a + ".json")) == without_sources(read(b + ".json")),
            f"{what}: JSON files differ (besides sources)")
    fa, fb = sorted(os.listdir(a + ".curves")), sorted(os.listdir(b + ".curves"))
    require(fa == fb and fa, f"{what}: curve files differ: {fa} vs {fb}")
    for f in fa:
        require(read(os.path.join(a + ".curves", f)) == read(os.path.join(b + ".curves", f)),
                f"{what}: curve file {f} differs")


CONFIGS = [
    # (label, calibrate options, methods)
    ("two-pass tensorrt", ["--range", "two-pass"], "entropy,max,percentile,mse"),
    ("streaming tensorrt", ["--range", "streaming", "--bins", "1024"], "entropy,max,percentile,mse"),
    ("two-pass mxnet", ["--rules", "mxnet", "--bins", "2001"], "entropy,max"),
]


def case_roundtrip(work):
    """calibrate(all) == search(saved all) == search(merge(calibrate(h1), calibrate(h2))), byte
    for byte, for every method and range policy; the state files themselves are equal; and the
    brute-force reference (check --json) agrees with every method's scale."""
    d = os.path.join(work, "data")
    write_halves(d, peak=6.5)
    h1, h2 = os.path.join(d, "h1"), os.path.join(d, "h2")
    for k, (label, opts, methods) in enumerate(CONFIGS):
        w = os.path.join(work, f"c{k}")
        os.mkdir(w)
        common = ["-q", "--device", "cpu", "--method", methods] + opts
        a = os.path.join(w, "all")
        run(["calibrate"] + common + [h1, h2, "--save-histograms", a + ".klst"] + outputs(a))
        run(["calibrate"] + common + [h1, "--save-histograms", os.path.join(w, "h1.klst")])
        run(["calibrate"] + common + [h2, "--save-histograms", os.path.join(w, "h2.klst")])
        m = os.path.join(w, "merged")
        run(["merge", os.path.join(w, "h1.klst"), os.path.join(w, "h2.klst"), "-o", m + ".klst"])
        require(read(m + ".klst") == read(a + ".klst"),
                f"{label}: merge of the halves != state of all data")
        for src, out in ((a + ".klst", os.path.join(w, "search_all")),
                         (m + ".klst", os.path.join(w, "search_merged"))):
            run(["search", src, "-q", "--method", methods] + outputs(out))
            same_outputs(a, out, f"{label}: calibrate vs search {os.path.basename(src)}")
        # The reference recomputes every method of the JSON from the data.
        p = run(["check", "--json", a + ".json", h1, h2])
        n = 3 * len(methods.split(","))
        require(f"OK: {n} of {n} scales" in p.stdout, f"{label}: check said\n{p.stdout}")
        # Other options searched from the saved file equal a calibrate run with them.
        extra = ["--bits", "6"] if "mxnet" in opts else ["--percentile", "99.9", "--start-bin",
                                                         "200", "--stride", "3"]
        b = os.path.join(w, "all2")
        cache = "--bits" not in extra
        run(["calibrate"] + common + extra + [h1, h2] + outputs(b, cache))
        s2 = os.path.join(w, "search2")
        run(["search", a + ".klst", "-q", "--method", methods] + extra + outputs(s2, cache))
        same_outputs(b, s2, f"{label}: calibrate vs search with {extra}")
        print(f"{label}: calibrate == search == merge of halves")


def case_failures(work):
    """Data-dependent failures fail one tensor (exit 3, others still written) and speak in
    option names; option errors known from the command line stay usage errors (exit 2)."""
    d = os.path.join(work, "in")
    os.mkdir(d)
    np.save(os.path.join(d, "huge.npy"), np.array([3.0e38, -3.0e38, 1.0], dtype=np.float32))
    np.save(os.path.join(d, "ok.npy"),
            np.random.default_rng(5).standard_normal(5000).astype(np.float32))
    js = os.path.join(work, "mx.json")
    st = os.path.join(work, "mx.klst")
    p = run(["calibrate", "-q", "--device", "cpu", "--rules", "mxnet", d, "--json", js,
             "--save-histograms", st], expect_rc=3)
    require("tensor 'huge'" in p.stderr and "--rules tensorrt" in p.stderr, p.stderr)
    require("1 of 2 tensors failed" in p.stderr, p.stderr)
    no_enum_names(p.stderr)
    text = read(js).decode()
    require('"ok"' in text and '"huge"' not in text, "JSON should hold only the good tensor")
    p = run(["inspect", st])  # one tensor: its plot
    require("signed histogram" in p.stdout and "E entropy" in p.stdout, p.stdout)
    # The same data with the abs histogram works.
    run(["calibrate", "-q", "--device", "cpu", d])

    p = run(["calibrate", "-q", "--rules", "mxnet", "--bins", "3", d], expect_rc=2)
    require("--rules mxnet with --bits 8 needs at least 255 bins" in p.stderr, p.stderr)
    no_enum_names(p.stderr)

    # A signed (mxnet) histogram searched with tensorrt rules: every tensor fails, exit 3.
    p = run(["search", st, "--rules", "tensorrt", "-q"], expect_rc=3)
    require("needs an abs histogram" in p.stderr, p.stderr)
    no_enum_names(p.stderr)

    # One tensor of a file fails the search, the other is searched (bins differ per tensor).
    a, b = os.path.join(work, "a"), os.path.join(work, "b")
    os.mkdir(a)
    os.mkdir(b)
    rng = np.random.default_rng(6)
    np.save(os.path.join(a, "small.npy"), rng.standard_normal(3000).astype(np.float32))
    np.save(os.path.join(b, "large.npy"), rng.standard_normal(3000).astype(np.float32))
    run(["calibrate", "-q", "--bins", "2048", a, "--save-histograms", os.path.join(work, "a.klst")])
    run(["calibrate", "-q", "--bins", "4096", b, "--save-histograms", os.path.join(work, "b.klst")])
    ab = os.path.join(work, "ab.klst")
    p = run(["merge", os.path.join(work, "a.klst"), os.path.join(work, "b.klst"), "-o", ab])
    require("tensor 'small' is only in 1 of 2 files; kept as it is" in p.stderr, p.stderr)
    cache = os.path.join(work, "ab.cache")
    p = run(["search", ab, "--start-bin", "3000", "--cache", cache, "-q"], expect_rc=3)
    require("tensor 'small': --start-bin 3000 must be at most the number of bins (2048)" in
            p.stderr, p.stderr)
    no_enum_names(p.stderr)
    lines = read(cache).decode().splitlines()
    require(len(lines) == 2 and lines[1].startswith("large: "), f"cache: {lines}")

    # Merging two-pass histograms of different ranges: an error naming the tensor and the way
    # out; nothing written.
    np.save(os.path.join(b, "small.npy"), (rng.standard_normal(3000) * 3).astype(np.float32))
    run(["calibrate", "-q", "--bins", "2048", b, "--save-histograms", os.path.join(work, "b2.klst")])
    out = os.path.join(work, "bad.klst")
    p = run(["merge", os.path.join(work, "a.klst"), os.path.join(work, "b2.klst"), "-o", out],
            expect_rc=3)
    require("tensor 'small' cannot be merged" in p.stderr and "--range streaming" in p.stderr,
            p.stderr)
    require(not os.path.exists(out), "merge wrote an output after an error")
    # Different policies.
    run(["calibrate", "-q", "--range", "streaming", a, "--save-histograms",
         os.path.join(work, "s.klst")])
    p = run(["merge", os.path.join(work, "a.klst"), os.path.join(work, "s.klst"), "-o", out],
            expect_rc=3)
    require("two-pass abs histogram" in p.stderr and "streaming abs histogram" in p.stderr,
            p.stderr)
    # The same file twice, or the output naming an input, is refused; the input is untouched.
    a_klst = os.path.join(work, "a.klst")
    before = read(a_klst)
    p = run(["merge", a_klst, a_klst, "-o", out], expect_rc=3)
    require("same file" in p.stderr, p.stderr)
    p = run(["merge", a_klst, os.path.join(work, "b.klst"), "-o", a_klst, "--force"], expect_rc=3)
    require("is one of the input files" in p.stderr, p.stderr)
    require(read(a_klst) == before and not os.path.exists(out), "merge changed files")
    # Usage errors of the new commands.
    run(["merge", os.path.join(work, "a.klst"), "-o", out], expect_rc=2)
    run(["merge", os.path.join(work, "a.klst"), os.path.join(work, "s.klst")], expect_rc=2)
    run(["search"], expect_rc=2)
    p = run(["search", os.path.join(d, "ok.npy")], expect_rc=3)  # not a state file
    no_enum_names(p.stderr)


def case_inspect_state(work):
    d = os.path.join(work, "in")
    os.mkdir(d)
    rng = np.random.default_rng(7)
    np.save(os.path.join(d, "x.npy"), rng.standard_normal(10000).astype(np.float32))
    np.save(os.path.join(d, "y:odd name.npy"), rng.standard_normal(10000).astype(np.float32))
    st = os.path.join(work, "s.klst")
    run(["calibrate", "-q", d, "--save-histograms", st])
    p = run(["inspect", st])
    require("state file with 2 tensors" in p.stdout and "y:odd name" in p.stdout, p.stdout)
    p_file = run(["inspect", os.path.join(d, "x.npy"), "--width", "50", "--height", "5"])
    p_state = run(["inspect", st + ":x", "--width", "50", "--height", "5"])
    # The saved histogram is the same two-pass histogram inspect builds from the .npy: the plot
    # and the thresholds agree line for line after the title.
    require(p_file.stdout.split("\n")[1:] == p_state.stdout.split("\n")[1:],
            f"inspect .npy vs state differ:\n{p_file.stdout}\n{p_state.stdout}")
    p = run(["inspect", st + ":y:odd name"])
    require("E entropy" in p.stdout, p.stdout)
    run(["inspect", st + ":nope"], expect_rc=3)


def case_check_methods(work):
    """check --json checks every method of the file, not only the first."""
    d = os.path.join(work, "in")
    os.mkdir(d)
    np.save(os.path.join(d, "t.npy"),
            np.random.default_rng(8).standard_normal(20000).astype(np.float32))
    js = os.path.join(work, "c.json")
    run(["calibrate", "-q", "--method", "entropy,percentile,mse", d, "--json", js])
    p = run(["check", "--json", js, d])
    require("OK: 3 of 3 scales" in p.stdout, p.stdout)
    text = read(js).decode()
    # Change the mse scale (the last method) by one ulp.
    m = list(re.finditer(r'"mse": \{"amax": [^,]*, "scale": [^,]*, "scale_hex": "([0-9a-f]+)"',
                         text))
    require(len(m) == 1, "mse entry not found")
    old = m[0].group(1)
    new = format(int(old, 16) + 1, "x")
    text = text[:m[0].start(1)] + new + text[m[0].end(1):]
    with open(js, "w") as f:
        f.write(text)
    p = run(["check", "--json", js, d], expect_rc=1)
    require("FAILED: 2 of 3" in p.stdout and "mse" in p.stdout and "DIFFERS" in p.stdout, p.stdout)
    # Parameters the reference cannot use fail that method alone: exit 3, the others checked.
    text = text.replace(new, old)
    m = list(re.finditer(r'"mse": \{.*"start_bin": (128)', text))
    require(len(m) == 1, "mse start_bin not found")
    text = text[:m[0].start(1)] + "5000" + text[m[0].end(1):]
    with open(js, "w") as f:
        f.write(text)
    p = run(["check", "--json", js, d], expect_rc=3)
    require("--start-bin 5000 must be smaller than the number of bins (2048)" in p.stderr,
            p.stderr)
    require("FAILED: 2 of 3" in p.stdout and "NOT CHECKED" in p.stdout, p.stdout)
    no_enum_names(p.stderr)


def case_progress(work):
    """On a terminal, the two-pass progress line shows the data size once, with the pass."""
    import pty
    d = os.path.join(work, "in")
    os.mkdir(d)
    np.save(os.path.join(d, "t.npy"), np.ones(1 << 20, dtype=np.float32))  # 4 MiB
    for opts, want, unwanted in ((["--range", "two-pass"], ["pass 1/2", "pass 2/2"], []),
                                 (["--range", "streaming"], [], ["pass "])):
        master, slave = pty.openpty()
        p = subprocess.Popen([base.KLCAL, "calibrate", "--device", "cpu", d] + opts,
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not b:
                break
            chunks.append(b)
        os.close(master)
        require(p.wait(timeout=600) == 0, "calibrate failed")
        text = b"".join(chunks).decode(errors="replace")
        for w in want + ["4.0 / 4.0 MiB"]:
            require(w in text, f"{opts}: {w!r} not in the progress output:\n{text!r}")
        for u in unwanted + ["/ 8.0 MiB"]:
            require(u not in text, f"{opts}: {u!r} in the progress output:\n{text!r}")


def case_gpu(work):
    """With a CUDA device: histograms collected on the GPU (pinned double-buffered input) give
    the same state file and outputs as the CPU, byte for byte, for every range policy, with
    chunks small enough that both buffers are used many times. Skipped (77) without one."""
    d = os.path.join(work, "data")
    write_halves(d, peak=6.5)
    h1, h2 = os.path.join(d, "h1"), os.path.join(d, "h2")
    p = base.run(["calibrate", "-q", "--device", "gpu", h1], check=False)
    if p.returncode != 0 and "--device gpu" in p.stderr:
        print(f"no usable GPU: {p.stderr.strip()}")
        return base.SKIP
    require(p.returncode == 0, p.stderr)
    # A tensor of several 16 MiB chunks, so that the two pinned buffers alternate.
    big = np.random.default_rng(3).standard_normal(12 << 20).astype(np.float32)
    np.save(os.path.join(d, "h1", "big.npy"), big)
    for k, (label, opts, methods) in enumerate(CONFIGS):
        outs = {}
        for dev in ("gpu", "cpu"):
            pre = os.path.join(work, f"{dev}{k}")
            p = base.run(["calibrate", "-q", "--device", dev, "--method", methods] + opts +
                         [h1, h2, "--save-histograms", pre + ".klst"] + outputs(pre),
                         check=False)
            require(p.returncode == 0, f"{label} --device {dev}: {p.stderr}")
            outs[dev] = pre
        g, c = outs["gpu"], outs["cpu"]
        require(read(g + ".klst") == read(c + ".klst"), f"{label}: GPU and CPU states differ")
        require(read(g + ".cache") == read(c + ".cache"), f"{label}: caches differ")
        require(read(g + ".csv") == read(c + ".csv"), f"{label}: CSV files differ")
        strip = lambda b: re.sub(r'"device": "[^"]*"', "", b.decode())  # noqa: E731
        require(strip(read(g + ".json")) == strip(read(c + ".json")), f"{label}: JSON differs")
        print(f"{label}: GPU == CPU")
    return 0


if __name__ == "__main__":
    base.main_for(globals(), "klcal-state-e2e-")
