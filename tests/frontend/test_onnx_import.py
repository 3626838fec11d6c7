"""The ONNX frontend imports models into a typed, checked IR, or says exactly what is wrong."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtxrt.errors import ModelError, UnsupportedOpError
from rtxrt.frontend import load_onnx
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType
from tests.helpers import add_relu_model, make_model


def test_imports_nodes_weights_and_symbolic_shapes():
    model = load_onnx(add_relu_model())
    graph = model.graph
    assert [n.op_type for n in graph.nodes] == ["Add", "Relu"]
    assert graph.inputs == ["x"] and graph.outputs == ["y"]
    np.testing.assert_array_equal(graph.initializers["bias"], [-1, 0, 1, 2])
    assert graph.types["sum"] == TensorType(DType.FLOAT32, ("batch", 4))
    assert graph.types["y"] == TensorType(DType.FLOAT32, ("batch", 4))
    assert model.opset == 17


def test_reports_every_unsupported_op_with_its_node_at_once():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["a"], name="ok"),
         helper.make_node("FancyOp", ["a"], ["b"], name="first_bad", domain="com.example"),
         helper.make_node("OtherOp", ["b"], ["y"], name="second_bad", domain="com.example")],
        [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])],
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(model)
    assert info.value.unsupported == [("com.example", "FancyOp", "first_bad"), ("com.example", "OtherOp", "second_bad")]
    assert "FancyOp" in str(info.value) and "'second_bad'" in str(info.value)


def test_old_opsets_are_upgraded_to_13():
    model = make_model(
        [helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0])],
        [("x", TensorProto.FLOAT, [3])], [("y", TensorProto.FLOAT, [1, 3])], opset=11,
    )
    imported = load_onnx(model)
    assert imported.opset == 13
    assert imported.graph.types["y"].shape == (1, 3)


def test_opsets_newer_than_onnx_knows_are_refused():
    model = add_relu_model()
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    with pytest.raises(ModelError, match="opset"):
        load_onnx(model)


def test_garbage_bytes_and_missing_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_onnx(b"\x08\x07this is not protobuf at all\xff\xff")
    with pytest.raises(ModelError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


def test_reads_weights_stored_as_external_data(tmp_path):
    weights = np.arange(4096, dtype=np.float32)
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [("x", TensorProto.FLOAT, [4096])], [("y", TensorProto.FLOAT, [4096])], {"w": weights},
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="model.data", size_threshold=0)
    assert (tmp_path / "model.data").exists()
    np.testing.assert_array_equal(load_onnx(path).graph.initializers["w"], weights)


def test_every_constant_form_becomes_one_value_tensor():
    nodes = [
        helper.make_node("Constant", [], ["a"], value_floats=[1.0, 2.0]),
        helper.make_node("Constant", [], ["b"], value_int=3),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("t", TensorProto.FLOAT, [2], [5.0, 6.0])),
    ]
    model = make_model(nodes, [], [(n, t, None) for n, t in (("a", 1), ("b", 7), ("c", 1))])
    constants = [n.attrs for n in load_onnx(model).graph.nodes]
    assert [sorted(a) for a in constants] == [["value"]] * 3
    np.testing.assert_array_equal(constants[0]["value"], np.array([1.0, 2.0], np.float32))
    assert constants[1]["value"].dtype == np.int64 and constants[1]["value"] == 3


def test_initializers_listed_as_inputs_are_weights_not_runtime_inputs():
    model = add_relu_model()
    model.graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4]))
    assert load_onnx(model).graph.inputs == ["x"]


def test_upgrading_keeps_the_old_meaning_of_hardmax():
    # Opset 11 Hardmax(axis=1) on [2, 3, 4] marks one maximum per batch item (over 12 values).
    model = make_model(
        [helper.make_node("Hardmax", ["x"], ["y"], axis=1)],
        [("x", TensorProto.FLOAT, [2, 3, 4])], [("y", TensorProto.FLOAT, [2, 3, 4])], opset=11,
    )
    from rtxrt.backends.reference import ReferenceExecutor

    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    y = ReferenceExecutor(load_onnx(model)).run({"x": x})["y"]
    expected = (x.reshape(2, 12) == x.reshape(2, 12).max(axis=1, keepdims=True)).reshape(2, 3, 4)
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_an_if_branch_that_cannot_type_check_for_these_inputs_is_tolerated():
    # The else branch splits a [5] tensor into 4 parts, which only the then branch avoids.
    then_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", TensorProto.FLOAT, [5])])
    else_graph = helper.make_graph(
        [helper.make_node("Split", ["x"], ["e", "e1", "e2", "e3"], axis=0, num_outputs=4)], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    model = make_model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)],
        [("c", TensorProto.BOOL, []), ("x", TensorProto.FLOAT, [5])], [("y", TensorProto.FLOAT, None)], opset=18,
    )
    assert load_onnx(model).graph.nodes[0].op_type == "If"


def test_upgraded_upsample_samples_like_opset_9():
    model = make_model(
        [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="linear")],
        [("x", TensorProto.FLOAT, [1, 3])], [("y", TensorProto.FLOAT, [1, 6])],
        {"scales": np.array([1.0, 2.0], np.float32)}, opset=9,
    )
    from rtxrt.backends.reference import ReferenceExecutor

    y = ReferenceExecutor(load_onnx(model)).run({"x": np.array([[1, 2, 4]], np.float32)})["y"]
    np.testing.assert_allclose(y, [[1, 1.5, 2, 3, 4, 4]])


def test_sparse_initializers_and_sparse_constants_become_dense_tensors():
    def sparse(name, values, indices):
        return helper.make_sparse_tensor(numpy_helper.from_array(np.array(values, np.float32), name),
                                         numpy_helper.from_array(np.array(indices, np.int64), f"{name}_idx"),
                                         [2, 3])

    dense = np.array([[0, 5, 0], [0, 0, 7]], np.float32)
    model = make_model(
        [helper.make_node("Constant", [], ["c"], sparse_value=sparse("c", [5, 7], [[0, 1], [1, 2]])),
         helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Add", ["s", "c"], ["y"])],
        [("x", TensorProto.FLOAT, [2, 3])], [("y", TensorProto.FLOAT, [2, 3])],
    )
    model.graph.sparse_initializer.append(sparse("w", [5, 7], [1, 5]))  # linear indices
    graph = load_onnx(model).graph
    np.testing.assert_array_equal(graph.initializers["w"], dense)
    np.testing.assert_array_equal(graph.nodes[0].attrs["value"], dense)
