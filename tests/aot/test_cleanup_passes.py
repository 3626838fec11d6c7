"""The cleanup passes: no-op removal, constant folding, shape-subgraph folding, common
subexpressions and dead code. Each test builds a small ONNX graph, runs one pass (then the
pipeline's re-typing and checks) and states what must change, or must not; where the graph
changed, the reference backend shows the rewritten graph computes what the original did."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot.options import AotOptions
from rtxrt.aot.passes.constant_folding import fold_constants
from rtxrt.aot.passes.cse import eliminate_common_subexpressions
from rtxrt.aot.passes.dead_code import eliminate_dead_code
from rtxrt.aot.passes.noop_removal import remove_noops
from rtxrt.aot.passes.shape_folding import fold_shape_subgraphs
from rtxrt.aot.pipeline import _CLEANUP, load_pass
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.format import to_bytes
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from tests.aot.helpers import apply, ops, recheck
from tests.helpers import make_model

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
node = helper.make_node
LIGHT_RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"


def run_pass(pass_fn, proto: onnx.ModelProto, **options) -> tuple[Model, dict]:
    """The imported model after ``pass_fn`` and the pipeline's re-typing and checks."""
    model = load_onnx(proto)
    result = pass_fn(model, AotOptions(**options))
    recheck(model)
    return model, dict(result.changes)


def producer(model: Model, value: str):
    return next(n for n in model.graph.nodes if value in n.outputs)


def assert_same_function(proto: onnx.ModelProto, model: Model, **dims: int) -> None:
    """Same outputs on random inputs; symbolic dims take the sizes in ``dims``."""
    original = load_onnx(proto)
    rng = np.random.default_rng(0)
    feeds = {}
    for name in original.graph.inputs:
        t = original.graph.types[name]
        shape = [d if isinstance(d, int) else dims[d] for d in t.shape]
        if t.dtype.is_integer:
            feeds[name] = rng.integers(0, 4, shape).astype(t.dtype.numpy)
        else:
            feeds[name] = rng.standard_normal(shape).astype(t.dtype.numpy)
    expected = ReferenceExecutor(original).run(feeds)
    actual = ReferenceExecutor(model).run(feeds)
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


# ---- no-op removal --------------------------------------------------------------------------


def test_identity_dropout_same_type_cast_and_same_shape_reshape_are_removed():
    proto = make_model(
        [node("Identity", ["x"], ["a"]), node("Dropout", ["a"], ["b"]), node("Cast", ["b"], ["c"], to=F),
         node("Reshape", ["c", "shape"], ["d"]), node("Relu", ["d"], ["y"])],
        [("x", F, ["batch", 4])], [("y", F, ["batch", 4])], {"shape": ints(-1, 4)})
    model, changes = run_pass(remove_noops, proto)
    assert ops(model) == ["Relu"] and model.graph.nodes[0].inputs == ["x"]
    assert changes == {"removed Identity": 1, "removed Dropout": 1, "removed Cast to the same type": 1,
                       "removed no-op Reshape": 1}
    assert_same_function(proto, model, batch=3)


def test_a_noop_before_a_graph_output_hands_its_name_to_the_producer():
    proto = make_model([node("Relu", ["x"], ["r"]), node("Identity", ["r"], ["y"])],
                       [("x", F, [2])], [("y", F, [2])])
    model, _ = run_pass(remove_noops, proto)
    assert ops(model) == ["Relu"] and model.graph.nodes[0].outputs == ["y"] and model.graph.outputs == ["y"]


NOT_NOOPS = {
    "identity from input to output": ([node("Identity", ["x"], ["y"])], {}),
    "cast to another type": ([node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), node("Cast", ["h"], ["y"], to=F)], {}),
    "dropout whose mask is read": ([node("Dropout", ["x"], ["d", "mask"]), node("Cast", ["mask"], ["m"], to=F),
                                    node("Add", ["d", "m"], ["y"])], {}),
    "dropout in training mode": ([node("Dropout", ["x", "ratio", "training"], ["y"])],
                                 {"ratio": np.array(0.0, np.float32), "training": np.array(True)}),
    "reshape that moves dims": ([node("Reshape", ["x", "shape"], ["y"])], {"shape": ints(3, 2)}),
    "reversed slice": ([node("Slice", ["x", "start", "end", "axis", "step"], ["y"])],
                       {"start": ints(-1), "end": ints(-9), "axis": ints(1), "step": ints(-1)}),
    "pad by ones": ([node("Pad", ["x", "pads"], ["y"])], {"pads": ints(0, 1, 0, 1)}),
    "transpose": ([node("Transpose", ["x"], ["y"], perm=[1, 0])], {}),
}


@pytest.mark.parametrize("case", NOT_NOOPS)
def test_nodes_that_change_their_input_stay(case):
    nodes, inits = NOT_NOOPS[case]
    proto = make_model(nodes, [("x", F, [2, 3])], [("y", F, None)], inits, opset=17)
    model, changes = run_pass(remove_noops, proto)
    assert changes == {} and len(model.graph.nodes) == len(nodes)


def test_transposes_that_undo_each_other_cancel_and_others_merge_into_one():
    proto = make_model(
        [node("Transpose", ["x"], ["t1"], perm=[1, 0, 2]), node("Transpose", ["t1"], ["t2"], perm=[1, 0, 2]),
         node("Relu", ["t2"], ["y"]),
         node("Transpose", ["x"], ["u1"], perm=[1, 0, 2]), node("Transpose", ["u1"], ["z"], perm=[0, 2, 1])],
        [("x", F, [2, 3, 4])], [("y", F, [2, 3, 4]), ("z", F, [3, 4, 2])])
    model, changes = run_pass(remove_noops, proto)
    assert changes == {"removed Transpose pair": 1, "merged Transpose pair": 1}
    merged = producer(model, "z")
    assert merged.inputs == ["x"] and merged.attrs["perm"] == [1, 2, 0]
    assert producer(model, "y").inputs == ["x"]
    assert_same_function(proto, model)


def test_squeeze_unsqueeze_pairs_cancel_and_reshape_chains_collapse():
    proto = make_model(
        [node("Unsqueeze", ["x", "axis"], ["u"]), node("Squeeze", ["u", "axis"], ["s"]), node("Relu", ["s"], ["y"]),
         node("Flatten", ["x"], ["f"], axis=2), node("Reshape", ["f", "shape"], ["z"])],
        [("x", F, ["batch", 3, 4])], [("y", F, ["batch", 3, 4]), ("z", F, None)],
        {"axis": ints(1), "shape": ints(-1, 2)})
    model, changes = run_pass(remove_noops, proto)
    assert changes == {"removed Unsqueeze+Squeeze pair": 1, "merged Flatten+Reshape": 1}
    assert producer(model, "y").inputs == ["x"] and producer(model, "z").inputs[0] == "x"
    assert_same_function(proto, model, batch=2)


def test_a_reshape_that_copies_dims_keeps_reading_the_reshaped_value():
    # Shape [0, -1] copies dim 0 of its input: of u (1) it is not the same as of x (2).
    proto = make_model([node("Unsqueeze", ["x", "axis"], ["u"]), node("Reshape", ["u", "shape"], ["y"])],
                       [("x", F, [2, 3])], [("y", F, None)], {"axis": ints(0), "shape": ints(0, -1)})
    model, changes = run_pass(remove_noops, proto)
    assert changes == {} and producer(model, "y").inputs[0] == "u"


def test_whole_slices_zero_pads_and_single_input_concat_split_expand_tile_are_removed():
    proto = make_model(
        [node("Slice", ["x", "start", "end"], ["a"]), node("Pad", ["a", "pads"], ["b"]), node("Concat", ["b"], ["c"], axis=0),
         node("Split", ["c"], ["d"], axis=1, num_outputs=1), node("Expand", ["d", "shape"], ["e"]),
         node("Tile", ["e", "ones"], ["f"]), node("Relu", ["f"], ["y"])],
        [("x", F, [2, 3])], [("y", F, [2, 3])],
        {"start": ints(0, 0), "end": ints(2**62, 3), "pads": ints(0, 0, 0, 0), "shape": ints(2, 3), "ones": ints(1, 1)},
        opset=18)
    model, changes = run_pass(remove_noops, proto)
    assert ops(model) == ["Relu"] and len(changes) == 6
    assert_same_function(proto, model)


def branch_reading(first: onnx.NodeProto) -> onnx.ModelProto:
    """``first``, then an If whose branches both read its output from the graph around them."""
    branch = helper.make_graph([node("Neg", first.output, ["out"])], "branch", [], [helper.make_tensor_value_info("out", F, [2])])
    return make_model([first, node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
                      [("x", F, [2]), ("cond", B, [])], [("y", F, [2])])


def test_a_value_read_inside_a_subgraph_is_renamed_there_too():
    proto = branch_reading(node("Identity", ["x"], ["a"]))
    model, changes = run_pass(remove_noops, proto)
    assert changes == {"removed Identity": 1}
    assert model.graph.nodes[0].attrs["then_branch"].nodes[0].inputs == ["x"]
    assert_same_function(proto, model)


# ---- constant folding -----------------------------------------------------------------------


def test_nodes_of_constants_fold_into_initializers_that_keep_their_names():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    proto = make_model(
        [node("Constant", [], ["two"], value_float=2.0), node("Mul", ["w", "two"], ["w2"]),
         node("Transpose", ["w2"], ["wt"]), node("MatMul", ["x", "wt"], ["y"])],
        [("x", F, ["batch", 3])], [("y", F, ["batch", 2])], {"w": w})
    model, changes = run_pass(fold_constants, proto)
    assert ops(model) == ["MatMul"]
    np.testing.assert_array_equal(model.graph.initializers["wt"], (2 * w).T)
    assert changes == {"Constant node to initializer": 1, "folded Mul": 1, "folded Transpose": 1}
    assert_same_function(proto, model, batch=2)


def test_folding_never_creates_a_tensor_above_the_size_cap():
    proto = make_model([node("ConstantOfShape", ["shape"], ["zeros"], value=helper.make_tensor("v", F, [1], [1.0])),
                        node("Add", ["x", "zeros"], ["y"])],
                       [("x", F, [1000])], [("y", F, [1000])], {"shape": ints(1000)})
    model, changes = run_pass(fold_constants, proto, fold_max_bytes=3999)
    assert changes == {} and ops(model) == ["ConstantOfShape", "Add"]
    model, changes = run_pass(fold_constants, proto, fold_max_bytes=4000)
    assert ops(model) == ["Add"]


def test_nodes_with_subgraphs_or_run_time_inputs_are_not_folded():
    branch = helper.make_graph([node("Constant", [], ["out"], value_float=1.0)], "branch", [],
                               [helper.make_tensor_value_info("out", F, [])])
    proto = make_model([node("If", ["cond"], ["c"], then_branch=branch, else_branch=branch), node("Add", ["x", "c"], ["y"])],
                       [("x", F, [])], [("y", F, [])], {"cond": np.array(True)})
    model, changes = run_pass(fold_constants, proto)
    assert changes == {} and ops(model) == ["If", "Add"]


def test_an_initializer_that_is_also_an_input_is_a_default_not_a_constant():
    graph = Graph([Node("Neg", ["w"], ["n"]), Node("Add", ["x", "n"], ["y"])], inputs=["x", "w"], outputs=["y"],
                  types={"x": TensorType(DType.FLOAT32, (2,)), "w": TensorType(DType.FLOAT32, (2,))},
                  initializers={"w": np.ones(2, np.float32)})
    model = infer_types(Model(graph))
    for cleanup in (fold_constants, fold_shape_subgraphs, eliminate_common_subexpressions, eliminate_dead_code):
        assert not cleanup(model, AotOptions()).changed
    assert ops(model) == ["Neg", "Add"] and "w" in model.graph.initializers


def test_folding_is_deterministic_down_to_the_file_bytes():
    proto = onnx.load(LIGHT_RESNET50)
    first, _ = run_pass(fold_constants, proto)
    second, _ = run_pass(fold_constants, proto)
    assert list(first.graph.initializers) == list(second.graph.initializers)
    assert to_bytes(first) == to_bytes(second)


# ---- shape-subgraph folding -----------------------------------------------------------------


def shape_dim(x: str, index: int, out: str) -> list:
    """out = Unsqueeze(Gather(Shape(x), index)): one dim as a 1-element vector, as PyTorch exports it."""
    return [node("Shape", [x], [f"{out}_shape"]),
            node("Gather", [f"{out}_shape", f"i{index}"], [f"{out}_dim"], axis=0),
            node("Unsqueeze", [f"{out}_dim", "zero"], [out])]


INDEX = {"i0": np.array(0, np.int64), "i1": np.array(1, np.int64), "zero": ints(0)}


def test_a_shape_chain_of_static_dims_becomes_a_constant():
    proto = make_model(
        shape_dim("x", 0, "n") + [node("Concat", ["n", "minus_one"], ["target"], axis=0),
                                  node("Reshape", ["x", "target"], ["y"])],
        [("x", F, [2, 3, 4])], [("y", F, [2, 12])], {**INDEX, "minus_one": ints(-1)})
    model, changes = run_pass(fold_shape_subgraphs, proto)
    assert ops(model) == ["Reshape"]
    np.testing.assert_array_equal(model.graph.initializers[model.graph.nodes[0].inputs[1]], [2, -1])
    assert changes == {"folded shape computation": 4}
    assert_same_function(proto, model)


def test_with_a_dynamic_batch_the_static_dims_fold_and_the_target_copies_the_batch():
    proto = make_model(
        shape_dim("x", 0, "n") + shape_dim("x", 1, "c")
        + [node("Concat", ["n", "c", "two", "two"], ["target"], axis=0), node("Reshape", ["x", "target"], ["y"])],
        [("x", F, ["batch", 6, 4])], [("y", F, ["batch", 6, 2, 2])], {**INDEX, "two": ints(2)})
    model, changes = run_pass(fold_shape_subgraphs, proto)
    reshape = producer(model, "y")
    np.testing.assert_array_equal(model.graph.initializers[reshape.inputs[1]], [0, 6, 2, 2])
    assert changes["made Reshape target constant"] == 1
    assert_same_function(proto, model, batch=1)
    assert_same_function(proto, model, batch=3)


def test_a_single_element_the_types_cannot_tell_becomes_minus_one():
    # Flatten the two leading dims: Shape(x)[0] * Shape(x)[1] is no single dim of x.
    proto = make_model(
        [node("Shape", ["x"], ["s"]), node("Slice", ["s", "zero", "two"], ["lead"]),
         node("ReduceProd", ["lead"], ["rows"], keepdims=1), node("Concat", ["rows", "four"], ["target"], axis=0),
         node("Reshape", ["x", "target"], ["y"])],
        [("x", F, ["batch", "sequence", 4])], [("y", F, None)], {"zero": ints(0), "two": ints(2), "four": ints(4)})
    model, _ = run_pass(fold_shape_subgraphs, proto)
    np.testing.assert_array_equal(model.graph.initializers[producer(model, "y").inputs[1]], [-1, 4])
    assert_same_function(proto, model, batch=2, sequence=5)


def test_equal_over_shapes_folds_where_dims_are_symbols():
    # Expand(m, Where(Equal(target, -1), 1, target)): a dim is never -1, so Equal is all False.
    proto = make_model(
        shape_dim("x", 0, "n") + [node("Concat", ["n", "four"], ["target"], axis=0),
                                  node("Equal", ["target", "minus_one"], ["is_any"]),
                                  node("Where", ["is_any", "one", "target"], ["expanded_shape"]),
                                  node("Expand", ["m", "expanded_shape"], ["y"])],
        [("x", F, ["batch", 4]), ("m", F, ["batch", 1])], [("y", F, ["batch", 4])],
        {**INDEX, "four": ints(4), "minus_one": ints(-1), "one": ints(1)})
    model, _ = run_pass(fold_shape_subgraphs, proto)
    assert "Equal" not in ops(model)
    # Where(all False, 1, target) is target, which holds the same numbers as Shape(x).
    assert producer(model, "y").inputs == ["m", "n_shape"]
    assert_same_function(proto, model, batch=3)


def test_a_position_table_sliced_to_the_sequence_keeps_the_sequence_dim():
    # BERT: h = emb[ids] + pos[:, :sequence]; the attention reshapes h by Shape(ids).
    proto = make_model(
        shape_dim("ids", 0, "n") + shape_dim("ids", 1, "s")
        + [node("Slice", ["positions", "zero", "s", "one"], ["pos_ids"]),
           node("Gather", ["table", "ids"], ["tokens"]), node("Gather", ["table", "pos_ids"], ["pos"]),
           node("Add", ["tokens", "pos"], ["h"]),
           node("Concat", ["n", "s", "two", "four"], ["target"], axis=0), node("Reshape", ["h", "target"], ["y"])],
        [("ids", I64, ["batch", "sequence"])], [("y", F, None)],
        {**INDEX, "one": ints(1), "two": ints(2), "four": ints(4),
         "positions": np.arange(16, dtype=np.int64)[None], "table": np.random.default_rng(1).random((16, 8), np.float32)})
    model, changes = run_pass(fold_shape_subgraphs, proto)
    np.testing.assert_array_equal(model.graph.initializers[producer(model, "y").inputs[1]], [0, 0, 2, 4])
    for sequence in (1, 5, 16):
        assert_same_function(proto, model, batch=2, sequence=sequence)


def test_a_target_with_two_dims_the_types_cannot_tell_stays_computed():
    proto = make_model(
        shape_dim("other", 0, "n") + shape_dim("other", 1, "s")
        + [node("Concat", ["n", "s", "four"], ["target"], axis=0), node("Reshape", ["x", "target"], ["y"])],
        [("x", F, ["rows", 4]), ("other", F, ["a", "b"])], [("y", F, None)], {**INDEX, "four": ints(4)})
    model, changes = run_pass(fold_shape_subgraphs, proto)
    assert "made Reshape target constant" not in changes and producer(model, "y").inputs[1] == "target"


# ---- common subexpressions ------------------------------------------------------------------


def test_identical_nodes_merge_and_nodes_that_differ_in_an_attribute_do_not():
    proto = make_model(
        [node("LeakyRelu", ["x"], ["a"], alpha=0.1), node("LeakyRelu", ["x"], ["b"], alpha=0.1),
         node("LeakyRelu", ["x"], ["c"], alpha=0.2), node("Sum", ["a", "b", "c"], ["y"])],
        [("x", F, [3])], [("y", F, [3])])
    model, changes = run_pass(eliminate_common_subexpressions, proto)
    assert changes == {"merged duplicate LeakyRelu": 1}
    assert producer(model, "y").inputs == ["a", "a", "c"]
    assert_same_function(proto, model)


def test_equal_small_constants_merge_but_weights_keep_their_names():
    bias = np.zeros(16, np.float32)
    proto = make_model(
        [node("Add", ["x", "half_a"], ["a"]), node("Add", ["x", "half_b"], ["b"]), node("Add", ["a", "b"], ["ab"]),
         node("Add", ["ab", "bias_a"], ["c"]), node("Add", ["c", "bias_b"], ["y"])],
        [("x", F, [16])], [("y", F, [16])],
        {"half_a": np.float32(0.5), "half_b": np.float32(0.5), "bias_a": bias, "bias_b": bias.copy()})
    model, changes = run_pass(eliminate_common_subexpressions, proto)
    # half_b becomes half_a, which makes the second Add a duplicate of the first.
    assert changes == {"merged duplicate initializer": 1, "merged duplicate Add": 1}
    assert {"bias_a", "bias_b"} <= set(model.graph.initializers) and "half_b" not in model.graph.initializers
    assert_same_function(proto, model)


def test_a_duplicate_that_is_a_graph_output_stays():
    proto = make_model([node("Relu", ["x"], ["y"]), node("Relu", ["x"], ["z"])],
                       [("x", F, [3])], [("y", F, [3]), ("z", F, [3])])
    model, changes = run_pass(eliminate_common_subexpressions, proto)
    assert changes == {} and ops(model) == ["Relu", "Relu"]


# ---- dead code ------------------------------------------------------------------------------


def test_unread_nodes_and_initializers_are_removed():
    proto = make_model([node("Relu", ["x"], ["y"]), node("Add", ["x", "w"], ["unused"]), node("Neg", ["unused"], ["dead"])],
                       [("x", F, [3])], [("y", F, [3])], {"w": np.ones(3, np.float32), "never_read": np.ones(3, np.float32)})
    model, changes = run_pass(eliminate_dead_code, proto)
    assert ops(model) == ["Relu"] and model.graph.initializers == {}
    assert changes == {"removed unused node": 2, "removed unused initializer": 2}


def test_unread_optional_outputs_are_dropped_but_split_outputs_are_not():
    proto = make_model(
        [node("LayerNormalization", ["x", "scale"], ["n", "mean", "inv_std"]),
         node("Unsqueeze", ["n", "axis"], ["n4"]),
         node("MaxPool", ["n4"], ["p", "indices"], kernel_shape=[1, 1]),
         node("Split", ["x"], ["s1", "s2"], axis=0, num_outputs=2), node("Add", ["p", "s1"], ["y"])],
        [("x", F, [2, 4])], [("y", F, None)], {"scale": np.ones(4, np.float32), "axis": ints(0, 1)}, opset=18)
    model, changes = run_pass(eliminate_dead_code, proto)
    assert producer(model, "n").outputs == ["n"] and producer(model, "p").outputs == ["p"]
    assert producer(model, "s1").outputs == ["s1", "s2"]
    assert changes == {"removed unused optional output": 2}
    assert_same_function(proto, model)


def test_a_value_read_only_by_a_subgraph_stays_alive():
    proto = branch_reading(node("Relu", ["x"], ["r"]))
    model, changes = run_pass(eliminate_dead_code, proto)
    assert changes == {} and ops(model) == ["Relu", "If"]


# ---- all cleanup passes on a real model -----------------------------------------------------


def test_the_light_resnet50_weight_generators_fold_away():
    model = load_onnx(onnx.load(LIGHT_RESNET50))
    assert len(model.graph.nodes) == 415
    for module, function in _CLEANUP:
        apply(load_pass(module, function), model)
    assert "ConstantOfShape" not in ops(model) and len(model.graph.nodes) == 415 - 239
