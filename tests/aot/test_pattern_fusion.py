"""Pattern fusions: fuse_layernorm, fuse_gelu, fuse_softmax (decomposed ops → one standard op)
and fuse_elementwise (leftover elementwise DAGs → one rtxrt::Elementwise).

Each rewrite is checked by the graph it leaves and by the function it computes: the reference
backend on the rewritten graph against the original graph, on random inputs. Tolerance: a
fused op computes the same formula in another order (LayerNormalization divides once per
element, Softmax subtracts the max itself), so results agree to float32 rounding (rtol 1e-5,
atol 1e-5 of the output's magnitude). Elementwise runs the very same ops and must agree exactly.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot.options import AotOptions
from rtxrt.aot.passes.fuse_elementwise import MAX_INPUTS, fuse_elementwise
from rtxrt.aot.passes.fuse_gelu import fuse_gelu
from rtxrt.aot.passes.fuse_layernorm import fuse_layernorm
from rtxrt.aot.passes.fuse_softmax import fuse_softmax
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.errors import GraphError
from rtxrt.format import read_rtxir, to_bytes
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from tests.aot.helpers import assert_close, only, ops, run_passes
from tests.helpers import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64
PATTERN_PASSES = (fuse_layernorm, fuse_gelu, fuse_softmax, fuse_elementwise)


def node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def build(nodes, inputs: dict, outputs: dict, consts: dict = (), opset: int = 17) -> onnx.ModelProto:
    """inputs/outputs: name -> shape (a list, or None), float32 unless given as (elem_type,
    shape); consts: name -> value, float32 initializers unless already numpy arrays."""

    def info(spec):
        return spec if isinstance(spec, tuple) else (F, spec)

    consts = {k: v if isinstance(v, np.ndarray) else np.array(v, np.float32) for k, v in dict(consts).items()}
    return make_model(
        nodes,
        [(n, *info(s)) for n, s in inputs.items()],
        [(n, *info(s)) for n, s in outputs.items()],
        consts,
        opset,
    )


def random_feeds(model: Model, seed: int = 1, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in model.graph.inputs:
        t = model.graph.types[name]
        if t.dtype.is_float:
            feeds[name] = (scale * rng.standard_normal(t.shape)).astype(t.dtype.numpy)
        else:
            feeds[name] = rng.integers(0, 2, t.shape).astype(t.dtype.numpy)
    return feeds


def assert_same_function(original: Model, model: Model, seed: int = 1, scale: float = 1.0, rtol: float = 1e-5) -> None:
    feeds = random_feeds(original, seed, scale)
    expected = ReferenceExecutor(original).run(feeds)
    got = ReferenceExecutor(model).run(feeds)
    for name, want in expected.items():
        assert_close(got[name], want, rtol, name)


# ---------------------------------------------------------------------------------------------
# fuse_layernorm
# ---------------------------------------------------------------------------------------------


def layernorm(x="x", axes=(-1,), square="Pow", divide="Div", gamma="gamma", beta="beta", eps="eps", opset=17):
    """The nodes of a decomposed layer norm of ``x`` ending in value "y", as exporters write it."""
    def mean(src, out):
        if opset >= 18:
            return node("ReduceMean", [src, "axes"], out)
        return node("ReduceMean", [src], out, axes=list(axes))

    nodes = [mean(x, "mean"), node("Sub", [x, "mean"], "d")]
    nodes.append(node("Pow", ["d", "two"], "sq") if square == "Pow" else node("Mul", ["d", "d"], "sq"))
    nodes += [mean("sq", "var"), node("Add", ["var", eps], "var_eps"), node("Sqrt", ["var_eps"], "std")]
    if divide == "Div":
        nodes.append(node("Div", ["d", "std"], "normed"))
    else:
        nodes += [node("Reciprocal", ["std"], "inv_std"), node("Mul", ["d", "inv_std"], "normed")]
    last = "normed"
    for op, param in (("Mul", gamma), ("Add", beta)):
        if param:
            nodes.append(node(op, [last, param], f"{op}_out"))
            last = f"{op}_out"
    nodes.append(node("Identity", [last], "y"))
    return nodes


def layernorm_consts(hidden=(8,), axes=(-1,), **extra):
    rng = np.random.default_rng(5)
    return {"two": 2.0, "eps": 1e-5, "axes": np.array(axes, np.int64),
            "gamma": rng.standard_normal(hidden).astype(np.float32),
            "beta": rng.standard_normal(hidden).astype(np.float32), **extra}


def test_decomposed_layernorm_becomes_one_layernormalization():
    proto = build(layernorm(), {"x": [2, 5, 8]}, {"y": [2, 5, 8]}, layernorm_consts())
    original, model, result = run_passes(proto, fuse_layernorm)
    assert result.changes == Counter({"LayerNormalization": 1})
    assert ops(model) == ["LayerNormalization", "Identity"]
    ln = only(model, "LayerNormalization")
    assert ln.inputs == ["x", "gamma", "beta"]
    assert ln.attrs["axis"] == -1 and ln.attrs["epsilon"] == pytest.approx(1e-5)
    assert_same_function(original, model)


@pytest.mark.parametrize("variant", [
    dict(square="Mul"),  # x*x instead of Pow(x, 2)
    dict(divide="Reciprocal"),  # d * (1 / std), as TensorFlow writes it
    dict(gamma="", beta=""),
    dict(gamma=""),
    dict(beta=""),
    dict(axes=(-2, -1), hidden=(5, 8)),
    dict(axes=(1, 2), hidden=(5, 8)),  # positive axes, trailing for rank 3
    dict(opset=18),  # axes are an input from opset 18
])
def test_layernorm_variants_fuse(variant):
    variant = dict(variant)
    axes, hidden, opset = variant.pop("axes", (-1,)), variant.pop("hidden", (8,)), variant.get("opset", 17)
    proto = build(layernorm(axes=axes, **variant), {"x": [2, 5, 8]}, {"y": [2, 5, 8]},
                  layernorm_consts(hidden, axes), opset=opset)
    original, model, result = run_passes(proto, fuse_layernorm)
    assert ops(model) == ["LayerNormalization", "Identity"]
    ln = only(model, "LayerNormalization")
    assert ln.attrs["axis"] == -len(axes)
    assert (ln.inputs[1] == "gamma") == bool(variant.get("gamma", "gamma"))
    assert (len(ln.inputs) == 3) == bool(variant.get("beta", "beta"))
    assert_same_function(original, model)


def with_variance_over(axes: list[int]) -> list:
    return [node("ReduceMean", ["sq"], "var", axes=axes) if n.name == "var" else n for n in layernorm()]


@pytest.mark.parametrize("case, nodes, outputs, inputs, consts", [
    ("the mean is a graph output", layernorm(), {"mean": [2, 5, 1]}, {}, {}),
    ("the centered x is read elsewhere", layernorm() + [node("Neg", ["d"], "neg_d")], {"neg_d": [2, 5, 8]}, {}, {}),
    ("the axes are not trailing", layernorm(axes=(1,), gamma="", beta=""), {}, {}, {}),
    ("the variance is over other axes", with_variance_over([-2]), {}, {}, {}),
    ("eps is not a constant", layernorm(eps="eps_in"), {}, {"eps_in": []}, {}),
    ("eps widens x to rank 4", layernorm(), {}, {}, {"eps": np.full((1, 1, 1, 1), 1e-5, np.float32)}),
    ("the exponent is not 2", layernorm(), {}, {}, {"two": np.array(3.0, np.float32)}),
])
def test_layernorm_must_not_fuse(case, nodes, outputs, inputs, consts):
    proto = build(nodes, {"x": [2, 5, 8], **inputs}, {"y": None, **outputs}, {**layernorm_consts(), **consts})
    original, model, result = run_passes(proto, fuse_layernorm)
    assert not result.changed, case
    assert ops(model) == ops(original)


def test_layernorm_scale_that_would_widen_x_stays_outside():
    """A "gamma" varying along a non-normalized axis is not a LayerNormalization scale: the
    norm fuses without it and the Mul stays."""
    consts = layernorm_consts()
    consts["gamma"] = np.ones((5, 8), np.float32)
    proto = build(layernorm(), {"x": [2, 5, 8]}, {"y": [2, 5, 8]}, consts)
    original, model, _ = run_passes(proto, fuse_layernorm)
    assert ops(model) == ["LayerNormalization", "Mul", "Add", "Identity"]
    assert_same_function(original, model)


@pytest.fixture(scope="module")
def bert_exports(tmp_path_factory):
    """The zoo's BERT encoder exported at opset 17 (the zoo's) and at opset 14, where the
    exporter has no LayerNormalization yet and writes every layer norm out op by op."""
    pytest.importorskip("transformers")
    from tests.models import zoo

    folder = tmp_path_factory.mktemp("bert")
    exported = {17: zoo.export("bert", folder / "bert17.onnx")}
    saved = zoo.OPSET
    try:
        zoo.OPSET = 14
        exported[14] = zoo.export("bert", folder / "bert14.onnx")
    finally:
        zoo.OPSET = saved
    return exported


def test_bert_every_layernorm_is_one_node(bert_exports):
    ort = pytest.importorskip("onnxruntime")
    at17 = Counter(n.op_type for n in onnx.load(bert_exports[17].onnx_path).graph.node)
    assert at17["LayerNormalization"] == 5  # the exporter's own at opset 17: nothing to fuse
    exported = bert_exports[14]
    decomposed = Counter(n.op_type for n in onnx.load(exported.onnx_path).graph.node)
    assert decomposed["LayerNormalization"] == 0 and decomposed["ReduceMean"] == 10
    _, model, result = run_passes(onnx.load(exported.onnx_path), *PATTERN_PASSES)
    assert result.changes["LayerNormalization"] == 5 and result.changes["Gelu (erf form)"] == 2
    left = Counter(ops(model))
    assert left["LayerNormalization"] == 5
    assert left["ReduceMean"] == left["Sqrt"] == left["Pow"] == left["Erf"] == 0
    # the rewritten graph against onnxruntime on the original file, at a new batch and length
    feeds = exported.make_inputs(3, batch=2, seq=11)
    expected = ort.InferenceSession(exported.onnx_path, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ReferenceExecutor(model).run(feeds)
    for name, want in zip(exported.output_names, expected):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


# ---------------------------------------------------------------------------------------------
# fuse_gelu
# ---------------------------------------------------------------------------------------------

ERF_FORMS = {
    # x * (1 + erf(x / sqrt2)) * 0.5: PyTorch's export
    "div, product halved": [node("Div", ["x", "sqrt2"], "s"), node("Erf", ["s"], "e"), node("Add", ["e", "one"], "a"),
                            node("Mul", ["x", "a"], "m"), node("Mul", ["m", "half"], "y")],
    "mul, sum halved": [node("Mul", ["inv_sqrt2", "x"], "s"), node("Erf", ["s"], "e"), node("Add", ["one", "e"], "a"),
                        node("Mul", ["a", "half"], "h"), node("Mul", ["x", "h"], "y")],
    "div, x halved": [node("Mul", ["x", "half"], "hx"), node("Div", ["x", "sqrt2"], "s"), node("Erf", ["s"], "e"),
                      node("Add", ["e", "one"], "a"), node("Mul", ["hx", "a"], "y")],
    "mul, divided by two": [node("Mul", ["x", "inv_sqrt2"], "s"), node("Erf", ["s"], "e"),
                            node("Add", ["e", "one"], "a"), node("Mul", ["a", "x"], "m"),
                            node("Div", ["m", "two"], "y")],
}
GELU_CONSTS = {"sqrt2": 1.4142135, "inv_sqrt2": 0.70710678, "one": 1.0, "half": 0.5, "two": 2.0,
               "c": 0.044715, "k": math.sqrt(2 / math.pi), "three": 3.0}


def tanh_gelu(cube: str) -> list:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) as transformers' gelu_new exports."""
    if cube == "Pow":
        cubed = [node("Pow", ["x", "three"], "x3")]
    else:
        cubed = [node("Mul", ["x", "x"], "x2"), node("Mul", ["x2", "x"], "x3")]
    return cubed + [
        node("Mul", ["x3", "c"], "cx3"), node("Add", ["x", "cx3"], "inner"), node("Mul", ["k", "inner"], "t_in"),
        node("Tanh", ["t_in"], "t"), node("Add", ["t", "one"], "a"), node("Mul", ["half", "x"], "hx"),
        node("Mul", ["hx", "a"], "y"),
    ]


@pytest.mark.parametrize("form", ERF_FORMS)
def test_erf_gelu_forms_become_gelu(form):
    proto = build(ERF_FORMS[form], {"x": [3, 16]}, {"y": [3, 16]}, GELU_CONSTS)
    original, model, result = run_passes(proto, fuse_gelu)
    assert result.changes == Counter({"Gelu (erf form)": 1})
    gelu = only(model, "Gelu")
    assert ops(model) == ["Gelu"] and gelu.inputs == ["x"] and gelu.outputs == ["y"]
    assert gelu.attrs.get("approximate", "none") == "none"
    assert_same_function(original, model, scale=3.0)


@pytest.mark.parametrize("cube", ["Pow", "Mul"])
def test_tanh_gelu_becomes_gelu_tanh(cube):
    proto = build(tanh_gelu(cube), {"x": [3, 16]}, {"y": [3, 16]}, GELU_CONSTS)
    original, model, result = run_passes(proto, fuse_gelu)
    assert result.changes == Counter({"Gelu (tanh form)": 1})
    assert ops(model) == ["Gelu"] and only(model, "Gelu").attrs["approximate"] == "tanh"
    assert_same_function(original, model, scale=3.0)


def test_gelu_constants_match_within_tolerance():
    proto = build(ERF_FORMS["div, product halved"], {"x": [4]}, {"y": [4]}, {**GELU_CONSTS, "sqrt2": 1.41421})
    assert run_passes(proto, fuse_gelu)[2].changed  # 1.41421 is sqrt(2) within 2e-6


@pytest.mark.parametrize("case, consts, outputs", [
    ("sqrt(2) is off by 1e-3", {"sqrt2": 1.4156}, {}),
    ("the half is 0.6", {"half": 0.6}, {}),
    ("the one is 2", {"one": 2.0}, {}),
    ("erf's output is a graph output", {}, {"e": [3, 16]}),
    ("the product is read elsewhere", {}, {"m": [3, 16]}),
])
def test_gelu_must_not_fuse(case, consts, outputs):
    proto = build(ERF_FORMS["div, product halved"], {"x": [3, 16]}, {"y": [3, 16], **outputs},
                  {**GELU_CONSTS, **consts})
    original, model, result = run_passes(proto, fuse_gelu)
    assert not result.changed, case
    assert ops(model) == ops(original)


def test_gelu_of_another_tensor_does_not_fuse():
    """x * 0.5 * (1 + erf(z / sqrt2)) with z != x is not a GELU."""
    nodes = [node("Div", ["z", "sqrt2"], "s"), node("Erf", ["s"], "e"), node("Add", ["e", "one"], "a"),
             node("Mul", ["x", "a"], "m"), node("Mul", ["m", "half"], "y")]
    proto = build(nodes, {"x": [3, 16], "z": [3, 16]}, {"y": [3, 16]}, GELU_CONSTS)
    assert not run_passes(proto, fuse_gelu)[2].changed


def test_gelu_whose_constants_widen_x_does_not_fuse():
    """A one-element constant of higher rank broadcasts x up: Gelu(x) would keep x's shape."""
    proto = build(ERF_FORMS["div, product halved"], {"x": [16]}, {"y": [1, 16]},
                  {**GELU_CONSTS, "half": np.full((1, 1), 0.5, np.float32)})
    assert not run_passes(proto, fuse_gelu)[2].changed


# ---------------------------------------------------------------------------------------------
# fuse_softmax
# ---------------------------------------------------------------------------------------------


LAST = np.array([-1], np.int64)  # the axes input of a reduction along the last axis


def softmax_nodes(axis=-1, stable=True, log=False, opset=17):
    """Softmax or LogSoftmax of "x" along ``axis`` written out, ending in "y"."""
    sum_axes = ["x_axes"] if opset >= 13 else []
    nodes = []
    z = "x"
    if stable:
        max_node = (node("ReduceMax", ["x", "x_axes"], "mx") if opset >= 18
                    else node("ReduceMax", ["x"], "mx", axes=[axis]))
        nodes += [max_node, node("Sub", ["x", "mx"], "z")]
        z = "z"
    reduce_sum = (node("ReduceSum", ["e", *sum_axes], "total") if sum_axes
                  else node("ReduceSum", ["e"], "total", axes=[axis]))
    nodes += [node("Exp", [z], "e"), reduce_sum]
    if log:
        nodes += [node("Log", ["total"], "lt"), node("Sub", [z, "lt"], "y")]
    else:
        nodes.append(node("Div", ["e", "total"], "y"))
    return nodes


@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_patterns_fuse(stable, log, axis):
    proto = build(softmax_nodes(axis, stable, log), {"x": [2, 6, 5]}, {"y": [2, 6, 5]},
                  {"x_axes": np.array([axis], np.int64)})
    original, model, result = run_passes(proto, fuse_softmax)
    op_type = "LogSoftmax" if log else "Softmax"
    assert result.changes == Counter({op_type: 1})
    fused = only(model, op_type)
    assert ops(model) == [op_type] and fused.inputs == ["x"] and fused.attrs["axis"] == axis % 3
    assert_same_function(original, model, scale=5.0)


def test_stable_softmax_fuses_at_any_opset_spelling_of_the_axes():
    for opset in (11, 13, 18):
        proto = build(softmax_nodes(-1, opset=opset), {"x": [4, 7]}, {"y": [4, 7]}, {"x_axes": LAST}, opset=opset)
        original, model, _ = run_passes(proto, fuse_softmax)
        assert [op for op in ops(model) if op != "Constant"] == ["Softmax"], opset  # the frontend lifts 11 to 13
        assert_same_function(original, model)


def test_stable_softmax_matches_on_large_inputs():
    proto = build(softmax_nodes(), {"x": [3, 8]}, {"y": [3, 8]}, {"x_axes": LAST})
    original, model, _ = run_passes(proto, fuse_softmax)
    assert_same_function(original, model, scale=1000.0)


def test_log_of_softmax_becomes_logsoftmax():
    nodes = [node("Softmax", ["x"], "p", axis=1), node("Log", ["p"], "y")]
    original, model, result = run_passes(build(nodes, {"x": [3, 8]}, {"y": [3, 8]}), fuse_softmax)
    assert result.changes == Counter({"LogSoftmax": 1})
    assert ops(model) == ["LogSoftmax"] and only(model, "LogSoftmax").attrs["axis"] == 1
    assert_same_function(original, model)


def test_softmax_keeps_a_max_read_elsewhere():
    """The max is a graph output too: Softmax fuses from x - max on, the shift stays."""
    proto = build(softmax_nodes(), {"x": [3, 8]}, {"y": [3, 8], "mx": [3, 1]}, {"x_axes": LAST})
    original, model, _ = run_passes(proto, fuse_softmax)
    assert ops(model) == ["ReduceMax", "Sub", "Softmax"] and only(model, "Softmax").inputs == ["z"]
    assert_same_function(original, model)


@pytest.mark.parametrize("case, proto", [
    ("two axes", build(softmax_nodes(stable=False), {"x": [2, 3, 4]}, {"y": [2, 3, 4]},
                       {"x_axes": np.array([1, 2], np.int64)})),
    ("exp read elsewhere", build(softmax_nodes(), {"x": [3, 8]}, {"y": [3, 8], "e": [3, 8]}, {"x_axes": LAST})),
    ("the division is by something else", build(softmax_nodes(stable=False)[:-1] + [node("Div", ["e", "x"], "y")],
                                                {"x": [3, 8]}, {"y": [3, 8]}, {"x_axes": LAST})),
])
def test_softmax_must_not_fuse(case, proto):
    original, model, result = run_passes(proto, fuse_softmax)
    assert not result.changed, case
    assert ops(model) == ops(original)


def test_softmax_before_opset_13_fuses_only_along_the_last_axis():
    """Softmax flattened its input to 2-D at the axis before opset 13. The frontend lifts
    models to 13, so this is an IR graph built directly."""

    def model(axis: int) -> Model:
        nodes = [Node("Exp", ["x"], ["e"]), Node("ReduceSum", ["e"], ["total"], {"axes": [axis]}),
                 Node("Div", ["e", "total"], ["y"])]
        graph = Graph(nodes, ["x"], ["y"], {"x": TensorType(DType.FLOAT32, (2, 3, 4))})
        return infer_types(Model(graph, {"": 11}))

    fused, kept = model(axis=2), model(axis=1)
    assert fuse_softmax(fused, AotOptions()).changed and ops(fused) == ["Softmax"]
    assert_same_function(model(axis=2), fused)
    assert not fuse_softmax(kept, AotOptions()).changed


# ---------------------------------------------------------------------------------------------
# fuse_elementwise
# ---------------------------------------------------------------------------------------------


def body_ops(n: Node) -> list[str]:
    return [b.op_type for b in n.attrs["body"].nodes]


def test_elementwise_chain_becomes_one_node_with_scalars_inside():
    nodes = [node("Add", ["x", "bias"], "a"), node("Mul", ["a", "three"], "m"), node("Relu", ["m"], "y")]
    proto = build(nodes, {"x": [2, 8]}, {"y": [2, 8]}, {"bias": np.arange(8, dtype=np.float32), "three": 3.0})
    original, model, result = run_passes(proto, fuse_elementwise)
    assert result.changes == Counter({"Elementwise (3 ops)": 1})
    fused = only(model, "Elementwise")
    body = fused.attrs["body"]
    assert fused.domain == "rtxrt" and ops(model) == ["Elementwise"]
    assert fused.inputs == ["x", "bias"] and fused.outputs == ["y"]  # the scalar 3 is no input...
    assert [a.tolist() for a in body.initializers.values()] == [3.0]  # ...but a body constant
    assert body_ops(fused) == ["Add", "Mul", "Relu"] and len(body.inputs) == 2 and len(body.outputs) == 1
    assert_same_function(original, model, rtol=0)


def test_elementwise_dag_with_broadcasts_casts_and_where():
    """BERT-style mask arithmetic on a [B,1,1,S] mask joining [B,H,S,S] scores, plus a
    SiLU whose input is read twice inside the group."""
    nodes = [
        node("Cast", ["mask"], "mf", to=F), node("Sub", ["one", "mf"], "inv"), node("Mul", ["inv", "big"], "bias"),
        node("Mul", ["scores", "scale"], "scaled"), node("Add", ["scaled", "bias"], "masked"),
        node("Sigmoid", ["masked"], "sig"), node("Mul", ["masked", "sig"], "silu"),
        node("Greater", ["silu", "zero"], "pos"), node("Where", ["pos", "silu", "zero"], "y"),
    ]
    proto = build(nodes, {"scores": [2, 3, 4, 4], "mask": (I64, [2, 1, 1, 4])}, {"y": [2, 3, 4, 4]},
                  {"one": 1.0, "big": -1e4, "scale": 0.125, "zero": 0.0})
    original, model, result = run_passes(proto, fuse_elementwise)
    assert result.changes == Counter({"Elementwise (9 ops)": 1})
    fused = only(model, "Elementwise")
    assert fused.inputs == ["mask", "scores"] and len(fused.attrs["body"].initializers) == 4
    assert_same_function(original, model, rtol=0)


def test_value_read_outside_ends_the_group():
    """t is also a graph output: the Add that makes it stays out, the group reads it."""
    nodes = [node("Add", ["x", "z"], "t"), node("Neg", ["t"], "n"), node("Mul", ["n", "two"], "m"),
             node("Exp", ["m"], "y")]
    proto = build(nodes, {"x": [4, 4], "z": [4, 4]}, {"y": [4, 4], "t": [4, 4]}, {"two": 2.0})
    original, model, _ = run_passes(proto, fuse_elementwise)
    assert ops(model) == ["Add", "Elementwise"]
    assert only(model, "Elementwise").inputs == ["t"] and body_ops(only(model, "Elementwise")) == ["Neg", "Mul", "Exp"]
    assert_same_function(original, model, rtol=0)


def test_value_read_by_two_groups_ends_both():
    """s feeds two chains: s's own chain is one group and each reader chain another."""
    nodes = [node("Abs", ["x"], "ax"), node("Sqrt", ["ax"], "s"),
             node("Neg", ["s"], "n1"), node("Exp", ["n1"], "y1"), node("Sin", ["s"], "n2"), node("Cos", ["n2"], "y2")]
    proto = build(nodes, {"x": [5]}, {"y1": [5], "y2": [5]})
    original, model, result = run_passes(proto, fuse_elementwise)
    assert result.changes == Counter({"Elementwise (2 ops)": 3})
    assert ops(model) == ["Elementwise"] * 3
    assert_same_function(original, model, rtol=0)


def test_group_reads_at_most_max_inputs_tensors():
    names = [f"x{i}" for i in range(12)]
    nodes, acc = [], names[0]
    for i, name in enumerate(names[1:]):
        nodes.append(node("Add", [acc, name], f"s{i}"))
        acc = f"s{i}"
    nodes.append(node("Identity", [acc], "y"))
    proto = build(nodes, {n: [3] for n in names}, {"y": [3]})
    original, model, _ = run_passes(proto, fuse_elementwise)
    fused = [n for n in model.graph.nodes if n.op_type == "Elementwise"]
    assert len(fused) == 2 and all(len(n.inputs) <= MAX_INPUTS for n in fused)
    assert sum(len(body_ops(n)) for n in fused) == 11
    assert_same_function(original, model, rtol=0)


def test_elementwise_leaves_lone_ops_shape_arithmetic_and_other_ops():
    nodes = [
        node("Relu", ["x"], "r"), node("MatMul", ["r", "w"], "mm"), node("Sigmoid", ["mm"], "y"),  # lone ops
        node("Shape", ["x"], "shape"), node("Mul", ["shape", "one_i"], "dbl"), node("Add", ["dbl", "zero_i"], "dims"),
        node("Reshape", ["y", "dims"], "y2"),  # int64[2] arithmetic feeding a Reshape
    ]
    consts = {"w": np.ones((4, 4), np.float32), "one_i": np.ones(2, np.int64), "zero_i": np.zeros(2, np.int64)}
    proto = build(nodes, {"x": [2, 4]}, {"y2": None}, consts)
    original, model, result = run_passes(proto, fuse_elementwise)
    assert not result.changed and ops(model) == ops(original)


def test_elementwise_body_survives_the_rtxir_file():
    nodes = [node("Mul", ["x", "half"], "h"), node("Tanh", ["h"], "t"), node("Add", ["t", "x"], "y")]
    proto = build(nodes, {"x": [2, 3]}, {"y": [2, 3]}, {"half": 0.5})
    original, model, _ = run_passes(proto, fuse_elementwise)
    reread = read_rtxir(to_bytes(model))
    assert body_ops(only(reread, "Elementwise")) == ["Mul", "Tanh", "Add"]
    assert_same_function(original, reread, rtol=0)


def test_elementwise_body_holding_another_op_is_rejected():
    nodes = [node("Neg", ["x"], "n"), node("Exp", ["n"], "y")]
    _, model, _ = run_passes(build(nodes, {"x": [3]}, {"y": [3]}), fuse_elementwise)
    body = only(model, "Elementwise").attrs["body"]
    body.nodes[0].op_type = "Softmax"
    with pytest.raises(GraphError, match="not an elementwise op"):
        infer_types(model)


def test_pattern_passes_are_idempotent():
    """Idempotence: a second run of every pattern pass finds nothing more."""
    proto = build(layernorm() + [node("Neg", ["y"], "n"), node("Exp", ["n"], "out")], {"x": [2, 5, 8]},
                  {"out": [2, 5, 8]}, layernorm_consts())
    _, model, first = run_passes(proto, *PATTERN_PASSES)
    assert first.changes == Counter({"LayerNormalization": 1, "Elementwise (2 ops)": 1})
    for run_pass in PATTERN_PASSES:
        assert not run_pass(model, AotOptions()).changed
