"""Generated attention kernels (rtxrt/jit/codegen/attention.py): Attention nodes become
problems (or clear CodegenErrors naming the node), and every kernel compiles with NVRTC for
every supported arch (no GPU needed).

``CASES`` is the catalogue tests/backends/cuda/test_gpu_attention.py runs on the device: BERT-like
(3-D, padding mask [B, 1, 1, S]) in fp32/fp16/bf16, ViT-like (S = 197, no tile multiple),
GPT-2-like causal (4-D and 3-D), causal with q_len != kv_len, GQA with bool masks and fully
masked rows, odd head sizes (no 16-byte rows) with masks of rank 1 and 2 shorter than the keys,
and the SIMT kernel on fp16. ``TACTIC_CASES`` runs every candidate tactic on two problems.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.aot.passes.fuse_attention import fuse_attention
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.attention_source import (
    MAX_STATIC_SMEM,
    AttentionProblem,
    AttentionTactic,
    attention_kernel,
    attention_problem,
    candidate_tactics,
    default_tactic,
)
from tests.aot.helpers import apply
from tests.aot.test_attention_horizontal import block_3d
from tests.helpers import make_model

from .helpers import compile_for_every_arch

F32, F16, BF16, BOOL = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.BOOL


@dataclass(frozen=True)
class Case:
    """An Attention node over Q, K, V (and attn_mask) of these sizes. The graph is fp32 (a bool
    mask stays bool); ``dtype`` and ``mask_storage`` say how the tensors are stored, as in an
    fp16- or bf16-annotated graph. ``dead_rows``: the mask leaves some query rows no key."""

    id: str
    layout: str  # "bshd" (3-D inputs) or "bhsd" (4-D)
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_size: int
    v_head_size: int
    dtype: DType
    causal: bool = False
    mask: str = "none"  # "none", "bool", "float" (random values), "padding" (0 or a large negative)
    mask_shape: tuple[int, ...] = ()
    mask_storage: DType | None = None  # of a float mask
    scale: float | None = None  # None: the default 1/sqrt(head_size)
    dead_rows: bool = False
    tactic: AttentionTactic | None = None

    def shape(self, tensor: str) -> tuple[int, ...]:
        heads, seq, size = {"Q": (self.q_heads, self.q_len, self.head_size),
                            "K": (self.kv_heads, self.kv_len, self.head_size),
                            "V": (self.kv_heads, self.kv_len, self.v_head_size)}[tensor]
        return (self.batch, seq, heads * size) if self.layout == "bshd" else (self.batch, heads, seq, size)

    def node(self) -> Node:
        attrs: dict = {"is_causal": int(self.causal)}
        if self.scale is not None:
            attrs["scale"] = self.scale
        if self.layout == "bshd":
            attrs.update(q_num_heads=self.q_heads, kv_num_heads=self.kv_heads)
        inputs = ["Q", "K", "V"] + (["attn_mask"] if self.mask != "none" else [])
        return Node("Attention", inputs, ["Y"], attrs, name=self.id)

    def types(self) -> list[TensorType]:
        types = [TensorType(F32, self.shape(x)) for x in "QKV"]
        if self.mask != "none":
            types.append(TensorType(BOOL if self.mask == "bool" else F32, self.mask_shape))
        return types

    def storage(self) -> list[DType | None]:
        return [self.dtype] * 3 + ([self.mask_storage] if self.mask != "none" else [])

    def problem(self) -> AttentionProblem:
        return attention_problem(self.node(), self.types(), self.storage())

    def kernel(self) -> KernelSource:
        return attention_kernel(self.problem(), self.tactic)


def bert(dtype: DType, mask_storage: DType, suffix: str = "", tactic: AttentionTactic | None = None) -> Case:
    return Case(f"bert-{dtype.short}{suffix}", "bshd", 2, 12, 12, 128, 128, 64, 64, dtype, mask="padding",
                mask_shape=(2, 1, 1, 128), mask_storage=mask_storage, tactic=tactic)


CASES: list[Case] = [
    bert(F32, F32),
    bert(F16, F16),
    bert(BF16, F32, "-f32mask"),
    bert(F16, F16, "-simt", AttentionTactic(False, 4, 8, 32)),
    Case("vit-f16", "bshd", 1, 12, 12, 197, 197, 64, 64, F16),
    Case("vit-bf16", "bshd", 2, 12, 12, 197, 197, 64, 64, BF16),
    Case("vit-f32", "bshd", 1, 12, 12, 197, 197, 64, 64, F32),
    Case("gpt2-4d-causal-f16", "bhsd", 2, 12, 12, 256, 256, 64, 64, F16, causal=True),
    Case("gpt2-3d-causal-f32", "bshd", 1, 12, 12, 100, 100, 64, 64, F32, causal=True),
    Case("causal-fewer-queries-f16", "bhsd", 2, 4, 4, 40, 100, 64, 64, F16, causal=True, scale=0.2),
    Case("causal-more-queries-f32", "bhsd", 2, 4, 4, 100, 40, 64, 64, F32, causal=True, scale=0.2),
    Case("gqa-bool-d128-f16", "bhsd", 2, 8, 2, 77, 93, 128, 128, F16, mask="bool", mask_shape=(2, 1, 77, 93),
         dead_rows=True),
    Case("gqa-bool-causal-d128-bf16", "bhsd", 1, 8, 2, 77, 93, 128, 128, BF16, causal=True, mask="bool",
         mask_shape=(1, 8, 77, 93), dead_rows=True),
    Case("gqa-3d-bool-rank2-f32", "bshd", 2, 6, 2, 50, 70, 32, 32, F32, mask="bool", mask_shape=(50, 70),
         dead_rows=True),
    Case("mqa-3d-float-f16", "bshd", 2, 4, 1, 45, 45, 64, 64, F16, mask="float", mask_shape=(2, 4, 45, 45),
         mask_storage=F16, dead_rows=True),
    Case("odd-heads-short-mask-causal-f16", "bhsd", 1, 4, 2, 70, 45, 20, 24, F16, causal=True, mask="float",
         mask_shape=(70, 40), mask_storage=F32, scale=0.3),
    Case("odd-heads-rank1-mask-f32", "bshd", 2, 3, 3, 33, 50, 33, 17, F32, mask="float", mask_shape=(41,),
         mask_storage=F32),
    Case("odd-heads-bool-bf16", "bshd", 1, 2, 2, 33, 33, 40, 72, BF16, mask="bool", mask_shape=(1, 2, 33, 33),
         dead_rows=True),
]

_TACTIC_PROBLEMS = [
    Case("tactics-f16", "bhsd", 2, 4, 4, 150, 150, 64, 64, F16, causal=True, mask="float",
         mask_shape=(2, 1, 150, 150), mask_storage=F16),
    Case("tactics-d128-bf16", "bshd", 1, 4, 4, 90, 130, 128, 128, BF16, mask="padding", mask_shape=(1, 1, 1, 130),
         mask_storage=BF16),
]
TACTIC_CASES: list[Case] = [
    Case(**{**c.__dict__, "id": f"{c.id}-{t.label}", "tactic": t})
    for c in _TACTIC_PROBLEMS for t in candidate_tactics(c.problem())
]


def test_the_catalogue_covers_layouts_dtypes_masks_and_both_kernels():
    problems = [c.problem() for c in CASES]
    assert {p.layout for p in problems} == {"bshd", "bhsd"}
    assert {p.dtype for p in problems} == {F32, F16, BF16}
    assert {p.mask for p in problems} == {"none", "bool", "float"}
    assert {p.causal for p in problems} == {True, False}
    assert any(p.kv_heads < p.q_heads for p in problems)
    kernels = {c.kernel().name for c in CASES} | {c.kernel().name for c in TACTIC_CASES}
    assert len(kernels) == len(CASES) + len(TACTIC_CASES)
    assert {c.tactic.mma for c in TACTIC_CASES} == {True, False}


def test_every_kernel_compiles_for_every_supported_arch():
    kernels = {k.name: k.source for k in (c.kernel() for c in CASES + TACTIC_CASES)}
    report = [f"{arch}: {s:.1f} s" for arch, _, s in compile_for_every_arch(kernels, 1024)]
    print(f"\n{len(kernels)} attention kernels; " + "; ".join(report))


# ---------------------------------------------------------------- problems from fused nodes

B, H, S, D = 2, 4, 5, 8
FLOAT = TensorProto.FLOAT


def fused(proto: onnx.ModelProto) -> tuple[Node, list[TensorType | None]]:
    """The Attention node fuse_attention makes of ``proto``, and its inputs' types."""
    model = load_onnx(proto)
    assert apply(fuse_attention, model).changed
    (node,) = [n for n in model.graph.nodes if n.op_type == "Attention"]
    return node, [model.graph.types[name] if name else None for name in node.inputs]


def block_4d(mask: str | None) -> onnx.ModelProto:
    """Q K^T / sqrt(D), a float mask added or a bool one applied as masked_fill, softmax, times V."""
    nodes = [helper.make_node("Transpose", ["K"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["Q", "kt"], ["scores"]),
             helper.make_node("Div", ["scores", "root"], ["scaled"])]
    inputs = [(n, FLOAT, [B, H, S, D]) for n in "QKV"]
    inits = {"root": np.array(math.sqrt(D), np.float32), "fill": np.array(-np.inf, np.float32)}
    last = "scaled"
    if mask == "float":
        inputs.append(("mask", FLOAT, [B, 1, 1, S]))
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
        last = "masked"
    elif mask == "causal":
        inits["keep"] = np.tril(np.ones((S, S), bool)).reshape(1, 1, S, S)
        nodes.append(helper.make_node("Where", ["keep", "scaled", "fill"], ["masked"]))
        last = "masked"
    nodes += [helper.make_node("Softmax", [last], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "V"], ["Y"])]
    return make_model(nodes, inputs, [("Y", FLOAT, None)], inits)


def test_a_fused_4d_block_with_a_padding_mask():
    node, types = fused(block_4d("float"))
    p = attention_problem(node, types)
    assert (p.layout, p.batch, p.q_heads, p.kv_heads, p.q_len, p.kv_len, p.head_size, p.v_head_size) == \
        ("bhsd", B, H, H, S, S, D, D)
    assert p.scale == pytest.approx(1 / math.sqrt(D)) and not p.causal
    assert (p.mask, p.mask_dtype, p.mask_shape) == ("float", F32, (B, 1, 1, S))
    assert p.dtype == F32 and p.mask_strides() == (S, 0, 0)


def test_a_fused_causal_block_is_causal_without_a_mask():
    node, types = fused(block_4d("causal"))
    p = attention_problem(node, types)
    assert p.causal and p.mask == "none" and p.mask_shape == ()


def test_a_fused_3d_block_reads_heads_from_the_attributes():
    node, types = fused(block_3d(hidden=32, heads=4, batch=2, seq=7))
    p = attention_problem(node, types)
    assert (p.layout, p.batch, p.q_heads, p.kv_heads, p.q_len, p.kv_len, p.head_size) == ("bshd", 2, 4, 4, 7, 7, 8)
    assert p.shape("Y") == (2, 7, 32) and p.strides("Q") == (7 * 32, 8, 32)
    assert p.scale == pytest.approx(8 ** -0.5)


def test_storage_types_come_from_the_annotations():
    node, types = fused(block_4d("float"))
    p = attention_problem(node, types, [F16, F16, F16, F16])
    assert (p.dtype, p.mask_dtype) == (F16, F16)
    kernel = attention_kernel(p)
    assert [(a.name, a.role, a.index, a.dtype) for a in kernel.args] == [
        ("Q", BufferRole.IN, 0, F16), ("K", BufferRole.IN, 1, F16), ("V", BufferRole.IN, 2, F16), ("attn_mask", BufferRole.IN, 3, F16),
        ("Y", BufferRole.OUT, 0, F16)]


def test_gqa_and_bool_masks_from_hand_built_nodes():
    node = Node("Attention", ["q", "k", "v", "m"], ["y"], {"q_num_heads": 8, "kv_num_heads": 2, "is_causal": 1},
                name="gqa")
    types = [TensorType(F16, (3, 10, 8 * 16)), TensorType(F16, (3, 12, 2 * 16)), TensorType(F16, (3, 12, 2 * 32)),
             TensorType(BOOL, (3, 1, 10, 12))]
    p = attention_problem(node, types)
    assert (p.q_heads, p.kv_heads, p.head_size, p.v_head_size, p.dtype) == (8, 2, 16, 32, F16)
    assert p.causal and (p.mask, p.mask_dtype) == ("bool", BOOL)
    assert p.scale == pytest.approx(0.25)  # 1 / sqrt(head_size)
    assert p.shape("Y") == (3, 10, 8 * 32) and p.mask_strides() == (120, 0, 12)
    assert "const unsigned char* __restrict__ M" in attention_kernel(p).source


def test_kernel_arguments_launch_and_naming():
    case = CASES[0]
    kernel = case.kernel()
    assert [(a.name, a.role, a.index, a.dtype, a.shape) for a in kernel.args] == [
        ("Q", BufferRole.IN, 0, F32, (2, 128, 768)), ("K", BufferRole.IN, 1, F32, (2, 128, 768)),
        ("V", BufferRole.IN, 2, F32, (2, 128, 768)), ("attn_mask", BufferRole.IN, 3, F32, (2, 1, 1, 128)),
        ("Y", BufferRole.OUT, 0, F32, (2, 128, 768))]
    tactic = default_tactic(case.problem())
    assert kernel.launch.grid == (-(-128 // tactic.block_q), 12, 2)
    assert kernel.launch.block == (tactic.threads, 1, 1)
    assert 0 < kernel.launch.smem_bytes <= MAX_STATIC_SMEM
    assert "#include" not in kernel.source and 'extern "C" __global__' in kernel.source
    assert kernel.name in kernel.source and kernel.name == case.kernel().name
    assert kernel.name != CASES[1].kernel().name


def test_tensor_cores_for_16_bit_storage_and_simt_for_fp32():
    assert default_tactic(CASES[1].problem()).mma  # bert fp16
    assert not default_tactic(CASES[0].problem()).mma  # bert fp32
    with pytest.raises(CodegenError, match="tensor cores take float16 or bfloat16"):
        attention_kernel(CASES[0].problem(), AttentionTactic(True, 4, 16, 64))


def test_small_problems_get_smaller_query_blocks():
    def problem(batch: int) -> AttentionProblem:
        return AttentionProblem(batch, 12, 12, 128, 128, 64, 64, F16, "bshd", 0.125)

    assert default_tactic(problem(32)).block_q == 64  # 768 blocks of 64 queries
    assert default_tactic(problem(1)).block_q == 16  # batch 1: 96 blocks of one warp each


@pytest.mark.parametrize("head_size", [16, 64, 80, 128])
@pytest.mark.parametrize("dtype", [F32, F16])
def test_every_candidate_tactic_fits_in_static_shared_memory(head_size, dtype):
    p = AttentionProblem(2, 4, 4, 100, 100, head_size, head_size, dtype, "bhsd", 0.1)
    tactics = candidate_tactics(p)
    assert tactics and all(t.smem_bytes(p) <= MAX_STATIC_SMEM for t in tactics)
    assert any(t.mma for t in tactics) == (dtype == F16)
    for t in tactics:
        assert attention_kernel(p, t).launch.smem_bytes == t.smem_bytes(p)


def test_malformed_tactics_are_refused():
    for args in ((True, 4, 8, 64), (True, 4, 16, 128), (False, 4, 16, 32), (False, 3, 4, 32), (False, 4, 4, 64)):
        with pytest.raises(ValueError):
            AttentionTactic(*args)


def test_an_empty_batch_launches_nothing():
    p = AttentionProblem(0, 4, 4, 10, 10, 64, 64, F16, "bhsd", 0.1)
    assert attention_kernel(p).launch.grid == (0, 0, 0)


# ---------------------------------------------------------------- what is not covered

def _node(inputs=("q", "k", "v"), outputs=("y",), name="attn_x", **attrs) -> Node:
    return Node("Attention", list(inputs), list(outputs), attrs, name=name)


Q4 = TensorType(F32, (2, 4, 6, 8))
LABEL = "Attention node 'attn_x'"


@pytest.mark.parametrize("node, types, storage, message", [
    pytest.param(_node(("q", "k", "v", "", "pk", "pv")), [Q4] * 3 + [None, Q4, Q4], None, "past_key",
                 id="past key and value"),
    pytest.param(_node(("q", "k", "v", "", "", "", "n")), [Q4] * 3 + [None] * 3 + [TensorType(DType.INT64, (2,))],
                 None, "nonpad_kv_seqlen", id="nonpad_kv_seqlen"),
    pytest.param(_node(softcap=30.0), [Q4] * 3, None, "softcap", id="softcap"),
    pytest.param(_node(left_window_size=4), [Q4] * 3, None, "sliding windows", id="left window"),
    pytest.param(_node(right_window_size=0), [Q4] * 3, None, "sliding windows", id="right window"),
    pytest.param(_node(qk_matmul_output_mode=1), [Q4] * 3, None, "qk_matmul_output_mode", id="qk output mode"),
    pytest.param(_node(softmax_precision=int(F16)), [Q4] * 3, None, "softmax_precision", id="fp16 softmax"),
    pytest.param(_node(outputs=("y", "pk")), [Q4] * 3, None, "only the output Y", id="present key output"),
    pytest.param(_node(outputs=("y", "", "", "qk")), [Q4] * 3, None, "only the output Y", id="qk output"),
    pytest.param(_node(), [TensorType(F32, (2, 4, 6, 256))] * 3, None, "head sizes 1 to 128", id="head size 256"),
    pytest.param(_node(), [Q4] * 3, [F16, F16, F32], "one type expected", id="mixed storage"),
    pytest.param(_node(), [TensorType(DType.FLOAT64, (2, 4, 6, 8))] * 3, None, "float64", id="float64"),
    pytest.param(_node(), [Q4, Q4, TensorType(F32, ("batch", 4, 6, 8))], None, "static shapes", id="dynamic"),
    pytest.param(_node(), [TensorType(F32, (2, 6, 32)), Q4, Q4], None, "3-D or all 4-D", id="3-D and 4-D"),
    pytest.param(_node(), [TensorType(F32, (2, 6, 32))] * 3, None, "q_num_heads", id="3-D without heads"),
    pytest.param(_node(q_num_heads=4, kv_num_heads=3), [TensorType(F32, (2, 6, 32))] * 3, None, "do not split",
                 id="heads that do not divide"),
    pytest.param(_node(), [Q4, TensorType(F32, (2, 3, 6, 8)), TensorType(F32, (2, 3, 6, 8))], None, "do not group",
                 id="4 heads over 3"),
    pytest.param(_node(), [Q4, TensorType(F32, (2, 4, 6, 16)), Q4], None, "do not agree", id="K head size"),
    pytest.param(_node(scale=-1.0), [Q4] * 3, None, "scale", id="negative scale"),
    pytest.param(_node(("q", "k", "v", "m")), [Q4] * 3 + [TensorType(F32, (7,))], None, "longer than the 6 keys",
                 id="mask longer than the keys"),
    pytest.param(_node(("q", "k", "v", "m")), [Q4] * 3 + [TensorType(F32, (3, 6, 6))], None, "does not broadcast",
                 id="mask that does not broadcast"),
    pytest.param(_node(("q", "k", "v", "m")), [Q4] * 3 + [TensorType(DType.INT32, (6, 6))], None, "mask",
                 id="integer mask"),
    pytest.param(_node(("q", "k", "v", "m")), [Q4] * 3 + [TensorType(F32, (1, 1, 2, 6, 6))], None, "rank 1 to 4",
                 id="mask of rank 5"),
])
def test_unsupported_attention_is_a_codegen_error_naming_the_node(node, types, storage, message):
    with pytest.raises(CodegenError, match=message) as info:
        attention_problem(node, types, storage)
    assert LABEL in str(info.value)


def test_other_ops_are_refused():
    with pytest.raises(CodegenError, match="is not an ONNX Attention"):
        attention_problem(Node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft"), [Q4] * 3)
