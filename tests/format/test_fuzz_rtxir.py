"""Fuzzing .rtxir files: a damaged or hostile file, even one whose checksums were re-sealed
after the damage, gets an RtxrtError naming what is wrong, or runs and returns outputs of the
kinds it declares. Never another exception, a crash, a hang or a runaway allocation.

Each case mutates one of a few small valid models (fused conv and matmul, a fused elementwise
chain, If and Loop subgraphs, a symbolic batch dim) where its meaning lives: the GRAPH and META
JSON and the WEIGHTS bytes. CI runs a thousand cases with a fixed seed; a longer run:
RTXRT_FUZZ_CASES=20000 [RTXRT_FUZZ_SEED=n] python -m pytest -s tests/format/test_fuzz_rtxir.py

The cases the fuzzer found are kept below as specifications.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from rtxrt.aot import build_rtxir
from rtxrt.errors import ExecutionError, FormatError, GraphError
from rtxrt.format import to_bytes
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from tests.fuzzing import pick
from tests.fuzzing.harness import Case, Settings, run_campaign, run_file, run_isolated
from tests.fuzzing.rtxir_mutators import RtxirParts, mutate_file, nodes
from tests.fuzzing.seeds import PROFILES, SEEDS

needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/statm"),
                                reason="the fuzz harness isolates cases in forked processes (Linux)")


@functools.cache
def seed_file(name: str) -> bytes:
    """The seed model built as ``rtxrt aot`` builds it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.rtxir"
        build_rtxir(SEEDS[name](), path, profile=PROFILES.get(name))
        return path.read_bytes()


def mutated_file_case(rng: np.random.Generator) -> Case:
    name = pick(rng, sorted(SEEDS))
    data, mutations = mutate_file(seed_file(name), rng)
    input_seed = int(rng.integers(1 << 32))
    return Case(f"{name}: {'; '.join(mutations)}", lambda: run_file(data, input_seed))


@needs_fork
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_seed_models_run_in_the_harness(name):
    assert run_isolated(lambda: run_file(seed_file(name), 0)).label == "ok"


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_taking_a_file_apart_and_resealing_it_gives_the_same_bytes(name):
    assert RtxirParts.of(seed_file(name)).seal() == seed_file(name)


@needs_fork
def test_mutated_files_fail_with_an_rtxrt_error_or_run():
    results = run_campaign(mutated_file_case, Settings.from_env(default_cases=1000))
    print(results.summary())
    assert not results.failures, "\n\n".join(results.failures)


# --- what the fuzzer found -------------------------------------------------------------------


def edited(name: str, edit: Callable[[RtxirParts], None]) -> bytes:
    """The seed file ``name`` with ``edit`` applied to its parts, re-sealed."""
    parts = RtxirParts.of(seed_file(name))
    edit(parts)
    return parts.seal()


def node(parts: RtxirParts, name: str) -> dict:
    return next(n for n in nodes(parts) if n["name"] == name)


def declared(parts: RtxirParts, name: str) -> dict:
    return next(t for t in parts.graph["graph"]["types"] if t["name"] == name)


def initializer(parts: RtxirParts, name: str) -> dict:
    return next(t for t in parts.graph["graph"]["initializers"] if t["name"] == name)


def set_values(parts: RtxirParts, name: str, values: np.ndarray) -> None:
    tensor = initializer(parts, name)
    data = np.asarray(values, tensor["dtype"]).tobytes()
    assert len(data) == tensor["nbytes"]
    parts.weights[tensor["offset"]:tensor["offset"] + len(data)] = data


def test_a_tensor_too_large_for_memory_is_refused_before_it_is_allocated():
    def edit(parts: RtxirParts) -> None:
        set_values(parts, "repeats", [1, 1, 1 << 40])
        parts.graph["graph"]["types"].remove(declared(parts, "tiled"))  # which would contradict it

    with pytest.raises(ExecutionError, match=r"Tile node 'tile': .* would take [\d,]+ bytes, more than the [\d,]+ "
                                             r"bytes of this machine's memory"):
        run_file(edited("symbolic_batch", edit), 0)


def test_a_loop_trip_count_that_contradicts_the_declared_outputs_is_refused_on_load():
    data = edited("control_flow", lambda p: set_values(p, "trips", -(2**63) + 1))
    with pytest.raises(GraphError, match=r"Loop node 'loop' output 'scans': declared as float32\[3,2,3\] but "
                                         r"computes float32\[0,2,3\]"):
        run_file(data, 0)


def test_a_loop_that_never_ends_is_refused_on_load():
    data = edited("control_flow", lambda p: node(p, "loop")["inputs"].__setitem__(0, ""))
    with pytest.raises(GraphError, match="Loop node 'loop': never ends"):
        run_file(data, 0)


def test_outputs_must_come_out_as_declared():
    data = edited("symbolic_batch", lambda p: declared(p, "y").update(shape=[0, 4, 2]))
    with pytest.raises(ExecutionError, match=r"output 'y' came out as float32\[\d, 4, 2\] but the model "
                                             r"declares it float32\[0,4,2\]"):
        run_file(data, 0)


def test_an_attribute_of_the_wrong_kind_is_refused_naming_it():
    data = edited("conv_matmul", lambda p: node(p, "conv")["attrs"].update(pads={"kind": "int", "value": 1}))
    with pytest.raises(GraphError, match="FusedConv node 'conv': attribute 'pads' must be a list of ints, got an int"):
        run_file(data, 0)


@pytest.mark.parametrize("dim", [-1, 2**63])
def test_declared_dims_are_sizes_of_int64(dim):
    data = edited("conv_matmul", lambda p: declared(p, "x")["shape"].__setitem__(1, dim))
    with pytest.raises(FormatError, match="type of 'x': shape must be at most 64 dimensions, each an integer"):
        run_file(data, 0)


def test_omitted_inputs_at_the_end_are_as_if_not_there():
    run_file(edited("symbolic_batch", lambda p: node(p, "gather")["inputs"].append("")), 0)


def test_a_subgraph_input_must_have_the_type_the_node_passes_it():
    data = edited("elementwise_chain", lambda p: initializer(p, "scale").update(dtype="float16", shape=[16]))
    with pytest.raises(GraphError, match=r"Elementwise node 'Elementwise' body input 'scale_1': declared as "
                                         r"float32\[8\] but computes float16\[16\]"):
        run_file(data, 0)


def test_shape_like_inputs_must_be_integer_tensors():
    data = edited("conv_matmul", lambda p: initializer(p, "flat").update(dtype="float64"))
    with pytest.raises(GraphError, match=r"Reshape node 'reshape': input 1 \('flat'\) must be an integer tensor"):
        run_file(data, 0)


def test_a_transpose_perm_must_name_each_axis_once():
    data = edited("symbolic_batch", lambda p: node(p, "transpose")["attrs"].update(
        perm={"kind": "ints", "value": [2**62, 2, 0]}))  # 2**62 % 3 == 1: modulo would let it in
    with pytest.raises(GraphError, match="Transpose node 'transpose': perm .* is not a permutation of the 3 axes"):
        run_file(data, 0)


def one_node_file(op_type: str, inputs: list[str], attrs: dict, initializers: dict, opset: int = 21) -> bytes:
    """A file with node 'n' of ``op_type``, reading input x (float32[batch, 1, 4, 4]) and
    ``initializers``; a batch known only at run time makes some sizes known only then too."""
    x = TensorType(DType.FLOAT32, ("batch", 1, 4, 4))
    graph = Graph([Node(op_type, inputs, ["y"], attrs, name="n")], ["x"], ["y"], {"x": x}, initializers)
    return to_bytes(Model(graph, opsets={"": opset}))


HUGE = 1 << 20
# A few bytes of file each, terabytes of array: refused on load where the sizes are known then,
# by the kernel otherwise (the batch is known at run time only).
HUGE_SIZES = [
    ("Conv", ["x", "w"], {"pads": [HUGE] * 4, "strides": [HUGE] * 2}, {"w": np.ones((1, 1, 1, 1), np.float32)}),
    ("ConvTranspose", ["x", "w"], {"strides": [HUGE] * 2}, {"w": np.ones((1, 1, 1, 1), np.float32)}),
    ("MaxPool", ["x"], {"kernel_shape": [1, 1], "pads": [HUGE] * 4, "strides": [HUGE] * 2}, {}),
    ("Resize", ["x", "", "", "sizes"], {}, {"sizes": np.array([1, 1, HUGE, HUGE], np.int64)}),
    ("Expand", ["x", "shape"], {}, {"shape": np.array([HUGE, 1, HUGE, 1, 1], np.int64)}),
    ("OneHot", ["x", "depth", "values"], {}, {"depth": np.array(1 << 40, np.int64), "values": np.zeros(2, np.float32)}),
]


@pytest.mark.parametrize("op_type, inputs, attrs, initializers", HUGE_SIZES, ids=[c[0] for c in HUGE_SIZES])
def test_sizes_taken_from_attributes_and_tensors_are_refused_before_they_are_allocated(op_type, inputs, attrs,
                                                                                      initializers):
    data = one_node_file(op_type, inputs, attrs, initializers)
    with pytest.raises(ExecutionError, match=rf"{op_type} node 'n': .* would take [\d,]+ bytes, more than"):
        run_file(data, 0)
