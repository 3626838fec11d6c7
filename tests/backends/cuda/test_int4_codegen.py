"""Sub-byte integer tensors in generated kernels: ONNX's INT4, UINT4, INT2 and UINT2, stored one
element per byte in its low bits (ml_dtypes' form: what the planner uploads and the reference
backend reads back; ml_dtypes ignores the bits above when it reads and writes them 0, and so do
the kernels) and held as int in registers (codegen/ctypes_map.py SUB_BYTE_PRELUDE), in ONNX's
ops that take them: Cast (CastLike becomes one), QuantizeLinear, DequantizeLinear, and the
copies that move bytes (Transpose, ...; Reshape and the like are views).

The spec, as these tests read it. Cast from an integer keeps the low bits ("discard higher bits
and reinterpret"), so 8 is -8 as int4 and -9 is 7, as ONNX's test data (test_cast_FLOAT_to_INT4)
has it; a float truncates toward zero first (2.7 is 2, -2.7 is -2) and then wraps: Cast neither
rounds nor saturates. Floats past int32's range, infinities and NaN are undefined in ONNX; the
reference (ml_dtypes) gives 0, and so does the GPU. A sub-byte value converts to any
type as the integer it is. QuantizeLinear rounds x / scale half to even, adds the zero point and
saturates to [-8, 7] (int4), [0, 15] (uint4), [-2, 1] (int2) or [0, 3] (uint2); NaN gives 0.
DequantizeLinear is (x - zero point) * scale in float32, rounded once to its output type. Both
per tensor, per axis and blocked: int4 weights dequantized in blocks along K before a MatMul
are the weight-only quantization of LLMs, and plan as a GPU kernel feeding the MatMul.

Checked on the CPU by the fake device's interpreter running each kernel's CUDA source, bit for
bit against the reference backend: every byte (every code, under every pattern of the bits
above it) of each type to every type Cast takes; every fp16 and bf16, probing float32 and
float64 values, integers around each range and each type's extremes, every float8 code to each
type; Q/DQ per tensor, per axis and blocked. NVRTC compiles the kernels for every supported
arch. Models plan with no node on the host and run on the fake device with the reference's
bits. tests/backends/cuda/test_gpu_int4.py runs the casts, ``specs`` and the models on a GPU.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen import ctypes_map as C
from rtxrt.backends.cuda.ops.data_movement_source import transpose_kernel
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Model, Node, TensorType
from tests.backends.cuda.helpers import compile_for_every_arch
from tests.backends.cuda.test_float8_codegen import (
    FLOAT8,
    OTHERS,
    assert_same_bits,
    assert_same_values,
    cast_node,
    gpu_cast,
    host,
    reference_cast,
    same_as_reference,
    short,
    source_values,
)
from tests.backends.cuda.test_float8_codegen import codes as float8_codes
from tests.backends.cuda.test_quantize_codegen import dequantize, fused, fused_quantize_dequantize, quantize
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.engine import cublas_tactic, reference_outputs, run_model
from tests.fake_gpu.kernels import run_kernel
from tests.fake_gpu.models import compiled, original
from tests.helpers import make_model

INT4, UINT4, INT2, UINT2 = DType.INT4, DType.UINT4, DType.INT2, DType.UINT2
SUB_BYTE = [INT4, UINT4, INT2, UINT2]
F32, F16, BF16, F64, I8 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.INT8
RANGE = {INT4: (-8, 7), UINT4: (0, 15), INT2: (-2, 1), UINT2: (0, 3)}
BITS = {INT4: 4, UINT4: 4, INT2: 2, UINT2: 2}


def codes(dtype: DType) -> np.ndarray:
    """Every value of sub-byte ``dtype``, in order."""
    lo, hi = RANGE[dtype]
    return np.arange(lo, hi + 1).astype(dtype.numpy)


def every_byte(dtype: DType) -> np.ndarray:
    """The 256 bytes as ``dtype`` elements: every code under every pattern of the bits above."""
    return np.arange(256, dtype=np.uint8).view(dtype.numpy)


def low_bits(values, dtype: DType) -> np.ndarray:
    """Integers (Python's, unbounded) as ``dtype`` keeps them: their low bits, two's complement
    for the signed types."""
    bits = BITS[dtype]
    wrapped = [int(v) % (1 << bits) for v in values]
    if RANGE[dtype][0] < 0:
        wrapped = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in wrapped]
    return np.array(wrapped, np.int64)


# ---------------------------------------------------------------- load and store

@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_every_code_is_stored_in_the_low_bits_of_its_byte_with_the_bits_above_clear(dtype):
    values = codes(dtype).astype(np.int8)
    got = gpu_cast(values, I8, dtype)
    assert got.dtype == dtype.numpy
    np.testing.assert_array_equal(got.view(np.uint8), values.view(np.uint8) & ((1 << BITS[dtype]) - 1))
    assert_same_bits(got, reference_cast(values, dtype))  # ml_dtypes' bytes
    np.testing.assert_array_equal(gpu_cast(got, dtype, I8), values)


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_a_load_reads_the_low_bits_sign_extended_for_the_signed_types(dtype):
    x = every_byte(dtype)
    got = gpu_cast(x, dtype, DType.INT32)
    np.testing.assert_array_equal(got, low_bits(range(256), dtype))
    assert_same_bits(got, reference_cast(x, DType.INT32))


# ---------------------------------------------------------------- Cast from the sub-byte types

@pytest.mark.parametrize("other", [*OTHERS, *FLOAT8, *SUB_BYTE], ids=short)
@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_cast_from_each_sub_byte_type_to_every_type_gives_the_reference_bits(dtype, other):
    x = every_byte(dtype)
    assert_same_bits(gpu_cast(x, dtype, other), reference_cast(x, other), f"{dtype.short} -> {other.short}")


def test_int4_widens_to_its_value_and_wraps_into_unsigned_types():
    x = codes(INT4)
    np.testing.assert_array_equal(gpu_cast(x, INT4, F32), np.arange(-8, 8, dtype=np.float32))
    np.testing.assert_array_equal(gpu_cast(x, INT4, DType.UINT8), np.arange(-8, 8) % 256)
    np.testing.assert_array_equal(gpu_cast(x, INT4, UINT4).astype(int), np.arange(-8, 8) % 16)
    np.testing.assert_array_equal(gpu_cast(codes(UINT4), UINT4, INT4).astype(int), low_bits(range(16), INT4))


# ---------------------------------------------------------------- Cast to the sub-byte types

DOUBLES_PAST_INT32 = [2.0**31 - 0.5, 2.0**31 - 3, -2.0**31, -2.0**31 + 0.5, -2.0**31 - 1, 2.0**31, 2.0**31 + 3,
                      2.0**33 + 5, -(2.0**40 + 7), 2.0**63, 1e300, -1e300, np.inf, -np.inf, np.nan]


def values_of(other: DType) -> np.ndarray:
    """What to cast from ``other``: the float8 test's probes (every fp16 and bf16, float32s of
    every top-16-bit pattern, doubles beside them, integers around every range and each type's
    extremes), doubles around int32's range, every float8 code, every sub-byte byte."""
    if other in FLOAT8:
        return float8_codes(other)
    if other in SUB_BYTE:
        return every_byte(other)
    x = source_values(other)
    return np.concatenate([x, DOUBLES_PAST_INT32]) if other == F64 else x


@pytest.mark.parametrize("other", [*OTHERS, *FLOAT8, *SUB_BYTE], ids=short)
@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_cast_to_each_sub_byte_type_from_every_type_gives_the_reference_bits(dtype, other):
    x = values_of(other)
    assert_same_bits(gpu_cast(x, other, dtype), reference_cast(x, dtype), f"{other.short} -> {dtype.short}")


CAST_EDGES = np.array([-9, -8, 7, 8, 15, 16, 2.7, -2.7, 0.5, -0.5, 7.9, -8.9, 100, -100, 2.0**24 + 2,
                       3e9, 1e10, np.inf, -np.inf, np.nan], np.float32)


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_cast_of_a_float_truncates_toward_zero_then_wraps_it_neither_rounds_nor_saturates(dtype):
    """-9 -> 7 and 8 -> -8 as int4 (ONNX's test data); 2.7 -> 2, -2.7 -> -2 (-2.7 -> 14 as
    uint4); 100 = 0x64 -> 4; past int32, infinities and NaN: 0."""
    truncated = [-9, -8, 7, 8, 15, 16, 2, -2, 0, 0, 7, -8, 100, -100, 2**24 + 2, 0, 0, 0, 0, 0]
    got = gpu_cast(CAST_EDGES, F32, dtype)
    np.testing.assert_array_equal(got.astype(np.int64), low_bits(truncated, dtype))
    assert_same_bits(got, reference_cast(CAST_EDGES, dtype))
    assert_same_bits(gpu_cast(CAST_EDGES.astype(np.float64), F64, dtype), got)


def test_the_onnx_test_data_for_cast_to_int4_and_uint4():
    x = np.arange(-9, 16, dtype=np.float32)
    np.testing.assert_array_equal(gpu_cast(x, F32, INT4).astype(int), [7, *range(-8, 8), *range(-8, 0)])
    np.testing.assert_array_equal(gpu_cast(x, F32, UINT4).astype(int), [7, *range(8, 16), *range(16)])
    np.testing.assert_array_equal(gpu_cast(x.astype(np.float16), F16, INT4).astype(int),
                                  [7, *range(-8, 8), *range(-8, 0)])


# ---------------------------------------------------------------- QuantizeLinear and DequantizeLinear

Q_EDGES = np.array([2.5, -2.5, 3.5, 0.5, -0.5, 1.5, 7.5, 8.5, -8.5, 1e9, -1e9, np.inf, -np.inf, 0.0, -0.0, np.nan],
                   np.float32)
ZERO = {INT4: -3, UINT4: 5, INT2: -1, UINT2: 1}


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_quantize_rounds_half_to_even_adds_the_zero_point_and_saturates_to_the_narrow_range(dtype):
    node, types = quantize(Q_EDGES.shape, dtype)
    got = same_as_reference(node, types, [Q_EDGES, np.float32(1.0), np.asarray(ZERO[dtype], dtype.numpy)])
    rounded = [2, -2, 4, 0, 0, 2, 8, 8, -8, 10**9, -10**9, 10**9, -10**9, 0, 0]
    lo, hi = RANGE[dtype]
    want = [min(max(r + ZERO[dtype], lo), hi) for r in rounded] + [0]  # NaN: 0
    np.testing.assert_array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_quantize_without_a_zero_point_writes_its_output_dtype(dtype):
    node, types = quantize(Q_EDGES.shape, None, output_dtype=int(dtype))
    got = same_as_reference(node, types, [Q_EDGES, np.float32(0.5)])
    assert got.dtype == dtype.numpy


def test_dequantize_subtracts_every_zero_point_from_every_code_exactly():
    """Per axis along the columns: y[i, j] = (code i - zero point j) * scale j."""
    for dtype in SUB_BYTE:
        n = len(codes(dtype))
        x = np.repeat(codes(dtype), n).reshape(n, n)
        scale = np.linspace(0.25, 4, n).astype(np.float32)
        node, types = dequantize(x.shape, dtype, scale_shape=(n,), axis=1)
        got = same_as_reference(node, types, [x, scale, codes(dtype)])
        centered = x.astype(np.float32) - codes(dtype).astype(np.float32)[None, :]
        np.testing.assert_array_equal(got, centered * scale)


def specs() -> dict[str, tuple[Node, list[TensorType]]]:
    """The sub-byte Q/DQ kernels these tests run, by name (the GPU test runs them too)."""
    cases = {}
    for t in SUB_BYTE:
        cases[f"quantize to {t.short}"] = quantize((3, 67), t)
        cases[f"dequantize {t.short}"] = dequantize((4, 64), t)
    cases |= {
        "quantize float16 to int4": quantize((3, 67), INT4, x=F16),
        "quantize bfloat16 to uint4": quantize((3, 67), UINT4, x=BF16),
        "quantize int32 to int4": quantize((3, 67), INT4, x=DType.INT32, scale=F32),
        "quantize to int4 per axis": quantize((2, 3, 4, 5), INT4, scale_shape=(3,), axis=1),
        "quantize to uint4 blocked": quantize((2, 8, 3), UINT4, scale_shape=(2, 2, 3), axis=1, block_size=4),
        "quantize to int4 blocked along the last axis": quantize((6, 64), INT4, scale_shape=(6, 2), axis=1,
                                                                 block_size=32),
        "dequantize int4 to float16": dequantize((4, 64), INT4, F16),
        "dequantize uint4 to bfloat16 without zero point": dequantize((4, 64), UINT4, BF16, zero=False),
        "dequantize int4 per axis": dequantize((2, 3, 4, 5), INT4, scale_shape=(5,), axis=-1),
        "dequantize int2 per axis": dequantize((2, 3, 4, 5), INT2, scale_shape=(3,), axis=1),
        # the LLM case: [K, N] weights, blocks of 32 along K
        "dequantize int4 weights blocked": dequantize((128, 96), INT4, scale_shape=(4, 96), axis=0, block_size=32),
        "dequantize uint4 weights blocked to float16": dequantize((128, 96), UINT4, F16, scale_shape=(4, 96),
                                                                  axis=0, block_size=32),
        "dequantize int4 blocked without zero point": dequantize((96, 128), INT4, scale_shape=(96, 8), zero=False,
                                                                 axis=1, block_size=16),
    }
    return cases


def inputs(case: str, node: Node, types: list[TensorType]) -> list[np.ndarray]:
    """Random inputs for ``specs()[case]``: x over the quantized range and past it (then the
    edge values), or every code repeated; a positive scale; zero points among the codes."""
    rng = np.random.default_rng(sum(map(ord, case)))
    arrays = []
    for k, t in enumerate(types):
        if t.dtype in C.SUB_BYTE_INTS:  # x of DequantizeLinear (every code) or a zero point
            a = np.resize(codes(t.dtype), t.shape) if k == 0 else rng.choice(codes(t.dtype), t.shape)
        elif k == 0 and t.dtype == DType.INT32:
            a = rng.integers(-100, 100, t.shape).astype(np.int32)
        elif k == 0:
            a = (rng.standard_normal(t.shape) * 10.0 ** rng.uniform(-1, 1.5, t.shape)).astype(host(t.dtype))
            with np.errstate(over="ignore"):  # (past fp16's range: inf)
                a.reshape(-1)[:len(Q_EDGES)] = Q_EDGES.astype(host(t.dtype))
        else:
            a = rng.uniform(0.05, 4, t.shape).astype(host(t.dtype))
        arrays.append(np.asarray(a).astype(host(t.dtype)))
    return arrays


@pytest.mark.parametrize("case", list(specs()))
def test_each_sub_byte_quantization_kernel_gives_the_reference_bits(case):
    node, types = specs()[case]
    same_as_reference(node, types, inputs(case, node, types))


def test_a_fused_quantize_dequantize_chain_holds_int4_in_registers():
    """Q -> DQ per tensor in one body (a fake-quantization kernel, float in and out): the int4
    value never goes to memory, and the int4 zero point is a literal."""
    values = np.random.default_rng(4).uniform(-4, 4, (4, 300)).astype(np.float32)
    values.reshape(-1)[:len(Q_EDGES)] = Q_EDGES
    kernel, got, want = fused_quantize_dequantize(np.array(-3, ml_dtypes.int4), values)
    assert [a.name for a in kernel.args] == ["in0", "out0"]
    assert_same_values(got, want)


def test_a_cast_to_int4_and_back_in_a_fused_body_wraps_as_the_unfused_casts_do():
    x = TensorType(F32, (1000,))
    chain = fused([Node("Cast", ["x"], ["c"], {"to": int(INT4)}, name="narrow"),
                   Node("Cast", ["c"], ["y"], {"to": int(F32)}, name="wide")], {"x": x}, {})
    values = np.random.default_rng(5).uniform(-40, 40, 1000).astype(np.float32)
    values[:len(CAST_EDGES)] = CAST_EDGES
    (got,) = run_kernel(FakeDevice(8 << 20), elementwise_kernel(chain, [x]), [values])
    assert_same_bits(got, reference_cast(reference_cast(values, INT4), F32))


# ---------------------------------------------------------------- what the sub-byte types are not

@pytest.mark.parametrize("node, types", [
    (Node("Relu", ["x"], ["y"], name="relu"), [TensorType(INT4, (8,))]),
    (Node("Add", ["a", "b"], ["y"], name="add"), [TensorType(UINT4, (8,))] * 2),
    (Node("BitwiseNot", ["x"], ["y"], name="not"), [TensorType(INT2, (8,))]),
])
def test_ops_that_compute_refuse_sub_byte_integers_they_have_no_arithmetic_in_onnx(node, types):
    with pytest.raises(CodegenError, match=f"no generated kernel for {node.op_type} on u?int[24]"):
        elementwise_kernel(node, types)


def test_kernels_that_compute_on_their_elements_still_refuse_sub_byte_integers():
    """``check`` without ``sub_byte`` is what the arithmetic generators ask: the sub-byte
    integers stay on the host there. float4e2m1 has no kernel at all."""
    with pytest.raises(CodegenError, match="do not handle int4"):
        C.check(INT4)
    assert C.check(INT4, sub_byte=True) == INT4
    with pytest.raises(CodegenError, match="do not handle float4e2m1"):
        elementwise_kernel(cast_node(DType.FLOAT4E2M1), [TensorType(F32, (8,))])


def test_an_int4_copy_is_the_byte_copy_a_uint8_one_is():
    def source(dtype: DType) -> str:
        return transpose_kernel((2, 3, 4), (2, 0, 1), dtype).source

    assert source(INT4) == source(UINT2) == source(DType.UINT8)


# ---------------------------------------------------------------- NVRTC

def catalogue() -> dict[str, str]:
    """Every kind of sub-byte kernel: Cast both ways for each type (and from a double, an
    integer, fp16, a float8 type), the Q/DQ specs, a fused chain, an int4 transpose."""
    kernels = []
    for t in SUB_BYTE:
        kernels.append(elementwise_kernel(cast_node(t), [TensorType(F32, (5, 67))]))
        kernels.append(elementwise_kernel(cast_node(F32), [TensorType(t, (5, 67))]))
    kernels += [elementwise_kernel(cast_node(INT4), [TensorType(src, (5, 67))])
                for src in (F64, DType.INT64, F16, DType.FLOAT8E4M3FN, UINT4)]
    kernels += [elementwise_kernel(cast_node(dst), [TensorType(UINT4, (5, 67))])
                for dst in (DType.UINT64, BF16, DType.FLOAT8E5M2, DType.BOOL)]
    kernels += [elementwise_kernel(node, types) for node, types in specs().values()]
    x = TensorType(F16, (4, 300))
    kernels.append(elementwise_kernel(fused([Node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                                             Node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                                            {"x": x}, {"s": np.array(0.25, np.float16),
                                                       "z": np.array(2, ml_dtypes.uint4)}), [x]))
    kernels.append(transpose_kernel((2, 3, 33), (1, 0, 2), INT4))
    return {k.name: k.source for k in kernels}


def test_every_sub_byte_kernel_compiles_for_every_supported_arch():
    compile_for_every_arch(catalogue())


# ---------------------------------------------------------------- whole models

FLOAT, ONNX_INT4, ONNX_UINT4 = TensorProto.FLOAT, TensorProto.INT4, TensorProto.UINT4
K, N, BLOCK = 512, 520, 32  # K x N int4 weights: more elements than the planner computes ahead (2**18)
FOLD_MAX_BYTES = 1 << 16  # as if the dequantized weights were an LLM's, too big to fold when compiling


def cast_model():
    """x -> each sub-byte type -> float again by CastLike (a Cast once compiled); the int4 one
    is an output too."""
    nodes, outputs = [], [("n0", ONNX_INT4, [2, 8, 4, 4])]
    for k, to in enumerate([ONNX_INT4, ONNX_UINT4, TensorProto.INT2, TensorProto.UINT2]):
        nodes += [helper.make_node("Cast", ["x"], [f"n{k}"], to=to, name=f"narrow{k}"),
                  helper.make_node("CastLike", [f"n{k}", "x"], [f"y{k}"], name=f"wide{k}")]
        outputs.append((f"y{k}", FLOAT, [2, 8, 4, 4]))
    return make_model(nodes, [("x", FLOAT, [2, 8, 4, 4])], outputs, opset=25)


def qdq_model():
    """Per-channel QuantizeLinear to int4 (int4 zero points), Transpose to NHWC (int4 bytes
    moved), per-tensor DequantizeLinear; beside it a uint4 Q -> DQ pair (one fused
    fake-quantization kernel); the quantized tensor is an output of its own."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=1, name="quantize"),
        helper.make_node("Transpose", ["q"], ["t"], perm=[0, 2, 3, 1], name="nhwc"),
        helper.make_node("DequantizeLinear", ["t", "step", "origin"], ["y"], name="dequantize"),
        helper.make_node("QuantizeLinear", ["x", "step", "level"], ["u"], name="quantize_u"),
        helper.make_node("DequantizeLinear", ["u", "step", "level"], ["fake"], name="dequantize_u"),
    ]
    model = make_model(nodes, [("x", FLOAT, [2, 8, 4, 4])],
                       [("y", FLOAT, None), ("q", ONNX_INT4, [2, 8, 4, 4]), ("fake", FLOAT, None)],
                       {"scale": np.linspace(0.25, 2, 8).astype(np.float32), "step": np.array(0.5, np.float32)},
                       opset=21)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([0, -1, 2, -3, 4, -5, 6, -7], ml_dtypes.int4), "zero"),
        numpy_helper.from_array(np.array(1, ml_dtypes.int4), "origin"),
        numpy_helper.from_array(np.array(6, ml_dtypes.uint4), "level"),
    ])
    return model


def int4_matmul(weights: DType = INT4, dequantized_out: bool = False):
    """y = x @ DequantizeLinear(w), int4 (or uint4) weights [K, N] in blocks of 32 along K with
    zero points of their type; ``dequantized_out``: the dequantized weights are an output too."""
    rng = np.random.default_rng(5)
    lo, hi = RANGE[weights]
    nodes = [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], name="dequantize_w", axis=0,
                              block_size=BLOCK),
             helper.make_node("MatMul", ["x", "wd"], ["y"], name="matmul")]
    outputs = [("y", FLOAT, [4, N])] + ([("wd", FLOAT, [K, N])] if dequantized_out else [])
    model = make_model(nodes, [("x", FLOAT, [4, K])], outputs,
                       {"w_scale": rng.uniform(0.01, 0.1, (K // BLOCK, N)).astype(np.float32)}, opset=21)
    model.graph.initializer.extend([
        numpy_helper.from_array(rng.integers(lo, hi + 1, (K, N)).astype(weights.numpy), "w"),
        numpy_helper.from_array(rng.integers(lo, hi + 1, (K // BLOCK, N)).astype(weights.numpy), "w_zero"),
    ])
    return model


def compiled_matmul(weights: DType = INT4, dequantized_out: bool = False) -> Model:
    return compile_onnx(int4_matmul(weights, dequantized_out), AotOptions(fold_max_bytes=FOLD_MAX_BYTES))


def feeds(seed: int, shape=(2, 8, 4, 4)) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-12, 12, shape).astype(np.float32)
    x.reshape(-1)[:len(CAST_EDGES)] = CAST_EDGES
    return {"x": x}


def matmul_feeds(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((4, K)).astype(np.float32)}


@pytest.mark.parametrize("model", [cast_model, qdq_model])
def test_sub_byte_models_plan_wholly_on_the_gpu(model):
    report = plan_coverage(compile_onnx(model().SerializeToString()), {"x": (2, 8, 4, 4)}, "sm_86")
    assert report.host_nodes == []
    assert [s.kind for s in report.segments] == ["gpu"]


@pytest.mark.parametrize("weights", [INT4, UINT4], ids=short)
def test_blocked_int4_weights_dequantize_in_a_gpu_kernel_feeding_the_matmul(weights):
    model = compiled_matmul(weights)
    assert [n.op_type for n in model.graph.nodes] == ["DequantizeLinear", "FusedMatMul"]  # not folded
    report = plan_coverage(model, {"x": (4, K)}, "sm_86")
    assert report.host_nodes == [] and report.gpu_nodes == 2
    assert [s.kind for s in report.segments] == ["gpu"]


@pytest.mark.parametrize("model", [cast_model, qdq_model])
def test_sub_byte_models_run_on_the_fake_device_with_the_reference_bits(model, monkeypatch):
    device = FakeDevice().install(monkeypatch)
    proto = model()
    run = run_model(device, compiled(proto), feeds(0))
    want = reference_outputs(original(proto), feeds(0))
    assert set(run.outputs) == set(want)
    for name, w in want.items():
        assert_same_values(run.outputs[name], np.asarray(w), name)


def test_the_int4_matmul_runs_on_the_fake_device_its_weights_dequantized_to_the_reference_bits(monkeypatch):
    device = FakeDevice().install(monkeypatch)
    run = run_model(device, compiled_matmul(dequantized_out=True), matmul_feeds(0), prefer=cublas_tactic)
    want = reference_outputs(original(int4_matmul(dequantized_out=True)), matmul_feeds(0))
    assert_same_bits(run.outputs["wd"], want["wd"], "wd")
    np.testing.assert_allclose(run.outputs["y"], want["y"], rtol=1e-5, atol=1e-4)
