"""Quantized (QDQ) models, as onnxruntime.quantization.quantize_static writes them, for the
quantization tests (tests/backends/test_qdq_models.py, tests/backends/cuda/test_gpu_quantize.py).

- ``grid_conv``: built with onnx.helper on a grid where every sum is exact in fp32 and fp16
  (quantization scales are powers of two, the weights and inputs small integers of them), so
  every backend, every summation order and both precisions give the same bits, rounding ties
  included: x -> Q -> DQ -> Conv (int8 per-channel weights and an int32 bias, both DQ'd) ->
  Relu -> Q -> DQ, that value also quantized per channel (a per-axis Q -> DQ on an
  activation), the two added, Q -> DQ.
- ``blocked_matmul``: MatMul by int8 (or int4) weights dequantized in blocks of 32 along K
  (opset 21), too big to be computed when planning (more than 2**18 elements).
- ``quantize_static_model``: a small float CNN (Conv, Relu, Conv, residual Add, pooling,
  MatMul) quantized by onnxruntime.quantization.quantize_static (QDQ, per-channel int8
  weights, uint8 activations).
"""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers import make_model

F = TensorProto.FLOAT
GRID_SHAPE = (1, 2, 6, 6)
GRID_CHANNELS = 4


def grid_conv(dynamic: bool = False) -> onnx.ModelProto:
    """``dynamic``: batch and image size are symbolic."""
    rng = np.random.default_rng(7)
    c, k = GRID_CHANNELS, GRID_SHAPE[1]
    x_scale, w_scales = 0.25, np.array([2**-3, 2**-2, 2**-3, 2**-4], np.float32)
    bias = rng.integers(-64, 64, c).astype(np.int32)  # in units of x_scale * w_scale, as quantize_static stores it
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="quantize_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dequantize_x"),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], name="dequantize_w", axis=0),
        helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zero"], ["bd"], name="dequantize_b", axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("QuantizeLinear", ["relu", "a_scale", "a_zero"], ["aq"], name="quantize_a"),
        helper.make_node("DequantizeLinear", ["aq", "a_scale", "a_zero"], ["ad"], name="dequantize_a"),
        helper.make_node("QuantizeLinear", ["ad", "c_scale", "c_zero"], ["cq"], name="quantize_per_channel", axis=1),
        helper.make_node("DequantizeLinear", ["cq", "c_scale", "c_zero"], ["cd"], name="dequantize_per_channel",
                         axis=1),
        helper.make_node("Add", ["ad", "cd"], ["sum"], name="add"),
        helper.make_node("QuantizeLinear", ["sum", "y_scale", "y_zero"], ["yq"], name="quantize_y"),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"], name="dequantize_y"),
    ]
    initializers = {
        "x_scale": np.float32(x_scale), "x_zero": np.uint8(128),
        "w": rng.integers(-4, 5, (c, k, 3, 3)).astype(np.int8), "w_scale": w_scales, "w_zero": np.zeros(c, np.int8),
        "b": bias, "b_scale": (x_scale * w_scales).astype(np.float32), "b_zero": np.zeros(c, np.int32),
        # 2**-4: a sum of 2**-5 units halves to ties, and passes 255 (saturation)
        "a_scale": np.float32(2**-4), "a_zero": np.uint8(0),
        "c_scale": np.array([2**-3, 2**-2, 2**-5, 2**-1], np.float32), "c_zero": np.array([0, -3, 5, 0], np.int8),
        "y_scale": np.float32(2**-3), "y_zero": np.uint8(7),
    }
    n, h, w = ("batch", "height", "width") if dynamic else (GRID_SHAPE[0], *GRID_SHAPE[2:])
    return make_model(nodes, [("x", F, [n, k, h, w])], [("y", F, [n, c, h, w])], initializers, opset=13)


def grid_feeds(seed: int) -> dict[str, np.ndarray]:
    """Inputs in [-2, 2] (x_scale 0.25: -8..8 levels), some on rounding ties, a few beyond
    the uint8 range of x's quantization (saturation)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, GRID_SHAPE).astype(np.float32)
    flat = x.reshape(-1)
    flat[:6] = [0.125, -0.125, 0.375, 1e9, -1e9, -0.0]  # ties of x / 0.25, then saturation
    return {"x": x}


def blocked_matmul(weights: np.dtype = np.dtype(np.int8), k: int = 512, n: int = 520,
                   block: int = 32) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    w = rng.integers(-8, 8, (k, n)).astype(weights)
    nodes = [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], name="dequantize_w", axis=0,
                              block_size=block),
             helper.make_node("MatMul", ["x", "wd"], ["y"], name="matmul")]
    initializers = {"w": w, "w_scale": rng.uniform(0.01, 0.1, (k // block, n)).astype(np.float32),
                    "w_zero": rng.integers(-2, 2, (k // block, n)).astype(weights)}
    return make_model(nodes, [("x", F, [4, k])], [("y", F, [4, n])], initializers, opset=21)


INT4 = np.dtype(ml_dtypes.int4)


def float_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["a"]), helper.make_node("Relu", ["a"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"]), helper.make_node("Add", ["m", "bm"], ["y"])]
    initializers = {"w1": (rng.standard_normal((8, 3, 3, 3)) / 4).astype(np.float32),
                    "b1": (rng.standard_normal(8) / 10).astype(np.float32),
                    "w2": (rng.standard_normal((8, 8, 3, 3)) / 8).astype(np.float32),
                    "b2": (rng.standard_normal(8) / 10).astype(np.float32),
                    "wm": rng.standard_normal((8, 10)).astype(np.float32),
                    "bm": rng.standard_normal(10).astype(np.float32)}
    return make_model(nodes, [("x", F, [1, 3, 16, 16])], [("y", F, [1, 10])], initializers, opset=13)


def cnn_feeds(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)}


def quantize_static_model(folder: Path) -> onnx.ModelProto:
    """``float_cnn`` quantized by onnxruntime (calibrated on four random inputs)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([cnn_feeds(100 + i) for i in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    source, target = folder / "float.onnx", folder / "qdq.onnx"
    onnx.save(float_cnn(), source)
    quantize_static(str(source), str(target), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(target)


def onnxruntime_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs with its graph optimizations off: QuantizeLinear and
    DequantizeLinear then run as written (not folded into QLinearConv's integer arithmetic)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
