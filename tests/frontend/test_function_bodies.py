"""Operators rtxrt computes as their ONNX function bodies (OpFacts.function_body: the losses
and RotaryEmbedding) are replaced, when a model is imported, by the body onnx defines for them
at the model's opset (a loss holding another loss expanded in turn): no such node is left, the
model computes what onnxruntime computes on the original, and it plans with every node on the
GPU. Where onnx defines the body for another opset than the model's, the node stays (onnx's
version converter does not move bodies faithfully) and still computes the right thing."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.ops import function_body_ops
from tests.helpers import make_model

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def loss_model(op: str, reduction: str, opset: int = 13):
    node = helper.make_node(op, ["scores", "labels"], ["loss"], reduction=reduction, name="loss")
    loss_shape = [] if reduction != "none" else ["n"]
    return make_model([node], [("scores", FLOAT, ["n", 5]), ("labels", INT64, ["n"])], [("loss", FLOAT, loss_shape)],
                      opset=opset)


def rotary_model():
    node = helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "positions"], ["y"], name="rope")
    return make_model([node], [("x", FLOAT, [2, 3, 6, 8]), ("cos", FLOAT, [16, 4]), ("sin", FLOAT, [16, 4]),
                               ("positions", INT64, [2, 6])], [("y", FLOAT, [2, 3, 6, 8])], opset=23)


def feeds_for(op: str, rows: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    if op == "RotaryEmbedding":
        angles = rng.uniform(0, 3, (16, 4)).astype(np.float32)
        return {"x": rng.standard_normal((2, 3, 6, 8)).astype(np.float32), "cos": np.cos(angles),
                "sin": np.sin(angles), "positions": rng.integers(0, 16, (2, 6)).astype(np.int64)}
    scores = rng.standard_normal((rows, 5)).astype(np.float32)
    if op == "NegativeLogLikelihoodLoss":
        scores = np.log(np.exp(scores) / np.exp(scores).sum(1, keepdims=True)).astype(np.float32)
    return {"scores": scores, "labels": rng.integers(0, 5, rows).astype(np.int64)}


def test_the_losses_and_rotary_embedding_are_computed_as_function_bodies():
    assert {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "RotaryEmbedding"} <= function_body_ops()


@pytest.mark.parametrize("op, reduction", [("SoftmaxCrossEntropyLoss", "mean"), ("SoftmaxCrossEntropyLoss", "none"),
                                           ("NegativeLogLikelihoodLoss", "sum"), ("RotaryEmbedding", None)])
def test_an_op_computed_as_its_function_body_matches_onnxruntime_and_plans_on_the_gpu(op, reduction):
    proto = rotary_model() if op == "RotaryEmbedding" else loss_model(op, reduction)
    model = load_onnx(proto.SerializeToString())
    left = {n.op_type for n in model.graph.walk()} & function_body_ops()
    assert left == set()  # SoftmaxCrossEntropyLoss's body holds a NegativeLogLikelihoodLoss: expanded too
    feeds = feeds_for(op)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ReferenceExecutor(model).run(feeds)[model.graph.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plan = build_plan(model, {k: v.shape for k, v in feeds.items()}, arch="sm_86", sm_count=46)
    assert [(s.label, s.why_host) for s in plan.host_steps] == []


def test_a_body_defined_for_another_opset_leaves_the_node_as_it_is():
    proto = loss_model("SoftmaxCrossEntropyLoss", "mean", opset=18)  # onnx defines the body at opset 13
    model = load_onnx(proto.SerializeToString())
    assert [n.op_type for n in model.graph.nodes] == ["SoftmaxCrossEntropyLoss"]
    feeds = feeds_for("SoftmaxCrossEntropyLoss")
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(ReferenceExecutor(model).run(feeds)["loss"], want, rtol=1e-5)
