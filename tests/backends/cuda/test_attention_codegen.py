"""Generated attention kernels (rtxrt/jit/codegen/attention.py): Attention nodes become
problems (or clear CodegenErrors naming the node), and every kernel compiles with NVRTC for
every supported arch (no GPU needed).

``CASES`` is the catalogue tests/backends/cuda/test_gpu_attention.py runs on the device: BERT-like
(3-D, padding mask [B, 1, 1, S]) in fp32/fp16/bf16, ViT-like (S = 197, no tile multiple),
GPT-2-like causal (4-D and 3-D), causal with q_len != kv_len, GQA with bool masks and fully
masked rows, odd head sizes (no 16-byte rows) with masks of rank 1 and 2 shorter than the keys,
and the SIMT kernel on fp16. ``TACTIC_CASES`` runs every candidate tactic on two problems.

``FEATURE_CASES`` are what decoder LLMs exported with the ONNX Attention op use, which the GPU
test runs as whole node programs (every tactic): a KV cache (past in, present out, decode with
one query and chunked prefill, 3-D and 4-D, GQA, with and without the present outputs), per-batch
valid key counts (nonpad_kv_seqlen, including a batch whose leading queries see no key),
softcap (Gemma), sliding windows (Mistral, and a two-sided one) and every qk_matmul_output mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.backends.cuda.ops import lower
from rtxrt.backends.cuda.ops.context import LowerContext
from rtxrt.backends.cuda.plan.forms import TensorForm
from rtxrt.backends.cuda.plan.program import BufferRole, Launch, NodeProgram, Ref
from rtxrt.aot.passes.fuse_attention import fuse_attention
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.aot import AotOptions, compile_onnx
from rtxrt.backends.cuda.codegen.dynamic import dim_bindings
from rtxrt.backends.cuda.ops.attention_source import (
    MAX_STATIC_SMEM,
    AttentionProblem,
    AttentionTactic,
    attention_kernel,
    attention_problem,
    cache_kernel,
    candidate_tactics,
    default_tactic,
)
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from tests.aot.helpers import apply
from tests.aot.test_attention_horizontal import block_3d
from tests.helpers import make_model

from .helpers import compile_for_every_arch

F32, F16, BF16, BOOL = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.BOOL
OPSET = 24
# the features touch no arch-specific code: the oldest arch (no cp.async, no bf16 mma), the
# coverage report's, the newest
FEATURE_ARCHS = ("sm_75", "sm_86", "sm_120")


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
    past_len: int | None = None  # a KV cache: past_key/past_value of this many keys (kv_len: the new ones)
    present: bool = False  # the node writes present_key and present_value
    nonpad: tuple[int, ...] | None = None  # nonpad_kv_seqlen, per batch
    softcap: float = 0.0
    window: tuple[int, int] = (-1, -1)  # left_window_size, right_window_size
    qk_mode: int | None = None  # the node writes qk_matmul_output in this mode

    def shape(self, tensor: str) -> tuple[int, ...]:
        """Of the inputs "Q", "K", "V" (the new keys and values) and "past_key", "past_value"."""
        if tensor.startswith("past"):
            size = self.head_size if tensor == "past_key" else self.v_head_size
            return (self.batch, self.kv_heads, self.past_len, size)
        heads, seq, size = {"Q": (self.q_heads, self.q_len, self.head_size),
                            "K": (self.kv_heads, self.kv_len, self.head_size),
                            "V": (self.kv_heads, self.kv_len, self.v_head_size)}[tensor]
        return (self.batch, seq, heads * size) if self.layout == "bshd" else (self.batch, heads, seq, size)

    @property
    def total_len(self) -> int:
        """Keys the queries attend over: the past ones and the new ones."""
        return (self.past_len or 0) + self.kv_len

    def node(self) -> Node:
        attrs: dict = {"is_causal": int(self.causal)}
        if self.scale is not None:
            attrs["scale"] = self.scale
        if self.layout == "bshd":
            attrs.update(q_num_heads=self.q_heads, kv_num_heads=self.kv_heads)
        if self.softcap:
            attrs["softcap"] = self.softcap
        attrs.update({name: size for name, size in zip(("left_window_size", "right_window_size"), self.window)
                      if size >= 0})
        if self.qk_mode is not None:
            attrs["qk_matmul_output_mode"] = self.qk_mode
        inputs = ["Q", "K", "V", "attn_mask" if self.mask != "none" else ""]
        inputs += ["past_key", "past_value"] if self.past_len is not None else ["", ""]
        inputs += ["nonpad_kv_seqlen"] if self.nonpad is not None else []
        outputs = ["Y"] + (["present_key", "present_value"] if self.present else ["", ""])
        outputs += ["qk_matmul_output"] if self.qk_mode is not None else []
        return Node("Attention", _trimmed(inputs), _trimmed(outputs), attrs, name=self.id)

    def types(self) -> list[TensorType | None]:
        """Of the node's inputs (None where omitted)."""
        types: list[TensorType | None] = [TensorType(F32, self.shape(x)) for x in "QKV"]
        types.append(TensorType(BOOL if self.mask == "bool" else F32, self.mask_shape) if self.mask != "none" else None)
        types += ([TensorType(F32, self.shape(x)) for x in ("past_key", "past_value")] if self.past_len is not None
                  else [None, None])
        types.append(TensorType(DType.INT64, (self.batch,)) if self.nonpad is not None else None)
        return types[:len(self.node().inputs)]

    def storage(self) -> list[DType | None]:
        return ([self.dtype] * 3 + [self.mask_storage] + [self.dtype] * 2 + [None])[:len(self.node().inputs)]

    def output_shapes(self) -> list[tuple[int, ...] | None]:
        """Of the node's outputs (None where omitted): Y like Q with V's head size, present key
        and value [batch, kv_heads, past + new, head size], the scores [batch, q_heads, q_len, keys]."""
        y = self.shape("Q")[:-1] + ((self.q_heads * self.v_head_size,) if self.layout == "bshd" else
                                     (self.v_head_size,))
        shapes = [y, (self.batch, self.kv_heads, self.total_len, self.head_size),
                  (self.batch, self.kv_heads, self.total_len, self.v_head_size),
                  (self.batch, self.q_heads, self.q_len, self.total_len)]
        return [shape if name else None for shape, name in zip(shapes, self.node().outputs)]

    def problem(self) -> AttentionProblem:
        return attention_problem(self.node(), self.types(), self.storage())

    def kernel(self) -> KernelSource:
        return attention_kernel(self.problem(), self.tactic)


def _trimmed(names: list[str]) -> list[str]:
    """Node inputs or outputs without the trailing omitted ones."""
    while names and not names[-1]:
        names.pop()
    return names


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

FEATURE_CASES: list[Case] = [
    # KV cache: decode (one query) and prefill chunks after a past, 4-D and 3-D, GQA
    Case("kv-decode-4d-gqa-causal-f16", "bhsd", 2, 8, 2, 1, 1, 64, 64, F16, causal=True, past_len=200, present=True),
    Case("kv-decode-3d-f32", "bshd", 2, 4, 4, 1, 1, 32, 32, F32, past_len=77, present=True),
    Case("kv-prefill-3d-gqa-causal-mask-f16", "bshd", 1, 8, 2, 37, 37, 64, 64, F16, causal=True, past_len=50,
         present=True, mask="float", mask_shape=(37, 87), mask_storage=F16),
    Case("kv-chunk-4d-causal-scratch-f32", "bhsd", 2, 4, 4, 20, 20, 40, 24, F32, causal=True, past_len=45),
    Case("kv-odd-heads-bool-bf16", "bhsd", 1, 2, 1, 5, 5, 20, 12, BF16, causal=True, past_len=9, present=True,
         mask="bool", mask_shape=(5, 14), dead_rows=True),
    Case("kv-empty-past-3d-f16", "bshd", 2, 4, 2, 6, 6, 16, 16, F16, causal=True, past_len=0, present=True),
    # an external cache: per-batch valid keys, the queries the last of them
    Case("nonpad-decode-gqa-causal-f16", "bhsd", 3, 8, 2, 1, 128, 64, 64, F16, causal=True, nonpad=(128, 77, 1)),
    Case("nonpad-prefill-causal-f32", "bhsd", 2, 4, 4, 40, 100, 32, 32, F32, causal=True, nonpad=(100, 60)),
    Case("nonpad-negative-offset-causal-f16", "bhsd", 1, 2, 2, 4, 4, 16, 16, F16, causal=True, nonpad=(2,)),
    Case("nonpad-short-mask-3d-f16", "bshd", 2, 4, 2, 16, 64, 64, 64, F16, mask="float", mask_shape=(2, 1, 16, 48),
         mask_storage=F16, nonpad=(48, 20)),
    # softcap: before the mask, as Gemma has it
    Case("softcap-mask-3d-f32", "bshd", 2, 4, 4, 50, 50, 64, 64, F32, mask="float", mask_shape=(2, 4, 50, 50),
         mask_storage=F32, softcap=5.0, dead_rows=True),
    Case("softcap-gemma-causal-d128-f16", "bhsd", 1, 8, 4, 70, 70, 128, 128, F16, causal=True, softcap=50.0),
    Case("softcap-strong-bf16", "bhsd", 1, 2, 2, 33, 33, 64, 64, BF16, softcap=1.0),
    # sliding windows: Mistral's (causal, left), one with a cache, a two-sided one
    Case("window-causal-f16", "bhsd", 1, 4, 4, 300, 300, 64, 64, F16, causal=True, window=(100, -1)),
    Case("window-kv-decode-f32", "bhsd", 2, 4, 2, 1, 1, 32, 32, F32, causal=True, past_len=150, present=True,
         window=(64, -1)),
    Case("window-two-sided-nonpad-f16", "bhsd", 2, 2, 2, 90, 90, 32, 32, F16, window=(10, 20), nonpad=(90, 50)),
    # qk_matmul_output in each mode
    Case("qk-raw-f32", "bhsd", 2, 2, 2, 9, 30, 16, 16, F32, causal=True, qk_mode=0),
    Case("qk-softcapped-kv-f16", "bshd", 1, 4, 2, 6, 6, 32, 32, F16, softcap=3.0, past_len=20, present=True,
         qk_mode=1),
    Case("qk-biased-f32", "bhsd", 2, 2, 1, 7, 40, 16, 16, F32, causal=True, mask="bool", mask_shape=(2, 1, 7, 40),
         softcap=2.0, qk_mode=2, dead_rows=True),
    Case("qk-softmax-nonpad-f16", "bhsd", 2, 2, 2, 5, 300, 16, 16, F16, causal=True, nonpad=(290, 3), qk_mode=3),
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


@pytest.mark.parametrize("arch", FEATURE_ARCHS)
def test_the_feature_kernels_compile(arch):
    """The cache copies, the scores kernel and the attention kernels of each feature case (its
    default tactic, and every tactic of a windowed external cache in fp16: the tile range)."""
    kernels = {name: source for c in FEATURE_CASES for p in lower_case(c, tune=False)
               for name, source in p.kernels.items()}
    windowed = next(c for c in FEATURE_CASES if c.id == "window-two-sided-nonpad-f16")
    kernels |= {name: source for p in lower_case(windowed) for name, source in p.kernels.items()}
    cubins = compile_many(kernels.items(), arch)
    assert set(cubins) == set(kernels) and all(c.startswith(b"\x7fELF") for c in cubins.values())


def context(case: Case, tune: bool = True) -> LowerContext:
    """What the plan builder shows the node's lowering: inputs in their storage types, outputs
    of the graph's shapes stored as Q."""
    forms = [None if t is None else TensorForm(stored or t.dtype, t.shape)
             for t, stored in zip(case.types(), case.storage())]
    outputs = [None if shape is None else TensorForm(case.dtype, shape) for shape in case.output_shapes()]
    return LowerContext(case.node(), forms, outputs, [None] * len(forms), OPSET, "sm_86", 46, tune=tune)


def lower_case(case: Case, tune: bool = True) -> list[NodeProgram]:
    """The node's programs, one a tactic (the default only when not ``tune``)."""
    return lower(context(case, tune))


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


PAST = TensorType(F32, (2, 4, 10, 8))
SEQLEN = TensorType(DType.INT64, (2,))


@pytest.mark.parametrize("node, types, storage, message", [
    pytest.param(_node(("q", "k", "v", "", "pk", "pv", "n")), [Q4] * 3 + [None, PAST, PAST, SEQLEN], None,
                 "cannot be combined", id="internal and external cache"),
    pytest.param(_node(("q", "k", "v", "", "pk")), [Q4] * 3 + [None, PAST], None, "come together",
                 id="past key without past value"),
    pytest.param(_node(("q", "k", "v", "", "pk", "pv")), [Q4] * 3 + [None, PAST, TensorType(F32, (2, 4, 9, 8))],
                 None, "do not agree", id="past lengths differ"),
    pytest.param(_node(("q", "k", "v", "", "pk", "pv")), [Q4] * 3 + [None] + [TensorType(F32, (2, 2, 10, 8))] * 2,
                 None, "do not agree", id="past heads"),
    pytest.param(_node(("q", "k", "v", "", "pk", "pv")), [Q4] * 3 + [None, PAST, PAST], [F16] * 3 + [None, F32, F32],
                 "not as Q", id="past stored otherwise"),
    pytest.param(_node(("q", "k", "v", "", "", "", "n")), [Q4] * 3 + [None] * 3 + [TensorType(DType.INT64, (3,))],
                 None, "nonpad_kv_seqlen must have the shape", id="nonpad of another batch"),
    pytest.param(_node(("q", "k", "v", "", "", "", "n")), [Q4] * 3 + [None] * 3 + [TensorType(F32, (2,))], None,
                 "nonpad_kv_seqlen is stored as", id="float nonpad"),
    pytest.param(_node(outputs=("y", "", "", "qk"), qk_matmul_output_mode=4), [Q4] * 3, None,
                 "qk_matmul_output_mode", id="qk output mode 4"),
    pytest.param(_node(softcap=math.inf), [Q4] * 3, None, "softcap must be finite", id="infinite softcap"),
    pytest.param(_node(softmax_precision=int(F16)), [Q4] * 3, None, "softmax_precision", id="fp16 softmax"),
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


# ---------------------------------------------------------------- KV cache, nonpad, softcap, windows, scores

def feature(case_id: str) -> Case:
    return next(c for c in FEATURE_CASES if c.id == case_id)


def launches(program: NodeProgram) -> list[tuple[str, tuple[Ref, ...]]]:
    """(kernel kind, pointer arguments) of each launch, the kind the name's prefix (rtx_attn, ...)."""
    assert all(isinstance(s, Launch) for s in program.steps)
    return [(s.kernel.rsplit("_", 1)[0], s.args) for s in program.steps]


def test_the_feature_catalogue_covers_what_decoders_use():
    problems = [c.problem() for c in FEATURE_CASES]
    cached = [c for c in FEATURE_CASES if c.past_len is not None]
    assert {c.q_len == 1 for c in cached} == {True, False} and {c.present for c in cached} == {True, False}
    assert {c.layout for c in cached} == {"bshd", "bhsd"} and any(c.kv_heads < c.q_heads for c in cached)
    assert {p.causal for p in problems} == {True, False} and {p.dtype for p in problems} == {F32, F16, BF16}
    assert any(p.seqlen for p in problems) and any(p.softcap for p in problems)
    assert {p.window for p in problems} >= {(100, -1), (10, 20)}
    assert {p.qk_mode for p in problems} >= {0, 1, 2, 3}


def test_a_kv_cache_is_copied_into_present_before_the_attention_reads_it():
    case = feature("kv-decode-4d-gqa-causal-f16")
    p = case.problem()
    assert p.cache and (p.past_len, p.kv_len, p.new_len) == (200, 201, 1)
    (program,) = lower_case(case, tune=False)
    present_key, present_value = Ref.output(1), Ref.output(2)
    assert launches(program) == [
        ("rtx_kv_cache", (Ref.input(4), Ref.input(1), present_key)),
        ("rtx_kv_cache", (Ref.input(5), Ref.input(2), present_value)),
        ("rtx_attn", (Ref.input(0), present_key, present_value, Ref.output(0)))]
    assert [f.shape for f in program.outputs] == case.output_shapes() and program.scratch == {}
    source = program.kernels[program.steps[2].kernel]
    assert "constexpr long long PAST = 200LL;" in source and "offset = PAST;" in source
    assert "else if (key > row + offset) x = RTX_NEG_INF;" in source  # the queries follow the past keys


def test_a_cache_without_present_outputs_goes_through_scratch():
    case = feature("kv-chunk-4d-causal-scratch-f32")
    (program,) = lower_case(case, tune=False)
    key, value = Ref.scratch("present_key"), Ref.scratch("present_value")
    assert program.scratch == {"present_key": 2 * 4 * 65 * 40 * 4, "present_value": 2 * 4 * 65 * 24 * 4}
    assert [args for _, args in launches(program)] == [
        (Ref.input(4), Ref.input(1), key), (Ref.input(5), Ref.input(2), value),
        (Ref.input(0), key, value, Ref.output(0))]
    assert program.outputs[1:] == [] and len(case.node().outputs) == 1


def test_a_3d_cache_reads_present_as_bhsd_and_the_queries_as_bshd():
    p = feature("kv-prefill-3d-gqa-causal-mask-f16").problem()
    assert (p.layout, p.shape("Q"), p.shape("K"), p.shape("K_new")) == ("bshd", (1, 37, 512), (1, 2, 87, 64),
                                                                         (1, 37, 128))
    assert p.strides("K") == (2 * 87 * 64, 87 * 64, 64) and p.strides("K_new") == (37 * 128, 64, 128)
    assert p.mask_shape == (37, 87)  # over the past and the new keys


def test_present_outputs_without_a_past_are_copies_of_k_and_v():
    case = Case("present-only", "bshd", 2, 4, 2, 5, 5, 16, 16, F16, present=True)
    (program,) = lower_case(case, tune=False)
    assert not case.problem().cache
    assert [args for _, args in launches(program)] == [
        (Ref.input(1), Ref.output(1)), (Ref.input(2), Ref.output(2)),
        (Ref.input(0), Ref.input(1), Ref.input(2), Ref.output(0))]


def test_the_cache_copy_moves_16_bytes_a_thread_where_rows_allow():
    whole = cache_kernel(feature("kv-decode-4d-gqa-causal-f16").problem(), "K")
    odd = cache_kernel(feature("kv-odd-heads-bool-bf16").problem(), "K")  # rows of 20 bf16: 40 bytes
    assert "constexpr bool VEC = 1;" in whole.source and whole.launch.elements == 2 * 2 * 201 * 64 // 8
    assert "constexpr bool VEC = 0;" in odd.source and odd.launch.elements == 1 * 1 * 14 * 20


def test_nonpad_kv_seqlen_places_each_batch_queries_after_its_valid_keys():
    case = feature("nonpad-decode-gqa-causal-f16")
    (program,) = lower_case(case, tune=False)
    (kind, args), = launches(program)
    assert kind == "rtx_attn" and args == tuple(Ref.input(i) for i in (0, 1, 2, 6)) + (Ref.output(0),)
    source = program.kernels[program.steps[0].kernel]
    assert "const long long* __restrict__ NONPAD" in source
    assert "const long long valid = (long long)NONPAD[b];" in source and "offset = valid - SQ;" in source
    assert "else if (key >= valid) x = RTX_NEG_INF;" in source
    assert "end = min(end, valid);" in source  # a batch with fewer keys reads fewer tiles


def test_softcap_caps_the_scaled_scores_before_the_mask():
    p = feature("softcap-mask-3d-f32").problem()
    source = attention_kernel(p).source
    cap = source.index("x = SOFTCAP * tanhf(x / SOFTCAP);")
    assert source.index("x += ", cap) > cap and "constexpr float SOFTCAP = (0x1.4000000000000p+2f);" in source
    node = Node("Attention", ["q", "k", "v"], ["y"], {"softcap": -1.0}, name="negative")
    assert attention_problem(node, [Q4] * 3).softcap == 0.0  # the spec applies it only above 0


def test_sliding_windows_bound_the_keys_and_skip_the_tiles_before_the_window():
    left = attention_kernel(feature("window-causal-f16").problem()).source
    assert "else if (key < row + offset - LEFT) x = RTX_NEG_INF;" in left
    assert "first = rtx_first_tile(q0, offset);" in left and "for (int j = first; j < tiles; ++j)" in left
    two_sided = attention_kernel(feature("window-two-sided-nonpad-f16").problem()).source
    assert "else if (key > row + offset + RIGHT) x = RTX_NEG_INF;" in two_sided
    assert "end = min(end, last + offset + RIGHT);" in two_sided
    node = Node("Attention", ["q", "k", "v"], ["y"], {"left_window_size": -5, "right_window_size": 2**50}, name="w")
    assert attention_problem(node, [Q4] * 3).window == (-1, 2**40)  # unbounded below, beyond any tensor above


@pytest.mark.parametrize("case_id, mode", [("qk-raw-f32", 0), ("qk-softcapped-kv-f16", 1), ("qk-biased-f32", 2),
                                           ("qk-softmax-nonpad-f16", 3)])
def test_qk_matmul_output_comes_from_the_scores_kernel_after_the_attention(case_id, mode):
    case = feature(case_id)
    (program,) = lower_case(case, tune=False)
    kinds = [kind for kind, _ in launches(program)]
    assert kinds[-2:] == ["rtx_attn", "rtx_attn_scores"] and program.steps[-1].args[-1] == Ref.output(3)
    scores = program.steps[-1]
    assert scores.grid == (case.q_len, case.q_heads, case.batch)
    assert tuple(program.outputs[3].shape) == (case.batch, case.q_heads, case.q_len, case.total_len)
    source = program.kernels[scores.kernel]
    assert f"qk_matmul_output mode {mode};" in source
    assert ("tanhf" in source) == (mode >= 1 and case.softcap > 0)
    assert ("RTX_NEG_INF;" in source.split("auto score")[1].split("return x;")[0]) == (mode >= 2)
    assert ("__shfl_xor_sync" in source) == (mode == 3)
    # the attention kernel is the one of the same node without that output
    plain = Case(**{**case.__dict__, "qk_mode": None})
    assert program.steps[-2].kernel == lower_case(plain, tune=False)[0].steps[-1].kernel


def test_the_plain_kernels_do_none_of_the_features_work():
    for case in CASES:
        source = case.kernel().source
        assert "rtx_key_tiles(int q0)" in source and ", first = 0;" in source
        for feature_code in ("long long offset", "long long valid", "tanhf", "PAST", "NONPAD", "LEFT", "RIGHT",
                             "rtx_first_tile"):
            assert feature_code not in source, (case.id, feature_code)
        (program,) = lower_case(case, tune=False)
        assert [kind for kind, _ in launches(program)] == ["rtx_attn"]


def test_a_generic_kv_cache_is_one_kernel_set_over_the_profile():
    """Batch and past length varying: the same sources at every shape, the present length an
    expression over the past's and the new keys' dims, and they compile."""
    from .test_generic_attention import compiles, generic_types

    node = Case("generic", "bhsd", 1, 8, 2, 1, 1, 64, 64, F16, causal=True, past_len=1, present=True).node()
    spans = {(i, 0): (1, 8) for i in (0, 1, 2, 4, 5)} | {(4, 2): (1, 4096), (5, 2): (1, 4096)}
    sources, kernels = set(), []
    for batch, past in [(1, 1), (3, 700), (8, 4096)]:
        shapes = [(batch, 8, 1, 64), (batch, 2, 1, 64), (batch, 2, 1, 64), None, (batch, 2, past, 64),
                  (batch, 2, past, 64)]
        types, bindings = generic_types([F32] * 6, [s or (1,) for s in shapes], spans)
        with dim_bindings(bindings):
            p = attention_problem(node, [t if s else None for t, s in zip(types, shapes)],
                                  [F16] * 3 + [None] + [F16] * 2)
            kernels = [cache_kernel(p, "K"), cache_kernel(p, "V"), attention_kernel(p)]
        assert p.kv_len == past + 1 and "rtxd_i4_2" in str(p.kv_len)
        sources.add(tuple(k.source for k in kernels))
        assert kernels[2].launch.grid[1:] == (8, batch)
    assert len(sources) == 1
    compiles(kernels)


def kv_cache_model() -> onnx.ModelProto:
    """A decoder step as exported with the ONNX Attention op: 3-D GQA projections, a KV cache
    (past in, present out), causal."""
    node = helper.make_node("Attention", ["q", "k", "v", "", "past_key", "past_value"],
                            ["y", "present_key", "present_value"], name="attn", is_causal=1, q_num_heads=8,
                            kv_num_heads=2)
    return make_model([node], [("q", FLOAT, ["b", "s", 512]), ("k", FLOAT, ["b", "s", 128]),
                               ("v", FLOAT, ["b", "s", 128]), ("past_key", FLOAT, ["b", 2, "p", 64]),
                               ("past_value", FLOAT, ["b", 2, "p", 64])],
                      [("y", FLOAT, None), ("present_key", FLOAT, None), ("present_value", FLOAT, None)], opset=OPSET)


def nonpad_model() -> onnx.ModelProto:
    """An external cache (the whole cache as K and V, valid lengths per batch), causal, 4-D."""
    node = helper.make_node("Attention", ["q", "k", "v", "", "", "", "lengths"], ["y"], name="attn", is_causal=1)
    return make_model([node], [("q", FLOAT, [2, 8, 1, 64]), ("k", FLOAT, [2, 2, 256, 64]),
                               ("v", FLOAT, [2, 2, 256, 64]), ("lengths", TensorProto.INT64, [2])],
                      [("y", FLOAT, None)], opset=OPSET)


def softcap_model() -> onnx.ModelProto:
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn", is_causal=1, softcap=50.0)
    return make_model([node], [(n, FLOAT, [1, 8, 16, 128]) for n in "qkv"], [("y", FLOAT, None)], opset=OPSET)


@pytest.mark.parametrize("model, shapes, precision", [
    pytest.param(kv_cache_model(), {"q": (2, 1, 512), "k": (2, 1, 128), "v": (2, 1, 128),
                                    "past_key": (2, 2, 30, 64), "past_value": (2, 2, 30, 64)}, "fp32", id="kv cache"),
    pytest.param(kv_cache_model(), {"q": (1, 7, 512), "k": (1, 7, 128), "v": (1, 7, 128),
                                    "past_key": (1, 2, 0, 64), "past_value": (1, 2, 0, 64)}, "fp16",
                 id="kv cache prefill fp16"),
    pytest.param(nonpad_model(), {"q": (2, 8, 1, 64), "k": (2, 2, 256, 64), "v": (2, 2, 256, 64), "lengths": (2,)},
                 "fp32", id="nonpad_kv_seqlen"),
    pytest.param(softcap_model(), {n: (1, 8, 16, 128) for n in "qkv"}, "fp16", id="softcap"),
])
def test_decoder_attention_plans_wholly_on_the_gpu(model, shapes, precision):
    compiled = compile_onnx(model.SerializeToString(), AotOptions(precision=precision))
    report = plan_coverage(compiled, shapes, "sm_86")
    assert report.host_nodes == [] and report.gpu_nodes == report.nodes == 1
    assert [s.kind for s in report.segments] == ["gpu"]
