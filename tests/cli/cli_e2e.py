#!/usr/bin/env python3
"""End-to-end tests of the klcal tool: generate .npy/.npz with NumPy, run klcal, check outputs."""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

SKIP = 77  # ctest SKIP_RETURN_CODE

try:
    import numpy as np
except ImportError:  # pragma: no cover
    print("numpy is not installed: skipped")
    sys.exit(SKIP)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KLCAL = None


def run(args, expect_rc=0, check=True):
    p = subprocess.run([KLCAL] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=600)
    if check and p.returncode != expect_rc:
        raise AssertionError(f"klcal {' '.join(args)}: exit {p.returncode}, expected {expect_rc}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def require(cond, msg):
    if not cond:
        raise AssertionError(msg)


def f32_hex(x):
    return format(struct.unpack("<I", struct.pack("<f", x))[0], "x")


def make_inputs(d, with_f8=True):
    """A mixed input set; returns {tensor name: concatenated float32 values}."""
    rng = np.random.default_rng(1234)
    tensors = {}
    a = rng.normal(0, 1, 40000).astype(np.float32)
    np.save(os.path.join(d, "conv.npy"), a.reshape(200, 200))
    b = np.maximum(rng.normal(0.1, 0.8, 30000), 0).astype(np.float16)
    with open(os.path.join(d, "relu_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, b, version=(2, 0))
    c = rng.laplace(0, 0.3, 25000)  # float64 on disk, converted to fp32 by the reader
    if not with_f8:  # python_ref reads fp32/fp16 only
        c = c.astype(np.float32)
    with open(os.path.join(d, "lap64.npy"), "wb") as f:
        np.lib.format.write_array(f, c, version=(3, 0))
    t1 = (rng.standard_t(3, 20000) * 0.2).astype(np.float32)
    t2 = (rng.standard_t(3, 20000) * 0.2).astype(np.float32)
    bm = np.concatenate([rng.normal(-1, 0.4, 10000), rng.normal(1, 0.4, 10000)]).astype(np.float16)
    np.savez(os.path.join(d, "batch0.npz"), **{"attn: q k": t1, "bimodal": bm})
    np.savez_compressed(os.path.join(d, "batch1.npz"), **{"attn: q k": t2})
    tensors["conv"] = a
    tensors["relu_v2"] = b.astype(np.float32)
    tensors["lap64"] = c.astype(np.float32)
    tensors["attn: q k"] = np.concatenate([t1, t2])
    tensors["bimodal"] = bm.astype(np.float32)
    return tensors


def read_cache(path):
    with open(path) as f:
        lines = f.read().splitlines()
    out = {}
    for ln in lines[1:]:
        name, _, h = ln.rpartition(": ")
        out[name] = h
    return lines[0], out


def case_calibrate(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    tensors = make_inputs(d)
    cache, js, csv = (os.path.join(work, n) for n in ("c.cache", "c.json", "c.csv"))
    p = run(["calibrate", "--cache", cache, "--json", js, "--csv", csv, "--device", "cpu", d])
    # No progress bar without a terminal; the only line is the ':' warning of the cache name.
    warn = p.stderr.splitlines()
    require(len(warn) == 1 and "tensor name 'attn: q k' contains ':'" in warn[0],
            f"stderr: {p.stderr!r}")
    for name in tensors:
        require(name in p.stdout, f"table lacks {name}:\n{p.stdout}")
    header, entries = read_cache(cache)
    require(header == "TRT-8601-EntropyCalibration2", header)
    require(list(entries) == ["attn: q k", "bimodal", "conv", "lap64", "relu_v2"],
            f"cache order/names: {list(entries)}")
    with open(js) as f:
        doc = json.load(f)
    for name, vals in tensors.items():
        t = doc["tensors"][name]
        require(entries[name] == t["scale_hex"] == f32_hex(t["scale"]), f"{name}: cache vs JSON")
        st = t["stats"]
        require(st["elements"] == vals.size, f"{name}: elements {st['elements']} != {vals.size}")
        require(st["max_abs"] == float(np.max(np.abs(vals))), f"{name}: max_abs")
        require(st["min"] == float(vals.min()) and st["max"] == float(vals.max()), f"{name}: min/max")
        require(t["zero_point"] == 0 and t["method"] == "entropy", name)
        # scale = fp32(fp32(amax) / 127)
        require(f32_hex(np.float32(np.float32(t["amax"]) / np.float32(127))) == t["scale_hex"],
                f"{name}: scale is not fp32(amax)/127")
    require(len(doc["tensors"]["attn: q k"]["sources"]) == 2, "two batches of 'attn: q k'")
    with open(csv) as f:
        rows = f.read().splitlines()
    require(len(rows) == 1 + len(tensors), f"csv rows: {len(rows)}")
    # check: every stored scale equals the brute-force reference.
    p = run(["check", "--cache", cache, d])
    require("OK: 5 of 5" in p.stdout, p.stdout)
    p = run(["check", "--json", js, d])
    require("OK: 5 of 5" in p.stdout, p.stdout)
    # A tampered cache is detected.
    with open(cache) as f:
        text = f.read()
    bad = text.replace("conv: " + entries["conv"], "conv: " + format(int(entries["conv"], 16) + 1, "x"))
    with open(cache, "w") as f:
        f.write(bad)
    p = run(["check", "--cache", cache, d], expect_rc=1)
    require("DIFFERS" in p.stdout and "FAILED: 4 of 5" in p.stdout, p.stdout)


def case_methods(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    make_inputs(d)
    js = os.path.join(work, "m.json")
    cache = os.path.join(work, "m.cache")
    p = run(["calibrate", "--method", "entropy,max", "--method", "percentile,mse", "--json", js,
             "--cache", cache, "--curves", os.path.join(work, "curves"), d])
    for m in ("entropy amax", "max amax", "percentile amax", "mse amax"):
        require(m in p.stdout, f"side-by-side table lacks '{m}':\n{p.stdout}")
    with open(js) as f:
        doc = json.load(f)
    t = doc["tensors"]["conv"]
    require(set(t["methods"]) == {"entropy", "max", "percentile", "mse"}, t["methods"].keys())
    require(t["methods"]["max"]["amax"] == t["stats"]["max_abs"], "max amax = max |x|")
    # Curves: the minimum of the entropy curve is the chosen candidate (last minimum wins).
    cf = os.path.join(work, "curves", t["methods"]["entropy"]["curve_file"])
    arr = np.loadtxt(cf, delimiter=",", skiprows=1)
    k = len(arr) - 1 - int(np.argmin(arr[::-1, 2]))
    require(128 + k == t["index"], f"curve argmin {128 + k} != index {t['index']}")
    mse_cf = os.path.join(work, "curves", t["methods"]["mse"]["curve_file"])
    arr = np.loadtxt(mse_cf, delimiter=",", skiprows=1)
    require(128 + int(np.argmin(arr[:, 2])) == t["methods"]["mse"]["index"], "mse curve argmin")
    header, _ = read_cache(cache)
    require(header == "TRT-8601-EntropyCalibration2", header)
    p = run(["calibrate", "--method", "percentile", "--trt-version", "100900", "--cache",
             os.path.join(work, "p.cache"), d])
    header, _ = read_cache(os.path.join(work, "p.cache"))
    require(header == "TRT-100900-MinMaxCalibration", header)
    # Reference check of a percentile JSON.
    run(["calibrate", "--method", "mse", "--json", os.path.join(work, "mse.json"), d])
    p = run(["check", "--json", os.path.join(work, "mse.json"), d])
    require("OK: 5 of 5" in p.stdout, p.stdout)


def case_python_ref(work):
    """klcal and python_ref/calibrate.py pick the same index and amax (bit-equal scale)."""
    d = os.path.join(work, "in")
    os.makedirs(d)
    make_inputs(d, with_f8=False)
    script = os.path.join(ROOT, "python_ref", "calibrate.py")
    configs = [
        ["--method", "entropy", "--rules", "tensorrt", "--bins", "2048"],
        ["--method", "entropy", "--rules", "mxnet", "--bins", "8001"],
        ["--method", "max", "--rules", "tensorrt", "--bins", "2048"],
        ["--method", "percentile", "--rules", "tensorrt", "--bins", "2048"],
        ["--method", "mse", "--rules", "tensorrt", "--bins", "1024"],
        ["--method", "entropy", "--rules", "tensorrt", "--bins", "1024", "--range", "streaming"],
    ]
    for cfg in configs:
        ours = os.path.join(work, "ours.json")
        ref = os.path.join(work, "ref.json")
        for f in (ours, ref):
            if os.path.exists(f):
                os.remove(f)
        run(["calibrate", "--quiet", "--json", ours] + cfg + [d])
        p = subprocess.run([sys.executable, script, "--json", ref] + cfg + [d],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900)
        require(p.returncode == 0, f"calibrate.py {cfg} failed:\n{p.stderr}")
        with open(ours) as f:
            a = json.load(f)["tensors"]
        with open(ref) as f:
            b = json.load(f)["tensors"]
        require(set(a) == set(b), f"{cfg}: tensor names differ: {set(a)} vs {set(b)}")
        for name in a:
            x, y = a[name], b[name]
            require(x["index"] == y["index"], f"{cfg} {name}: index {x['index']} vs {y['index']}")
            require(x["amax"] == y["amax"], f"{cfg} {name}: amax {x['amax']!r} vs {y['amax']!r}")
            require(f32_hex(x["scale"]) == f32_hex(y["scale"]),
                    f"{cfg} {name}: scale {x['scale']!r} vs {y['scale']!r}")
        print(f"{' '.join(cfg)}: {len(a)} tensors agree")


def case_demo(work):
    out = os.path.join(work, "demo")
    p = run(["demo", "--out", out])
    for n in ("batch0.npz", "batch1.npz", "head.logits.npy", "calibration.cache",
              "calibration.json"):
        require(os.path.exists(os.path.join(out, n)), f"demo did not write {n}")
    require("conv1.relu" in p.stdout and "calibration.cache" in p.stdout, p.stdout)
    # Second run refuses to overwrite; --force regenerates identical bytes (deterministic).
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    p = run(["demo", "--out", out], expect_rc=3)
    require("file exists (use --force to overwrite)" in p.stderr, p.stderr)
    run(["demo", "--out", out, "--force", "--quiet"])
    for n, data in before.items():
        require(open(os.path.join(out, n), "rb").read() == data, f"demo output {n} changed")
    # The data is what it says: fp16 and fp32 layers, NaN/Inf in head.logits.
    z = np.load(os.path.join(out, "batch0.npz"))
    require(z["block3.laplace"].dtype == np.float16 and z["conv1.relu"].dtype == np.float32,
            "demo dtypes")
    require(float((z["conv1.relu"] == 0).mean()) > 0.3, "ReLU layer has a zero spike")
    logits = np.load(os.path.join(out, "head.logits.npy"))
    require(int(np.isnan(logits).sum()) == 2 and int(np.isinf(logits).sum()) == 1, "NaN/Inf")
    p = run(["check", "--cache", os.path.join(out, "calibration.cache"), out])
    require("OK: 6 of 6" in p.stdout, p.stdout)
    # Temporary directory mode: inputs removed, outputs kept.
    env_tmp = os.path.join(work, "tmp")
    os.makedirs(env_tmp)
    p = subprocess.run([KLCAL, "demo", "--quiet"], env=dict(os.environ, TMPDIR=env_tmp),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    require(p.returncode == 0, p.stderr)
    (sub,) = os.listdir(env_tmp)
    require(sorted(os.listdir(os.path.join(env_tmp, sub))) ==
            ["calibration.cache", "calibration.json"], os.listdir(os.path.join(env_tmp, sub)))


def write_npy_raw(path, descr, shape, payload, fortran=False):
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + payload)


def case_bad_inputs(work):
    d = os.path.join(work, "bad")
    os.makedirs(d)
    good = os.path.join(d, "good.npy")
    np.save(good, np.linspace(-1, 1, 1000, dtype=np.float32))
    np.save(os.path.join(d, "be.npy"), np.arange(10, dtype=">f4"))
    np.save(os.path.join(d, "int.npy"), np.arange(10, dtype=np.int32))
    np.save(os.path.join(d, "obj.npy"), np.array([1, "a"], dtype=object), allow_pickle=True)
    np.save(os.path.join(d, "fortran.npy"), np.asfortranarray(np.ones((3, 4), np.float32)))
    with open(os.path.join(d, "trunc.npy"), "wb") as f:
        f.write(open(good, "rb").read()[:-10])
    with open(os.path.join(d, "garbage.npz"), "wb") as f:
        f.write(b"PK" + b"\x00" * 50)
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("x")
    write_npy_raw(os.path.join(d, "hdr.npy"), "<f4", "(10", b"\0" * 40)
    write_npy_raw(os.path.join(d, "size.npy"), "<f4", "(11,)", b"\0" * 40)
    empty_dir = os.path.join(d, "empty")
    os.makedirs(empty_dir)
    existing = os.path.join(d, "exists.cache")
    with open(existing, "w") as f:
        f.write("keep me\n")
    cases = [
        (["calibrate", os.path.join(d, "missing.npy")], 3, "missing.npy: no such file or directory"),
        (["calibrate", empty_dir], 3, "directory contains no .npy or .npz files"),
        (["calibrate", "--frobnicate", good], 2, "unknown option '--frobnicate'"),
        (["calibrate", "--bins", "0", good], 2, "--bins 0: must be between 2 and 16777216"),
        (["calibrate", "--bins", "abc", good], 2, "--bins 'abc': not an integer"),
        (["calibrate", "--bins"], 2, "option --bins needs a value"),
        (["calibrate", "--percentile", "101", good], 2, "--percentile 101: must be between 0 and 100"),
        (["calibrate", "--bits", "1", good], 2, "--bits 1: must be between 2 and 16"),
        (["calibrate", "--start-bin", "3000", good], 2, "--start-bin 3000 must be at most --bins 2048"),
        (["calibrate", "--stride", "0", good], 2, "--stride 0: must be between 1"),
        (["calibrate", "--method", "kl", good], 2, "--method 'kl': expected entropy"),
        (["calibrate", "--rules", "mxnet", "--bins", "2048", good], 2, "--rules mxnet needs an odd --bins"),
        (["calibrate", "--rules", "mxnet", "--method", "mse", good], 2, "--method mse needs the abs histogram"),
        (["calibrate", "--range", "streaming", "--bins", "2000", good], 2, "power-of-two --bins (got 2000"),
        (["calibrate", "--device", "tpu", good], 2, "--device 'tpu': expected auto, gpu or cpu"),
        (["calibrate", "--trt-version", "86", good], 2, "--trt-version '86'"),
        (["calibrate", os.path.join(d, "be.npy")], 3, "be.npy: big-endian dtype '>f4'"),
        (["calibrate", os.path.join(d, "int.npy")], 3, "int.npy: unsupported dtype '<i4'"),
        (["calibrate", os.path.join(d, "obj.npy")], 3, "obj.npy: unsupported dtype '|O'"),
        (["calibrate", os.path.join(d, "fortran.npy")], 3, "fortran.npy: Fortran-order arrays"),
        (["calibrate", os.path.join(d, "trunc.npy")], 3, "trunc.npy: shape/size mismatch"),
        (["calibrate", os.path.join(d, "size.npy")], 3, "size.npy: shape/size mismatch: shape (11,)"),
        (["calibrate", os.path.join(d, "hdr.npy")], 3, "hdr.npy: malformed .npy header"),
        (["calibrate", os.path.join(d, "garbage.npz")], 3, "garbage.npz: not a zip archive"),
        (["calibrate", os.path.join(d, "notes.txt")], 3, "notes.txt: not a .npy or .npz file"),
        (["calibrate", "--cache", existing, good], 3, "exists.cache: file exists (use --force"),
        (["calibrate", "--json", os.path.join(d, "nodir", "x.json"), good], 3, "does not exist"),
        (["calibrate"], 2, "no INPUT given"),
        (["check", good], 2, "give exactly one of --cache FILE or --json FILE"),
        (["check", "--cache", os.path.join(d, "notes.txt"), good], 3, "notes.txt:1: expected a header"),
        (["inspect", "--width", "5", good], 2, "--width 5: must be between 10 and 1000"),
        (["frobnicate"], 2, "unknown command 'frobnicate'"),
    ]
    failures = []
    for args, rc, needle in cases:
        p = run(args, check=False)
        lines = p.stderr.strip().splitlines()
        ok = p.returncode == rc and needle in p.stderr and len(lines) == 1
        ok = ok and p.returncode < 128  # never a crash (signal)
        print(f"{'ok  ' if ok else 'FAIL'} rc={p.returncode} {' '.join(args[:3])}: {p.stderr.strip()}")
        if not ok:
            failures.append(f"{args}: rc {p.returncode} (want {rc}), stderr {p.stderr!r}, want {needle!r}")
    require(open(existing).read() == "keep me\n", "existing output was modified")
    # --device gpu: an error without a device or without CUDA, never a silent CPU run.
    p = run(["calibrate", "--device", "gpu", good], check=False)
    if p.returncode != 0:
        require("--device gpu" in p.stderr and p.returncode in (2, 4), p.stderr)
    require(not failures, "\n".join(failures))


def case_degenerate(work):
    d = os.path.join(work, "deg")
    os.makedirs(d)
    np.save(os.path.join(d, "a_ok.npy"), np.linspace(-2, 2, 5000, dtype=np.float32))
    np.save(os.path.join(d, "b_empty.npy"), np.zeros((0, 4), np.float32))
    np.save(os.path.join(d, "c_nan.npy"), np.full(100, np.nan, np.float32))
    np.save(os.path.join(d, "d_zero.npy"), np.zeros(100, np.float16))
    # Subnormal maximum: the two-pass range is floored at 2^-64 (numerics.md 1.5).
    np.save(os.path.join(d, "e_tiny.npy"), np.array([1e-40, -3e-41, 0, 2e-39], np.float32))
    cache = os.path.join(work, "d.cache")
    p = run(["calibrate", "--cache", cache, "--method", "entropy,max,percentile,mse", d])
    require("tensor 'b_empty' is empty (0 elements), skipped" in p.stderr, p.stderr)
    require("tensor 'c_nan' has no finite values (100 NaN, 0 Inf)" in p.stderr, p.stderr)
    _, entries = read_cache(cache)
    require(entries == {"a_ok": entries["a_ok"], "c_nan": "0", "d_zero": "0", "e_tiny": "0"},
            entries)  # all of e_tiny's mass is in bin 0 of [0, 2^-64): all-zero, degenerate
    js2 = os.path.join(work, "t.json")
    run(["calibrate", "--json", js2, "--method", "max", d])
    p2 = run(["check", "--json", js2, d])
    require("OK: 4 of 4" in p2.stdout, p2.stdout)
    require("degenerate" in p.stdout, p.stdout)
    p = run(["calibrate", os.path.join(d, "b_empty.npy")], expect_rc=3)
    require("every tensor in the inputs is empty" in p.stderr, p.stderr)
    # Streaming gives the same thresholds as the reference's streaming histogram.
    js = os.path.join(work, "s.json")
    run(["calibrate", "--range", "streaming", "--json", js, d])
    p = run(["check", "--json", js, d])
    require("OK: 4 of 4" in p.stdout, p.stdout)


def case_inspect(work):
    d = os.path.join(work, "ins")
    os.makedirs(d)
    rng = np.random.default_rng(5)
    np.savez(os.path.join(d, "x.npz"), act=rng.normal(0, 1, 20000).astype(np.float32),
             other=np.ones(3, np.float32))
    p = run(["inspect", os.path.join(d, "x.npz") + ":act", "--width", "60", "--height", "8"])
    lines = p.stdout.splitlines()
    plot = [ln for ln in lines if ln.startswith("  |")]
    require(len(plot) == 8, p.stdout)
    require(all(len(ln) <= 3 + 60 for ln in plot), "plot wider than --width")
    for tag in ("E entropy", "M max", "P percentile", "S mse"):
        require(tag in p.stdout, p.stdout)
    marker_line = lines[lines.index("  +" + "-" * 60) + 1]
    require("M" in marker_line and marker_line.rstrip().endswith("M"), marker_line)
    p = run(["inspect", os.path.join(d, "x.npz")], expect_rc=2)
    require("name one as" in p.stderr, p.stderr)


def case_plot(work):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: skipped")
        sys.exit(SKIP)
    d = os.path.join(work, "in")
    os.makedirs(d)
    make_inputs(d)
    js = os.path.join(work, "p.json")
    curves = os.path.join(work, "curves")
    run(["calibrate", "--quiet", "--method", "entropy,mse,percentile,max", "--json", js,
         "--curves", curves, d])
    out = os.path.join(work, "png")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "python_ref", "plot.py"), "--json", js,
                        "--curves", curves, "--out", out], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=600)
    require(p.returncode == 0, p.stderr)
    pngs = sorted(os.listdir(out))
    require(len(pngs) == 5, pngs)
    for f in pngs:
        with open(os.path.join(out, f), "rb") as fh:
            require(fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{f} is not a PNG")


def main_for(scope, prefix):
    """The command line of a case file (`--klcal PATH CASE`): runs `case_CASE` of `scope` (the
    file's globals()) in a fresh temporary directory, removed afterwards; a case that returns
    SKIP exits with SKIP (ctest's SKIP_RETURN_CODE)."""
    global KLCAL
    cases = {n[5:]: f for n, f in scope.items() if n.startswith("case_")}
    ap = argparse.ArgumentParser()
    ap.add_argument("--klcal", required=True)
    ap.add_argument("case", choices=sorted(cases))
    a = ap.parse_args()
    KLCAL = os.path.abspath(a.klcal)
    work = tempfile.mkdtemp(prefix=prefix)
    try:
        rc = cases[a.case](work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rc == SKIP:
        print(f"{a.case}: skipped")
        sys.exit(SKIP)
    print(f"{a.case}: passed")


if __name__ == "__main__":
    main_for(globals(), "klcal-e2e-")
