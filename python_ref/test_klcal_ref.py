"""Unit tests of the NumPy reference: hand-computed cases, invariants, errors, golden files.

Expected numbers are worked out by hand (derivations in the comments) or by an independent
oracle (fp32 rounding through struct on exact double products), never by the code under test.
Run: python3 -m unittest discover -s python_ref -v
"""

import math
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import klcal_ref as kr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "tests", "data")


def fp32(x):
    """Round a double to fp32 through the C library (independent of NumPy's fp32 ops)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def oracle_abs_bin(v, B, hi):
    """Bin of |v| in [0, hi) by the contract, computed in doubles: the product of two fp32
    numbers is exact in a double (24 + 24 < 53 bits), so one rounding to fp32 follows it."""
    scale = fp32(float(B) / fp32(hi))  # B <= 2^24 is exact; the double quotient of two fp32
    # values rounded once more to fp32 equals the correctly rounded fp32 quotient (p = 53 >= 2*24+2)
    prod = fp32(abs(v) * scale)
    k = math.floor(prod)
    return min(max(k, 0), B - 1)


def counts_hist(counts, lo, hi, layout="abs"):
    return kr.Histogram.from_counts(np.array(counts, dtype=np.uint64), lo, hi, layout)


class TestBinning(unittest.TestCase):
    def test_pow2_edges_and_clamp(self):
        # [0, 8), B = 8: scale = 8/8 = 1, so bin = floor(|x|); x = 8 and beyond clamp to bin 7.
        h = kr.Histogram(8, 0.0, 8.0)
        below1 = np.nextafter(np.float32(1), np.float32(0))  # 0.99999994 -> bin 0
        below8 = np.nextafter(np.float32(8), np.float32(0))  # 7.9999995 -> bin 7
        h.add(np.array([0, 1, 2, 7, 8, 9, 1e30, -3.5, below1, below8], dtype=np.float32))
        # bin 0: 0, below1; bin 1: 1; bin 2: 2; bin 3: |-3.5|; bin 7: 7, 8, 9, 1e30, below8
        self.assertEqual(h.counts.tolist(), [2, 1, 1, 1, 0, 0, 0, 5])
        self.assertEqual(h.counts.dtype, np.uint64)
        self.assertEqual(h.finite_count, 10)
        self.assertEqual(float(h.max_abs), float(np.float32(1e30)))
        self.assertEqual(float(h.min), -3.5)

    def test_non_pow2_scale_rounding(self):
        # [0, 3), B = 10: scale = fp32(10/3) = 0x40555555 = 3.3333332538604736.
        h = kr.Histogram(10, 0.0, 3.0)
        self.assertEqual(kr.f32_bits(h.scale()), 0x40555555)
        # fp32(0.3)*scale = 1.0000000159 -> fp32 1.0 -> bin 1;
        # fp32(0.9)*scale = 2.99999984900 -> nearer fp32 2.99999976 than 3.0 -> bin 2 (not 3);
        # fp32(1.5)*scale = 4.99999988 -> rounds up to 5.0 -> bin 5;
        # 3.0*scale = 9.99999976 -> 10.0 -> clamped to bin 9.
        vals = np.array([0.3, 0.9, 1.5, 3.0], dtype=np.float32)
        self.assertEqual(h.bin_index(vals).tolist(), [1, 2, 5, 9])
        # and the same against the struct-based oracle on many near-edge values
        ks = np.arange(0, 31, dtype=np.float32) * np.float32(0.1)
        vals = np.concatenate([ks, np.nextafter(ks, np.float32(-1)), np.nextafter(ks, np.float32(9))])
        expect = [oracle_abs_bin(float(v), 10, 3.0) for v in vals]
        self.assertEqual(h.bin_index(vals).tolist(), expect)

    def test_oracle_random_ranges(self):
        rng = np.random.default_rng(7)
        for _ in range(20):
            B = int(rng.integers(2, 5000))
            hi = float(np.float32(rng.uniform(0.1, 100.0)))
            vals = (rng.standard_normal(300) * hi / 2).astype(np.float32)
            h = kr.Histogram(B, 0.0, hi)
            self.assertEqual(h.bin_index(vals).tolist(), [oracle_abs_bin(float(v), B, hi) for v in vals])

    def test_signed_binning(self):
        # [-1.5, 2.5), B = 8: width 4, scale = 2; k = floor((x + 1.5) * 2).
        h = kr.Histogram(8, -1.5, 2.5, "signed")
        vals = np.array([-1.5, -1.0, 0.0, -0.0, 2.4999998, 2.5, 100.0, -100.0, -1.6], dtype=np.float32)
        # -1.5 -> 0; -1.0 -> 1; 0 -> 3; -0 -> 3; 2.4999998 -> (3.9999998*2 = 7.9999995) 7;
        # 2.5 -> 8 -> 7; 100 -> 7; -100 -> -197 -> 0; -1.6 -> -0.2 -> floor -1 -> 0.
        self.assertEqual(h.bin_index(vals).tolist(), [0, 1, 3, 3, 7, 7, 7, 0, 0])

    def test_nan_inf_counted_not_binned(self):
        h = kr.Histogram(4, 0.0, 4.0)
        bits = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7F800000, 0xFF800000, 0x3F800000], np.uint32)
        h.add(bits, "f32")  # three NaNs, two infinities, one 1.0
        self.assertEqual(h.nan_count, 3)
        self.assertEqual(h.inf_count, 2)
        self.assertEqual(h.counts.tolist(), [0, 1, 0, 0])
        self.assertEqual(float(h.max_abs), 1.0)
        self.assertEqual((float(h.min), float(h.max)), (1.0, 1.0))

    def test_negative_zero(self):
        h = kr.Histogram(4, 0.0, 4.0)
        h.add(np.array([0x80000000], np.uint32), "f32")
        self.assertEqual(h.counts.tolist(), [1, 0, 0, 0])
        self.assertEqual(kr.f32_bits(h.max_abs), 0)  # +0, not -0
        self.assertEqual(kr.f32_bits(h.min), 0)
        # signed [-1, 1), B = 2: (-0 + 1) * 1 = 1 -> bin 1, same as +0
        s = kr.Histogram(2, -1.0, 1.0, "signed")
        s.add(np.array([0x80000000, 0x00000000], np.uint32), "f32")
        self.assertEqual(s.counts.tolist(), [0, 2])

    def test_fp16_extremes(self):
        # fp16 0x7bff = 65504, 0x0001 = 2^-24 (smallest subnormal), 0x03ff = 1023 * 2^-24.
        x = kr.widen(np.array([0x7BFF, 0x0001, 0x03FF, 0x8001, 0x0400], np.uint16), "f16")
        self.assertEqual(x.tolist(), [65504.0, 2.0 ** -24, 1023 * 2.0 ** -24, -(2.0 ** -24), 2.0 ** -14])
        h = kr.Histogram(2048, 0.0, 65504.0)
        h.add(np.array([0x7BFF, 0x0001], np.uint16), "f16")
        self.assertEqual(int(h.counts[2047]), 1)  # 65504 is the upper edge -> clamped
        self.assertEqual(int(h.counts[0]), 1)
        # [0, 2^-14), B = 1024: scale = 2^24, so 2^-24 -> bin 1 and 1023 * 2^-24 -> bin 1023.
        h = kr.Histogram(1024, 0.0, 2.0 ** -14)
        h.add(np.array([0x0001, 0x03FF, 0x8001], np.uint16), "f16")
        self.assertEqual(int(h.counts[1]), 2)
        self.assertEqual(int(h.counts[1023]), 1)

    def test_bf16_widening(self):
        # bf16 is the top half of fp32: 0x3f80 = 1.0, 0x3fc0 = 1.5, 0xc000 = -2.0,
        # 0x0001 = 2^-133 (subnormal), 0x7f7f = (2 - 2^-7) * 2^127.
        x = kr.widen(np.array([0x3F80, 0x3FC0, 0xC000, 0x0001, 0x7F7F], np.uint16), "bf16")
        self.assertEqual(x[:4].tolist(), [1.0, 1.5, -2.0, 2.0 ** -133])
        self.assertEqual(float(x[4]), (2 - 2.0 ** -7) * 2.0 ** 127)

    def test_widen_rejects(self):
        with self.assertRaisesRegex(ValueError, "invalid_dtype"):
            kr.widen([1.0], "f64")
        with self.assertRaisesRegex(ValueError, "invalid_dtype"):
            kr.widen(np.array([1.0], np.float32), "bf16")
        with self.assertRaisesRegex(ValueError, "invalid_dtype"):
            kr.widen([0.1], "f32")  # 0.1 (double) is not an fp32 number


class TestStreaming(unittest.TestCase):
    def test_growth_by_hand(self):
        h = kr.Histogram(4, streaming=True)
        self.assertEqual((h.e, float(h.hi)), (-64, 2.0 ** -64))
        h.add(np.zeros(3, np.float32))  # zeros never grow the range
        self.assertEqual(h.e, -64)
        self.assertEqual(h.counts.tolist(), [3, 0, 0, 0])
        # 1.0: smallest e with 2^e > 1 is e = 1, hi = 2, scale = 2 -> bin 2
        h.add(np.array([1.0], np.float32))
        self.assertEqual((h.e, float(h.hi)), (1, 2.0))
        self.assertEqual(h.counts.tolist(), [3, 0, 1, 0])
        # 2.0 >= hi: one doubling, counts [3,0,1,0] -> [3+0, 1+0, 0, 0]; 2.0 * (4/4) -> bin 2
        h.add(np.array([2.0], np.float32))
        self.assertEqual((h.e, float(h.hi)), (2, 4.0))
        self.assertEqual(h.counts.tolist(), [3, 1, 1, 0])

    def test_tiny_values_binned_at_e_min(self):
        # hi = 2^-64, B = 64: scale = 2^70, so 2^-70 -> bin 1 and no growth (2^-70 < 2^-64).
        h = kr.Histogram(64, streaming=True)
        h.add(np.array([2.0 ** -70], np.float32))
        self.assertEqual(h.e, -64)
        self.assertEqual(int(h.counts[1]), 1)

    def test_e_clamps_at_127(self):
        h = kr.Histogram(8, streaming=True)
        h.add(np.array([0x7F7FFFFF, 0x3F800000], np.uint32), "f32")
        self.assertEqual(h.e, 127)
        self.assertEqual(kr.f32_bits(h.hi), 0x7F000000)
        # fp32 max = 1.99999988 * 2^127 -> k = floor(1.99999988 * 4) = 7 (last bin); 1.0 -> bin 0
        self.assertEqual(h.counts.tolist(), [1, 0, 0, 0, 0, 0, 0, 1])

    def _random_batches(self, rng, nb):
        out = []
        for _ in range(nb):
            s = 2.0 ** rng.integers(-30, 30)
            x = (rng.standard_normal(int(rng.integers(0, 300))) * s).astype(np.float32)
            if rng.random() < 0.3 and x.size:
                x[0] = np.float32(2.0 ** rng.integers(-20, 20))  # exact power of two: on an edge
            out.append(x)
        return out

    def test_streaming_equals_one_shot(self):
        rng = np.random.default_rng(11)
        for B in (2, 64, 1024, 4096):
            for _ in range(5):
                batches = self._random_batches(rng, 6)
                h = kr.streaming(batches, "f32", B)
                one = kr.Histogram(B, 0.0, h.hi)
                one.add(np.concatenate(batches) if batches else np.zeros(0, np.float32))
                self.assertTrue(np.array_equal(h.counts, one.counts))
                # e is the smallest with 2^e > max_abs (max_abs below 2^127 here)
                m = float(h.max_abs)
                self.assertTrue(float(h.hi) > m and (h.e == -64 or 2.0 ** (h.e - 1) <= m))

    def test_batch_order_and_merge(self):
        rng = np.random.default_rng(12)
        batches = self._random_batches(rng, 8)
        a = kr.streaming(batches, "f32", 512)
        b = kr.streaming(batches[::-1], "f32", 512)
        perm = rng.permutation(len(batches))
        c = kr.streaming([batches[i] for i in perm], "f32", 512)
        for o in (b, c):
            self.assertTrue(np.array_equal(a.counts, o.counts))
            self.assertEqual(a.e, o.e)
        # merge of two halves (different e) equals the concatenation
        left = kr.streaming(batches[:3], "f32", 512)
        right = kr.streaming(batches[3:], "f32", 512)
        m = kr.merge(left, right)
        self.assertTrue(np.array_equal(a.counts, m.counts))
        self.assertEqual((m.e, m.finite_count), (a.e, a.finite_count))
        # fixed-range merge == concatenation
        f1 = kr.Histogram(100, 0.0, 7.0)
        f2 = kr.Histogram(100, 0.0, 7.0)
        f1.add(batches[0])
        f2.add(batches[1])
        fc = kr.Histogram(100, 0.0, 7.0)
        fc.add(np.concatenate([batches[1], batches[0]]))
        self.assertTrue(np.array_equal(kr.merge(f1, f2).counts, fc.counts))

    def test_two_pass_zero_fallback(self):
        h = kr.two_pass([np.zeros(5, np.float32), np.array([np.nan], np.float32)], "f32", 16)
        self.assertEqual(float(h.hi), 2.0 ** -64)
        self.assertEqual(h.counts.tolist(), [5] + [0] * 15)
        s = kr.two_pass([np.array([-3.0, 1.0], np.float32)], "f32", 9, "signed")
        self.assertEqual((float(s.lo), float(s.hi)), (-3.0, 3.0))


class TestTensorRT(unittest.TestCase):
    def test_hand_tiny(self):
        # c = [2,4,2,1,0,1,0,0] over [0, 8), B = 8, bits = 2 -> L = 2, start_bin = 4.
        # copy_next: c = [4,4,2,1,0,1,0,0], T' = 12.
        # i=4: P = [4,4,2,1+1], levels {0,1},{2,3}: Q = [4,4,1.5,1.5], sum 11
        #      KL = (2/3) ln(11/12) + (1/3) ln(11/9)
        # i=5: c[4] = 0 but receives the tail 1 -> +inf
        # i=6: levels {0,1,2},{3,4,5}: Q = [10/3]*3 + [1,0,1], sum 12
        #      KL = (2/3) ln(1.2) + (1/6) ln(0.6)
        # i=7, 8: levels {0..3},{4..}: Q = [2.75]*4 + [0,1,0(,0)], sum 12
        #      KL = (8 ln(16/11) + 2 ln(8/11) + ln(4/11)) / 12
        h = counts_hist([2, 4, 2, 1, 0, 1, 0, 0], 0.0, 8.0)
        r = kr.search(h, "entropy", "tensorrt", bits=2, start_bin=4)
        k78 = (8 * math.log(16 / 11) + 2 * math.log(8 / 11) + math.log(4 / 11)) / 12
        expect = [(2 / 3) * math.log(11 / 12) + (1 / 3) * math.log(11 / 9), math.inf,
                  (2 / 3) * math.log(1.2) + (1 / 6) * math.log(0.6), k78, k78]
        self.assertEqual(len(r["curve"]), 5)
        for got, want in zip(r["curve"], expect):
            if math.isinf(want):
                self.assertTrue(math.isinf(got))
            else:
                self.assertAlmostEqual(got, want, delta=1e-15)
        self.assertEqual(r["index"], 4)
        self.assertEqual(r["amax"], 4.0)  # 4 * (8 / 8)
        self.assertEqual(float(r["scale"]), 4.0)  # qmax = 2^(2-1) - 1 = 1
        self.assertEqual(r["clipped_fraction"], 0.1)  # original c[4:] = 1 of T = 10
        self.assertFalse(r["degenerate"])

    def test_hand_tiny_keep(self):
        # zero_bin keep: T' = 10; i=4: P = [2,4,2,2], Q = [3,3,1.5,1.5] (sum 9)
        # KL = 0.2 ln(0.6) + 0.4 ln(1.2) + 0.2 ln(1.2) + 0.2 ln(1.2) = 0.2 ln 0.6 + 0.8 ln 1.2
        h = counts_hist([2, 4, 2, 1, 0, 1, 0, 0], 0.0, 8.0)
        r = kr.search(h, "entropy", "tensorrt", bits=2, start_bin=4, zero_bin="keep")
        self.assertAlmostEqual(r["curve"][0], 0.2 * math.log(0.6) + 0.8 * math.log(1.2), delta=1e-15)
        self.assertEqual(r["index"], 4)

    def test_ties_go_last(self):
        # unit counts in bins 0..5: for i >= 6, P = Q = ones -> KL exactly 0; the last i (B) wins.
        h = counts_hist([1] * 6 + [0] * 10, 0.0, 16.0)
        r = kr.search(h, "entropy", "tensorrt", bits=2, start_bin=4)
        self.assertEqual(r["curve"][2:], [0.0] * 11)
        self.assertGreater(r["curve"][0], 0.0)
        self.assertEqual(r["index"], 16)
        self.assertEqual(r["amax"], 16.0)
        self.assertEqual(r["score"], 0.0)

    def test_unsigned_and_levels(self):
        # unsigned bits 2 -> L = 4: with i = 4 every bin is its own level, so Q = P without the
        # tail and c = [1,1,1,1] + tail 0 gives KL 0; qmax = 3.
        h = counts_hist([1, 1, 1, 1], 0.0, 4.0)
        r = kr.search(h, "entropy", "tensorrt", bits=2, is_unsigned=True, start_bin=4)
        self.assertEqual(r["curve"], [0.0])
        self.assertEqual(float(r["scale"]), float(np.float32(np.float32(4.0) / np.float32(3.0))))

    def test_all_candidates_infinite(self):
        # mass only in bin 15, candidates 4, 9, 14: the last kept bin is always empty with tail
        h = counts_hist([0] * 15 + [5], 0.0, 1.0)
        r = kr.search(h, "entropy", "tensorrt", bits=2, start_bin=4, stride=5)
        self.assertTrue(all(math.isinf(v) for v in r["curve"]))
        self.assertEqual(r["index"], 14)
        self.assertTrue(r["degenerate"])
        self.assertTrue(math.isinf(r["score"]))
        self.assertEqual(r["amax"], 14 / 16)
        self.assertEqual(r["clipped_fraction"], 1.0)

    def test_all_zero_degenerate(self):
        h = kr.Histogram(16, 0.0, 1.0)
        h.add(np.zeros(10, np.float32))
        for method in ("entropy", "max", "percentile", "mse"):
            r = kr.search(h, method, "tensorrt", start_bin=4)
            self.assertTrue(r["degenerate"])
            self.assertEqual((r["amax"], float(r["scale"]), r["index"], r["score"]), (0.0, 0.0, 0, 0.0))
        # copy_next empties bin 0 -> T' = 0 -> every candidate +inf (still reported)
        r = kr.search(h, "entropy", "tensorrt", start_bin=4)
        self.assertTrue(all(math.isinf(v) for v in r["curve"]))
        # keep: c = [10, 0...]: P = Q at every candidate -> 0
        r = kr.search(h, "entropy", "tensorrt", start_bin=4, zero_bin="keep")
        self.assertEqual(r["curve"], [0.0] * 13)

    def test_start_bin_equals_b(self):
        h = counts_hist([1, 2, 3, 4], 0.0, 1.0)
        r = kr.search(h, "entropy", "tensorrt", bits=2, start_bin=4)
        self.assertEqual(r["index"], 4)
        self.assertEqual(len(r["curve"]), 1)


class TestMxnet(unittest.TestCase):
    def test_hand_tiny(self):
        # c = [1,0,2,3,1,0,1], B = 7 over [-3.5, 3.5), bits 2 -> L = 3, z = 3, i = 1, 2, 3.
        e = 1e-4
        # i=1: window bins 2..4, P = [1+0+2, 3, 1+0+1] = [3,3,2]; W = [0,3,1]; m = 1
        #      Q = [0 (n_0 = 0), 3, 1]; Q smoothed: one zero -> [e, 3 - e/2, 1 - e/2], sum 4.
        k1 = (3 / 8) * math.log((3 / 8) / (e / 4)) + (3 / 8) * math.log((3 / 8) / ((3 - e / 2) / 4)) \
            + (2 / 8) * math.log((2 / 8) / ((1 - e / 2) / 4))
        # i=2: bins 1..5, P = [1+0, 2, 3, 1, 0+1] = [1,2,3,1,1]; W = [0,2,3,1,0]; m = 1,
        #      levels [0],[1],[2..4]: M = 0, 2, 4 with n = 0, 1, 2 -> Q = [0,2,2,2,2] (sum 8)
        #      Q smoothed: [e, 2 - e/4 x4].
        q2 = 2 - e / 4
        k2 = (1 / 8) * math.log((1 / 8) / (e / 8)) + (2 / 8) * math.log((2 / 8) / (q2 / 8)) \
            + (3 / 8) * math.log((3 / 8) / (q2 / 8)) + 2 * (1 / 8) * math.log((1 / 8) / (q2 / 8))
        # i=3: all bins, P = [1,0,2,3,1,0,1] (sum 8); W = [0,0,2,3,1,0,1]; m = 2,
        #      levels [0,1],[2,3],[4..6]: M = 0, 5, 2; n = 0, 2, 2 -> Q = [0,0,2.5,2.5,1,0,1] (sum 7)
        #      P smoothed: 2 zeros / 5 -> nonzero - 2e/5; Q: 3 zeros / 4 -> nonzero - 3e/4.
        dp, dq = 2 * e / 5, 3 * e / 4
        Pn = [1 - dp, e, 2 - dp, 3 - dp, 1 - dp, e, 1 - dp]
        Qn = [e, e, 2.5 - dq, 2.5 - dq, 1 - dq, e, 1 - dq]
        k3 = sum((p / 8) * math.log((p / 8) / (q / 7)) for p, q in zip(Pn, Qn))
        h = counts_hist([1, 0, 2, 3, 1, 0, 1], -3.5, 3.5, "signed")
        r = kr.search(h, "entropy", "mxnet", bits=2)
        for got, want in zip(r["curve"], [k1, k2, k3]):
            self.assertAlmostEqual(got, want, delta=1e-13)
        best = min(range(3), key=lambda k: [k1, k2, k3][k])
        self.assertEqual(r["index"], best + 1)
        self.assertEqual(r["amax"], (best + 1 + 0.5) * (7.0 / 7))
        # clipped: bins outside [z - i, z + i]
        outside = {1: 1 + 0 + 0 + 1, 2: 1 + 1, 3: 0}[best + 1]
        self.assertEqual(r["clipped_fraction"], outside / 8)

    def test_ties_go_first(self):
        # unit counts in bins 8..12 of 21 (z = 10), bits 2 (L = 3): for i >= 3 the window has
        # empty ends, P = Q exactly, smoothing treats both identically -> KL exactly 0.
        h = counts_hist([0] * 8 + [1] * 5 + [0] * 8, -10.5, 10.5, "signed")
        r = kr.search(h, "entropy", "mxnet", bits=2)
        self.assertEqual(r["curve"][2:], [0.0] * 8)
        self.assertGreater(r["curve"][1], 0.0)
        self.assertEqual(r["index"], 3)
        self.assertEqual(r["amax"], 3.5)

    def test_all_infinite(self):
        # all mass in bin 0: it reaches P[0] but never Q (W[0] = 0 or outlier) -> Q all zero
        h = counts_hist([9] + [0] * 30, -1.0, 1.0, "signed")
        r = kr.search(h, "entropy", "mxnet", bits=3)
        self.assertTrue(all(math.isinf(v) for v in r["curve"]))
        self.assertEqual(r["index"], 3)  # L/2 = 7 // 2, the first candidate
        self.assertTrue(r["degenerate"])

    def test_all_zero_signed(self):
        h = kr.two_pass([np.zeros(4, np.float32)], "f32", 255, "signed")
        self.assertEqual(int(h.counts[127]), 4)
        r = kr.search(h, "entropy", "mxnet")
        self.assertTrue(r["degenerate"])
        self.assertEqual(r["amax"], 0.0)

    def test_scale_uses_signed_qmax(self):
        h = counts_hist([0] * 8 + [1] * 5 + [0] * 8, -10.5, 10.5, "signed")
        r = kr.search(h, "entropy", "mxnet", bits=3)
        self.assertEqual(float(r["scale"]), float(np.float32(np.float32(r["amax"]) / np.float32(3))))


class TestOtherMethods(unittest.TestCase):
    def test_percentile_steps(self):
        # T = 4, S = 1, 2, 3, 4: p = 50 -> S(2)/4 = 0.5 >= 0.5 -> k = 1; 75 -> k = 2;
        # 62.5 -> k = 2; 0 -> k = 0 (amax 0, not degenerate); 100 -> k = 3.
        h = counts_hist([1, 1, 1, 1, 0, 0, 0, 0], 0.0, 1.0)
        for p, k in ((50.0, 1), (75.0, 2), (62.5, 2), (0.0, 0), (100.0, 3), (99.99, 3)):
            r = kr.search(h, "percentile", percentile=p)
            self.assertEqual(r["index"], k, p)
            self.assertEqual(r["amax"], k * 0.125)
            self.assertEqual(r["clipped_fraction"], (4 - k) / 4)
            self.assertFalse(r["degenerate"])
            self.assertEqual(r["curve"], [])

    def test_percentile_units(self):
        # P = llround(p * 1e9): decimals with up to 9 fractional digits read exactly; p * 1e9 is
        # exactly 2.5 for p = 2.5e-9, and halfway rounds away from zero (3, not 2).
        for p, P in ((0.0, 0), (100.0, 100_000_000_000), (99.9, 99_900_000_000),
                     (99.99, 99_990_000_000), (0.9, 900_000_000), (99.999999999, 99_999_999_999),
                     (1e-9, 1), (2.5e-9, 3), (0.5e-9, 1)):
            self.assertEqual(kr.percentile_units(p), P, p)

    def test_percentile_exact_decimal(self):
        # 999 of T = 1000 in bins 0..3 (S = 9, 100, 900, 999), the last value in bin 12.
        # p = 99.9: 100e9 * 999 = 99.9e9 * 1000 -> k = 3 (fp64 would miss: 99.9 / 100 rounds
        # up to 0.9990000000000001 > 0.999); p = 0.9: 100e9 * 9 = 0.9e9 * 1000 -> k = 0.
        h = counts_hist([9, 91, 800, 99] + [0] * 8 + [1, 0, 0, 0], 0.0, 16.0)
        for p, k in ((99.9, 3), (0.9, 0), (99.90000001, 12), (100.0, 12), (10.0, 1)):
            r = kr.search(h, "percentile", percentile=p)
            self.assertEqual(r["index"], k, p)
            self.assertEqual(r["amax"], float(k))
            self.assertEqual(r["clipped_fraction"], [1000, 991, 900, 100, 1][min(k, 4)] / 1000, p)

    def test_percentile_exact_big_counts(self):
        # T = 2^60, S(1) = 2^60 - 1 (which converts to 2^60 in fp64): p = 100 needs bin 2.
        h = counts_hist([2 ** 60 - 1, 0, 1, 0], 0.0, 4.0)
        self.assertEqual(kr.search(h, "percentile", percentile=100.0)["index"], 2)
        # 99.999999999 %: 100e9 (2^60 - 1) >= 99999999999 * 2^60 since 2^60 >= 100e9 -> bin 0.
        self.assertEqual(kr.search(h, "percentile", percentile=99.999999999)["index"], 0)

    def test_mse_hand(self):
        # c = [2,4,2,1,0,1,0,0], w = 1, centres 0.5 .. 7.5, bits 2 -> qmax 1, start_bin 2.
        # i=2: a = 2.5: centres quantize to 0 (0.5), 2.5 (1.5, 2.5, 3.5, 5.5 clamps):
        #      errors 2*0.25 + 4*1 + 0 + 1*1 + 1*9 = 14.5 -> / 8 = 1.8125
        # i=3: a = 3.5: 0.5, 1.5 -> 0; 2.5, 3.5, 5.5 -> 3.5:
        #      2*0.25 + 4*2.25 + 2*1 + 0 + 1*4 = 15.5 -> 1.9375
        h = counts_hist([2, 4, 2, 1, 0, 1, 0, 0], 0.0, 8.0)
        r = kr.search(h, "mse", bits=2, start_bin=2)
        self.assertEqual(len(r["curve"]), 6)  # i = 2 .. 7
        self.assertAlmostEqual(r["curve"][0], 1.8125, delta=1e-14)
        self.assertAlmostEqual(r["curve"][1], 1.9375, delta=1e-14)
        self.assertEqual(r["index"], 2)
        self.assertEqual(r["amax"], 2.5)
        self.assertEqual(r["clipped_fraction"], 0.2)  # bins >= 3 hold 2 of 10

    def test_mse_clamp_and_no_halves(self):
        # Centre k times s = qmax / m_i is qmax (2k+1) / (2i+1): an even numerator over an odd
        # denominator can never be n + 1/2, so round-half-even never meets an exact half here.
        # This case checks clamping instead: B = 8 over [0, 4) (w = 0.5), counts at centres
        # 0.25, 0.75 and 3.75; bits 3 (qmax 3), candidate i = 2 (a = 1.25, s = 2.4):
        # 0.25 * 2.4 = 0.6 -> 1 -> 1/2.4; 0.75 * 2.4 = 1.8 -> 2 -> 2/2.4; 3.75 * 2.4 = 9 -> 3
        # (clamped) -> 1.25.  score = ((1/2.4 - 0.25)^2 + (2/2.4 - 0.75)^2 + 2 (1.25 - 3.75)^2) / 8
        h = counts_hist([1, 1, 0, 0, 0, 0, 0, 2], 0.0, 4.0)
        r = kr.search(h, "mse", bits=3, start_bin=2)
        want = ((1 / 2.4 - 0.25) ** 2 + (2 / 2.4 - 0.75) ** 2 + 2 * (1.25 - 3.75) ** 2) / 8
        self.assertAlmostEqual(r["curve"][0], want, delta=1e-14)
        # i = 7 (a = 3.75, s = 0.8): 0.25 -> 0.2 -> 0; 0.75 -> 0.6 -> 1 -> 1.25; 3.75 -> 3 exact
        want7 = (0.25 ** 2 + (1.25 - 0.75) ** 2 + 0.0) / 8
        self.assertAlmostEqual(r["curve"][-1], want7, delta=1e-15)
        self.assertEqual(r["index"], 7)  # 0.03906 beats every clipping candidate
        self.assertEqual(r["clipped_fraction"], 0.0)

    def test_max(self):
        h = kr.Histogram(16, 0.0, 4.0)
        h.add(np.array([1.0, -3.75, np.inf, np.nan], np.float32))
        r = kr.search(h, "max")
        self.assertEqual((r["amax"], r["index"], r["score"], r["clipped_fraction"]), (3.75, 16, 0.0, 0.0))
        self.assertEqual(kr.f32_bits(r["scale"]), kr.f32_bits(np.float32(3.75) / np.float32(127)))

    def test_scale_example(self):
        # docs: amax = 1 gives scale = 1/127, bit pattern 3c010204
        self.assertEqual(kr.f32_bits(kr.scale_of(1.0, 127)), 0x3C010204)


class TestErrors(unittest.TestCase):
    def err(self, errc, fn, *a, **kw):
        with self.assertRaises(kr.KlcalError) as cm:
            fn(*a, **kw)
        self.assertEqual(cm.exception.errc, errc)
        self.assertTrue(str(cm.exception).startswith(errc + ": "))
        self.assertIsInstance(cm.exception, ValueError)

    def test_histogram_errors(self):
        H = kr.Histogram
        self.err("too_few_bins", H, 1, 0.0, 1.0)
        self.err("too_many_bins", H, (1 << 24) + 1, 0.0, 1.0)
        H((1 << 24), 0.0, 1.0)  # exactly 2^24 is allowed
        self.err("invalid_range", H, 4, 0.0, 0.0)
        self.err("invalid_range", H, 4, 1.0, -1.0, "signed")
        self.err("invalid_range", H, 4, 0.0, math.inf)
        self.err("invalid_range", H, 4, math.nan, 1.0, "signed")
        self.err("invalid_range", H, 4, 1.0, 2.0)  # abs needs lo = 0
        self.err("invalid_range", H, 4, -3e38, 3e38, "signed")  # hi - lo overflows fp32
        self.err("bins_not_power_of_two", H, 1000, streaming=True)
        self.err("invalid_option", H, 4, 0.0, 1.0, "weird")
        self.err("invalid_count", kr.Histogram.from_counts, np.array([1, -1]), 0.0, 1.0)
        self.err("invalid_dtype", H(4, 0.0, 1.0).add, [1.0], "f8")

    def test_search_errors(self):
        a = counts_hist([3, 1, 4, 1, 5, 9, 2, 6], 0.0, 1.0)
        s = counts_hist([1, 2, 3, 4, 5, 4, 3, 2, 1], -1.0, 1.0, "signed")
        e = counts_hist([1, 2, 3, 4, 4, 3, 2, 1], -1.0, 1.0, "signed")
        skew = counts_hist([1, 2, 3, 4, 5, 4, 3], -1.0, 2.0, "signed")
        f = kr.search
        self.err("start_bin_out_of_range", f, a, start_bin=9)
        f(a, start_bin=8, bits=2)  # B == start_bin is fine for tensorrt
        self.err("start_bin_out_of_range", f, a, start_bin=0)
        self.err("start_bin_out_of_range", f, a, "mse", start_bin=8)  # mse needs B > start_bin
        self.err("start_bin_out_of_range", f, s, "entropy", "mxnet", bits=4)  # 9/2 < 15/2
        self.err("invalid_stride", f, a, start_bin=2, stride=0)
        self.err("invalid_stride", f, a, "mse", start_bin=2, stride=-1)
        self.err("invalid_bits", f, a, start_bin=2, bits=1)
        self.err("invalid_bits", f, a, start_bin=2, bits=17)
        self.err("invalid_bits", f, a, "max", bits=0)
        self.err("invalid_percentile", f, a, "percentile", percentile=100.5)
        self.err("invalid_percentile", f, a, "percentile", percentile=-1e-9)
        self.err("invalid_percentile", f, a, "percentile", percentile=math.nan)
        self.err("layout_mismatch", f, s, start_bin=2)
        self.err("layout_mismatch", f, s, "percentile")
        self.err("layout_mismatch", f, s, "mse", start_bin=2)
        self.err("layout_mismatch", f, a, "entropy", "mxnet")
        self.err("bins_not_odd", f, e, "entropy", "mxnet", bits=2)
        self.err("bins_not_odd", f, skew, "entropy", "mxnet", bits=2)  # lo != -hi
        self.err("invalid_option", f, s, "entropy", "mxnet", bits=2, is_unsigned=True)
        self.err("invalid_option", f, a, "kl")
        self.err("invalid_option", f, a, "entropy", "tflite")
        self.err("invalid_option", f, a, start_bin=2, zero_bin="drop")


class TestGolden(unittest.TestCase):
    def test_regenerate_identical(self):
        """Regenerating the goldens reproduces them: every line byte for byte, except the fp64
        KL/MSE values (`score`, `curve`), which may differ in the last bits between NumPy builds
        (its vectorised log differs by version and CPU); those must agree to 1e-12 relative, far
        inside the 1e-9 tolerance the C++ tests apply to them (docs/testing.md)."""
        import gen_golden

        def as_double(tok):
            return struct.unpack(">d", bytes.fromhex(tok))[0]

        with tempfile.TemporaryDirectory() as tmp:
            gen_golden.main(["--out", tmp])
            produced = sorted(f for f in os.listdir(tmp) if f.endswith(".golden"))
            committed = sorted(f for f in os.listdir(DATA) if f.endswith(".golden"))
            self.assertEqual(produced, committed)
            self.assertGreaterEqual(len(produced), 30)
            for fn in produced:
                with open(os.path.join(tmp, fn), encoding="utf-8") as f:
                    new_lines = f.read().splitlines()
                with open(os.path.join(DATA, fn), encoding="utf-8") as f:
                    old_lines = f.read().splitlines()
                self.assertEqual(len(new_lines), len(old_lines), fn)
                for a, b in zip(new_lines, old_lines):
                    if a == b:
                        continue
                    ka, kb = a.split(" ", 1)[0], b.split(" ", 1)[0]
                    self.assertTrue(ka == kb and ka in ("score", "curve"), f"{fn}: {a[:80]!r} != {b[:80]!r}")
                    ta, tb = a.split()[1:], b.split()[1:]
                    if ka == "curve":
                        self.assertEqual(ta[0], tb[0], fn)  # the candidate count is exact
                        ta, tb = ta[1:], tb[1:]
                    self.assertEqual(len(ta), len(tb), fn)
                    for x, y in zip(ta, tb):
                        dx, dy = as_double(x), as_double(y)
                        if dx == dy or (math.isinf(dx) and dx == dy):
                            continue
                        self.assertLessEqual(abs(dx - dy), 1e-12 * max(abs(dx), abs(dy)),
                                             f"{fn} {ka}: {dx!r} vs {dy!r}")

    def test_golden_structure(self):
        """Parse every golden with a small independent reader and check internal consistency."""
        total_bytes = 0
        seen = dict(method=set(), rules=set(), dtype=set(), layout=set(), range=set())
        for fn in sorted(os.listdir(DATA)):
            if not fn.endswith(".golden"):
                continue
            path = os.path.join(DATA, fn)
            total_bytes += os.path.getsize(path)
            with open(path, encoding="utf-8") as f:
                lines = [ln.rstrip("\n") for ln in f if not ln.startswith("#")]
            self.assertEqual(lines[0], "klcal-golden 1")
            self.assertEqual(lines[-1], "end")
            kv = {}
            elements = 0
            for ln in lines[1:-1]:
                key, _, rest = ln.partition(" ")
                if key == "batch":
                    toks = rest.split()
                    self.assertEqual(int(toks[0]), len(toks) - 1, fn)
                    elements += int(toks[0])
                elif key == "search":
                    m, r = rest.split()
                    seen["method"].add(m)
                    seen["rules"].add(r)
                elif key == "curve":
                    toks = rest.split()
                    self.assertEqual(int(toks[0]), len(toks) - 1, fn)
                    self.assertTrue(all(len(t) == 16 for t in toks[1:]))
                else:
                    kv.setdefault(key, rest)
            self.assertEqual(kv["case"] + ".golden", fn)
            for k in ("dtype", "layout", "range"):
                seen[k].add(kv[k])
            if "counts" in kv and kv["range"] != "counts":
                toks = kv["counts"].split()
                binned = sum(int(t.split(":")[1]) for t in toks[1:])
                self.assertEqual(binned + int(kv["nan_count"]) + int(kv["inf_count"]), elements, fn)
        self.assertLess(total_bytes, 3 * 1024 * 1024)
        self.assertEqual(seen["method"], {"entropy", "max", "percentile", "mse"})
        self.assertEqual(seen["rules"], {"tensorrt", "mxnet"})
        self.assertEqual(seen["dtype"], {"f32", "f16", "bf16"})
        self.assertEqual(seen["layout"], {"abs", "signed"})
        self.assertEqual(seen["range"], {"fixed", "streaming", "counts"})


if __name__ == "__main__":
    unittest.main()
