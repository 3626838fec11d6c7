"""GetCapability: the largest cycle-free regions rtxrt supports, and the rest."""
import onnx
from onnx import helper
from rtxrt_ep.options import ProviderOptions
from rtxrt_ep.partition import partition, summary, supported_nodes

from . import all_supported, cut_chain, diamond, gelu, make_model, sequence_cut, tensor


def kinds(parts):
    return [p.kind for p in parts]


def assert_runs_in_order(parts, model):
    """Every partition reads only graph inputs, initializers and outputs of earlier partitions."""
    available = {vi.name for vi in model.graph.input} | {t.name for t in model.graph.initializer}
    for p in parts:
        assert set(p.inputs) <= available, (p, available)
        available |= set(p.outputs)
    assert {vi.name for vi in model.graph.output} <= available


def test_supported_nodes():
    assert supported_nodes(cut_chain()) == [True, True, False, True, True]
    assert supported_nodes(sequence_cut()) == [True, True, False, False, True]


def test_all_supported_is_one_rtxrt_partition():
    model = all_supported()
    parts = partition(model)
    assert kinds(parts) == ["rtxrt"]
    [p] = parts
    assert p.nodes == ["MatMul_0", "Relu_1", "Softmax_2"]  # unnamed nodes get names
    assert p.inputs == ["x"] and p.outputs == ["y"]
    assert [t.name for t in p.model.graph.initializer] == ["w"]
    onnx.checker.check_model(p.model, full_check=True)


def test_unsupported_op_cuts_the_chain():
    model = cut_chain()
    parts = partition(model)
    assert kinds(parts) == ["rtxrt", "onnxruntime", "rtxrt"]
    assert [p.nodes for p in parts] == [["Relu_0", "Mul_1"], ["Gelu_2"], ["Tanh_3", "Add_4"]]
    assert [(p.inputs, p.outputs) for p in parts] == [(["x"], ["a", "b"]), (["b"], ["c"]), (["c", "a"], ["y"])]
    assert_runs_in_order(parts, model)
    first = parts[0].model
    assert [t.name for t in first.graph.initializer] == ["w"]  # the weight travels with the region reading it
    assert [vi.name for vi in first.graph.input] == ["x"]
    onnx.checker.check_model(first, full_check=True)


def test_sequence_ops_cut_the_region():
    parts = partition(sequence_cut())
    assert kinds(parts) == ["rtxrt", "rtxrt", "onnxruntime", "rtxrt"]  # Relu and Abs share no edge
    assert parts[2].nodes == ["SequenceConstruct_2", "ConcatFromSequence_3"]


def test_diamond_is_not_merged_into_a_cycle():
    model = diamond()
    parts = partition(model)
    assert kinds(parts) == ["rtxrt", "onnxruntime", "rtxrt"]
    assert parts[0].nodes == ["Relu_0", "Sigmoid_1"]
    assert parts[2].nodes == ["Neg_3", "Add_4"]
    assert_runs_in_order(parts, model)


def test_disconnected_regions_are_separate_partitions():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Tanh", ["x"], ["b"])]
    model = make_model(nodes, [tensor("x", [2])], [tensor("a", [2]), tensor("b", [2])])
    parts = partition(model)
    assert kinds(parts) == ["rtxrt", "rtxrt"]
    assert [p.nodes for p in parts] == [["Relu_0"], ["Tanh_1"]]


def test_min_subgraph_size_hands_small_regions_to_onnxruntime():
    model = cut_chain()  # regions of 2, 1 and 2 nodes
    assert kinds(partition(model, ProviderOptions(min_subgraph_size=2))) == ["rtxrt", "onnxruntime", "rtxrt"]
    assert kinds(partition(model, ProviderOptions(min_subgraph_size=3))) == ["onnxruntime"]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), gelu("a", "b"), helper.make_node("Tanh", ["b"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    model = make_model(nodes, [tensor("x", [3])], [tensor("y", [3])])
    parts = partition(model, ProviderOptions(min_subgraph_size=2))
    assert kinds(parts) == ["onnxruntime", "rtxrt"]  # the lone Relu joins the Gelu
    assert parts[0].nodes == ["Relu_0", "Gelu_1"]


def test_dead_nodes_are_dropped():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Tanh", ["x"], ["unused"])]
    parts = partition(make_model(nodes, [tensor("x", [2])], [tensor("y", [2])]))
    assert [p.nodes for p in parts] == [["Relu_0"]]


def test_values_a_subgraph_reads_from_outside_are_partition_inputs():
    then_branch = helper.make_graph([helper.make_node("Relu", ["g"], ["t"])], "then", [], [tensor("t", [3])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["g"], ["e"])], "else", [], [tensor("e", [3])])
    nodes = [gelu("x", "g"), helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    model = make_model(nodes, [tensor("x", [3]), tensor("cond", [], onnx.TensorProto.BOOL)], [tensor("y", [3])])
    parts = partition(model)
    assert kinds(parts) == ["onnxruntime", "rtxrt"]
    assert parts[1].inputs == ["cond", "g"]
    assert_runs_in_order(parts, model)


def test_summary():
    text = summary(partition(cut_chain()))
    assert text.splitlines()[0] == "3 partition(s): 2 rtxrt (4 nodes), 1 onnxruntime (1 nodes)"
    assert "[0] rtxrt" in text and "Mul, Relu" in text
    assert "[1] onnxruntime" in text and "Gelu" in text
    assert "inputs ['c', 'a'] -> outputs ['y']" in text
