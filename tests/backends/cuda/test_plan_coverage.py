"""Where a model's nodes run, planned for an arch without a GPU (plan/coverage.py, what
``rtxrt inspect --plan`` reports): values computed from shapes, of any type (a detector's
anchor grid from a float Range over the feature map's width), are computed once at plan time
rather than sending the model to the host; an input whose dims the file gives as -1 is a
dynamic dim; a data-dependent node is the only node on the host, with the GPU on both sides."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from tests.helpers import make_model

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def anchor_model():
    """y = x + 8 * (arange(0.5, W + 0.5) over x's width, computed in float as YOLOv8 exports
    have it: Shape -> Gather -> Cast -> Add -> Range(float))."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "three"], ["width"], name="width"),
        helper.make_node("Cast", ["width"], ["width_f"], to=FLOAT, name="to_float"),
        helper.make_node("Add", ["width_f", "half"], ["end"], name="end"),
        helper.make_node("Range", ["half", "end", "one"], ["centers"], name="centers"),
        helper.make_node("Mul", ["centers", "stride"], ["anchors"], name="anchors"),
        helper.make_node("Add", ["x", "anchors"], ["y"], name="shifted"),
    ]
    consts = {"three": np.array(3, np.int64), "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
              "stride": np.array(8.0, np.float32)}
    return make_model(nodes, [("x", FLOAT, ["n", 4, "h", "w"])], [("y", FLOAT, ["n", 4, "h", "w"])], consts)


def test_an_anchor_grid_built_from_a_float_range_is_computed_at_plan_time():
    report = plan_coverage(compile_onnx(anchor_model().SerializeToString()), {"x": (2, 4, 20, 20)}, "sm_86")
    assert report.host_nodes == []
    assert report.gpu_nodes == 1 and report.plan_time_nodes == report.nodes - 1
    assert [s.kind for s in report.segments] == ["gpu"]


def test_an_input_dim_given_as_minus_one_is_dynamic():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", FLOAT, [-1, 4])],
                       [("y", FLOAT, [-1, 4])])
    compiled = compile_onnx(model.SerializeToString())
    for batch in (1, 3):
        report = plan_coverage(compiled, {"x": (batch, 4)}, "sm_75")
        assert report.host_nodes == [] and report.gpu_nodes == 1


def nonzero_onnx():
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"], name="positive"),
        helper.make_node("NonZero", ["positive"], ["where"], name="where"),
        helper.make_node("Transpose", ["where"], ["pairs"], perm=[1, 0], name="pairs"),
        helper.make_node("Cast", ["pairs"], ["y"], to=FLOAT, name="to_float"),
    ]
    return make_model(nodes, [("x", FLOAT, ["n", 4])], [("y", FLOAT, [None, 2])], {"zero": np.array(0.0, np.float32)})


def test_a_data_dependent_node_is_the_only_one_on_the_host():
    report = plan_coverage(compile_onnx(nonzero_onnx().SerializeToString()), {"x": (3, 4)}, "sm_86")
    assert [(h.node, h.op) for h in report.host_nodes] == [("NonZero node 'where'", "NonZero")]
    assert "depends on the input values" in report.host_nodes[0].why
    assert [s.kind for s in report.segments] == ["gpu", "host", "gpu"]
    assert report.gpu_nodes == 3 and report.nodes == 4


def shape_if_model():
    """y = relu(x) * 2 when x has more than 2 rows, else -x: an If on a shape condition."""
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "two"], ["t"], name="twice")],
        "then", [], [helper.make_tensor_value_info("t", FLOAT, None)],
        initializer=[helper.make_tensor("two", FLOAT, [], [2.0])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="negate")], "else", [],
                                    [helper.make_tensor_value_info("e", FLOAT, None)])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], name="rows"),
        helper.make_node("Greater", ["rows", "two_rows"], ["many"], name="many"),
        helper.make_node("If", ["many"], ["y"], then_branch=then_branch, else_branch=else_branch, name="choose"),
    ]
    consts = {"zero": np.array(0, np.int64), "two_rows": np.array(2, np.int64)}
    return make_model(nodes, [("x", FLOAT, ["n", 4])], [("y", FLOAT, ["n", 4])], consts)


def test_an_if_on_a_shape_condition_is_replaced_by_the_branch_it_takes():
    compiled = compile_onnx(shape_if_model().SerializeToString())
    many = plan_coverage(compiled, {"x": (3, 4)}, "sm_86")
    few = plan_coverage(compiled, {"x": (1, 4)}, "sm_86")
    assert many.host_nodes == [] and few.host_nodes == []
    assert [s.nodes for s in many.segments] == [["Relu node 'choose/relu'", "Mul node 'choose/twice'",
                                                 "Identity node 'choose/output y'"]]
    assert [s.nodes for s in few.segments] == [["Neg node 'choose/negate'", "Identity node 'choose/output y'"]]


def test_the_inlined_branch_computes_what_the_if_does():
    from rtxrt.backends.memory_plan import specialize
    from rtxrt.backends.reference.executor import ReferenceExecutor

    compiled = compile_onnx(shape_if_model().SerializeToString())
    for rows in (1, 3):
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        inlined = specialize(compiled, {"x": x.shape})
        assert not any(n.op_type == "If" for n in inlined.graph.nodes)
        np.testing.assert_array_equal(ReferenceExecutor(inlined).run({"x": x})["y"],
                                      ReferenceExecutor(compiled).run({"x": x})["y"])


def runtime_if_model():
    """y = (relu(x) if sum(x) > 0 else -x) + 1: the condition is known only at run time."""
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu")], "then", [],
                                    [helper.make_tensor_value_info("r", FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="negate")], "else", [],
                                    [helper.make_tensor_value_info("e", FLOAT, None)])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="total"),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
        helper.make_node("If", ["positive"], ["chosen"], then_branch=then_branch, else_branch=else_branch,
                         name="choose"),
        helper.make_node("Add", ["chosen", "one"], ["y"], name="plus_one"),
    ]
    consts = {"zero": np.array(0.0, np.float32), "one": np.array(1.0, np.float32)}
    return make_model(nodes, [("x", FLOAT, ["n", 4])], [("y", FLOAT, ["n", 4])], consts)


def test_an_if_on_a_runtime_condition_reads_one_scalar_and_runs_its_branches_on_the_gpu():
    report = plan_coverage(compile_onnx(runtime_if_model().SerializeToString()), {"x": (3, 4)}, "sm_86")
    assert report.host_nodes == []
    assert [(s.kind, s.nodes) for s in report.segments] == [
        ("gpu", ["ReduceSum node 'total'", "Greater node 'positive'"]), ("branch", ["If node 'choose'"]),
        ("gpu", ["Add node 'plus_one'"])]
    assert report.gpu_nodes == 5 and report.nodes == 6  # both branches' one node each


def loop_model(early_exit: bool = False):
    """Running sums of x's rows by a Loop over Shape(x)[0] (its trip count known at plan
    time): the final sum and every partial sum (a scan output). ``early_exit``: the body
    stops once the sum's first entry passes 1, which only the data decides."""
    body_nodes = [
        helper.make_node("Gather", ["x", "i"], ["row"], axis=0, name="row"),
        helper.make_node("Add", ["acc_in", "row"], ["acc_out"], name="accumulate"),
        helper.make_node("Identity", ["acc_out"], ["partial"], name="partial"),
    ]
    if early_exit:
        body_nodes += [helper.make_node("Gather", ["acc_out", "zero_b"], ["first"], axis=0, name="first"),
                       helper.make_node("Less", ["first", "one_b"], ["cond_out"], name="keep_going")]
        body_init = [helper.make_tensor("zero_b", INT64, [], [0]), helper.make_tensor("one_b", FLOAT, [], [1.0])]
    else:
        body_nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"], name="always"))
        body_init = []
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", FLOAT, [4]), helper.make_tensor_value_info("partial", FLOAT, [4])],
        initializer=body_init)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], name="rows"),
        helper.make_node("Loop", ["rows", "", "start"], ["total", "partials"], body=body, name="sum_rows"),
    ]
    consts = {"zero": np.array(0, np.int64), "start": np.zeros(4, np.float32)}
    return make_model(nodes, [("x", FLOAT, ["n", 4])], [("total", FLOAT, [4]), ("partials", FLOAT, ["n", 4])],
                      consts)


def test_a_loop_with_a_trip_count_known_at_plan_time_is_unrolled_onto_the_gpu():
    from rtxrt.backends.memory_plan import specialize
    from rtxrt.backends.reference.executor import ReferenceExecutor

    compiled = compile_onnx(loop_model().SerializeToString())
    for rows in (1, 5):
        report = plan_coverage(compiled, {"x": (rows, 4)}, "sm_86")
        assert report.host_nodes == [] and [s.kind for s in report.segments] == ["gpu"]
        unrolled = specialize(compiled, {"x": (rows, 4)})
        assert not any(n.op_type == "Loop" for n in unrolled.graph.nodes)
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        got, want = ReferenceExecutor(unrolled).run({"x": x}), ReferenceExecutor(compiled).run({"x": x})
        for name in ("total", "partials"):
            np.testing.assert_array_equal(got[name], want[name])


def test_a_loop_that_its_data_may_stop_early_is_not_unrolled():
    from rtxrt.backends.memory_plan import specialize

    compiled = compile_onnx(loop_model(early_exit=True).SerializeToString())
    assert any(n.op_type == "Loop" for n in specialize(compiled, {"x": (5, 4)}).graph.nodes)
    report = plan_coverage(compiled, {"x": (5, 4)}, "sm_86")
    assert [h.op for h in report.host_nodes] == ["Loop"]


def logical_residual_model():
    """y = conv(2x) + 2x: the residual comes from an elementwise node in the logical layout,
    not from a channels-last conv like the output."""
    weights = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"], name="double"),
             helper.make_node("Conv", ["x2", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "x2"], ["y"], name="residual")]
    return make_model(nodes, [("x", FLOAT, ["n", 4, 8, 8])], [("y", FLOAT, ["n", 4, 8, 8])],
                      {"w": weights, "two": np.array(2.0, np.float32)})


def test_a_residual_in_another_layout_is_converted_rather_than_the_conv_run_on_the_host():
    from rtxrt.aot.options import AotOptions

    for precision in ("fp32", "fp16"):
        compiled = compile_onnx(logical_residual_model().SerializeToString(), AotOptions(precision=precision))
        assert [n.op_type for n in compiled.graph.nodes] == ["Mul", "FusedConv"]  # the Add fused as the residual
        assert plan_coverage(compiled, {"x": (2, 4, 8, 8)}, "sm_86").host_nodes == []


def scan_model(direction: int = 0, out_axis: int = 0):
    """A running sum over x's rows by a Scan (its length is x's first dim, static once the
    input shapes are): the final sum (a state) and the partial sums stacked on ``out_axis``,
    visiting the rows in ``direction`` (1: last to first)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "row"], ["acc_out"], name="accumulate"),
         helper.make_node("Mul", ["acc_out", "two_b"], ["partial"], name="partial")],
        "body",
        [helper.make_tensor_value_info("acc_in", FLOAT, [4]), helper.make_tensor_value_info("row", FLOAT, [4])],
        [helper.make_tensor_value_info("acc_out", FLOAT, [4]), helper.make_tensor_value_info("partial", FLOAT, [4])],
        initializer=[helper.make_tensor("two_b", FLOAT, [], [2.0])])
    nodes = [helper.make_node("Scan", ["start", "x"], ["total", "partials"], body=body, num_scan_inputs=1,
                              scan_input_directions=[direction], scan_output_axes=[out_axis], name="scan_rows")]
    out_shape = ["n", 4] if out_axis in (0, -2) else [4, "n"]
    return make_model(nodes, [("x", FLOAT, ["n", 4])], [("total", FLOAT, [4]), ("partials", FLOAT, out_shape)],
                      {"start": np.zeros(4, np.float32)})


def test_a_scan_over_a_static_length_is_unrolled_onto_the_gpu():
    from rtxrt.backends.memory_plan import specialize
    from rtxrt.backends.reference.executor import ReferenceExecutor

    for direction, out_axis in ((0, 0), (1, 0), (0, 1), (1, -1)):
        compiled = compile_onnx(scan_model(direction, out_axis).SerializeToString())
        for rows in (1, 4):
            report = plan_coverage(compiled, {"x": (rows, 4)}, "sm_86")
            assert report.host_nodes == [], (direction, out_axis)
            unrolled = specialize(compiled, {"x": (rows, 4)})
            assert not any(n.op_type == "Scan" for n in unrolled.graph.nodes)
            x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
            got, want = ReferenceExecutor(unrolled).run({"x": x}), ReferenceExecutor(compiled).run({"x": x})
            for name in ("total", "partials"):
                np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=f"{name} {direction} {out_axis}")
