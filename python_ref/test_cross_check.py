"""Cross-checks of the committed golden files with second implementations.

Reads tests/data/*.golden with its own small parser and recomputes every search from the golden
counts with (1) alternative direct formulas that sum in another order (math.fsum, log
differences, pre-smoothing sums for mxnet), held to the reference-vs-golden tolerance of
docs/testing.md, and (2) the O(L) prefix-sum form of numerics.md section 2.1 for tensorrt,
held to the fast-path tolerance. This is what the C++ tests will do to the goldens, so a golden
whose index could flip under another summation order fails here first.
"""

import math
import os
import struct
import unittest
from decimal import Decimal
from fractions import Fraction

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "tests", "data")
EPS = 1e-4


def h32(s):
    return struct.unpack(">f", bytes.fromhex(s))[0]


def h64(s):
    return struct.unpack(">d", bytes.fromhex(s))[0]


def parse(path):
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if not ln.startswith("#")]
    assert lines[0] == "klcal-golden 1" and lines[-1] == "end"
    case = {"searches": [], "batches": []}
    cur = None
    for ln in lines[1:-1]:
        key, _, rest = ln.partition(" ")
        if key == "search":
            method, rules = rest.split()
            cur = {"method": method, "rules": rules, "opts": {}}
            case["searches"].append(cur)
        elif cur is None:
            if key == "batch":
                case["batches"].append(rest.split()[1:])
            elif key == "counts":
                toks = rest.split()
                case["counts"] = {int(a): int(b) for a, b in (t.split(":") for t in toks[1:])}
            else:
                case[key] = rest
        elif key in ("start_bin", "stride", "bits", "unsigned", "index", "degenerate"):
            if key in ("start_bin", "stride", "bits", "unsigned"):
                cur["opts"][key] = int(rest)
            else:
                cur[key] = int(rest)
        elif key == "zero_bin":
            cur["opts"]["zero_bin"] = rest
        elif key == "percentile":
            cur["opts"]["percentile"] = h64(rest)
        elif key in ("amax", "score", "clipped"):
            cur[key] = h64(rest)
        elif key == "scale":
            cur[key] = h32(rest)
        elif key == "error":
            cur["error"] = rest
        elif key == "curve":
            toks = rest.split()
            cur["curve"] = [h64(t) for t in toks[1:]]
        else:
            raise AssertionError(f"unknown line {ln!r}")
    return case


# ---- alternative direct formulas ------------------------------------------------------------

def trt_alt(c, i, L):
    total = int(c.sum())
    if total == 0:
        return math.inf
    t = int(c[i:].sum())
    P = c[:i].astype(np.float64)
    P[i - 1] += t
    g = (np.arange(i) * L) // i
    nz = c[:i] > 0
    M = np.bincount(g, weights=c[:i].astype(np.float64), minlength=L)
    n = np.bincount(g, weights=nz.astype(np.float64), minlength=L)
    Q = np.zeros(i)
    Q[nz] = M[g[nz]] / n[g[nz]]
    sq = math.fsum(Q)
    if sq == 0 or np.any((P > 0) & (Q == 0)):
        return math.inf
    m = P > 0
    p = P[m] / total
    q = Q[m] / sq
    return math.fsum(p * (np.log(p) - np.log(q)))


def trt_prefix(c, cands, L):
    """Section 2.1: O(L) per candidate from prefix sums."""
    cf = c.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        clnc = np.where(c > 0, cf * np.log(np.where(c > 0, cf, 1.0)), 0.0)
    S = np.concatenate([[0], np.cumsum(c, dtype=np.uint64)]).astype(object)
    H = np.concatenate([[0.0], np.cumsum(clnc)])
    N = np.concatenate([[0], np.cumsum(c > 0)])
    Sf = np.concatenate([[0.0], np.cumsum(cf)])  # exact: integer sums below 2^53 in the goldens
    Tp = int(S[-1])
    out = []
    for i in cands:
        t = Tp - int(S[i])
        Si = int(S[i])
        if Tp == 0 or Si == 0 or (c[i - 1] == 0 and t > 0):
            out.append(math.inf)
            continue
        g = np.arange(L)
        a = -((-g * i) // L)  # ceil(g i / L): first bin of level g
        b = -((-(g + 1) * i) // L)
        Mg = Sf[b] - Sf[a]
        ng = N[b] - N[a]
        has = ng > 0
        acc = math.fsum(Mg[has] * np.log(Mg[has] / ng[has]))
        gl = (i - 1) * L // i
        q_last = Mg[gl] / ng[gl] if ng[gl] else None
        Plast = int(c[i - 1]) + t
        bracket = H[i - 1] + (Plast * math.log(Plast) if Plast else 0.0) - acc - (t * math.log(q_last) if t else 0.0)
        out.append(bracket / Tp + math.log(Si / Tp))
    return out


def smooth_alt(v):
    zeros = int((v == 0).sum())
    nonzeros = len(v) - zeros
    if nonzeros == 0 or EPS * zeros / nonzeros >= 1:
        return None
    return np.where(v == 0, EPS, v - EPS * zeros / nonzeros)


def mxnet_alt(c, i, L):
    B = len(c)
    z = B // 2
    s = 2 * i + 1
    P = c[z - i:z + i + 1].astype(np.float64)
    W = P.copy()
    W[0] = 0
    P[0] = float(c[:z - i + 1].sum())
    P[-1] = float(c[z + i:].sum())
    m = s // L
    starts = np.arange(L) * m  # level L-1 runs to the end of the window
    M = np.add.reduceat(W, starts)
    n = np.add.reduceat((W != 0).astype(np.int64), starts)
    g = np.minimum(np.arange(s) // m, L - 1)
    Q = np.where((P != 0) & (n[g] > 0), M[g] / np.maximum(n[g], 1), 0.0)
    sp, sq = math.fsum(P), math.fsum(Q)  # pre-smoothing sums (numerics.md: equal after smoothing)
    Ps, Qs = smooth_alt(P), smooth_alt(Q)
    if Ps is None or Qs is None:
        return math.inf
    p = Ps / sp
    q = Qs / sq
    return math.fsum(p * (np.log(p) - np.log(q)))


def mse_alt(c, hi, cands, qmax):
    B = len(c)
    w = hi / B
    mids = (np.arange(B) + 0.5) * w
    out = []
    for i in cands:
        s = qmax / mids[i]
        fq = np.clip(np.rint(mids * s), -qmax, qmax) / s
        out.append(math.fsum(c.astype(np.float64) * (fq - mids) ** 2) * (1.0 / B))
    return out


def argmin(curve, last):
    finite = [(v, k) for k, v in enumerate(curve) if not math.isinf(v)]
    if not finite:
        return None
    best = min(v for v, _ in finite)
    ks = [k for v, k in finite if v == best]
    return ks[-1] if last else ks[0]


class TestCrossCheck(unittest.TestCase):
    def assert_curve_close(self, name, got, ref, abs_tol, rel_tol):
        self.assertEqual(len(got), len(ref), name)
        for k, (g, r) in enumerate(zip(got, ref)):
            if math.isinf(r):
                self.assertTrue(math.isinf(g), f"{name}[{k}]")
            else:
                self.assertLessEqual(abs(g - r), abs_tol + rel_tol * abs(r), f"{name}[{k}] {g!r} {r!r}")

    def test_goldens_against_alternative_formulas(self):
        checked = 0
        for fn in sorted(os.listdir(DATA)):
            if not fn.endswith(".golden"):
                continue
            case = parse(os.path.join(DATA, fn))
            if "counts" not in case:
                continue
            B = int(case["bins"])
            hi = h32(case["hi"])
            c = np.zeros(B, dtype=np.uint64)
            for j, v in case["counts"].items():
                c[j] = v
            for k, srch in enumerate(case["searches"]):
                if "error" in srch:
                    continue
                name = f"{fn}#{k}"
                o = srch["opts"]
                bits = o.get("bits", 8)
                uns = o.get("unsigned", 0)
                if srch["method"] == "entropy" and srch["rules"] == "tensorrt":
                    L = (1 << bits) if uns else (1 << (bits - 1))
                    cc = c.copy()
                    if o.get("zero_bin", "copy_next") == "copy_next":
                        cc[0] = cc[1]
                    cands = list(range(o.get("start_bin", 128), B + 1, o.get("stride", 1)))
                    alt = [trt_alt(cc, i, L) for i in cands]
                    self.assert_curve_close(name, alt, srch["curve"], 1e-12, 1e-10)
                    pre = trt_prefix(cc, cands, L)
                    self.assert_curve_close(name + " prefix", pre, srch["curve"], 1e-9, 1e-9)
                    k_alt = argmin(alt, last=True)
                elif srch["method"] == "entropy":
                    L = (1 << bits) - 1
                    cands = list(range(L // 2, B // 2 + 1))
                    alt = [mxnet_alt(c, i, L) for i in cands]
                    self.assert_curve_close(name, alt, srch["curve"], 1e-12, 1e-10)
                    k_alt = argmin(alt, last=False)
                elif srch["method"] == "mse":
                    qmax = (1 << bits) - 1 if uns else (1 << (bits - 1)) - 1
                    cands = list(range(o.get("start_bin", 128), B, o.get("stride", 1)))
                    alt = mse_alt(c, hi, cands, qmax)
                    self.assert_curve_close(name, alt, srch["curve"], 1e-12, 1e-10)
                    k_alt = argmin(alt, last=False)
                elif srch["method"] == "percentile":
                    T = int(c.sum())
                    if T == 0 or srch["degenerate"]:
                        continue
                    # numerics.md 4 in rationals: P rounds the fp64 product p * 1e9 half away
                    # from zero; a p whose shortest decimal has at most 9 fractional digits
                    # must give exactly that decimal.
                    p = o.get("percentile", 99.99)
                    P = math.floor(Fraction(p * 1e9) + Fraction(1, 2))
                    dec = Fraction(Decimal(repr(p))) * 10 ** 9
                    if dec.denominator == 1:
                        self.assertEqual(P, dec, name)
                    run = np.cumsum(c, dtype=np.uint64)
                    kk = next(j for j in range(B)
                              if Fraction(int(run[j]), T) * 100 >= Fraction(P, 10 ** 9))
                    self.assertEqual(kk, srch["index"], name)
                    self.assertEqual(kk * (hi / B), srch["amax"], name)
                    continue
                else:
                    continue
                checked += 1
                if srch["degenerate"] and srch["amax"] == 0.0:
                    continue  # empty/all-zero: fixed result, curve already compared
                if k_alt is None:
                    self.assertTrue(srch["degenerate"] and math.isinf(srch["score"]), name)
                else:
                    self.assertEqual(cands[k_alt], srch["index"], name)
        self.assertGreater(checked, 40)


if __name__ == "__main__":
    unittest.main()
