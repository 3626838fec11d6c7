"""The IR checker rejects ill-formed graphs and inference fills in every value's type."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.errors import GraphError, UnsupportedOpError
from rtxrt.ir.checker import check_model
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from rtxrt.ir.ops.infer_helpers import broadcast_shapes

F32 = DType.FLOAT32


def model_of(nodes, inputs=("x",), outputs=("y",), types=None, initializers=None) -> Model:
    types = types if types is not None else {"x": TensorType(F32, ("n", 4))}
    return Model(Graph(list(nodes), list(inputs), list(outputs), dict(types), dict(initializers or {})), {"": 17})


def test_a_well_formed_graph_passes():
    check_model(model_of([Node("Relu", ["x"], ["y"], name="r")]))


def test_reading_a_value_nothing_defines_is_an_error():
    with pytest.raises(GraphError, match=r"Relu node 'r'.*reads 'ghost'"):
        check_model(model_of([Node("Relu", ["ghost"], ["y"], name="r")]))


def test_using_a_value_before_it_is_defined_is_an_error():
    nodes = [Node("Relu", ["a"], ["y"], name="late"), Node("Relu", ["x"], ["a"], name="early")]
    with pytest.raises(GraphError, match="'late'.*reads 'a'"):
        check_model(model_of(nodes))


def test_defining_a_value_twice_is_an_error():
    nodes = [Node("Relu", ["x"], ["y"], name="a"), Node("Relu", ["x"], ["y"], name="b")]
    with pytest.raises(GraphError, match="'b'.*already defined"):
        check_model(model_of(nodes))


def test_wrong_input_count_is_an_error():
    with pytest.raises(GraphError, match="Add node 'add': takes 2 input"):
        check_model(model_of([Node("Add", ["x"], ["y"], name="add")]))


def test_an_output_nothing_computes_is_an_error():
    with pytest.raises(GraphError, match="output 'z' is never computed"):
        check_model(model_of([Node("Relu", ["x"], ["y"])], outputs=("z",)))


def test_unknown_ops_are_all_listed():
    nodes = [Node("Nope", ["x"], ["a"], name="n1"), Node("Nope2", ["a"], ["y"], name="n2", domain="x.y")]
    with pytest.raises(UnsupportedOpError) as info:
        check_model(model_of(nodes))
    assert info.value.unsupported == [("", "Nope", "n1"), ("x.y", "Nope2", "n2")]


def test_inference_broadcasts_symbolic_dims():
    types = {"x": TensorType(F32, ("batch", 1, 8)), "b": TensorType(F32, (5, 1))}
    model = model_of([Node("Add", ["x", "b"], ["y"])], inputs=("x", "b"), types=types)
    infer_types(model)
    assert model.graph.types["y"] == TensorType(F32, ("batch", 5, 8))


def test_inference_uses_constant_shapes_for_reshape():
    shape = np.array([0, 2, -1], np.int64)
    model = model_of([Node("Reshape", ["x", "shape"], ["y"])], types={"x": TensorType(F32, ("n", 4))},
                     initializers={"shape": shape})
    infer_types(model)
    assert model.graph.types["y"] == TensorType(F32, ("n", 2, 2))


def test_inference_rejects_a_declared_type_that_contradicts_the_graph():
    types = {"x": TensorType(F32, (2, 4)), "y": TensorType(F32, (3, 4))}
    with pytest.raises(GraphError, match="declared as float32\\[3,4\\] but computes float32\\[2,4\\]"):
        infer_types(model_of([Node("Relu", ["x"], ["y"], name="r")], types=types))


def test_incompatible_static_broadcast_names_the_node():
    types = {"x": TensorType(F32, (2, 3)), "z": TensorType(F32, (4, 3))}
    with pytest.raises(GraphError, match="Add node 'bad'"):
        infer_types(model_of([Node("Add", ["x", "z"], ["y"], name="bad")], inputs=("x", "z"), types=types))


def test_broadcast_rules():
    assert broadcast_shapes([(2, 1, 4), (3, 1)]) == (2, 3, 4)
    assert broadcast_shapes([("a", 4), ("a", 1)]) == ("a", 4)
    assert broadcast_shapes([("a",), ("b",)]) == (None,)
    assert broadcast_shapes([(None, 4), (1,)]) == (None, 4)
    assert broadcast_shapes([(2, 3), None]) is None
    with pytest.raises(ValueError):
        broadcast_shapes([(2,), (3,)])


def test_hints_fill_only_what_the_rules_leave_unknown():
    # NonZero's output length depends on the data; a hint may supply it, but a hint that
    # contradicts a rule (Relu keeps the shape) is ignored.
    types = {"x": TensorType(F32, (2, 3))}
    nodes = [Node("Relu", ["x"], ["r"]), Node("NonZero", ["r"], ["y"])]
    hints = {"r": TensorType(F32, (9, 9)), "y": TensorType(DType.INT64, (2, 4))}
    model = infer_types(model_of(nodes, types=types), hints)
    assert model.graph.types["r"] == TensorType(F32, (2, 3))
    assert model.graph.types["y"] == TensorType(DType.INT64, (2, 4))


def test_loop_body_inputs_get_their_types_from_the_loop():
    body = Graph(
        [Node("Add", ["v_in", "v_in"], ["v_out"]), Node("Identity", ["cond_in"], ["cond_out"])],
        ["i", "cond_in", "v_in"], ["cond_out", "v_out"],
    )
    types = {"x": TensorType(F32, (3,)), "n": TensorType(DType.INT64, ())}
    model = model_of([Node("Loop", ["n", "", "x"], ["y"], {"body": body})], inputs=("n", "x"), types=types)
    infer_types(model)
    assert body.types["i"] == TensorType(DType.INT64, ())
    assert body.types["v_in"] == TensorType(F32, (None,))  # a carried value may change size per step
    assert model.graph.types["y"].dtype == F32
