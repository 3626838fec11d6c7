"""MaxRoiPool (the Fast R-CNN head's max pooling over regions of interest) computes what
ONNX Runtime computes, types its output from the attributes, and refuses bad rois."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from rtxrt.errors import ExecutionError, GraphError
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType
from tests.reference.one_node import build, out_type, run

F32 = np.float32


def random_rois(rng: np.random.Generator, count: int, batch: int, extent: float) -> np.ndarray:
    """Rows of [batch index, x1, y1, x2, y2]; corners may fall outside the image, cross, or
    sit on halves (where rounding rules differ)."""
    corners = rng.uniform(-4, extent + 4, (count, 4)).astype(F32)
    corners[::2] = np.round(corners[::2] * 2) / 2
    return np.concatenate([rng.integers(0, batch, (count, 1)).astype(F32), corners], axis=1)


def onnxruntime_max_roi_pool(x: np.ndarray, rois: np.ndarray, **attrs) -> np.ndarray:
    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                                            helper.make_tensor_value_info("rois", TensorProto.FLOAT, rois.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "rois": rois})[0]


@pytest.mark.parametrize("seed", range(12))
def test_max_roi_pool_equals_onnxruntime(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(3, 24, 2))
    pooled = [int(v) for v in rng.integers(1, 6, 2)]
    scale = float(rng.choice([1.0, 0.5, 1 / 16]))
    x = rng.standard_normal((2, 3, height, width)).astype(F32)
    rois = random_rois(rng, 7, batch=2, extent=max(height, width) / scale)
    attrs = {"pooled_shape": pooled, "spatial_scale": scale}
    assert np.array_equal(run("MaxRoiPool", x, rois, opset=17, **attrs), onnxruntime_max_roi_pool(x, rois, **attrs))


def test_the_spatial_scale_defaults_to_one():
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    rois = np.array([[0, 0, 0, 1, 1], [0, 2, 2, 3, 3]], F32)
    y = run("MaxRoiPool", x, rois, opset=17, pooled_shape=[1, 1])
    assert y.reshape(-1).tolist() == [5.0, 15.0]  # the largest pixel of each 2x2 corner


def test_the_output_is_rois_by_channels_by_the_pooled_shape():
    x, rois = np.zeros((2, 8, 10, 10), F32), np.zeros((5, 5), F32)
    assert out_type(build("MaxRoiPool", x, rois, opset=17, pooled_shape=[3, 4])) == TensorType(DType.FLOAT32, (5, 8, 3, 4))


def test_bad_pooled_shapes_and_rois_are_refused_naming_the_node():
    x = np.zeros((1, 1, 4, 4), F32)
    with pytest.raises(GraphError, match="pooled_shape"):
        build("MaxRoiPool", x, np.zeros((1, 5), F32), opset=17, pooled_shape=[0, 2])
    with pytest.raises(GraphError, match=r"rois must be \(num_rois, 5\)"):
        build("MaxRoiPool", x, np.zeros((1, 4), F32), opset=17, pooled_shape=[1, 1])
    with pytest.raises(ExecutionError, match="names batch 3"):
        run("MaxRoiPool", x, np.array([[3, 0, 0, 1, 1]], F32), opset=17, pooled_shape=[1, 1])


def test_onnx_knows_the_operator_at_this_opset():
    assert onnx.defs.get_schema("MaxRoiPool", 17).since_version == 1
