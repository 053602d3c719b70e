"""Tests of python_ref/calibrate.py: file and name handling, batching, options, errors."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import calibrate  # noqa: E402


class TestCalibrate(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def run_cli(self, *args):
        out = os.path.join(self.d, "out.json")
        rc = calibrate.main(list(args) + ["--json", out])
        if rc != 0:
            return rc, None
        with open(out, encoding="utf-8") as f:
            return rc, json.load(f)

    def test_max_names_and_batches(self):
        # tensor "a" in a.npy and in b.npz (member "a") -> two batches; "w" only in the npz.
        np.save(os.path.join(self.d, "a.npy"), np.array([1.0, -2.5, np.nan], np.float32))
        np.savez(os.path.join(self.d, "b.npz"), a=np.array([[3.0, np.inf]], np.float32),
                 w=np.array([0.5, -0.25], np.float16))
        rc, js = self.run_cli("--method", "max", self.d)
        self.assertEqual(rc, 0)
        t = js["tensors"]
        self.assertEqual(sorted(t), ["a", "w"])
        # a: finite |x| max is 3 (from the second file); 5 elements, one NaN, one Inf
        self.assertEqual(t["a"]["amax"], 3.0)
        self.assertEqual((t["a"]["elements"], t["a"]["nan_count"], t["a"]["inf_count"]), (5, 1, 1))
        self.assertEqual(t["a"]["scale"], float(np.float32(np.float32(3.0) / np.float32(127))))
        self.assertEqual(t["a"]["index"], 2048)  # default abs bins
        self.assertEqual(t["w"]["amax"], 0.5)

    def test_percentile_two_pass_range(self):
        # values 1..4 with B = 4: two-pass range [0, 4), scale 1 -> bins 1, 2, 3, 3 (4 clamps).
        # p = 50: S(2)/4 = 0.25, S(3)/4 = 0.5 >= 0.5 -> k = 2 -> amax = 2 * 4/4 = 2.
        np.save(os.path.join(self.d, "t.npy"), np.array([1, 2, 3, 4], np.float32))
        rc, js = self.run_cli("--method", "percentile", "--percentile", "50", "--bins", "4",
                              os.path.join(self.d, "t.npy"))
        self.assertEqual(rc, 0)
        self.assertEqual(js["tensors"]["t"]["amax"], 2.0)
        self.assertEqual(js["tensors"]["t"]["index"], 2)
        self.assertEqual(js["tensors"]["t"]["clipped_fraction"], 0.75)

    def test_mxnet_all_zero_and_streaming_reject(self):
        np.save(os.path.join(self.d, "s.npy"), np.array([0.0, 0.0], np.float32))
        rc, js = self.run_cli("--rules", "mxnet", os.path.join(self.d, "s.npy"))
        self.assertEqual(rc, 0)
        self.assertTrue(js["tensors"]["s"]["degenerate"])  # all zeros
        self.assertEqual(js["tensors"]["s"]["amax"], 0.0)
        rc, _ = self.run_cli("--rules", "mxnet", "--range", "streaming", os.path.join(self.d, "s.npy"))
        self.assertEqual(rc, 1)

    def test_errors_exit_nonzero_with_errc(self):
        np.save(os.path.join(self.d, "i.npy"), np.array([1, 2], np.int32))
        path = os.path.join(self.d, "i.npy")
        p = subprocess.run([sys.executable, os.path.join(HERE, "calibrate.py"), "--json",
                            os.path.join(self.d, "o.json"), path], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("invalid_dtype", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)
        np.save(os.path.join(self.d, "f.npy"), np.array([1, 2], np.float32))
        rc, _ = self.run_cli("--bins", "1000", "--range", "streaming", os.path.join(self.d, "f.npy"))
        self.assertEqual(rc, 1)
        rc, _ = self.run_cli("--bins", "100", os.path.join(self.d, "f.npy"))  # B < start_bin 128
        self.assertEqual(rc, 1)


if __name__ == "__main__":
    unittest.main()
