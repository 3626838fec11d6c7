"""Fuzzing the ONNX frontend and the AOT compiler (``rtxrt aot``): a malformed or hostile ONNX
model gets an RtxrtError naming what is wrong, or compiles; and a model that compiles runs on
the reference backend to outputs of the kinds it declares, or fails with an RtxrtError. Never
another exception, a crash, a hang or a runaway allocation.

Each case mutates one of the seed models of tests/fuzzing/seeds.py structurally (attributes,
dims, element types, node inputs and outputs, op types, opset versions, initializer data and
dims, graph inputs and outputs, subgraphs) or flips bytes of its serialized form. CI runs a
thousand cases with a fixed seed; a longer run:
RTXRT_FUZZ_CASES=20000 [RTXRT_FUZZ_SEED=n] python -m pytest -s tests/frontend/test_fuzz_onnx.py

The cases the fuzzer found are kept below as specifications.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rtxrt.aot import compile_onnx
from rtxrt.errors import GraphError, ModelError
from rtxrt.format import to_bytes
from tests.fuzzing import pick
from tests.fuzzing.harness import Case, Settings, run_campaign, run_file, run_isolated
from tests.fuzzing.onnx_mutators import mutate_model
from tests.fuzzing.seeds import SEEDS

needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/statm"),
                                reason="the fuzz harness isolates cases in forked processes (Linux)")


def compile_and_run(model: bytes, input_seed: int) -> None:
    run_file(to_bytes(compile_onnx(model)), input_seed)


def mutated_model_case(rng: np.random.Generator) -> Case:
    name = pick(rng, sorted(SEEDS))
    data, mutations = mutate_model(SEEDS[name](), rng)
    input_seed = int(rng.integers(1 << 32))
    return Case(f"{name}: {'; '.join(mutations)}", lambda: compile_and_run(data, input_seed))


@needs_fork
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_seed_models_compile_and_run_in_the_harness(name):
    assert run_isolated(lambda: compile_and_run(SEEDS[name]().SerializeToString(), 0)).label == "ok"


@needs_fork
def test_mutated_models_fail_with_an_rtxrt_error_or_compile_and_run():
    results = run_campaign(mutated_model_case, Settings.from_env(default_cases=1000))
    print(results.summary())
    assert not results.failures, "\n\n".join(results.failures)


# --- what the fuzzer found -------------------------------------------------------------------


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    """The node called ``name``, in the main graph or a subgraph."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for n in graph.node:
            if n.name == name:
                return n
            graphs.extend(a.g for a in n.attribute if a.HasField("g"))
    raise KeyError(name)


def test_a_node_without_the_outputs_of_its_operator_is_refused():
    model = SEEDS["symbolic_batch"]()
    del node(model, "shape").output[:]
    with pytest.raises(GraphError, match=r"Shape node 'shape': produces 1 output\(s\), got 0"):
        compile_onnx(model)


def test_a_required_input_left_out_is_refused():
    model = SEEDS["control_flow"]()
    node(model, "body_cond").op_type = "Pad"  # Pad has needed its pads as an input since opset 11
    with pytest.raises(GraphError, match=r"Pad node 'body_cond': input 1 \(pads\) is required"):
        compile_onnx(model)


def test_a_branch_that_cannot_run_is_refused_even_if_the_other_one_types():
    model = SEEDS["control_flow"]()
    node(model, "else_neg").op_type = "MaxPool"
    with pytest.raises(GraphError, match="MaxPool node 'else_neg': attribute 'kernel_shape' is required"):
        compile_onnx(model)


def test_a_loop_carried_value_must_start_as_the_body_declares_it():
    model = SEEDS["control_flow"]()
    start = next(t for t in model.graph.initializer if t.name == "start")
    start.CopyFrom(numpy_helper.from_array(np.zeros((1, 6), np.float32), "start"))
    with pytest.raises(GraphError, match=r"Loop node 'loop': loop-carried value 'start' starts as float32\[1,6\] "
                                         r"but the body declares its input 'acc' as float32\[2,3\]"):
        compile_onnx(model)


def test_a_scalar_cannot_be_split():
    model = SEEDS["control_flow"]()
    positive = node(model, "positive")
    positive.op_type = "Split"
    del positive.input[1:]
    with pytest.raises(GraphError, match=r"Split node 'positive': cannot split a scalar"):
        compile_onnx(model)


def test_gather_indices_must_be_integers():
    model = SEEDS["symbolic_batch"]()
    node(model, "gather").input[1] = "w"
    with pytest.raises(GraphError, match=r"Gather node 'gather': indices must be an integer tensor, got float32"):
        compile_onnx(model)


def test_text_that_is_not_utf8_is_refused_naming_where_it_is():
    """Protobuf hands a damaged name back as bytes instead of failing; every reader after it would."""
    data = SEEDS["conv_matmul"]().SerializeToString()
    name = node(onnx.load_from_string(data), "conv").name.encode()
    damaged = data.replace(name, b"\xad" + name[1:], 1)
    with pytest.raises(ModelError, match=r"graph\.node\[\d+\]\.name is not valid UTF-8 text"):
        compile_onnx(damaged)


@pytest.mark.parametrize("where", ["initializer", "value_info"])
def test_an_element_type_rtxrt_does_not_know_is_refused(where):
    model = SEEDS["symbolic_batch"]()
    if where == "initializer":
        model.graph.initializer[0].data_type = 99
        message = r"initializer '\w+' \(graph\.initializer\[0\]\) has element type 99, which rtxrt does not know"
    else:
        model.graph.input[0].type.tensor_type.elem_type = 27
        message = r"value '\w+' \(graph\.input\[0\]\.type\.tensor_type\) has element type 27"
    with pytest.raises(ModelError, match=message):
        compile_onnx(model)


def test_a_tensor_with_negative_dims_is_refused_before_onnx_inference_sees_it():
    """onnx's C++ shape inference aborts the whole process on such a tensor (a failed assertion)."""
    model = SEEDS["symbolic_batch"]()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([-2, 3])
    with pytest.raises(ModelError, match=r"initializer '\w+' \(graph\.initializer\[0\]\) has negative dims \[-2, 3\]"):
        compile_onnx(model)
