"""Calibrate an ONNX model with klcal and quantize it with onnxruntime (docs/python.md, "ONNX").

Usage: python python/examples/onnx_calibrate.py [OUT_DIR]
Builds a small conv/relu/gemm model in OUT_DIR/net.onnx, calibrates every activation that
onnxruntime's static quantization quantizes, writes a TensorRT cache, onnxruntime's range file
and a QDQ model, and compares the QDQ model's outputs with fp32.
"""

import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import klcal.onnx


def build_model(path: str) -> None:
    rng = np.random.default_rng(0)

    def w(name, *shape, s=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 10, 8 * 8 * 8, s=0.05), w("b2", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def main(out_dir: str) -> None:
    model = os.path.join(out_dir, "net.onnx")
    build_model(model)
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)} for _ in range(8)]

    cal = klcal.onnx.OnnxCalibrator(model)   # activations exposed on a copy of the model
    cal.run(batches)                         # one batch at a time, twice (two-pass range)
    print({name: round(a, 5) for name, a in cal.compute("entropy").items()})
    cal.write_cache(os.path.join(out_dir, "net.cache"), force=True)
    cal.write_ort_ranges(os.path.join(out_dir, "net.ranges.json"), force=True)
    qdq = os.path.join(out_dir, "net.qdq.onnx")
    cal.quantize(qdq, force=True)            # quantize_static with klcal's scales

    test = {"x": rng.standard_normal((64, 3, 8, 8)).astype(np.float32)}
    fp32 = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, test)[0]
    int8 = ort.InferenceSession(qdq, providers=["CPUExecutionProvider"]).run(None, test)[0]
    err = float(np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32))
    agree = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    print(f"QDQ vs fp32: relative L2 error {err:.4f}, top-1 agreement {agree:.3f}")
    assert err < 0.1 and agree >= 0.9


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="klcal-onnx-"))
