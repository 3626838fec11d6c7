"""On a GPU, a model whose parameters come as inputs (a reduction's axes, a Slice's bounds, a
Resize's scales) runs every node on the GPU, planned per value of those inputs, and matches
the reference backend for each value; a value met again reuses its engine."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from tests.helpers import make_model

pytestmark = pytest.mark.gpu

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def model_of(nodes, inputs, declared_output=None):
    return compile_onnx(make_model(nodes, inputs, [("y", F, declared_output)], {}, 18).SerializeToString())


CASES = {
    "reduce-axes": (
        lambda: model_of([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
                         [("x", F, ["n", 6, 8]), ("axes", I64, [1])]),
        [{"axes": np.array([1])}, {"axes": np.array([2])}, {"axes": np.array([-1])}]),
    "slice-bounds": (
        lambda: model_of([helper.make_node("Slice", ["x", "starts", "ends"], ["y"])],
                         [("x", F, ["n", 6, 8]), ("starts", I64, [2]), ("ends", I64, [2])]),
        [{"starts": np.array([1, 0]), "ends": np.array([5, 8])}, {"starts": np.array([0, 2]), "ends": np.array([6, -1])}]),
    "resize-scales": (
        lambda: model_of([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
                         [("x", F, ["n", 3, 8, 8]), ("scales", F, [4])]),
        [{"scales": np.array([1, 1, 2, 2], np.float32)}, {"scales": np.array([1, 1, 0.5, 1.5], np.float32)}]),
}


@pytest.mark.parametrize("name", CASES)
def test_parameters_given_as_inputs_are_planned_per_value_on_the_gpu(tmp_path, name):
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor

    make, values = CASES[name]
    model = make()
    session = rtxrt.Session(model, cache_dir=tmp_path, progress=False, specialization="eager")  # no background builds
    reference = ReferenceExecutor(model)
    x_shape = (2, 3, 8, 8) if name == "resize-scales" else (2, 6, 8)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    for params in [*values, values[0]]:
        feeds = {"x": x, **params}
        (got,) = session.run(None, feeds)
        want = reference.run(feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{name} {params}")
        assert session.stats["host_nodes"] == []
    compiled = session.kernels_compiled_total
    session.run(None, {"x": x, **values[1]})  # met before: its engine, nothing compiled
    assert session.kernels_compiled_total == compiled
