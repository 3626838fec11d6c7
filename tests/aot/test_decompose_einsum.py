"""decompose's Einsum rule: the GPU backend has no Einsum lowering, so a float Einsum becomes
Transpose, Reshape, MatMul, ReduceSum, Mul and Squeeze/Unsqueeze with numpy.einsum's semantics.

Every equation is compiled by the whole pipeline and checked three ways: the Einsum is gone,
the compiled model run by the reference backend agrees with onnxruntime on the original model
(float32: within 1e-5 of the output's largest magnitude) at two input sizes, so no rewrite may
bake a symbolic dim into a constant, and the CUDA backend plans every node on the GPU (fp32
and fp16 precision). Equations the rule does not handle (a diagonal, integer operands, sizes
that are not provably equal) stay Einsum and still compute the right thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import AotOptions, compile_onnx
from rtxrt.aot.passes.decompose import decompose
from rtxrt.aot.passes.decompose_einsum import parse_equation
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.ir.graph import Model
from tests.aot.helpers import assert_close, ops, run_passes
from tests.helpers import make_model

F, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
rng = np.random.default_rng(0)

# Two bindings of the symbolic dims: every case runs at both, all sizes different and > 1.
SIZES = ({"B": 2, "H": 3, "S": 4, "T": 5, "I": 3, "J": 4, "K": 5, "L": 2, "M": 3, "N": 6, "X": 2, "Y": 3},
         {"B": 3, "H": 2, "S": 7, "T": 3, "I": 5, "J": 2, "K": 3, "L": 4, "M": 6, "N": 2, "X": 4, "Y": 5})


@dataclass
class Case:
    """An Einsum of operands of these shapes (symbolic dims as strings, bound by SIZES).
    ``numpy``: the oracle is numpy.einsum (onnxruntime rejects ellipses of different ranks)."""

    equation: str
    shapes: list[list]
    numpy: bool = False
    opset: int = 18

    def proto(self, elem_type: int = F) -> onnx.ModelProto:
        inputs = [(f"x{i}", elem_type, shape) for i, shape in enumerate(self.shapes)]
        node = helper.make_node("Einsum", [name for name, _, _ in inputs], ["y"], name="einsum",
                                equation=self.equation)
        return make_model([node], inputs, [("y", elem_type, None)], {}, self.opset)

    def feeds(self, binding: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
        sizes = SIZES[binding]
        return {f"x{i}": rng.standard_normal([sizes.get(d, d) for d in shape]).astype(dtype)
                for i, shape in enumerate(self.shapes)}


CASES: dict[str, Case] = {
    # two operands, one contraction: a (batched) MatMul
    "matmul": Case("ij,jk->ik", [["M", 8], [8, "N"]]),
    "matmul-all-symbolic": Case("ij,jk->ik", [["M", "K"], ["K", "N"]]),
    "matmul-transposed-output": Case("ij,jk->ki", [["M", "K"], ["K", "N"]]),
    "batched-output-rotated": Case("bij,bjk->ikb", [["B", "I", "J"], ["B", "J", "K"]]),
    "matrix-vector": Case("ij,j->i", [["M", "K"], ["K"]]),
    "vector-matrix": Case("j,jk->k", [["K"], ["K", "N"]]),
    "batched": Case("bij,bjk->bik", [["B", "S", 8], ["B", 8, "T"]]),
    "attention-scores": Case("bhqd,bhkd->bhqk", [["B", 4, "S", 8], ["B", 4, "T", 8]]),
    "attention-context": Case("bhqk,bhkd->bhqd", [["B", 4, "S", "T"], ["B", 4, "T", 8]]),
    "attention-heads-symbolic": Case("bhqd,bhkd->bhqk", [["B", "H", "S", 8], ["B", "H", "T", 8]]),
    "linear-layer": Case("bsd,od->bso", [["B", "S", 8], [6, 8]]),
    "batch-not-leading": Case("ibj,jbk->bki", [["S", "B", "K"], ["K", "B", "N"]]),
    # several symbolic dims merged into one MatMul dim: sizes read from the inputs' shapes
    "two-symbolic-rows": Case("bxyd,bde->bxye", [["B", "X", "Y", 8], ["B", 8, 6]]),
    "two-symbolic-contracted": Case("ijk,jkl->il", [["I", "J", "K"], ["J", "K", "L"]]),
    "rows-and-columns-symbolic": Case("xyk,kst->xyst", [["X", "Y", 4], [4, "S", "T"]]),
    "merged-pairs": Case("abcd,cdef->abef", [["I", "J", "K", "L"], ["K", "L", "M", "N"]]),
    # no contraction: a broadcast Mul
    "outer-product": Case("i,j->ij", [["I"], ["J"]]),
    "outer-product-transposed": Case("i,j->ji", [["I"], ["J"]]),
    "batched-outer-product": Case("bi,bj->bij", [["B", "I"], ["B", "J"]]),
    "hadamard": Case("ij,ij->ij", [["I", "J"], ["I", "J"]]),
    "scale-rows": Case("ij,i->ij", [["I", "J"], ["I"]]),
    "outer-product-in-the-middle": Case("j,ik->ijk", [["J"], ["I", "K"]]),
    "scalar-operand": Case(",ij->ji", [[], ["I", "J"]]),
    # contractions down to a scalar
    "dot": Case("i,i->", [["K"], ["K"]]),
    "frobenius": Case("ij,ij->", [["I", "J"], ["I", "J"]]),
    "row-dots": Case("ij,ij->i", [["I", "J"], ["I", "J"]]),
    # one operand
    "transpose": Case("ij->ji", [["I", "J"]]),
    "permute-4d": Case("bhsd->bshd", [["B", "H", "S", 8]]),
    "rotate-axes": Case("ijk->jki", [["I", "J", "K"]]),
    "row-sums": Case("ij->i", [["I", "J"]]),
    "column-sums": Case("ij->j", [["I", "J"]]),
    "total-sum": Case("ij->", [["I", "J"]]),
    "sum-and-permute": Case("bhqd->dqb", [["B", "H", "S", 8]]),
    "identity": Case("ij->ij", [["I", "J"]]),
    # implicit output: the letters used once, sorted
    "implicit-matmul": Case("ij,jk", [["M", "K"], ["K", "N"]]),
    "implicit-transpose": Case("ba", [["I", "J"]]),
    "implicit-sorted-output": Case("kj,ji", [["M", "K"], ["K", "N"]]),  # -> "ik"
    "implicit-scalar": Case("ij,ij", [["I", "J"], ["I", "J"]]),
    # ellipsis
    "ellipsis-matmul": Case("...ij,...jk->...ik", [["B", "H", "S", 8], ["B", "H", 8, "T"]]),
    "ellipsis-implicit": Case("...ij,...jk", [["B", "S", 8], ["B", 8, "T"]]),
    "ellipsis-in-the-middle": Case("i...j,j...k->...ik", [["S", "B", 8], [8, "B", "T"]]),
    "ellipsis-one-operand": Case("...ij->...ji", [["B", "H", "I", "J"]]),
    "ellipsis-different-ranks": Case("...ij,...jk->...ik", [["B", "H", "S", 8], ["H", 8, "T"]], numpy=True),
    # three and more operands: contracted left to right
    "chain-of-three": Case("ij,jk,kl->il", [["I", "J"], ["J", "K"], ["K", "L"]]),
    "batched-chain-of-three": Case("bij,bjk,bkl->bil", [["B", "I", 8], ["B", 8, "K"], ["B", "K", 6]]),
    "three-with-shared-label": Case("ij,ik,il->jkl", [["I", "J"], ["I", "K"], ["I", "L"]]),
    "four-operands": Case("ab,bc,cd,de->ae", [[3, "J"], ["J", 4], [4, "K"], ["K", 5]]),
    "implicit-three": Case("ij,jk,kl", [["I", "J"], ["J", "K"], ["K", "L"]]),
    # labels one operand has and the output lacks: summed out first
    "summed-out-singles": Case("ij,k->i", [["I", "J"], ["K"]]),
    "summed-out-before-matmul": Case("bij,jkc->bik", [["B", "I", "J"], ["J", "K", 3]]),
    "summed-out-middle": Case("ijk,kl->il", [["I", "J", "K"], ["K", "L"]]),
    # static 1s broadcast against other sizes
    "broadcast-batch": Case("bij,bjk->bik", [[1, "S", 8], ["B", 8, "T"]]),
    "broadcast-batch-other-side": Case("bij,bjk->bik", [["B", "S", 8], [1, 8, "T"]]),
    "broadcast-ellipsis": Case("...ij,...jk->...ik", [["B", 1, "S", 8], [1, "H", 8, "T"]]),
    "broadcast-contracted": Case("ij,jk->ik", [["M", 1], [8, "N"]]),
    "broadcast-both-one": Case("bij,bjk->bik", [[1, "S", 8], [1, 8, "T"]]),
    # opset 12: Squeeze, Unsqueeze and the reductions take their axes as attributes
    "opset-12-symbolic-rows": Case("bxyd,bde->bxye", [["B", "X", "Y", 8], ["B", 8, 6]], opset=12),
    "opset-12-merged-pairs": Case("abcd,cdef->abef", [["I", "J", "K", "L"], ["K", "L", "M", "N"]], opset=12),
    "opset-12-summed-out": Case("ijk,l->ki", [["I", "J", "K"], ["L"]], opset=12),
    "opset-12-broadcast": Case("ij,jk->ik", [["M", 1], [8, "N"]], opset=12),
}

UNSUPPORTED = {
    "diagonal": (Case("ii->i", [["I", "I"]]), F),
    "trace": (Case("ii", [["I", "I"]]), F),
    "diagonal-in-product": (Case("ii,ij->j", [["I", "I"], ["I", "J"]]), F),
    "int32": (Case("ij,jk->ik", [["M", "K"], ["K", "N"]]), TensorProto.INT32),
    "int64": (Case("bij,bjk->bik", [["B", "S", 8], ["B", 8, "T"]]), TensorProto.INT64),
    "int64-transpose": (Case("ij->ji", [["I", "J"]]), TensorProto.INT64),
}


def onnxruntime_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feeds)[0]


def expected(case: Case, feeds: dict[str, np.ndarray]) -> np.ndarray:
    if case.numpy:
        return np.einsum(case.equation, *feeds.values())
    return onnxruntime_run(case.proto(), feeds)


def einsums(model: Model) -> list[str]:
    return [n.label for n in model.graph.nodes if n.op_type == "Einsum"]


def plan_host_steps(model: Model, feeds: dict[str, np.ndarray]) -> list[str]:
    plan = build_plan(model, {k: v.shape for k, v in feeds.items()}, arch="sm_86", sm_count=46)
    return [s.label for s in plan.host_steps]


# ---------------------------------------------------------------------------------------------
# Every case: gone, same function as onnxruntime at two sizes, on the GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_einsum_is_gone_and_the_model_matches_onnxruntime_at_two_sizes(name):
    case = CASES[name]
    model = compile_onnx(case.proto().SerializeToString())
    assert einsums(model) == []
    executor = ReferenceExecutor(model)
    for binding in (0, 1):
        feeds = case.feeds(binding)
        want = expected(case, feeds)
        got = executor.run(feeds)["y"]
        assert got.shape == want.shape, name
        assert_close(got, want, name=f"{name} at sizes {binding}")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", CASES)
def test_every_node_plans_on_the_gpu(name, precision):
    case = CASES[name]
    model = compile_onnx(case.proto().SerializeToString(), AotOptions(precision=precision))
    assert einsums(model) == []
    for binding in (0, 1):
        assert plan_host_steps(model, case.feeds(binding)) == []


@pytest.mark.parametrize("name", ["matmul", "attention-scores", "attention-context", "chain-of-three",
                                  "summed-out-singles", "outer-product", "row-sums", "broadcast-batch"])
def test_float16_models_stay_float16(name):
    """A float16 Einsum is rewritten in float16: its output keeps the type, within float16
    rounding of onnxruntime on the float32 model, and plans on the GPU."""
    case = CASES[name]
    model = compile_onnx(case.proto(F16).SerializeToString())
    assert einsums(model) == []
    feeds = case.feeds(0, np.float16)
    got = ReferenceExecutor(model).run(feeds)["y"]
    assert got.dtype == np.float16
    want = onnxruntime_run(case.proto(), {k: v.astype(np.float32) for k, v in feeds.items()})
    assert_close(got.astype(np.float32), want, rtol=1e-2, name=name)
    assert plan_host_steps(model, feeds) == []


# ---------------------------------------------------------------------------------------------
# What the rewrite makes
# ---------------------------------------------------------------------------------------------


def decomposed(name: str) -> tuple[list[str], dict]:
    _, model, changes = run_passes(CASES[name].proto(), decompose)
    return ops(model), dict(changes.changes)


def test_a_plain_matmul_equation_is_one_matmul():
    assert decomposed("matmul") == (["MatMul"], {"Einsum→MatMul": 1})


def test_attention_scores_transpose_keys_and_need_no_reshape():
    """bhqd,bhkd->bhqk: batch b, h; M = q, K = d, N = k: only the keys move (d before k)."""
    made, _ = decomposed("attention-scores")
    assert made == ["Transpose", "MatMul"]


def test_attention_context_is_a_batched_matmul_as_it_stands():
    assert decomposed("attention-context")[0] == ["MatMul"]


def test_a_linear_layer_keeps_the_batch_dims_of_its_input():
    """bsd,od->bso: no batch label, so b and s stay apart and MatMul broadcasts the weight
    (no Reshape): only the weight is transposed."""
    assert decomposed("linear-layer")[0] == ["Transpose", "MatMul"]


def test_a_constant_operand_is_transposed_once_when_compiling():
    """bsd,od->bso with the weight an initializer: its Transpose folds into a new weight, so
    the compiled model is one matrix product."""
    node = helper.make_node("Einsum", ["x", "w"], ["y"], equation="bsd,od->bso")
    w = rng.standard_normal((6, 8)).astype(np.float32)
    proto = make_model([node], [("x", F, ["B", "S", 8])], [("y", F, None)], {"w": w}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert ops(model) == ["FusedMatMul"]
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    assert_close(ReferenceExecutor(model).run({"x": x})["y"], onnxruntime_run(proto, {"x": x}))


def test_einsum_attention_fuses_into_one_attention_node():
    """softmax(einsum(q, k) * scale) then einsum with v: once decomposed it is the MatMul /
    Transpose pattern fuse_attention knows."""
    nodes = [helper.make_node("Einsum", ["q", "k"], ["s"], equation="bhqd,bhkd->bhqk"),
             helper.make_node("Mul", ["s", "scale"], ["scaled"]),
             helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
             helper.make_node("Einsum", ["p", "v"], ["y"], equation="bhqk,bhkd->bhqd")]
    inputs = [(name, F, ["B", 4, "S", 16]) for name in "qkv"]
    proto = make_model(nodes, inputs, [("y", F, None)], {"scale": np.array(0.25, np.float32)}, 18)
    model = compile_onnx(proto.SerializeToString())
    assert ops(model) == ["Attention"]
    feeds = {name: rng.standard_normal((2, 4, 5, 16)).astype(np.float32) for name in "qkv"}
    assert_close(ReferenceExecutor(model).run(feeds)["y"], onnxruntime_run(proto, feeds))
    assert plan_host_steps(model, feeds) == []


def test_merged_symbolic_dims_are_read_from_the_input_shapes():
    """b, (x y), d @ b, d, e: splitting x*y again needs x and y, both symbolic: the
    Reshape's shape is built from the input's Shape, never from constants."""
    made, _ = decomposed("two-symbolic-rows")
    assert "Shape" in made and "Concat" in made and made.count("MatMul") == 1


def test_no_contraction_is_a_broadcast_mul():
    assert decomposed("outer-product") == (["Unsqueeze", "Mul"], {"Einsum→Mul": 1})
    assert decomposed("hadamard")[0] == ["Mul"]


def test_labels_only_one_operand_has_are_summed_before_the_product():
    made, changes = decomposed("summed-out-singles")
    assert made == ["ReduceSum", "ReduceSum", "Mul"]
    assert changes == {"Einsum→Mul+ReduceSum": 1}
    made, _ = decomposed("summed-out-before-matmul")
    assert made.index("ReduceSum") < made.index("MatMul")


def test_one_operand_is_a_reduce_sum_and_a_transpose():
    assert decomposed("transpose")[0] == ["Transpose"]
    assert decomposed("row-sums")[0] == ["ReduceSum"]
    assert decomposed("sum-and-permute")[0] == ["ReduceSum", "Transpose"]
    assert decomposed("identity")[0] == ["Identity"]


def test_operands_are_contracted_pairwise_left_to_right():
    assert decomposed("chain-of-three")[0] == ["MatMul", "MatMul"]
    assert decomposed("four-operands")[0] == ["MatMul", "MatMul", "MatMul"]


def test_a_static_batch_of_one_broadcasts_by_dropping_the_dim():
    made, _ = decomposed("broadcast-batch")
    assert made[0] == "Squeeze" and "MatMul" in made


def test_implicit_output_is_the_letters_used_once_sorted():
    assert parse_equation("kj,ji", [2, 2]) == ([["k", "j"], ["j", "i"]], ["i", "k"])
    assert parse_equation("ij,jk,kl", [2, 2, 2])[1] == ["i", "l"]
    assert parse_equation("ii", [2])[1] == []
    assert parse_equation("...ij,...jk", [4, 3])[1] == [".1", ".0", "i", "k"]


def test_ellipsis_dims_are_labelled_from_the_right():
    inputs, output = parse_equation("...ij,j...->...i", [4, 2])
    assert inputs == [[".1", ".0", "i", "j"], ["j", ".0"]] and output == [".1", ".0", "i"]


def test_malformed_equations_do_not_parse():
    assert parse_equation("ij,jk->ik", [2]) is None  # two terms, one operand
    assert parse_equation("ijk->i", [2]) is None  # three labels, rank 2
    assert parse_equation("ij->ii", [2]) is None  # repeated output label
    assert parse_equation("ij->k", [2]) is None  # output label no input has
    assert parse_equation("...ij->ij", [3]) is None  # ellipsis dims missing from the output
    assert parse_equation("i1->i", [2]) is None


# ---------------------------------------------------------------------------------------------
# What is left alone, and still computes the right thing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_einsums_are_left_alone_and_still_run(name):
    case, elem_type = UNSUPPORTED[name]
    proto = case.proto(elem_type)
    _, model, changes = run_passes(proto, decompose)
    assert ops(model) == ["Einsum"] and not changes.changed
    compiled = compile_onnx(proto.SerializeToString())
    assert len(einsums(compiled)) == 1
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    for binding in (0, 1):
        feeds = {k: (v * 4).astype(dtype) for k, v in case.feeds(binding).items()}
        np.testing.assert_allclose(ReferenceExecutor(compiled).run(feeds)["y"], onnxruntime_run(proto, feeds),
                                   rtol=1e-5, atol=1e-5)


def test_sizes_not_provably_equal_are_left_alone_and_still_broadcast():
    """ij,jk with j of sizes K and L: equal at run time, or one of them 1 and broadcast (as
    numpy and onnxruntime do). The rule cannot tell which, so it leaves the Einsum."""
    case = Case("ij,jk->ik", [["M", "K"], ["L", "N"]])
    _, model, changes = run_passes(case.proto(), decompose)
    assert ops(model) == ["Einsum"] and not changes.changed
    compiled = compile_onnx(case.proto().SerializeToString())
    for k, l in [(4, 4), (1, 4), (4, 1)]:
        feeds = {"x0": rng.standard_normal((3, k)).astype(np.float32),
                 "x1": rng.standard_normal((l, 5)).astype(np.float32)}
        assert_close(ReferenceExecutor(compiled).run(feeds)["y"], onnxruntime_run(case.proto(), feeds))
