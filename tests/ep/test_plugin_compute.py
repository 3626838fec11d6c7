"""A fused node's tensors cross between onnxruntime and rtxrt in C (tensors.c): every input's
address, type and shape gathered in one array, every output created from one (what that saves
is measured by benchmarks/ep_overhead.py)."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper
from rtxrt_ep.registration import plugin_problem

from . import make_model, saved, tensor

PROBLEM = plugin_problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=f"no plugin provider here: {PROBLEM}"),
              pytest.mark.usefixtures("plugin_library")]

PROVIDERS = ["RtxrtExecutionProvider", "CPUExecutionProvider"]


def mixed_model():
    """Three inputs (a dynamic-batch matrix, a vector, an int64 scalar) and three outputs
    (a matrix, a float scalar, an int64 scalar): ranks 0 to 2, two element types."""
    nodes = [helper.make_node("Add", ["x", "v"], ["s"]), helper.make_node("Cast", ["k"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "c"], ["t"]), helper.make_node("ReduceSum", ["t"], ["total"], keepdims=0),
             helper.make_node("Add", ["k", "k"], ["kk"])]
    return make_model(nodes, [tensor("x", ["N", 4]), tensor("v", [4]), tensor("k", [], TensorProto.INT64)],
                      [tensor("t", ["N", 4]), tensor("total", []), tensor("kk", [], TensorProto.INT64)])


@pytest.mark.parametrize("rows", [3, 1, 0])
def test_inputs_and_outputs_of_every_rank_and_type_cross_intact(tmp_path, partitions_on_gpu, rows):
    path = saved(mixed_model(), tmp_path)
    session = onnxruntime.InferenceSession(path, providers=PROVIDERS)
    feed = {"x": np.arange(4 * rows, dtype=np.float32).reshape(rows, 4),
            "v": np.linspace(-1, 1, 4, dtype=np.float32), "k": np.array(3, np.int64)}
    got = session.run(None, feed)
    expected = onnxruntime.InferenceSession(path, providers=PROVIDERS[1:]).run(None, feed)
    assert [(g.shape, g.dtype) for g in got] == [(e.shape, e.dtype) for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    assert partitions_on_gpu == [False, False]  # rtxrt ran it: two partitions, the int64 branch is apart


def test_outputs_are_onnxruntimes_own_memory_not_views_of_rtxrts(tmp_path):
    """Results are copied into the tensors onnxruntime allocates: a later run must not change
    what an earlier one returned."""
    session = onnxruntime.InferenceSession(saved(mixed_model(), tmp_path), providers=PROVIDERS)
    feed = {"x": np.ones((2, 4), np.float32), "v": np.zeros(4, np.float32), "k": np.array(2, np.int64)}
    first = session.run(["t"], feed)[0]
    session.run(["t"], {**feed, "k": np.array(5, np.int64)})
    np.testing.assert_array_equal(first, np.full((2, 4), 2, np.float32))

