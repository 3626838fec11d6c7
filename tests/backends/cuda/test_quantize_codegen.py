"""QuantizeLinear and DequantizeLinear kernels (ops/quantize_source.py through the elementwise
generator): ONNX's arithmetic, checked on the CPU by the fake device's interpreter running
each kernel's CUDA source, against the values the spec gives and against the reference
backend; NVRTC compiles every kernel for sm_75 and sm_90; shape-generic kernels are one
source over a profile.

The spec, as these tests read it: y = saturate(round_half_to_even(x / scale) + zero_point)
and x' = (y - zero_point) * scale, per tensor, per axis (a 1-D scale along ``axis``) or per
block of ``block_size`` along ``axis``; QuantizeLinear's output is its zero point's type
(uint8 without one), DequantizeLinear's the scale's."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.context import LowerContext
from rtxrt.backends.cuda.ops.elementwise import lower_elementwise
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.backends.cuda.plan.forms import NHWC, TensorForm
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Node, TensorType
from tests.backends.cuda.test_generic_elementwise import N, SEQ, generic, one_source, run
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.kernels import run_kernel

F32, F16, BF16, I32 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.INT32
I8, U8, I16, U16 = DType.INT8, DType.UINT8, DType.INT16, DType.UINT16
RANGE = {I8: (-128, 127), U8: (0, 255), I16: (-32768, 32767), U16: (0, 65535)}
OPSET = 21


def quantize(shape, out: DType | None = U8, x: DType = F32, scale_shape=(), scale: DType | None = None,
             **attrs) -> tuple[Node, list[TensorType]]:
    """A QuantizeLinear node and its input types (``out`` None: no zero point)."""
    types = [TensorType(x, shape), TensorType(scale or x, scale_shape)]
    if out is not None:
        types.append(TensorType(out, scale_shape))
    return Node("QuantizeLinear", ["x", "scale", "zero"][:len(types)], ["y"], attrs, name="q"), types


def dequantize(shape, x: DType = I8, scale: DType = F32, scale_shape=(), zero: bool = True,
               **attrs) -> tuple[Node, list[TensorType]]:
    types = [TensorType(x, shape), TensorType(scale, scale_shape)] + ([TensorType(x, scale_shape)] if zero else [])
    return Node("DequantizeLinear", ["x", "scale", "zero"][:len(types)], ["y"], attrs, name="dq"), types


def host(dtype: DType) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype == BF16 else np.dtype(dtype.numpy)


def gpu(node: Node, types: list[TensorType], arrays: list[np.ndarray]) -> np.ndarray:
    """The node's kernel run by the fake device on ``arrays``."""
    (out,) = run_kernel(FakeDevice(8 << 20), elementwise_kernel(node, types), arrays)
    return out


def reference(node: Node, arrays: list[np.ndarray]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(find_kernel(node.op_type)(node, OPSET, None).run(*arrays))


def same_as_reference(node: Node, types: list[TensorType], arrays: list[np.ndarray]) -> np.ndarray:
    got, want = gpu(node, types, arrays), reference(node, arrays)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return got


# ------------------------------------------------------------------ rounding and saturation

EDGES = np.array([2.5, -2.5, 3.5, 0.5, -0.5, 1.5, 1e9, -1e9, np.inf, -np.inf, 0.0, -0.0, 126.5, 127.5, np.nan],
                 np.float32)


@pytest.mark.parametrize("out", [I8, U8, I16, U16])
def test_quantize_rounds_half_to_even_and_saturates_to_each_output_type(out):
    zero = 10 if out in (U8, U16) else -3
    node, types = quantize(EDGES.shape, out)
    got = same_as_reference(node, types, [EDGES, np.float32(1.0), np.asarray(zero, out.numpy)])
    lo, hi = RANGE[out]
    rounded = [2, -2, 4, 0, -0, 2, 10**9, -10**9, 10**9, -10**9, 0, 0, 126, 128]
    want = [min(max(r + zero, lo), hi) for r in rounded] + [0]  # NaN: 0, as the reference (ONNX leaves it undefined)
    np.testing.assert_array_equal(got, np.array(want, out.numpy))


def test_quantize_divides_by_the_scale_before_rounding():
    """x / 0.5 = 2 * x: 1.25 -> 2.5 -> 2 and 1.75 -> 3.5 -> 4; with an inexact scale (0.1)
    the float32 quotient is the reference's on random values."""
    x = np.array([1.25, 1.75, -1.25, 0.25, 0.35, 0.45, 12.7], np.float32)
    node, types = quantize(x.shape, I8)
    got = same_as_reference(node, types, [x, np.float32(0.5), np.int8(0)])
    np.testing.assert_array_equal(got, [2, 4, -2, 0, 1, 1, 25])
    x = np.random.default_rng(0).uniform(-20, 20, (4, 1000)).astype(np.float32)
    node, types = quantize(x.shape, I8)
    same_as_reference(node, types, [x, np.float32(0.1), np.int8(5)])


@pytest.mark.parametrize("attrs, out", [({}, U8), ({"output_dtype": int(I8)}, I8), ({"output_dtype": int(U16)}, U16)])
def test_quantize_without_a_zero_point_writes_uint8_or_its_output_dtype(attrs, out):
    node, types = quantize((5,), None, **attrs)
    x = np.array([-300.0, -2.5, 2.5, 200.5, 7e4], np.float32)
    got = same_as_reference(node, types, [x, np.float32(1.0)])
    lo, hi = RANGE[out]
    assert got.dtype == out.numpy
    np.testing.assert_array_equal(got, np.clip([-300, -2, 2, 200, 70000], lo, hi))


def test_quantize_of_int32_divides_in_double():
    """5 * 2**24 + 1 is no float32: in float32 it would be 2.5 * 2**25 and round to 2."""
    x = np.array([5 * 2**24 + 1, -(5 * 2**24 + 1), 3 * 2**25], np.int32)
    node, types = quantize(x.shape, I8, x=I32, scale=F32)
    got = same_as_reference(node, types, [x, np.float32(2**25), np.int8(0)])
    np.testing.assert_array_equal(got, [3, -3, 3])


# ------------------------------------------------------------------ fp16 and bf16

def test_an_fp16_quotient_is_rounded_to_fp16_before_it_is_rounded_to_an_integer():
    """With fp16 x and scale, x / scale is an fp16 division (numpy's, the reference's and
    ONNX's: the scale's type), computed in fp32 and rounded once: some quotients land on a tie
    only in fp16, and then round to even."""
    x = np.arange(1, 2048, dtype=np.float16)
    scale = np.float16(3.0)
    fp16 = np.rint((x / scale).astype(np.float64))
    fp32 = np.rint(x.astype(np.float32) / np.float32(scale))
    assert (fp16 != fp32).any()  # the test has cases where the two differ
    node, types = quantize(x.shape, I16, x=F16)
    got = same_as_reference(node, types, [x, scale, np.int16(0)])
    np.testing.assert_array_equal(got, fp16.astype(np.int16))


def test_a_bf16_input_quantizes_like_the_reference():
    x = np.linspace(-300, 300, 1001).astype(ml_dtypes.bfloat16)
    node, types = quantize(x.shape, I8, x=BF16)
    same_as_reference(node, types, [x, np.asarray(0.75, ml_dtypes.bfloat16), np.int8(-1)])


@pytest.mark.parametrize("scale", [F16, BF16])
def test_dequantize_with_a_16_bit_scale_writes_the_scales_type_rounded_once(scale):
    x = np.arange(-128, 128, dtype=np.int8)
    node, types = dequantize(x.shape, I8, scale)
    s = np.asarray(0.0123, host(scale))
    got = same_as_reference(node, types, [x, s, np.int8(3)])
    assert got.dtype == host(scale)
    want = ((x.astype(np.float32) - 3) * np.float32(s)).astype(host(scale))  # fp32 product, one rounding
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


# ------------------------------------------------------------------ DequantizeLinear

@pytest.mark.parametrize("dtype", [I8, U8, I16, U16, I32])
def test_dequantize_subtracts_the_zero_point_exactly_then_scales_in_fp32(dtype):
    info = np.iinfo(dtype.numpy)
    x = np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1], dtype.numpy)
    zero = np.asarray(info.min if dtype == I32 else info.max // 3, dtype.numpy)
    node, types = dequantize(x.shape, dtype)
    got = same_as_reference(node, types, [x, np.float32(0.37), zero])
    exact = x.astype(np.int64) - int(zero)  # int32: up to 2**32 - 1, no wrapping
    np.testing.assert_array_equal(got, exact.astype(np.float32) * np.float32(0.37))


def test_dequantize_without_a_zero_point():
    x = np.array([0, 1, 255, 128], np.uint8)
    node, types = dequantize(x.shape, U8, zero=False)
    np.testing.assert_array_equal(same_as_reference(node, types, [x, np.float32(0.5)]), [0, 0.5, 127.5, 64])


# ------------------------------------------------------------------ per axis and blocked

@pytest.mark.parametrize("axis", [0, 1, -1, 3])
def test_per_axis_quantization_reads_one_scale_and_zero_point_per_index_along_axis(axis):
    shape = (2, 3, 4, 5)
    rng = np.random.default_rng(axis + 10)
    n = shape[axis]
    x = rng.uniform(-50, 50, shape).astype(np.float32)
    scale = rng.uniform(0.1, 1.0, n).astype(np.float32)
    zero = rng.integers(-20, 20, n).astype(np.int8)
    node, types = quantize(shape, I8, scale_shape=(n,), axis=axis)
    got = same_as_reference(node, types, [x, scale, zero])
    along = [n if d == axis % 4 else 1 for d in range(4)]
    want = np.clip(np.rint(x / scale.reshape(along)) + zero.reshape(along), -128, 127)
    np.testing.assert_array_equal(got, want)
    node, types = dequantize(shape, I8, scale_shape=(n,), axis=axis)
    back = same_as_reference(node, types, [got, scale, zero])
    np.testing.assert_array_equal(back, (got.astype(np.float32) - zero.reshape(along)) * scale.reshape(along))


def test_a_per_axis_scale_of_one_element_is_a_per_tensor_scale():
    node, types = quantize((2, 3), U8, scale_shape=(1,), axis=1)
    x = np.array([[1.0, 2.5, 3.5], [-1.0, 9.0, 600.0]], np.float32)
    got = same_as_reference(node, types, [x, np.array([0.5], np.float32), np.array([100], np.uint8)])
    np.testing.assert_array_equal(got, [[102, 105, 107], [98, 118, 255]])


@pytest.mark.parametrize("shape, axis, block", [((2, 8, 3), 1, 4), ((4, 64), -1, 16), ((6, 5), 0, 2),
                                                ((3, 5), 1, 8)])
def test_blocked_quantization_shares_one_scale_per_block_along_axis(shape, axis, block):
    """opset 21: ``block_size`` consecutive values along ``axis`` share a scale and a zero
    point (the last case: one block longer than the axis, a partial block that spans it)."""
    rng = np.random.default_rng(block)
    axis %= len(shape)
    blocks = -(-shape[axis] // block)
    params = tuple(blocks if d == axis else n for d, n in enumerate(shape))
    x = rng.uniform(-30, 30, shape).astype(np.float32)
    scale = rng.uniform(0.05, 0.5, params).astype(np.float32)
    zero = rng.integers(0, 255, params).astype(np.uint8)
    node, types = quantize(shape, U8, scale_shape=params, axis=axis, block_size=block)
    got = same_as_reference(node, types, [x, scale, zero])
    per_element = [np.repeat(p, block, axis=axis).take(range(shape[axis]), axis=axis) for p in (scale, zero)]
    np.testing.assert_array_equal(got, np.clip(np.rint(x / per_element[0]) + per_element[1], 0, 255))
    node, types = dequantize(shape, U8, F16, scale_shape=params, axis=axis, block_size=block)
    same_as_reference(node, types, [got, scale.astype(np.float16), zero])


def test_a_partial_last_block_is_a_clear_codegen_error():
    node, types = dequantize((3, 10), I8, scale_shape=(3, 3), axis=1, block_size=4)
    with pytest.raises(CodegenError, match=r"DequantizeLinear node 'dq': block_size 4 does not divide"):
        elementwise_kernel(node, types)


def test_the_scale_is_read_along_axis_without_copying_it():
    node, types = quantize((2, 3, 4, 5), I8, scale_shape=(3,), axis=1)
    kernel = elementwise_kernel(node, types)
    assert "in1[c1]" in kernel.source and "in2[c1]" in kernel.source
    # the arguments are the node's buffers as they are (a view changes no byte)
    assert [a.shape for a in kernel.args] == [(2, 3, 4, 5), (3,), (3,), (2, 3, 4, 5)]


# ------------------------------------------------------------------ layouts, fusion, refusals

def lower(node: Node, forms: list[TensorForm], out: TensorForm):
    ctx = LowerContext(node, forms, [out], [None] * len(forms), OPSET, "sm_86", 46)
    return lower_elementwise(ctx)


def test_a_per_tensor_node_runs_channels_last_and_a_per_axis_one_only_in_the_logical_layout():
    x = TensorForm(F32, (1, 8, 4, 4), NHWC)
    node, _ = quantize((1, 8, 4, 4), I8)
    (program,) = lower(node, [x, TensorForm(F32, ()), TensorForm(I8, ())], TensorForm(I8, (1, 8, 4, 4), NHWC))
    assert program.outputs[0].layout == NHWC
    node, _ = quantize((1, 8, 4, 4), I8, scale_shape=(8,), axis=1)
    per_axis = [x, TensorForm(F32, (8,)), TensorForm(I8, (8,))]
    with pytest.raises(CodegenError, match="presented channels-last"):  # the builder then offers NCHW
        lower(node, per_axis, TensorForm(I8, (1, 8, 4, 4), NHWC))
    (program,) = lower(node, [x.logical, *per_axis[1:]], TensorForm(I8, (1, 8, 4, 4)))
    assert program.outputs[0].layout == ""


def fused(nodes: list[Node], inputs: dict[str, TensorType], constants: dict[str, np.ndarray]) -> Node:
    body = Graph(nodes, list(inputs), [nodes[-1].outputs[0]], dict(inputs), constants, name="chain")
    return Node("Elementwise", list(inputs), ["out"], {"body": body}, name="chain", domain="rtxrt")


def fused_quantize_dequantize(zero_point: np.ndarray, values: np.ndarray) -> tuple[KernelSource, np.ndarray, np.ndarray]:
    """QuantizeLinear -> DequantizeLinear (scale 0.25, ``zero_point``'s type) fused into one
    kernel and run on ``values``: the kernel, its output, and the reference's (the two nodes
    one after the other)."""
    x = TensorType(F32, values.shape)
    chain = fused([Node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                   Node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                  {"x": x}, {"s": np.array(0.25, np.float32), "z": zero_point})
    kernel = elementwise_kernel(chain, [x])
    (got,) = run_kernel(FakeDevice(8 << 20), kernel, [values])
    q, dq = chain.attrs["body"].nodes
    constants = [chain.attrs["body"].initializers[k] for k in ("s", "z")]
    return kernel, got, reference(dq, [reference(q, [values, *constants]), *constants])


def test_a_fused_relu_quantize_dequantize_chain_is_one_fake_quantization_kernel():
    x = TensorType(F32, (4, 300))
    chain = fused([Node("Relu", ["x"], ["r"], name="relu"),
                   Node("QuantizeLinear", ["r", "s", "z"], ["q"], name="q"),
                   Node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                  {"x": x}, {"s": np.array(0.0625, np.float32), "z": np.array([3], np.uint8)})
    kernel = elementwise_kernel(chain, [x])
    assert [a.name for a in kernel.args] == ["in0", "out0"]  # scale and zero point are literals
    assert kernel.source.count("rtx_qsat(") == 1 + 2  # the float and double helpers, one call
    values = np.random.default_rng(1).uniform(-5, 20, x.shape).astype(np.float32)
    values.reshape(-1)[:4] = [0.09375, 0.03125, 1e9, np.nan]  # ties (1.5, 0.5), saturation, NaN
    (got,) = run_kernel(FakeDevice(8 << 20), kernel, [values])
    q = np.clip(np.rint(np.maximum(values, 0) / np.float32(0.0625)) + 3, 0, 255)
    q[np.isnan(values)] = 0
    np.testing.assert_array_equal(got, (q - 3).astype(np.float32) * np.float32(0.0625))


def test_a_fused_body_refuses_a_per_axis_scale_it_would_broadcast_wrongly():
    x, s = TensorType(F32, (2, 3, 3)), TensorType(F32, (3,))
    chain = fused([Node("Relu", ["x"], ["r"]), Node("QuantizeLinear", ["r", "s"], ["y"], {"axis": 1}, name="q")],
                  {"x": x, "s": s}, {})
    with pytest.raises(CodegenError, match="per-axis or blocked scale"):
        elementwise_kernel(chain, [x, s])


@pytest.mark.parametrize("node, types, message", [
    (*quantize((4,), DType.FLOAT4E2M1),
     "QuantizeLinear node 'q': QuantizeLinear with output type float4e2m1 runs on the host"),
    (*quantize((4,), None, output_dtype=int(DType.FLOAT4E2M1)), "output type float4e2m1"),
    (*dequantize((4,), DType.FLOAT4E2M1),
     "DequantizeLinear node 'dq': DequantizeLinear with an input of type float4e2m1"),
    (*dequantize((4,), I8, DType.FLOAT8E8M0, zero=False), "a scale of type float8e8m0"),
])
def test_float4_and_float8e8m0_scales_are_clear_codegen_errors_naming_the_node(node, types, message):
    """(The four float8 types and the sub-byte integers have kernels:
    tests/backends/cuda/test_float8_codegen.py, tests/backends/cuda/test_int4_codegen.py.)"""
    with pytest.raises(CodegenError, match=message):
        elementwise_kernel(node, types)


# ------------------------------------------------------------------ shape-generic kernels

def random_arrays(rng: np.random.Generator, types: list[TensorType]) -> list[np.ndarray]:
    return [rng.uniform(-40, 40, t.shape).astype(host(t.dtype)) if t.dtype.is_float
            else rng.integers(0, 100, t.shape).astype(t.dtype.numpy) for t in types]


GENERIC = {  # name -> (the node and its types for dims d, the shapes of a profile)
    "per tensor": (lambda d: quantize((d[N], d[SEQ], 64), I8), [{N: 1, SEQ: 7}, {N: 3, SEQ: 40}]),
    "per channel": (lambda d: dequantize((d[N], 16, d[SEQ], 8), I8, scale_shape=(16,), axis=1),
                    [{N: 1, SEQ: 3}, {N: 2, SEQ: 5}]),
    "blocked": (lambda d: dequantize((d[N], 64), U8, F16, scale_shape=(d[N], 2), axis=1, block_size=32),
                [{N: 1, SEQ: 1}, {N: 5, SEQ: 1}]),
}


@pytest.mark.parametrize("name", GENERIC)
def test_quantization_over_varying_dims_is_one_source_computing_the_reference_at_each_shape(name):
    spec, shapes = GENERIC[name]
    kernels = one_source(lambda d: elementwise_kernel(*spec(d)), shapes)
    assert kernels[0].dims and "rtxd_" in kernels[0].source
    rng = np.random.default_rng(3)
    for values, kernel in zip(shapes, kernels):
        node, types = spec(values)  # the same node at these shapes, plain ints
        arrays = random_arrays(rng, types)
        arrays[1] = np.abs(arrays[1]) + host(types[1].dtype).type(0.01)  # positive scales
        got = run(kernel, arrays, host(kernel.outputs[0].dtype))
        np.testing.assert_array_equal(got, reference(node, arrays))


def test_a_block_along_a_varying_axis_is_refused_it_may_not_divide_at_another_shape():
    with pytest.raises(CodegenError, match="does not divide"):
        generic(lambda d: elementwise_kernel(*dequantize((2, d[SEQ]), I8, scale_shape=(2, 4), axis=1, block_size=8)),
                {SEQ: 32})


# ------------------------------------------------------------------ NVRTC

def specs() -> dict[str, tuple[Node, list[TensorType]]]:
    """One node of each kind these tests run, by name (the GPU test runs them too)."""
    cases = {f"quantize to {t.short}": quantize((3, 67), t) for t in (I8, U8, I16, U16)}
    cases |= {
        "quantize without zero point": quantize((3, 67), None),
        "quantize float16": quantize((3, 67), I8, x=F16),
        "quantize bfloat16": quantize((3, 67), U8, x=BF16),
        "quantize int32": quantize((3, 67), I8, x=I32, scale=F32),
        "quantize per axis": quantize((2, 3, 4, 5), I8, scale_shape=(3,), axis=1),
        "quantize blocked": quantize((2, 8, 3), U8, scale_shape=(2, 2, 3), axis=1, block_size=4),
    }
    cases |= {f"dequantize {t.short}": dequantize((3, 67), t) for t in (I8, U8, I16, U16, I32)}
    cases |= {
        "dequantize to float16": dequantize((3, 67), I8, F16),
        "dequantize to bfloat16": dequantize((3, 67), U8, BF16, zero=False),
        "dequantize per axis": dequantize((2, 3, 4, 5), I8, scale_shape=(5,), axis=-1),
        "dequantize blocked": dequantize((4, 64), U8, F16, scale_shape=(4, 4), axis=1, block_size=16),
    }
    return cases


def catalogue():
    """Every kind of kernel these tests make: ``specs``, a fused chain, the generic ones."""
    kernels = [elementwise_kernel(node, types) for node, types in specs().values()]
    x = TensorType(F16, (4, 300))
    chain = fused([Node("Relu", ["x"], ["r"]), Node("QuantizeLinear", ["r", "s", "z"], ["q"]),
                   Node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                  {"x": x}, {"s": np.array(0.0625, np.float16), "z": np.array(3, np.int8)})
    kernels.append(elementwise_kernel(chain, [x]))
    for spec, shapes in GENERIC.values():
        kernels.append(generic(lambda d: elementwise_kernel(*spec(d)), shapes[0]))
    return kernels


def test_every_quantization_kernel_compiles_for_sm_75_and_sm_90():
    built = catalogue()
    kernels = {k.name: k.source for k in built}
    assert len(kernels) == len(built)  # each a kernel of its own
    for arch in ("sm_75", "sm_90"):
        cubins = compile_many(kernels.items(), arch)
        assert set(cubins) == set(kernels) and all(c.startswith(b"\x7fELF") for c in cubins.values())
