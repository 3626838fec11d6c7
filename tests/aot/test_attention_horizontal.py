"""Attention fusion (fuse_attention) and horizontal fusion (fuse_horizontal).

Each rewrite is checked by the graph it leaves and by the function it computes: the reference
backend on the rewritten IR against onnxruntime on the original ONNX (or the reference backend
on the original IR), on random inputs. Tolerance: the fused Attention sums Q·K and P·V in a
different order and scales Q and K by sqrt(scale) before the product instead of the scores
after it, so results agree to float32 rounding: rtol 1e-5 with atol 1e-5 of the output's
magnitude (measured: below 3e-6 on every case here). Horizontal fusion computes every output
column as before, but BLAS may block a wider product differently: rtol and atol 1e-6.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import aot_compile
from rtxrt.aot.pass_result import PassResult
from rtxrt.aot.passes.fuse_attention import fuse_attention
from rtxrt.aot.passes.fuse_horizontal import fuse_horizontal
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.checker import check_model
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types
from tests.aot.helpers import apply, assert_close
from tests.helpers import make_model

ort = pytest.importorskip("onnxruntime")

F = TensorProto.FLOAT
LIGHT_INCEPTION = Path(onnx.__file__).parent / "backend/test/data/light/light_inception_v1.onnx"
rng = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def run_pass(proto: onnx.ModelProto | str) -> tuple[Model, PassResult]:
    """The imported model after fuse_attention, re-typed and re-checked as the pipeline does."""
    model = load_onnx(proto)
    return model, apply(fuse_attention, model)


def assert_matches_onnxruntime(proto: onnx.ModelProto | str, model: Model, feeds: dict[str, np.ndarray]) -> None:
    source = proto if isinstance(proto, str) else proto.SerializeToString()
    expected = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ReferenceExecutor(model).run(feeds)
    for want, name in zip(expected, model.graph.outputs, strict=True):
        assert_close(got[name], want)


def random_feeds(proto: onnx.ModelProto, **dims: int) -> dict[str, np.ndarray]:
    """Random float inputs; symbolic dims take their size from ``dims``."""
    feeds = {}
    weights = {init.name for init in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in weights:  # old exports list their weights as inputs too
            continue
        shape = [d.dim_value or dims[d.dim_param] for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rand(*shape)
    return feeds


def ops(model: Model) -> Counter:
    return Counter(n.op_type for n in model.graph.nodes)


def attention(model: Model) -> Node:
    (node,) = [n for n in model.graph.nodes if n.op_type == "Attention"]
    return node


# ---------------------------------------------------------------------------------------------
# Hand-built attention blocks
# ---------------------------------------------------------------------------------------------

B, H, S, D = 2, 4, 5, 8  # batch, heads, sequence, head size


def block_4d(scale_on="scores", mask_shape=(B, 1, 1, S), softmax_axis=-1, scale=None, extra_outputs=(),
             opset: int = 17, q_batch: int = B) -> onnx.ModelProto:
    """Q, K, V inputs of (batch, heads, seq, size); K reaches the product through
    Transpose(0, 1, 3, 2). ``scale_on``: "scores" (a Div after the product) or "q_and_k"
    (a Mul on each operand). ``mask_shape`` None: no mask."""
    inits: dict[str, np.ndarray] = {}
    nodes = [helper.make_node("Transpose", ["K"], ["kt"], perm=[0, 1, 3, 2])]
    q, k = "Q", "kt"
    if scale_on == "q_and_k":
        inits["root"] = np.array(D ** -0.25, np.float32)
        nodes += [helper.make_node("Mul", ["Q", "root"], ["qs"]), helper.make_node("Mul", ["root", "kt"], ["ks"])]
        q, k = "qs", "ks"
    nodes.append(helper.make_node("MatMul", [q, k], ["scores"]))
    last = "scores"
    if scale_on == "scores":
        inits["sqrt_d"] = np.array(math.sqrt(D), np.float32) if scale is None else scale
        nodes.append(helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"]))
        last = "scaled"
    inputs = {"Q": [q_batch, H, S, D], "K": [B, H, S, D], "V": [B, H, S, D]}
    if mask_shape is not None:
        inputs["mask"] = list(mask_shape)
        nodes.append(helper.make_node("Add", [last, "mask"], ["masked"]))
        last = "masked"
    nodes += [helper.make_node("Softmax", [last], ["probs"], axis=softmax_axis),
              helper.make_node("MatMul", ["probs", "V"], ["Y"])]
    outputs = [("Y", F, None)] + [(name, F, None) for name in extra_outputs]
    return make_model(nodes, [(n, F, s) for n, s in inputs.items()], outputs, inits, opset)


def block_3d(hidden: int = H * D, heads: int = H, batch: int | str = "batch", seq: int | str = "seq") -> onnx.ModelProto:
    """A self-attention layer as exporters write it: x (batch, seq, hidden) → Q/K/V
    projections → Reshape to heads → Transpose; the result Transposed and Reshaped back."""
    size = hidden // heads
    inits = {f"W{c}": rand(hidden, hidden) * 0.3 for c in "qkv"}
    inits.update(split=np.array([0, 0, heads, size], np.int64), merge=np.array([0, 0, hidden], np.int64),
                 scale=np.array(size ** -0.5, np.float32))
    nodes = []
    for c, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [helper.make_node("MatMul", ["x", f"W{c}"], [c]),
                  helper.make_node("Reshape", [c, "split"], [f"{c}4"]),
                  helper.make_node("Transpose", [f"{c}4"], [f"{c}t"], perm=perm)]
    nodes += [helper.make_node("MatMul", ["qt", "kt"], ["scores"]),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
              helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "vt"], ["y4"]),
              helper.make_node("Transpose", ["y4"], ["yt"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["yt", "merge"], ["y"])]
    return make_model(nodes, [("x", F, [batch, seq, hidden])], [("y", F, [batch, seq, hidden])], inits)


def test_4d_scores_scale_and_mask_become_one_attention_node():
    proto = block_4d()
    model, result = run_pass(proto)
    assert result.changes == {"Attention (4-D, 4 heads)": 1}
    assert ops(model) == {"Attention": 1}  # K's Transpose is absorbed: Attention takes K untransposed
    node = attention(model)
    assert node.inputs == ["Q", "K", "V", "mask"]
    assert node.attrs["scale"] == pytest.approx(1 / math.sqrt(D))
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_scale_on_q_and_k_multiplies_into_the_scale_attribute():
    proto = block_4d(scale_on="q_and_k")
    model, _ = run_pass(proto)
    assert ops(model) == {"Attention": 1}
    assert attention(model).attrs["scale"] == pytest.approx(1 / math.sqrt(D))
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_k_already_laid_out_for_the_product_gets_a_transpose():
    """K reaching the product as (batch, heads, size, seq) with no Transpose to absorb."""
    nodes = [helper.make_node("MatMul", ["Q", "Kt"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=3),
             helper.make_node("MatMul", ["probs", "V"], ["Y"])]
    proto = make_model(nodes, [("Q", F, [B, H, S, D]), ("Kt", F, [B, H, D, S]), ("V", F, [B, H, S, D])],
                       [("Y", F, None)])
    model, _ = run_pass(proto)
    assert ops(model) == {"Attention": 1, "Transpose": 1}
    assert attention(model).attrs["scale"] == 1.0
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_3d_form_absorbs_the_head_reshapes_and_transposes():
    proto = block_3d()
    model, result = run_pass(proto)
    assert result.changes == {"Attention (3-D, 4 heads)": 1}
    assert ops(model) == {"MatMul": 3, "Attention": 1}
    node = attention(model)
    assert node.inputs == ["q", "k", "v"] and node.outputs == ["y"]
    assert (node.attrs["q_num_heads"], node.attrs["kv_num_heads"]) == (H, H)
    for batch, seq in ((2, 5), (1, 9)):
        assert_matches_onnxruntime(proto, model, random_feeds(proto, batch=batch, seq=seq))


def test_softmax_before_opset_13_on_the_last_axis_fuses():
    proto = block_4d(softmax_axis=3, opset=12)
    model, _ = run_pass(proto)
    assert ops(model) == {"Attention": 1}
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_a_float_mask_is_read_as_it_is():
    proto = block_4d(mask_shape=(1, 1, S, S))
    model, _ = run_pass(proto)
    assert attention(model).inputs[3] == "mask"
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def _masked_fill_block(cond: np.ndarray | None, fill: float, dynamic_cond: bool = False) -> onnx.ModelProto:
    """scores.masked_fill(~cond, fill) as torch exports it: Where(cond, scores, fill)."""
    inits = {"fill": np.array(fill, np.float32)}
    inputs = [("Q", F, [B, H, S, D]), ("K", F, [B, H, S, D]), ("V", F, [B, H, S, D])]
    if dynamic_cond:
        inputs.append(("keep", TensorProto.BOOL, [B, 1, 1, S]))
    else:
        inits["keep"] = cond
    nodes = [helper.make_node("Transpose", ["K"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["Q", "kt"], ["scores"]),
             helper.make_node("Where", ["keep", "scores", "fill"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
             helper.make_node("MatMul", ["probs", "V"], ["Y"])]
    return make_model(nodes, inputs, [("Y", F, None)], inits)


def test_constant_causal_mask_becomes_is_causal():
    causal = np.tril(np.ones((S, S), bool)).reshape(1, 1, S, S)
    for fill in (-np.inf, np.finfo(np.float32).min):
        proto = _masked_fill_block(causal, fill)
        model, result = run_pass(proto)
        assert result.changes == {"Attention (4-D, 4 heads, causal)": 1}
        node = attention(model)
        assert node.attrs["is_causal"] == 1 and len(node.inputs) == 3
        assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_constant_additive_causal_mask_becomes_is_causal():
    proto = block_4d(mask_shape=None)
    causal = np.where(np.tril(np.ones((S, S), bool)), 0, -np.inf).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(causal, "causal"))
    add = helper.make_node("Add", ["scaled", "causal"], ["masked"])
    softmax = next(n for n in proto.graph.node if n.op_type == "Softmax")
    softmax.input[0] = "masked"
    proto.graph.node.insert(list(proto.graph.node).index(softmax), add)
    model, result = run_pass(proto)
    assert result.changes == {"Attention (4-D, 4 heads, causal)": 1}
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_causal_and_padding_masks_join_into_one_additive_mask():
    """masked_fill with a constant causal table, then a padding mask added: the causal part
    folds to a constant and one Add joins it to the padding mask."""
    proto = _masked_fill_block(np.tril(np.ones((S, S), bool)).reshape(1, 1, S, S), -np.inf)
    proto.graph.input.append(helper.make_tensor_value_info("padding", F, [B, 1, 1, S]))
    softmax = next(n for n in proto.graph.node if n.op_type == "Softmax")
    softmax.input[0] = "padded"
    add = helper.make_node("Add", ["masked", "padding"], ["padded"])
    proto.graph.node.insert(list(proto.graph.node).index(softmax), add)
    model, _ = run_pass(proto)
    assert ops(model) == {"Attention": 1, "Add": 1}
    feeds = random_feeds(proto)
    feeds["padding"] = np.where(np.arange(S) < np.array([[3], [5]]), 0, -1e9).astype(np.float32).reshape(B, 1, 1, S)
    assert_matches_onnxruntime(proto, model, feeds)


def test_constant_mask_that_is_not_causal_stays_a_mask():
    keep = np.tril(np.ones((S, S), bool), k=1).reshape(1, 1, S, S)  # one key ahead allowed
    proto = _masked_fill_block(keep, -np.inf)
    model, _ = run_pass(proto)
    node = attention(model)
    assert "is_causal" not in node.attrs and len(node.inputs) == 4
    assert_matches_onnxruntime(proto, model, random_feeds(proto))


def test_dynamic_boolean_mask_becomes_an_additive_mask():
    proto = _masked_fill_block(None, np.finfo(np.float32).min, dynamic_cond=True)
    model, _ = run_pass(proto)
    assert ops(model) == {"Attention": 1, "Where": 1}  # Where(keep, 0, fill) makes the additive mask
    feeds = random_feeds(proto)
    feeds["keep"] = np.arange(S)[None, None, None, :] < np.array([3, 5]).reshape(B, 1, 1, 1)
    assert_matches_onnxruntime(proto, model, feeds)


def test_existing_attention_op_is_left_as_it_is():
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], scale=0.5)
    proto = make_model([node], [(n, F, [B, H, S, D]) for n in "QKV"], [("Y", F, None)], opset=23)
    model, result = run_pass(proto)
    assert not result.changed and ops(model) == {"Attention": 1}


@pytest.mark.parametrize("proto", [
    pytest.param(block_4d(mask_shape=(1, B, 1, 1, S)), id="mask of rank 5"),  # makes the scores rank 5
    pytest.param(block_4d(mask_shape=(B, 1, 1, 1)), id="mask one wide on the key axis"),
    pytest.param(block_4d(mask_shape=()), id="scalar mask"),
    pytest.param(block_4d(softmax_axis=2), id="softmax not on the last axis"),
    pytest.param(block_4d(scale=np.full((S,), 0.3, np.float32)), id="scale that is not a scalar"),
    pytest.param(block_4d(scale=np.array(-2.0, np.float32)), id="negative scale"),
    pytest.param(block_4d(extra_outputs=["probs"]), id="probabilities also a graph output"),
    pytest.param(block_4d(extra_outputs=["scores"]), id="scores also a graph output"),
    pytest.param(block_4d(q_batch=1, mask_shape=None), id="queries broadcast over the batch"),
])
def test_does_not_fire(proto):
    model, result = run_pass(proto)
    assert not result.changed
    assert "Attention" not in ops(model)


def test_scores_read_by_another_node_do_not_fuse():
    proto = block_4d()
    proto.graph.node.append(helper.make_node("Relu", ["scaled"], ["spy"]))
    proto.graph.output.append(helper.make_tensor_value_info("spy", F, None))
    _, result = run_pass(proto)
    assert not result.changed


# ---------------------------------------------------------------------------------------------
# Exported models
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.models import zoo

    return zoo.export("bert", tmp_path_factory.mktemp("bert") / "bert.onnx")


def test_bert_every_layer_attention_is_one_node(bert):
    layers = 2  # tests.models.zoo.bert_config
    model, result = run_pass(bert.onnx_path)
    assert result.changes == {"Attention (3-D, 4 heads)": layers}
    assert "Softmax" not in ops(model) and ops(model)["Attention"] == layers
    for node in model.graph.nodes:
        if node.op_type == "Attention":
            # the projections (with their bias Add) and the mask built from attention_mask
            assert all(name.endswith("/Add_output_0") for name in node.inputs[:3])
            assert node.inputs[3] == "/bert/Where_1_output_0"
    for seed, batch, seq in ((1, 1, 7), (2, 3, 19)):
        assert_matches_onnxruntime(bert.onnx_path, model, bert.make_inputs(seed, batch=batch, seq=seq))


def test_bert_pipeline_fuses_attention_and_the_qkv_projections(bert):
    compiled = aot_compile(bert.onnx_path)
    fusions = compiled.report.fusions
    assert fusions["Attention (3-D, 4 heads)"] == 2
    assert fusions["3 MatMul → 1 (Q/K/V)"] == 2
    assert_matches_onnxruntime(bert.onnx_path, compiled.model, bert.make_inputs(3, batch=2, seq=11))


def _gpt2_block(path: Path, dynamic: bool) -> None:
    """A GPT-2 (nanoGPT) style causal self-attention: fused QKV Linear split into heads, the
    causal mask sliced from a tril buffer and applied with masked_fill, output projection."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class CausalSelfAttention(nn.Module):
        def __init__(self, hidden: int = 32, heads: int = 4, max_len: int = 16):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.proj = nn.Linear(hidden, hidden)
            self.register_buffer("bias", torch.tril(torch.ones(max_len, max_len)).view(1, 1, max_len, max_len))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(x).split(c, dim=2)
            q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
            y = torch.softmax(att, dim=-1) @ v
            return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))

    torch.manual_seed(0)
    dynamic_axes = {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about shapes turned into constants
        torch.onnx.export(CausalSelfAttention().eval(), (torch.randn(2, 16, 32),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes=dynamic_axes, opset_version=17)


def test_gpt2_style_causal_block_with_static_length_becomes_causal_attention(tmp_path):
    _gpt2_block(tmp_path / "block.onnx", dynamic=False)
    model, result = run_pass(str(tmp_path / "block.onnx"))
    assert result.changes == {"Attention (3-D, 4 heads, causal)": 1}
    assert "Softmax" not in ops(model)
    assert_matches_onnxruntime(str(tmp_path / "block.onnx"), model, {"x": rand(2, 16, 32)})


def test_gpt2_style_causal_block_with_dynamic_length_keeps_its_mask(tmp_path):
    _gpt2_block(tmp_path / "block.onnx", dynamic=True)
    model, result = run_pass(str(tmp_path / "block.onnx"))
    assert result.changes == {"Attention (3-D, 4 heads)": 1}
    assert len(attention(model).inputs) == 4
    for batch, seq in ((2, 16), (1, 5)):
        assert_matches_onnxruntime(str(tmp_path / "block.onnx"), model, {"x": rand(batch, seq, 32)})


# ---------------------------------------------------------------------------------------------
# Horizontal fusion
# ---------------------------------------------------------------------------------------------


def ir_model(nodes: list[Node], inputs: dict[str, tuple], outputs: list[str], initializers: dict) -> Model:
    types = {name: TensorType(DType.FLOAT32, shape) for name, shape in inputs.items()}
    graph = Graph(nodes, list(inputs), outputs, types, dict(initializers))
    model = Model(graph, {"": 17, "rtxrt": 1})
    infer_types(model)
    check_model(model)
    return model


def horizontal(model: Model) -> tuple[Model, PassResult]:
    """``model`` after fuse_horizontal (on a copy of the graph), checked as the pipeline does."""
    fused = copy.deepcopy(model)
    return fused, apply(fuse_horizontal, fused)


def assert_same_function(original: Model, fused: Model) -> None:
    sizes = {"seq": 7}  # symbolic dims
    feeds = {name: rand(*(sizes.get(d, d) for d in original.graph.types[name].shape)) for name in original.graph.inputs}
    expected, got = ReferenceExecutor(original).run(feeds), ReferenceExecutor(fused).run(feeds)
    for name, want in expected.items():
        assert_close(got[name], want, rtol=1e-6)


def fused_matmul(x: str, w: str, bias: str, out: str, activation: str = "none", residual: str = "") -> Node:
    attrs = {"trans_b": 0, "alpha": 1.0, "activation": activation, "activation_params": [],
             "residual": "before_activation" if residual else "none"}
    inputs = [x, w, bias] + ([residual] if residual else [])
    return Node("FusedMatMul", inputs, [out], attrs, domain="rtxrt")


def test_qkv_projections_become_one_matmul_and_a_split():
    weights = {"wq": rand(16, 8), "wk": rand(16, 8), "wv": rand(16, 4)}
    nodes = [Node("MatMul", ["x", w], [w[1]]) for w in weights]
    model = ir_model(nodes, {"x": (2, "seq", 16)}, ["q", "k", "v"], weights)
    fused, result = horizontal(model)
    assert result.changes == {"3 MatMul → 1": 1}
    assert [n.op_type for n in fused.graph.nodes] == ["MatMul", "Split"]
    split = fused.graph.nodes[1]
    assert split.outputs == ["q", "k", "v"] and split.attrs["axis"] == 2
    assert fused.graph.initializers[split.inputs[1]].tolist() == [8, 8, 4]
    assert_same_function(model, fused)


def test_fused_products_with_the_same_epilogue_merge_with_their_biases():
    inits = {"w1": rand(16, 8), "w2": rand(16, 8), "w3": rand(16, 8), "b1": rand(8), "b3": rand(8)}
    nodes = [fused_matmul("x", "w1", "b1", "y1", "relu"), fused_matmul("x", "w2", "", "y2", "relu"),
             fused_matmul("x", "w3", "b3", "y3", "gelu")]  # another activation: not merged
    model = ir_model(nodes, {"x": (3, 16)}, ["y1", "y2", "y3"], inits)
    fused, result = horizontal(model)
    assert result.changes == {"2 MatMul → 1": 1}
    wide = next(n for n in fused.graph.nodes if n.op_type == "FusedMatMul" and n.outputs != ["y3"])
    assert wide.attrs["activation"] == "relu" and len(wide.inputs) == 3
    assert_same_function(model, fused)


def test_gemm_with_transposed_weights_merges_along_their_rows():
    inits = {"w1": rand(8, 16), "w2": rand(4, 16), "c1": rand(8)}
    nodes = [Node("Gemm", ["x", "w1", "c1"], ["y1"], {"transB": 1}), Node("Gemm", ["x", "w2"], ["y2"], {"transB": 1})]
    model = ir_model(nodes, {"x": (3, 16)}, ["y1", "y2"], inits)
    fused, result = horizontal(model)
    assert result.changes == {"2 MatMul → 1": 1}
    assert [n.op_type for n in fused.graph.nodes] == ["Gemm", "Split"]
    assert fused.graph.initializers[fused.graph.nodes[0].inputs[1]].shape == (12, 16)
    assert_same_function(model, fused)


@pytest.mark.parametrize("case", ["weight not constant", "residual input", "batched weight", "other input"])
def test_products_that_do_not_merge(case):
    inits = {"w1": rand(16, 8), "w2": rand(16, 8), "b": rand(8)}
    inputs: dict[str, tuple] = {"x": (3, 16), "z": (3, 8)}
    second = {
        "weight not constant": fused_matmul("x", "w", "b", "y2"),
        "residual input": fused_matmul("x", "w2", "b", "y2", residual="z"),
        "batched weight": fused_matmul("x", "w3", "", "y2"),
        "other input": fused_matmul("z", "w4", "b", "y2"),
    }[case]
    inputs["w"] = (16, 8)
    inits.update(w3=rand(2, 16, 8), w4=rand(8, 8))
    model = ir_model([fused_matmul("x", "w1", "b", "y1"), second], inputs, ["y1", "y2"], inits)
    _, result = horizontal(model)
    assert not result.changed


def test_parallel_1x1_convolutions_become_one_conv_and_a_split():
    inits = {f"w{i}": rand(c, 8, 1, 1) for i, c in enumerate((4, 6, 2))}
    inits.update(b0=rand(4), b2=rand(2), w3=rand(5, 8, 3, 3))
    nodes = [Node("Conv", ["x", "w0", "b0"], ["y0"]), Node("Conv", ["x", "w1"], ["y1"]),
             Node("Conv", ["x", "w2", "b2"], ["y2"], {"strides": [1, 1], "pads": [0, 0, 0, 0]}),
             Node("Conv", ["x", "w3"], ["y3"], {"pads": [1, 1, 1, 1]}),  # 3x3: stays alone
             Node("Conv", ["x", "w0"], ["y4"], {"strides": [2, 2]})]  # another stride: stays alone
    model = ir_model(nodes, {"x": (1, 8, 6, 6)}, ["y0", "y1", "y2", "y3", "y4"], inits)
    fused, result = horizontal(model)
    assert result.changes == {"3 Conv → 1": 1}
    assert Counter(n.op_type for n in fused.graph.nodes) == {"Conv": 3, "Split": 1}
    split = next(n for n in fused.graph.nodes if n.op_type == "Split")
    assert split.outputs == ["y0", "y1", "y2"] and split.attrs["axis"] == 1
    assert_same_function(model, fused)


def test_fused_convolutions_need_the_same_activation_and_no_residual():
    conv = {"dilations": [1, 1], "group": 1, "kernel_shape": [1, 1], "pads": [0, 0, 0, 0], "strides": [1, 1],
            "activation_params": [], "residual": "none"}
    inits = {f"w{i}": rand(4, 8, 1, 1) for i in range(4)} | {"b": rand(4)}
    nodes = [Node("FusedConv", ["x", "w0", "b"], ["y0"], conv | {"activation": "relu"}, domain="rtxrt"),
             Node("FusedConv", ["x", "w1", "b"], ["y1"], conv | {"activation": "relu"}, domain="rtxrt"),
             Node("FusedConv", ["x", "w2", "b"], ["y2"], conv | {"activation": "sigmoid"}, domain="rtxrt"),
             Node("FusedConv", ["x", "w3", "b", "z"], ["y3"],
                  conv | {"activation": "relu", "residual": "after_activation"}, domain="rtxrt")]
    model = ir_model(nodes, {"x": (1, 8, 5, 5), "z": (1, 4, 5, 5)}, ["y0", "y1", "y2", "y3"], inits)
    fused, result = horizontal(model)
    assert result.changes == {"2 Conv → 1": 1}
    assert_same_function(model, fused)


def test_grouped_convolutions_do_not_merge():
    inits = {"w0": rand(8, 1, 3, 3), "w1": rand(8, 1, 3, 3)}
    nodes = [Node("Conv", ["x", w], [f"y{w[1]}"], {"group": 8, "pads": [1, 1, 1, 1]}) for w in inits]
    model = ir_model(nodes, {"x": (1, 8, 5, 5)}, ["y0", "y1"], inits)
    _, result = horizontal(model)
    assert not result.changed


def test_light_zoo_inception_v1_merges_each_modules_1x1_branches():
    compiled = aot_compile(str(LIGHT_INCEPTION))
    assert compiled.report.fusions["3 Conv → 1"] == 9  # the nine inception modules
    proto = onnx.load(str(LIGHT_INCEPTION))
    assert_matches_onnxruntime(str(LIGHT_INCEPTION), compiled.model, random_feeds(proto))
