#!/usr/bin/env python3
"""End-to-end tests of what the klcal tool reads and writes: atomic outputs (disk full, file size
limit), output/input collisions, non-regular inputs, duplicate inputs, tensor names, zero-scale
warnings, --names, natural order and --recursive."""
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_e2e as e2e  # noqa: E402  (run, require, read_cache, f32_hex; exits 77 without numpy)
from cli_e2e import np, require, read_cache  # noqa: E402


def run(args, expect_rc=0, check=True, **kw):
    """Runs klcal with a timeout (a hang is a failure, never a stuck test)."""
    p = subprocess.run([e2e.KLCAL] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=kw.pop("timeout", 60), **kw)
    if check and p.returncode != expect_rc:
        raise AssertionError(f"klcal {' '.join(args)}: exit {p.returncode}, expected {expect_rc}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def expect_error(args, rc, needle, **kw):
    """One error line containing `needle`, exit code `rc`, no crash."""
    p = run(args, check=False, **kw)
    lines = p.stderr.strip().splitlines()
    ok = p.returncode == rc and needle in p.stderr and len(lines) == 1
    print(f"{'ok  ' if ok else 'FAIL'} rc={p.returncode} {' '.join(args)[:80]}: {p.stderr.strip()}")
    require(ok, f"{args}: rc {p.returncode} (want {rc}), stderr {p.stderr!r}, want {needle!r}")
    return p


def leftovers(d):
    """Temporaries of the atomic writer left in d."""
    return [f for f in os.listdir(d) if ".tmp." in f]


def npy_bytes(a):
    import io
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def small_inputs(d, n=6):
    rng = np.random.default_rng(7)
    for i in range(n):
        np.save(os.path.join(d, f"t{i}.npy"), rng.normal(0, 1 + i, 3000).astype(np.float32))


# ---- atomic outputs -----------------------------------------------------------------------


def check_untouched(outs, before, d, p):
    for path, text in zip(outs, before):
        require(open(path).read() == text, f"{path} was changed by a failing run:\n{p.stderr}")
    require(not leftovers(d), f"temporaries left behind: {leftovers(d)}")


def case_disk_full(work):
    """Disk full on a small tmpfs (skipped where mount is not allowed), then a file size limit
    (RLIMIT_FSIZE, write() fails with EFBIG): every run either replaces all outputs or none."""
    d = os.path.join(work, "in")
    os.makedirs(d)
    small_inputs(d)
    tested = 0
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    try:
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        why = m.stdout.strip() if m.returncode else ""
    except OSError as e:
        why = str(e)
    if why:
        print(f"tmpfs disk-full test skipped: mount failed ({why})")
    else:
        try:
            outs = [os.path.join(mnt, n) for n in ("c.cache", "c.json")]
            before = ["old cache\n", "old json\n"]
            for path, text in zip(outs, before):
                with open(path, "w") as f:
                    f.write(text)
            # Fill the file system but for about 1 KiB: the cache (~200 bytes) still fits, the
            # JSON (~6 KiB for 6 tensors) does not.
            with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:
                while os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize > 2048:
                    f.write(b"\0" * 1024)
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            print(f"tmpfs: {free} bytes free")
            p = expect_error(["calibrate", "--device", "cpu", "--force", "-q", "--cache", outs[0],
                              "--json", outs[1], d], 3, "No space left on device")
            require("no output was changed" in p.stderr, p.stderr)
            check_untouched(outs, before, mnt, p)
            os.remove(os.path.join(mnt, "filler"))
            run(["calibrate", "--device", "cpu", "--force", "-q", "--cache", outs[0], "--json",
                 outs[1], d])
            require(open(outs[0]).read().startswith("TRT-8601-"), "cache not written")
            json.load(open(outs[1]))
            require(not leftovers(mnt), leftovers(mnt))
            tested += 1
        finally:
            subprocess.run(["umount", mnt])

    # RLIMIT_FSIZE: any file write beyond the limit fails (SIGXFSZ ignored, so write() reports
    # EFBIG), through the same code path as a full disk.
    out = os.path.join(work, "out")
    os.makedirs(out)
    outs = [os.path.join(out, n) for n in ("c.cache", "c.csv", "c.json")]
    before = ["old cache\n", "old csv\n", "old json\n"]
    for path, text in zip(outs, before):
        with open(path, "w") as f:
            f.write(text)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    args = ["calibrate", "--device", "cpu", "--force", "-q", "--cache", outs[0], "--csv", outs[1],
            "--json", outs[2], d]
    p = expect_error(args, 3, "c.json: write failed: File too large", preexec_fn=limit)
    check_untouched(outs, before, out, p)
    # The same with --curves: the curve files are new names, none of them may appear.
    curves = os.path.join(out, "curves")
    p = expect_error(args + ["--curves", curves], 3, "write failed: File too large",
                     preexec_fn=limit)
    check_untouched(outs, before, out, p)
    require(os.listdir(curves) == [], f"curve files written by a failing run: {os.listdir(curves)}")
    # With a state file (--save-histograms): not created either.
    st = os.path.join(out, "s.klst")
    p = expect_error(args + ["--save-histograms", st], 3, "File too large", preexec_fn=limit)
    check_untouched(outs, before, out, p)
    require(not os.path.exists(st), "state file written by a failing run")
    tested += 1
    run(args)
    require(not leftovers(out), leftovers(out))
    require(open(outs[1]).read().startswith("tensor,method,"), "csv not replaced")
    print(f"disk_full: {tested} failure mode(s) tested")


# ---- output checks ------------------------------------------------------------------------


def case_outputs(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    small_inputs(d, 2)
    a = os.path.join(d, "t0.npy")
    o = os.path.join(work, "o.txt")
    link = os.path.join(work, "link.txt")
    with open(o, "w") as f:
        f.write("keep\n")
    os.link(o, link)
    in_link = os.path.join(work, "input_link.json")
    os.link(a, in_link)
    a_bytes = open(a, "rb").read()
    cases = [
        (["--force", "--cache", o, "--json", o], "is also the output of --cache"),
        (["--cache", os.path.join(work, "n.c"), "--json", os.path.join(work, ".", "n.c")],
         "is also the output of --cache"),
        (["--force", "--cache", o, "--json", link], "is also the output of --cache"),
        (["--force", "--json", a], "is one of the input files"),
        (["--force", "--csv", in_link], "is one of the input files"),
        (["--json", "-", "--csv", "-"], "standard output is already used"),
        (["--curves", "-"], "--curves names a directory"),
        (["--json", work], "is a directory"),
    ]
    for extra, needle in cases:
        rc = 2 if needle.startswith("--curves") else 3
        expect_error(["calibrate", "-q"] + extra + [d], rc, needle)
    require(open(o).read() == "keep\n", "an output was modified")
    require(open(a, "rb").read() == a_bytes, "an input was modified")
    # A --curves file and --json naming the same path.
    curves = os.path.join(work, "curves")
    os.makedirs(curves)
    expect_error(["calibrate", "-q", "--curves", curves, "--json",
                  os.path.join(curves, "t0.histogram.csv"), d], 3, "is also the output of")
    # State files: --save-histograms, klcal search and klcal merge outputs are checked the same.
    st = os.path.join(work, "s.klst")
    expect_error(["calibrate", "-q", "--save-histograms", st, "--json", st, d], 3,
                 "--save-histograms " + st + ": is also the output of --json")
    run(["calibrate", "-q", "--save-histograms", st, d])
    st2 = os.path.join(work, "s2.klst")
    shutil.copy(st, st2)
    st_bytes = open(st, "rb").read()
    expect_error(["merge", st, st2, "-o", st, "--force"], 3, "-o " + st + ": is one of the input")
    expect_error(["search", st, "--json", st, "--force"], 3, "--json " + st + ": is one of the input")
    require(open(st, "rb").read() == st_bytes, "a state file input was modified")
    # '-': the JSON on stdout (no table mixed in), parseable.
    p = run(["calibrate", "--json", "-", d])
    doc = json.loads(p.stdout)
    require(sorted(doc["tensors"]) == ["t0", "t1"], doc["tensors"].keys())
    p = run(["calibrate", "--cache", "-", "--device", "cpu", d])
    require(p.stdout.startswith("TRT-8601-EntropyCalibration2\nt0: "), p.stdout)
    # Character devices: written without --force; a failing one (/dev/full) is an error.
    expect_error(["calibrate", "-q", "--json", "/dev/null", "--csv", "/dev/../dev/null", d], 3,
                 "--csv /dev/../dev/null: is also the output of --json /dev/null")
    run(["calibrate", "-q", "--json", "/dev/null", d])
    if os.path.exists("/dev/full"):
        expect_error(["calibrate", "-q", "--json", "/dev/full", d], 3,
                     "--json /dev/full: write failed: No space left on device")
    # A FIFO as output: written in place (a reader on the other end gets the JSON).
    fifo = os.path.join(work, "out.fifo")
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", fifo], stdout=subprocess.PIPE, text=True)
    run(["calibrate", "-q", "--json", fifo, d])
    got, _ = reader.communicate(timeout=60)
    require(json.loads(got)["format"] == "klcal-calibration 1", got[:100])
    require(stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced")


# ---- input checks -------------------------------------------------------------------------


def case_inputs(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    good = os.path.join(d, "good.npy")
    np.save(good, np.linspace(-1, 1, 100, dtype=np.float32))
    fifo = os.path.join(work, "pipe.npy")
    os.mkfifo(fifo)
    fifo_dir = os.path.join(work, "fifo_dir")
    os.makedirs(fifo_dir)
    shutil.copy(good, fifo_dir)
    os.mkfifo(os.path.join(fifo_dir, "p.npy"))
    dev_link = os.path.join(work, "zero.npy")
    os.symlink("/dev/zero", dev_link)
    hard = os.path.join(work, "hard.npy")
    os.link(good, hard)
    payload = npy_bytes(np.ones(4, np.float32))

    def npz(name, members):
        path = os.path.join(work, name)
        with zipfile.ZipFile(path, "w") as z:
            for m in members:
                with z.open(zipfile.ZipInfo(m), "w") as f:  # ZipInfo: no duplicate-name warning
                    f.write(payload)
        return path

    newline = npz("newline.npz", ["ok.npy", "a\nb: 3f.npy"])
    dup = npz("dup.npz", ["q.npy", "k.npy", "q.npy"])
    empty = npz("empty_name.npz", [".npy"])
    cr = npz("cr.npz", ["x\r.npy"])
    delete = npz("del.npz", ["x\x7f.npy"])
    ctrl_file = os.path.join(work, "bell\x07.npy")
    shutil.copy(good, ctrl_file)
    dot_file = os.path.join(work, "dots")
    os.makedirs(dot_file)
    shutil.copy(good, os.path.join(dot_file, ".npy"))
    cases = [
        ([fifo], "pipe.npy: is a FIFO (named pipe), expected a regular .npy or .npz file"),
        ([fifo_dir], "p.npy: is a FIFO (named pipe)"),
        ([dev_link], "zero.npy: is a character device"),
        (["/dev/null"], "/dev/null: is a character device"),
        ([good, good], "good.npy: given twice (the same file as"),
        ([d, good], "good.npy: given twice"),
        ([good, hard], "hard.npy: given twice (the same file as"),
        ([d, d], "directory visited twice"),
        ([dup], "dup.npz: member 'q.npy' appears twice in the archive"),
        ([newline], "tensor name 'a\\nb: 3f' contains a control character"),
        ([cr], "tensor name 'x\\r' contains a control character"),
        ([delete], "tensor name 'x\\x7f' contains a control character"),
        ([ctrl_file], "bell\\x07.npy: tensor name 'bell\\x07' contains a control character"),
        ([empty], "member '.npy': empty tensor name"),
        ([dot_file], "dots/.npy: empty tensor name"),
    ]
    for ins, needle in cases:
        expect_error(["calibrate", "-q", "--cache", os.path.join(work, "never.cache")] + ins, 3,
                     needle)
    require(not os.path.exists(os.path.join(work, "never.cache")), "a refused run wrote a cache")
    # Nothing unescaped reaches the terminal: no raw control character in any message.
    p = run(["calibrate", "-q", newline], check=False)
    require("\n" not in p.stderr.rstrip("\n") and "\r" not in p.stderr, repr(p.stderr))
    p = run(["inspect", cr, "--height", "2", "--width", "10"])  # inspect reads it, escaped
    require("\r" not in p.stdout and "cr.npz:x\\r.npy: 4 elements" in p.stdout, repr(p.stdout))

    # ':' in a cache name: one warning per name, only when a cache is written.
    colon = os.path.join(work, "colon")
    os.makedirs(colon)
    np.savez(os.path.join(colon, "b0.npz"), **{"input:0": np.ones(8, np.float32)})
    np.savez(os.path.join(colon, "b1.npz"), **{"input:0": np.ones(8, np.float32)})
    p = run(["calibrate", "-q", colon])
    require(p.stderr == "", p.stderr)
    p = run(["calibrate", "-q", "--cache", os.path.join(work, "colon.cache"), colon])
    lines = p.stderr.splitlines()
    require(len(lines) == 1 and "tensor name 'input:0' contains ':'" in lines[0], p.stderr)


# ---- option checks ------------------------------------------------------------------------


def case_options(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    small_inputs(d, 1)
    c = os.path.join(work, "x.cache")
    for extra, needle in [
        (["--bits", "4"], "--cache needs --bits 8 and signed levels (got --bits 4)"),
        (["--unsigned"], "--cache needs --bits 8 and signed levels (got --bits 8 --unsigned)"),
        (["--trt-version", "0000"], "--trt-version '0000': expected a TensorRT version number"),
        (["--trt-version", "0860"], "--trt-version '0860'"),
        (["--trt-version", "12345"], "--trt-version '12345'"),
        (["--trt-version", "86a1"], "--trt-version '86a1'"),
        (["--trt-version", "1009000"], "--trt-version '1009000'"),
    ]:
        expect_error(["calibrate", "-q", "--cache", c] + extra + [d], 2, needle)
    run(["calibrate", "-q", "--bits", "4", "--unsigned", "--json", os.path.join(work, "u.json"), d])
    for v in ("8601", "100900"):
        run(["calibrate", "-q", "--force", "--trt-version", v, "--cache", c, d])
        require(open(c).readline() == f"TRT-{v}-EntropyCalibration2\n", open(c).readline())


# ---- zero scales --------------------------------------------------------------------------


def case_zero_scale(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    np.save(os.path.join(d, "a_ok.npy"), np.linspace(-2, 2, 500, dtype=np.float32))
    np.save(os.path.join(d, "b_zero.npy"), np.zeros(50, np.float32))
    np.save(os.path.join(d, "c_denormal.npy"), np.array([1e-40, -3e-41, 2e-39], np.float32))
    np.save(os.path.join(d, "d_nan.npy"), np.full(7, np.nan, np.float32))
    np.save(os.path.join(d, "e_inf.npy"), np.array([np.inf, -np.inf], np.float32))
    js = os.path.join(work, "z.json")
    p = run(["calibrate", "--quiet", "--json", js, d])
    lines = p.stderr.splitlines()
    require(p.stdout == "", p.stdout)
    require(len(lines) == 4, p.stderr)
    for name, why in [("b_zero", "is all zero"), ("c_denormal", "has max |x| = 2e-39"),
                      ("d_nan", "has no finite values (7 NaN, 0 Inf)"),
                      ("e_inf", "has no finite values (0 NaN, 2 Inf)")]:
        require(any(f"tensor '{name}' {why}" in ln and "scale 0 (entropy)" in ln for ln in lines),
                p.stderr)
    doc = json.load(open(js))
    for name, t in doc["tensors"].items():
        want = name != "a_ok"
        require(t["zero_scale"] is want and (t["scale"] == 0) is want, f"{name}: {t}")
        require(t["methods"]["entropy"]["zero_scale"] is want, name)


# ---- --names ------------------------------------------------------------------------------


def case_names(work):
    d = os.path.join(work, "in")
    os.makedirs(d)
    rng = np.random.default_rng(3)
    # Member names may hold '/' (and ':'): numpy.savez keeps them as given.
    np.savez(os.path.join(d, "b0.npz"), **{"blk/ln_out": rng.normal(0, 1, 4000).astype(np.float32),
                                           "blk/fc": rng.normal(0, 3, 4000).astype(np.float32)})
    plain = os.path.join(work, "plain.cache")
    run(["calibrate", "-q", "--cache", plain, d])
    _, base = read_cache(plain)
    require(list(base) == ["blk/ln_out", "blk/fc"], base)
    m = os.path.join(work, "map.json")
    with open(m, "w") as f:
        json.dump({"blk/ln_out": ["blk.q", "blk.k", "blk.v"], "blk/fc": "blk.fc1"}, f)
    mapped = os.path.join(work, "mapped.cache")
    js = os.path.join(work, "mapped.json")
    st = os.path.join(work, "mapped.klst")
    p = run(["calibrate", "--names", m, "--cache", mapped, "--json", js, "--device", "cpu",
             "--save-histograms", st, d])
    _, got = read_cache(mapped)
    require(list(got) == ["blk.q", "blk.k", "blk.v", "blk.fc1"], got)
    require(all(got[n] == base["blk/ln_out"] for n in ("blk.q", "blk.k", "blk.v")), got)
    require(got["blk.fc1"] == base["blk/fc"], got)
    require(all(n in p.stdout for n in ("blk.q", "blk.k", "blk.v", "blk.fc1")), p.stdout)
    require(sorted(json.load(open(js))["tensors"]) == ["blk.fc1", "blk.k", "blk.q", "blk.v"], js)
    # The state file keeps the dump names; search applies the same map to the same cache.
    searched = os.path.join(work, "searched.cache")
    run(["search", st, "-q", "--names", m, "--cache", searched])
    require(open(searched).read() == open(mapped).read(), "search --names differs from calibrate")
    # check reads the inputs with the same map.
    p = run(["check", "--cache", mapped, "--names", m, d])
    require("OK: 4 of 4" in p.stdout, p.stdout)
    bad = [
        ({"blk/nope": "x"}, "'blk/nope' is not a tensor of the inputs"),
        ({"blk/fc": "blk/ln_out"}, "tensors 'blk/ln_out' and 'blk/fc' would both be called "
                                   "'blk/ln_out'"),
        ({"blk/fc": ["a", "a"]}, "would both be called 'a'"),
        ({"blk/fc": "a\nb"}, "tensor name 'a\\nb' contains a control character"),
        ({"blk/fc": ""}, "empty tensor name"),
        ({"blk/fc": []}, "expected a string or a non-empty array of strings"),
        ({"blk/fc": [1]}, "expected a string or an array of strings"),
        (["blk/fc"], "expected a JSON object"),
    ]
    for doc, needle in bad:
        with open(m, "w") as f:
            json.dump(doc, f)
        expect_error(["calibrate", "-q", "--names", m, d], 3, needle)
    with open(m, "w") as f:
        f.write("{\"a\": ")
    expect_error(["calibrate", "-q", "--names", m, d], 3, "--names " + m)
    expect_error(["calibrate", "-q", "--names", os.path.join(work, "missing.json"), d], 3,
                 "--names " + os.path.join(work, "missing.json") + ": cannot open")


# ---- order and --recursive ----------------------------------------------------------------


def natural_key(s):
    """Digit runs as numbers (leading zeros ignored), then the whole name byte-wise. Matches
    klcal's order for names where a digit run is never compared with other characters."""
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)], s


def case_order(work):
    d = os.path.join(work, "flat")
    os.makedirs(d)
    names = ["layer.10", "layer.2", "layer.1", "layer.02b", "head", "layer.100.attn", "layer.9"]
    for n in names:
        np.save(os.path.join(d, n + ".npy"), np.linspace(-1, 1, 64, dtype=np.float32))
    c = os.path.join(work, "o.cache")
    run(["calibrate", "-q", "--cache", c, d])
    _, got = read_cache(c)
    want = sorted(names, key=natural_key)
    require(list(got) == want, f"order {list(got)} != {want}")
    # --recursive: batch directories holding the same tensor names are batches of one tensor.
    r = os.path.join(work, "nested")
    total = {}
    rng = np.random.default_rng(11)
    for b in ("batch10", "batch2", "batch1/sub"):
        os.makedirs(os.path.join(r, b))
        for n in ("x", "y"):
            v = rng.normal(0, 1, 1000).astype(np.float32)
            np.save(os.path.join(r, b, n + ".npy"), v)
            total[n] = np.concatenate([total.get(n, np.zeros(0, np.float32)), v])
    expect_error(["calibrate", "-q", r], 3, "contains no .npy or .npz files (--recursive")
    js = os.path.join(work, "r.json")
    run(["calibrate", "-q", "--recursive", "--json", js, r])
    doc = json.load(open(js))
    for n, v in total.items():
        t = doc["tensors"][n]
        require(t["stats"]["elements"] == v.size, f"{n}: {t['stats']}")
        require(t["stats"]["max_abs"] == float(np.max(np.abs(v))), n)
        srcs = [os.path.relpath(s, r) for s in t["sources"]]
        require(srcs == [f"batch1/sub/{n}.npy", f"batch2/{n}.npy", f"batch10/{n}.npy"], srcs)
    os.symlink("..", os.path.join(r, "batch2", "loop"))
    expect_error(["calibrate", "-q", "-r", r], 3, "directory visited twice")


# ---- --json-histograms and --void2 ----------------------------------------------------------


def case_json_histograms(work):
    """The counts in the JSON equal python_ref's two-pass histogram of the same data."""
    sys.path.insert(0, os.path.join(e2e.ROOT, "python_ref"))
    import klcal_ref as ref
    d = os.path.join(work, "in")
    os.makedirs(d)
    rng = np.random.default_rng(21)
    a = rng.standard_t(3, 20000).astype(np.float32)
    b = rng.normal(0, 1, 5000).astype(np.float16)
    np.save(os.path.join(d, "a.npy"), a)
    np.save(os.path.join(d, "b.npy"), b)
    js = os.path.join(work, "h.json")
    run(["calibrate", "-q", "--bins", "512", "--start-bin", "64", "--json-histograms", "--json",
         js, d])
    doc = json.load(open(js))
    for name, vals, dt in (("a", a, "f32"), ("b", b, "f16")):
        h = doc["tensors"][name]["histogram"]
        want = ref.two_pass([vals], dt, 512)
        require(h["counts"] == [int(c) for c in want.counts], f"{name}: counts differ")
        require(h["hi"] == float(want.hi), f"{name}: hi {h['hi']} != {want.hi}")
    # Without the option the counts stay out of the file.
    run(["calibrate", "-q", "--force", "--json", js, d])
    require("counts" not in json.load(open(js))["tensors"]["a"]["histogram"], "counts without "
            "--json-histograms")


def case_void2(work):
    """'<V2' (NumPy's bfloat16) is refused unless --void2 bf16; read as bf16 it calibrates to
    the same bytes as the same values widened to fp32 by NumPy."""
    d = os.path.join(work, "bf16")
    f = os.path.join(work, "f32")
    os.makedirs(d)
    os.makedirs(f)
    rng = np.random.default_rng(9)
    x = (rng.standard_t(4, 30000) * 0.5).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bf16
    bits[:3] = [0x7fc0, 0xff80, 0x0001]  # NaN, -Inf, a subnormal
    e2e.write_npy_raw(os.path.join(d, "act.npy"), "<V2", "(30000,)", bits.tobytes())
    np.save(os.path.join(d, "v.npy"), bits[:1000].view("V2"))  # NumPy writes '|V2'
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    np.save(os.path.join(f, "act.npy"), widened)
    np.save(os.path.join(f, "v.npy"), widened[:1000])
    expect_error(["calibrate", "-q", os.path.join(d, "act.npy")], 3,
                 "act.npy: 2-byte void dtype '<V2' (how NumPy stores bfloat16, but not only that); "
                 "if these are bf16 values, say so with --void2 bf16")
    expect_error(["calibrate", "-q", "--void2", "f16", d], 2, "--void2 'f16': expected bf16")
    outs = {}
    for name, src, extra in (("bf16", d, ["--void2", "bf16"]), ("f32", f, [])):
        o = os.path.join(work, name)
        run(["calibrate", "-q", "--method", "entropy,percentile,mse,max", "--json", o + ".json",
             "--cache", o + ".cache", src] + extra)
        outs[name] = o
    require(open(outs["bf16"] + ".cache").read() == open(outs["f32"] + ".cache").read(),
            "bf16 and its fp32 widening calibrate differently")
    jb, jf = (json.load(open(outs[n] + ".json"))["tensors"] for n in ("bf16", "f32"))
    for t in ("act", "v"):
        require(jb[t]["stats"] == jf[t]["stats"], f"{t}: stats {jb[t]['stats']} vs {jf[t]['stats']}")
        require(jb[t]["methods"] == jf[t]["methods"], f"{t}: method results differ")
    require(jb["act"]["stats"]["nan"] == 1 and jb["act"]["stats"]["inf"] == 1, jb["act"]["stats"])
    # The brute-force reference reads the bf16 file the same way.
    p = run(["check", "--json", outs["bf16"] + ".json", "--void2", "bf16", d])
    require("OK: 8 of 8" in p.stdout, p.stdout)


def case_percentiles(work):
    """--percentile 99.9,99.99,99.999: one result each, equal to python_ref's percentile search,
    to the brute-force reference (check --json) and to one run per value; klcal search gives
    the same from a saved state file."""
    sys.path.insert(0, os.path.join(e2e.ROOT, "python_ref"))
    import klcal_ref as ref
    d = os.path.join(work, "in")
    os.makedirs(d)
    rng = np.random.default_rng(17)
    vals = {"heavy": (rng.standard_t(3, 40000) * 0.3).astype(np.float32),
            "gauss": rng.normal(0, 1, 30000).astype(np.float32)}
    for n, v in vals.items():
        np.save(os.path.join(d, n + ".npy"), v)
    ps = ["99.9", "99.99", "99.999"]
    js, csv, st = (os.path.join(work, n) for n in ("p.json", "p.csv", "p.klst"))
    p = run(["calibrate", "--method", "entropy,percentile", "--percentile", ",".join(ps),
             "--json", js, "--csv", csv, "--save-histograms", st, d])
    labels = ["entropy"] + [f"percentile {x}" for x in ps]
    require(all(f"{lb} amax" in p.stdout for lb in labels[1:]), p.stdout)
    doc = json.load(open(js))
    require(doc["settings"]["methods"] == labels, doc["settings"])
    for n, v in vals.items():
        t = doc["tensors"][n]
        require(list(t["methods"]) == labels, list(t["methods"]))
        h = ref.two_pass([v], "f32", 2048)
        for x in ps:
            want = ref.search_percentile(h, float(x))
            got = t["methods"][f"percentile {x}"]
            require(got["scale_hex"] == e2e.f32_hex(want["scale"]) and got["index"] == want["index"],
                    f"{n} percentile {x}: {got} vs python_ref {want}")
            require(got["params"]["percentile"] == float(x), got["params"])
            one = os.path.join(work, f"{n}_{x}.json")
            run(["calibrate", "-q", "--method", "percentile", "--percentile", x, "--json", one,
                 os.path.join(d, n + ".npy")])
            require(json.load(open(one))["tensors"][n]["scale_hex"] == got["scale_hex"],
                    f"{n} {x}: several-percentile run differs from a single one")
    rows = [r.split(",")[1] for r in open(csv).read().splitlines()[1:]]
    require(rows == labels * 2, rows)
    p = run(["check", "--json", js, d])
    require("OK: 8 of 8" in p.stdout, p.stdout)
    js2 = os.path.join(work, "s.json")
    run(["search", st, "-q", "--method", "entropy,percentile", "--percentile", ",".join(ps),
         "--json", js2])
    a, b = json.load(open(js)), json.load(open(js2))
    for n in vals:
        require(a["tensors"][n]["methods"] == b["tensors"][n]["methods"], f"{n}: search differs")
    expect_error(["calibrate", "-q", "--percentile", "99.9,101", d], 2,
                 "--percentile 101: must be between 0 and 100")
    expect_error(["calibrate", "-q", "--percentile", "99.9,,99", d], 2, "--percentile '': not a")


if __name__ == "__main__":
    e2e.main_for(globals(), "klcal-io-")
