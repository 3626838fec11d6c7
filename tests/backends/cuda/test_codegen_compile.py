"""Every generated elementwise kernel compiles with NVRTC for every supported arch (no GPU).

``CASES`` is the catalogue of kernels: each elementwise op with float32 and float16
storage where the op takes floats (integer and bool types where it takes those), a few
bf16 and float64 ones, and hand-built multi-op bodies of the kind fuse_elementwise makes
(UNet's GroupNorm affine + Relu, BERT's attention-mask arithmetic, Gelu spelled out, a
quantize chain, a two-output body). ``ranges`` say where the GPU test draws each input
from (tests/backends/cuda/test_gpu_elementwise.py runs the same catalogue on the device).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Node, TensorType
from rtxrt.ir.ops import elementwise_ops
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel

from .helpers import compile_for_every_arch
from rtxrt.backends.cuda.compile.nvrtc import (
    KernelCompileError,
    compile_cubin,
    nvrtc_version,
)

F32, F16, BF16, F64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64
I8, I32, I64, U8, U32, B = DType.INT8, DType.INT32, DType.INT64, DType.UINT8, DType.UINT32, DType.BOOL

X = (3, 5, 67)  # an odd size, so the last block is partial
ROW = (5, 1)  # broadcasts against X along its last two dims


@dataclass(frozen=True)
class Case:
    id: str
    node: Node
    inputs: tuple[TensorType | None, ...]
    ranges: tuple[tuple[float, float] | None, ...] = ()  # per input; default (-4, 4), ints (-50, 50)
    opset: int = 21
    output_dtypes: tuple[DType, ...] | None = None
    tags: frozenset[str] = field(default_factory=frozenset)

    def kernel(self) -> KernelSource:
        return elementwise_kernel(self.node, list(self.inputs), self.output_dtypes)


def op(op_type: str, *types: tuple[DType, tuple[int, ...]] | None, ranges=(), opset: int = 21,
       suffix: str = "", **attrs) -> Case:
    names = [f"x{i}" if t else "" for i, t in enumerate(types)]
    node = Node(op_type, names, ["y"], attrs, name=op_type.lower())
    inputs = tuple(TensorType(*t) if t else None for t in types)
    dtypes = "_".join(t[0].short for t in types if t)
    return Case(f"{op_type}{suffix}-{dtypes}", node, inputs, tuple(ranges), opset)


UNARY_FLOAT = {  # op -> input range
    "Abs": None, "Neg": None, "Sign": None, "Exp": (-8, 8), "Log": (0.01, 8), "Sqrt": (0.01, 8),
    "Reciprocal": None, "Floor": None, "Ceil": None, "Round": (-6, 6), "Erf": None, "Sin": None,
    "Cos": None, "Tan": (-1.5, 1.5), "Asin": (-0.99, 0.99), "Acos": (-0.99, 0.99), "Atan": None,
    "Sinh": (-8, 8), "Cosh": (-8, 8), "Asinh": None, "Acosh": (1.01, 8), "Atanh": (-0.99, 0.99),
    "Relu": None, "Sigmoid": (-10, 10), "Tanh": None, "Softplus": (-10, 10), "Softsign": None,
    "Mish": None, "IsNaN": None, "IsInf": None, "HardSwish": (-5, 5),
}
UNARY_ATTRS = [  # (op, attrs)
    ("LeakyRelu", {"alpha": 0.1}), ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}),
    ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 1.5}), ("ThresholdedRelu", {"alpha": 0.5}),
    ("Shrink", {"lambd": 1.0, "bias": 0.25}), ("Swish", {"alpha": 1.5}), ("Gelu", {}),
    ("Gelu", {"approximate": "tanh"}), ("IsInf", {"detect_negative": 0}),
]
BINARY_FLOAT = ["Add", "Sub", "Mul", "Div", "Min", "Max", "Equal", "Less", "Greater", "LessOrEqual",
                "GreaterOrEqual"]
BINARY_INT = ["Add", "Sub", "Mul", "Div", "Min", "Max", "Equal", "Less", "Greater", "BitwiseAnd",
              "BitwiseOr", "BitwiseXor"]


def single_op_cases() -> list[Case]:
    cases = []
    for dtype in (F32, F16):
        for name, rng in UNARY_FLOAT.items():
            cases.append(op(name, (dtype, X), ranges=[rng]))
        for name, attrs in UNARY_ATTRS:
            tag = "_" + "_".join(f"{k}{v}" for k, v in attrs.items()) if attrs else ""
            cases.append(op(name, (dtype, X), suffix=tag, **attrs))
        for name in BINARY_FLOAT:
            cases.append(op(name, (dtype, X), (dtype, ROW)))
        cases += [
            op("Div", (dtype, ROW), (dtype, X), suffix="_broadcast_first"),
            op("Pow", (dtype, X), (dtype, ROW), ranges=[(0.1, 4), (-3, 3)]),
            op("Mod", (dtype, X), (dtype, ROW), ranges=[(-10, 10), (-3, 3)], suffix="_py"),
            op("Mod", (dtype, X), (dtype, ROW), ranges=[(-10, 10), (-3, 3)], suffix="_c", fmod=1),
            op("Sum", (dtype, X), (dtype, ROW), (dtype, (67,))),
            op("Mean", (dtype, X), (dtype, ROW), (dtype, (67,))),
            op("Max", (dtype, X), (dtype, ROW), (dtype, (67,)), suffix="3"),
            op("PRelu", (dtype, X), (dtype, (5, 1))),
            op("Clip", (dtype, X), (dtype, ()), (dtype, ()), ranges=[None, (-2, -1), (1, 2)]),
            op("Clip", (dtype, X), None, (dtype, (1,)), ranges=[None, None, (0.5, 1)], suffix="_max_only"),
            op("Clip", (dtype, X), opset=6, suffix="_attrs", min=-1.5, max=0.75),
            op("Where", (B, ROW), (dtype, X), (dtype, (67,))),
        ]
    for dtype in (I32, I64, I8):
        cases += [op(name, (dtype, X), (dtype, ROW)) for name in BINARY_INT]
        cases += [
            op("Abs", (dtype, X)), op("Neg", (dtype, X)), op("Sign", (dtype, X)), op("Relu", (dtype, X)),
            op("BitwiseNot", (dtype, X)),
            op("Mod", (dtype, X), (dtype, ROW), ranges=[(-100, 100), (-9, 9)], suffix="_py"),
            op("Mod", (dtype, X), (dtype, ROW), ranges=[(-100, 100), (-9, 9)], suffix="_c", fmod=1),
            op("Pow", (dtype, X), (dtype, ROW), ranges=[(-6, 6), (0, 5)]),
            op("Sum", (dtype, X), (dtype, ROW), (dtype, (67,))),
            op("Clip", (dtype, X), (dtype, ()), (dtype, ()), ranges=[None, (-20, -10), (10, 20)]),
        ]
    for dtype in (U8, U32):
        cases += [
            op("BitShift", (dtype, X), (dtype, ROW), ranges=[(1, 200), (0, 7)], suffix="_left", direction="LEFT"),
            op("BitShift", (dtype, X), (dtype, ROW), ranges=[(1, 200), (0, 9)], suffix="_right", direction="RIGHT"),
            op("BitwiseXor", (dtype, X), (dtype, ROW), ranges=[(1, 200), (1, 200)]),
            op("Div", (dtype, X), (dtype, ROW), ranges=[(1, 200), (1, 9)]),
            op("Mod", (dtype, X), (dtype, ROW), ranges=[(1, 200), (1, 9)]),
        ]
    cases += [op(name, (B, X), (B, ROW)) for name in ("And", "Or", "Xor", "Equal")]
    cases += [
        op("Not", (B, X)),
        op("Pow", (F32, X), (I32, ROW), ranges=[(-4, 4), (-3, 3)]),
        op("Pow", (F16, X), (I64, ROW), ranges=[(-4, 4), (0, 4)]),
        op("Pow", (I32, X), (F32, ROW), ranges=[(1, 10), (0, 3)]),
        op("Pow", (I64, X), (I64, ROW), ranges=[(-3, 3), (-2, 3)], suffix="_negative_exponent"),
        # bf16 and float64 storage
        op("Add", (BF16, X), (BF16, ROW)), op("Sigmoid", (BF16, X)), op("Gelu", (BF16, X)),
        op("Add", (F64, X), (F64, ROW)), op("Exp", (F64, X)), op("Gelu", (F64, X)),
        op("Softplus", (F64, X), ranges=[(-10, 10)]), op("Mod", (F64, X), (F64, ROW), ranges=[(-10, 10), (-3, 3)]),
        op("Pow", (F64, X), (F64, ROW), ranges=[(0.1, 4), (-3, 3)]),
    ]
    casts = [(F32, F16), (F16, F32), (F32, BF16), (BF16, F32), (BF16, F16), (F32, I32), (F32, U8),
             (F32, I8), (F16, I64), (F64, F16), (F64, F32), (F64, BF16), (I64, F32), (I32, F16),
             (I32, I8), (I64, I32), (U8, I32), (B, F32), (F32, B), (I32, B), (B, I64), (F32, F64)]
    for src, dst in casts:
        ranges = [(-100, 200)] if dst == U8 else [(-1e4, 1e4)] if src.is_float and not dst.is_float else []
        cases.append(op("Cast", (src, X), ranges=ranges, suffix=f"_to_{dst.short}", to=int(dst)))
    return cases + quantization_cases()


def quantization_cases() -> list[Case]:
    """QuantizeLinear to each integer type, DequantizeLinear from each, fp16/bf16 scales, per
    axis and blocked (x / scale reaches past every type's range: saturation)."""
    I16, U16 = DType.INT16, DType.UINT16
    wide, scales = (-2000, 2000), (0.05, 4)
    cases = [op("QuantizeLinear", (F32, X), (F32, ()), (t, ()), ranges=[wide, scales]) for t in (I8, U8, I16, U16)]
    cases += [
        op("QuantizeLinear", (F16, X), (F16, ()), (I8, ()), ranges=[wide, scales]),
        op("QuantizeLinear", (BF16, X), (BF16, ()), (U8, ()), ranges=[wide, scales]),
        op("QuantizeLinear", (I32, X), (F32, ()), (I16, ()), ranges=[(-10**6, 10**6), scales]),
        op("QuantizeLinear", (F32, X), (F32, (1,)), suffix="_default_uint8", ranges=[wide, scales]),
        op("QuantizeLinear", (F32, X), (F32, (5,)), (I8, (5,)), ranges=[wide, scales], suffix="_per_axis", axis=1),
        op("QuantizeLinear", (F32, (3, 8, 67)), (F32, (3, 2, 67)), (U8, (3, 2, 67)), ranges=[wide, scales],
           suffix="_blocked", axis=1, block_size=4),
    ]
    cases += [op("DequantizeLinear", (t, X), (F32, ()), (t, ())) for t in (I8, U8, I16, U16)]
    cases += [
        op("DequantizeLinear", (I32, X), (F32, ()), (I32, ()), ranges=[(-2**31, 2**31 - 1), None, (-2**31, 2**31 - 1)]),
        op("DequantizeLinear", (I8, X), (F16, ()), (I8, ())),
        op("DequantizeLinear", (U8, X), (BF16, ())),
        op("DequantizeLinear", (I8, X), (F32, (67,)), (I8, (67,)), suffix="_per_axis_last", axis=-1),
        op("DequantizeLinear", (U8, (3, 8, 68)), (F16, (3, 8, 17)), (U8, (3, 8, 17)), suffix="_blocked",
           axis=2, block_size=4),
    ]
    return cases


def body_case(id: str, nodes: list[Node], inputs: dict[str, TensorType], outputs: list[str],
              constants: dict[str, np.ndarray] | None = None, ranges=(), output_dtypes=None) -> Case:
    body = Graph(nodes, list(inputs), outputs, {}, dict(constants or {}), name=id)
    node = Node("Elementwise", [f"o_{n}" for n in inputs], [f"o_{n}" for n in outputs], {"body": body},
                name=id, domain="rtxrt")
    return Case(id, node, tuple(inputs.values()), tuple(ranges), 21,
                None if output_dtypes is None else tuple(output_dtypes), frozenset({"body"}))


def body_cases() -> list[Case]:
    def n(op_type: str, inputs: list[str], output: str, **attrs) -> Node:
        return Node(op_type, inputs, [output], attrs, name=output)

    cases = []
    for dtype in (F32, F16):
        np_type = dtype.numpy
        # UNet: GroupNorm's affine (per channel scale and shift) then Relu.
        cases.append(body_case(
            f"groupnorm_affine_relu-{dtype.short}",
            [n("Mul", ["x", "gamma"], "t0"), n("Add", ["t0", "beta"], "t1"), n("Relu", ["t1"], "y")],
            {"x": TensorType(dtype, (2, 32, 16, 16)), "gamma": TensorType(dtype, (32, 1, 1)),
             "beta": TensorType(dtype, (32, 1, 1))}, ["y"]))
        # Gelu as exported op by op: x * 0.5 * (1 + erf(x / sqrt(2))).
        cases.append(body_case(
            f"gelu_by_ops-{dtype.short}",
            [n("Div", ["x", "sqrt2"], "t0"), n("Erf", ["t0"], "t1"), n("Add", ["t1", "one"], "t2"),
             n("Mul", ["x", "t2"], "t3"), n("Mul", ["t3", "half"], "y")],
            {"x": TensorType(dtype, (4, 128, 96))}, ["y"],
            {"sqrt2": np.array(math.sqrt(2), np_type), "one": np.array(1, np_type), "half": np.array([0.5], np_type)},
            ranges=[(-3, 3)]))
        # ELU by hand: a comparison, a Where and a constant of rank 2 that raises the rank.
        cases.append(body_case(
            f"elu_by_ops-{dtype.short}",
            [n("Greater", ["x", "zero"], "pos"), n("Exp", ["x"], "e"), n("Sub", ["e", "one"], "em1"),
             n("Mul", ["em1", "alpha"], "neg"), n("Where", ["pos", "x", "neg"], "y")],
            {"x": TensorType(dtype, (67,))}, ["y"],
            {"zero": np.zeros((1, 1), np_type), "one": np.array(1, np_type), "alpha": np.array(0.5, np_type)}))
        # Two outputs of one shape: Sigmoid and Swish.
        cases.append(body_case(
            f"sigmoid_and_swish-{dtype.short}",
            [n("Sigmoid", ["x"], "s"), n("Mul", ["x", "s"], "y")],
            {"x": TensorType(dtype, X)}, ["s", "y"]))
    # BERT: the additive attention mask from the int64 mask, added to the scores.
    cases.append(body_case(
        "bert_mask_scores-float32",
        [n("Cast", ["mask"], "m", to=int(F32)), n("Sub", ["one", "m"], "inv"), n("Mul", ["inv", "big"], "bias"),
         n("Add", ["scores", "bias"], "y")],
        {"scores": TensorType(F32, (2, 12, 128, 128)), "mask": TensorType(I64, (2, 1, 1, 128))}, ["y"],
        {"one": np.array(1.0, np.float32), "big": np.array(-10000.0, np.float32)},
        ranges=[None, (0, 1)]))
    cases.append(body_case(
        "bert_mask-float16",
        [n("Cast", ["mask"], "m", to=int(F16)), n("Sub", ["one", "m"], "inv"), n("Mul", ["inv", "big"], "y")],
        {"mask": TensorType(I64, (2, 1, 1, 128))}, ["y"],
        {"one": np.array(1.0, np.float16), "big": np.array(-10000.0, np.float16)}, ranges=[(0, 1)]))
    # QuantizeLinear by hand: round(x / scale) + zero point, saturated, as int8.
    cases.append(body_case(
        "quantize_by_ops-float32",
        [n("Div", ["x", "scale"], "t0"), n("Round", ["t0"], "t1"), n("Add", ["t1", "zp"], "t2"),
         n("Clip", ["t2", "lo", "hi"], "t3"), n("Cast", ["t3"], "y", to=int(I8))],
        {"x": TensorType(F32, (8, 300))}, ["y"],
        {"scale": np.array(0.05, np.float32), "zp": np.array(3.0, np.float32),
         "lo": np.array(-128.0, np.float32), "hi": np.array(127.0, np.float32)}, ranges=[(-8, 8)]))
    # Fake quantization as quantize_static leaves it: Relu -> QuantizeLinear -> DequantizeLinear.
    for dtype, q in ((F32, I8), (F16, U8)):
        cases.append(body_case(
            f"relu_quantize_dequantize-{dtype.short}",
            [n("Relu", ["x"], "r"), n("QuantizeLinear", ["r", "scale", "zp"], "q"),
             n("DequantizeLinear", ["q", "scale", "zp"], "y")],
            {"x": TensorType(dtype, X)}, ["y"],
            {"scale": np.array(0.0625, dtype.numpy), "zp": np.array([3], q.numpy)}, ranges=[(-20, 20)]))
    # Constants without a decimal literal: infinities, NaN, the extreme integers.
    cases.append(body_case(
        "special_constants",
        [n("Max", ["x", "ninf"], "y0"), n("Min", ["x", "nan"], "y1"), n("Clip", ["k", "imin", "imax"], "y2"),
         n("Sub", ["k", "imin"], "y3")],
        {"x": TensorType(F32, X), "k": TensorType(I32, X)}, ["y0", "y1", "y2", "y3"],
        {"ninf": np.array(-np.inf, np.float32), "nan": np.array(np.nan, np.float32),
         "imin": np.array(np.iinfo(np.int32).min, np.int32), "imax": np.array(np.iinfo(np.int32).max, np.int32)}))
    # fp32 logic kept in fp16 storage (an AOT precision annotation): computed in fp32.
    body = body_case(
        "fp32_logic_fp16_storage",
        [n("Mul", ["x", "w"], "t0"), n("Tanh", ["t0"], "y")],
        {"x": TensorType(F16, X), "w": TensorType(F16, ROW)}, ["y"], output_dtypes=[F16])
    graph = body.node.attrs["body"]
    graph.types.update({"x": TensorType(F32, X), "w": TensorType(F32, ROW)})
    cases.append(body)
    return cases


CASES: list[Case] = single_op_cases() + body_cases()


def test_the_catalogue_covers_every_elementwise_op():
    covered = {c.node.op_type for c in CASES if not c.node.domain}
    covered |= {n.op_type for c in CASES if c.node.domain for n in c.node.attrs["body"].nodes}
    assert covered == elementwise_ops(), elementwise_ops() ^ covered


def test_every_kernel_compiles_for_every_supported_arch():
    started = time.perf_counter()
    kernels = {k.name: k.source for k in (case.kernel() for case in CASES)}
    generated = time.perf_counter() - started
    report = [f"{arch}: {n} kernels in {s:.1f} s" for arch, n, s in compile_for_every_arch(kernels, 512)]
    print(f"\n{len(CASES)} cases -> {len(kernels)} distinct kernels, generated in {generated:.2f} s; "
          + "; ".join(report))


def test_identical_work_gives_one_kernel_name_and_different_work_another():
    first, again = op("Add", (F32, X), (F32, ROW)), op("Add", (F32, X), (F32, ROW))
    again = Case(again.id, Node("Add", ["p", "q"], ["r"], name="renamed"), again.inputs)
    assert first.kernel().name == again.kernel().name
    assert first.kernel().source == again.kernel().source
    assert op("Add", (F32, X), (F32, (5, 67))).kernel().name != first.kernel().name
    assert op("Sub", (F32, X), (F32, ROW)).kernel().name != first.kernel().name


def test_kernel_describes_its_arguments_and_launch():
    k = op("Less", (F16, X), (F16, ROW)).kernel()
    assert [(a.name, a.role, a.dtype, a.shape) for a in k.args] == [
        ("in0", BufferRole.IN, F16, X), ("in1", BufferRole.IN, F16, ROW), ("out0", BufferRole.OUT, B, X)]
    assert k.launch.elements == math.prod(X) and k.launch.grid() == -(-math.prod(X) // k.launch.block)
    assert k.launch.grid(sm_count=1, blocks_per_sm=2) == 2
    assert f'void __launch_bounds__({k.launch.block}) {k.name}(' in k.source


def test_same_shape_inputs_are_read_at_the_loop_index_and_broadcast_ones_by_strides():
    same = op("Add", (F32, X), (F32, X)).kernel().source
    assert "in0[i]" in same and "in1[i]" in same and "%" not in same.split("extern")[1]
    scalar = op("Mul", (F32, X), (F32, ())).kernel().source
    assert "in0[i]" in scalar and "in1[0]" in scalar
    # (2, 3, 4) + (3, 1): the trailing dims are walked as c1 * 1 and c2 * 0
    broadcast = op("Add", (F32, (2, 3, 4)), (F32, (3, 1))).kernel().source
    assert "in1[c1]" in broadcast


def test_float_constants_are_exact_and_fp16_results_are_rounded_once_per_op():
    k = op("LeakyRelu", (F32, X), alpha=0.1).kernel().source
    assert float.hex(float(np.float32(0.1))) + "f" in k
    chain = next(c for c in CASES if c.id == "gelu_by_ops-float16").kernel().source
    assert chain.count("rtx_round_h(") == 1 + 4  # its definition, then every op but the stored last


@pytest.mark.parametrize("node, types, message", [
    (Node("Exp", ["x"], ["y"]), [TensorType(I32, X)], "Exp on int32"),
    (Node("Add", ["a", "b"], ["y"]), [TensorType(F32, X), TensorType(F16, X)], "different types"),
    (Node("Gelu", ["x"], ["y"], {"approximate": "cubic"}), [TensorType(F32, X)], "approximate='cubic'"),
    (Node("Relu", ["x"], ["y"]), [TensorType(DType.STRING, X)], "string"),
    (Node("Conv", ["x", "w"], ["y"]), [TensorType(F32, X)] * 2, "not an elementwise op"),
    (Node("Relu", ["x"], ["y"]), [TensorType(F32, ("batch", 4))], "static input shapes"),
    (Node("Add", ["a", "b"], ["y"]), [TensorType(F32, (3,)), TensorType(F32, (4,))], "cannot broadcast"),
])
def test_what_cannot_be_generated_is_a_clear_codegen_error(node, types, message):
    with pytest.raises(CodegenError, match=message):
        elementwise_kernel(node, types)


def test_an_empty_tensor_gives_a_kernel_with_nothing_to_launch():
    k = op("Relu", (F32, (0, 4))).kernel()
    assert k.launch.elements == 0 and k.launch.grid() == 0


def test_nvrtc_errors_name_the_kernel_and_arch_and_carry_the_log():
    source = 'extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }'
    with pytest.raises(KernelCompileError) as info:
        compile_cubin(source, "broken", "sm_86")
    assert (info.value.kernel, info.value.arch) == ("broken", "sm_86")
    assert "undefined_name" in info.value.log and "broken" in str(info.value) and "sm_86" in str(info.value)
    with pytest.raises(ValueError, match="sm_86"):
        compile_cubin(source, "broken", "86")


def test_nvrtc_compiles_header_free_fp16_and_bf16_code_with_fast_math_on_request():
    k = op("Gelu", (BF16, X)).kernel()
    assert "#include" not in k.source
    assert compile_cubin(k.source, k.name, "sm_75", fast_math=True).startswith(b"\x7fELF")
    major, minor = nvrtc_version()
    assert major >= 12 and minor >= 0
