"""float8 tensors in generated kernels: ONNX's FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2 and
FLOAT8E5M2FNUZ, stored as their one-byte codes and held as float in registers
(codegen/ctypes_map.py FLOAT8_PRELUDE), in ONNX's ops that take float8: Cast (CastLike
becomes one), QuantizeLinear, DequantizeLinear, IsNaN, IsInf, and the copies that move bytes
(Transpose, Pad, ...; Reshape and the like are views).

The spec, as these tests read it (ONNX Cast from opset 19; ml_dtypes, which the reference
backend converts with, gives the bits): float -> float8 rounds to nearest, ties to even; with
saturate=1 (the default) finite values past the largest and infinities become +-largest, with
saturate=0 they become inf in e5m2 and NaN in the others. e4m3fn has no inf; the fnuz types
have one NaN (0x80) and no -0. float8 -> float is exact; doubles and integers convert through
float. QuantizeLinear to float8 is Cast(x / scale + zero point) without rint; DequantizeLinear
is (x - zero point) * scale in float32.

Checked on the CPU by the fake device's interpreter running each kernel's CUDA source (the
conversions are plain bit arithmetic, the same on every arch): every float8 code; every
midpoint between neighbouring codes (the ties) and its float neighbours; every float32 whose
top 16 bits take each of their 2**16 values, with guard and sticky patterns below; every fp16
and bf16. NVRTC compiles the kernels for every supported arch (no cuda_fp8.h, no sm_89 cvt).
Float8 models plan with no node on the host and run on the fake device with the reference's
bits. tests/backends/cuda/test_gpu_float8.py runs the casts, ``specs`` and the models on a GPU.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen import ctypes_map as C
from rtxrt.backends.cuda.ops.data_movement_source import transpose_kernel
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.backends.cuda.ops.pad_source import pad_kernel
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.reference.ops.cast import cast_to
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from tests.backends.cuda.helpers import compile_for_every_arch
from tests.backends.cuda.test_quantize_codegen import dequantize, fused, fused_quantize_dequantize, quantize, reference
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.engine import reference_outputs, run_model
from tests.fake_gpu.kernels import run_kernel
from tests.fake_gpu.models import compiled, original
from tests.helpers import make_model

E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ = (DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2,
                                    DType.FLOAT8E5M2FNUZ)
FLOAT8 = [E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ]
F32, F16, BF16, F64, B = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.BOOL
INTS = [DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64]
OTHERS = [F32, F16, BF16, F64, B, *INTS]
LARGEST = {E4M3FN: 448.0, E4M3FNUZ: 240.0, E5M2: 57344.0, E5M2FNUZ: 57344.0}
SMALLEST = {E4M3FN: 2.0**-9, E4M3FNUZ: 2.0**-10, E5M2: 2.0**-16, E5M2FNUZ: 2.0**-17}  # subnormal
NAN_CODES = {E4M3FN: {0x7F, 0xFF}, E4M3FNUZ: {0x80}, E5M2: {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}, E5M2FNUZ: {0x80}}


def short(dtype: DType) -> str:
    return dtype.short


def host(dtype: DType) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype == BF16 else np.dtype(dtype.numpy)


def bits(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.view(f"u{array.dtype.itemsize}") if array.dtype != np.bool_ else array


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype)
    bad = bits(got) != bits(want)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} differ, first at {tuple(first)}: "
                             f"{got[tuple(first)]!r} vs {want[tuple(first)]!r}")


def assert_same_values(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """The same bits, or NaN on both sides: a GPU's arithmetic makes its canonical NaN (no
    sign, no payload), ONNX does not say which NaN."""
    nan = np.isnan(np.asarray(got, np.float64)) & np.isnan(np.asarray(want, np.float64))
    assert_same_bits(np.where(nan, want, got).astype(want.dtype), want, what)


def codes(dtype: DType) -> np.ndarray:
    """Every code of float8 ``dtype``."""
    return np.arange(256, dtype=np.uint8).view(dtype.numpy)


def cast_node(to: DType, saturate: int = 1) -> Node:
    return Node("Cast", ["x"], ["y"], {"to": int(to), "saturate": saturate}, name="cast")


def gpu_cast(x: np.ndarray, src: DType, dst: DType, saturate: int = 1) -> np.ndarray:
    """Cast run by the fake device's interpreter: the kernel's CUDA source."""
    kernel = elementwise_kernel(cast_node(dst, saturate), [TensorType(src, x.shape)])
    (out,) = run_kernel(FakeDevice(32 << 20), kernel, [x])
    return out


def reference_cast(x: np.ndarray, dst: DType, saturate: int = 1) -> np.ndarray:
    with np.errstate(all="ignore"):
        return cast_to(x, dst, bool(saturate))


def probes(dtype: DType) -> np.ndarray:
    """float32 values that exercise float -> float8 rounding: every finite code's value, every
    midpoint between neighbours (a tie) and the floats beside it, zeros, infinities, NaNs with
    payloads, float subnormals, and every float32 whose top 16 bits take each of their 2**16
    values (all signs, exponents and leading mantissa bits) with the bits below all clear, the
    last set, the first set (a guard bit), or all set."""
    values = codes(dtype).astype(np.float32)
    finite = np.unique(values[np.isfinite(values)])
    midpoints = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)  # exact in float32
    beside = [np.nextafter(midpoints, np.float32(np.inf)), np.nextafter(midpoints, np.float32(-np.inf))]
    special = np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0x00000001,
                        0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF], np.uint32).view(np.float32)
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    patterns = [(high | low).view(np.float32) for low in (0x0000, 0x0001, 0x8000, 0xFFFF)]
    return np.concatenate([finite, midpoints, *beside, special, *patterns])


# ---------------------------------------------------------------- float8 -> float

@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_every_float8_code_widens_to_the_float_the_reference_gives(dtype):
    got = gpu_cast(codes(dtype), dtype, F32)
    assert_same_bits(got, codes(dtype).astype(np.float32), dtype.short)  # NaN's sign and payload too
    assert got[1] == SMALLEST[dtype] and np.nanmax(got[np.isfinite(got)]) == LARGEST[dtype]
    assert set(np.flatnonzero(np.isnan(got))) == NAN_CODES[dtype]
    infinities = set(np.flatnonzero(np.isinf(got)))
    assert infinities == ({0x7C, 0xFC} if dtype == E5M2 else set())  # only e5m2 has inf
    assert np.signbit(got[0x80]) if dtype in (E4M3FN, E5M2) else np.isnan(got[0x80])  # -0, or fnuz's NaN


# ---------------------------------------------------------------- float -> float8

@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_float_to_float8_gives_the_reference_bits(dtype, saturate):
    x = probes(dtype)
    assert_same_bits(gpu_cast(x, F32, dtype, saturate), reference_cast(x, dtype, saturate), dtype.short)


@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_a_tie_rounds_to_the_neighbour_with_the_even_code(dtype):
    positive = np.arange(0x80, dtype=np.uint8)
    values = positive.view(dtype.numpy).astype(np.float64)
    finite = np.isfinite(values)
    low, up = positive[finite][:-1], positive[finite][1:]  # neighbouring codes, value order
    midpoints = ((values[low] + values[up]) / 2).astype(np.float32)
    got = gpu_cast(np.concatenate([midpoints, -midpoints]), F32, dtype).view(np.uint8)
    even = np.where(low % 2 == 0, low, up).astype(np.uint8)
    negative = even | 0x80 if dtype in (E4M3FN, E5M2) else np.where(even == 0, 0, even | 0x80)  # fnuz: no -0
    np.testing.assert_array_equal(got, np.concatenate([even, negative.astype(np.uint8)]))


OUT_OF_RANGE = np.array([np.inf, -np.inf, 1e9, -1e9, np.nan, -1e-30, 1e-30], np.float32)


@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_saturation_infinities_nan_and_tiny_values_follow_the_spec(dtype):
    top = LARGEST[dtype]
    saturated = gpu_cast(OUT_OF_RANGE, F32, dtype, 1).astype(np.float32)
    np.testing.assert_array_equal(saturated, [top, -top, top, -top, np.nan, 0, 0])
    beyond = np.inf if dtype == E5M2 else np.nan  # e5m2 has inf; the others make NaN
    plain = gpu_cast(OUT_OF_RANGE, F32, dtype, 0).astype(np.float32)
    np.testing.assert_array_equal(plain, [beyond, -beyond, beyond, -beyond, np.nan, 0, 0])
    assert np.signbit(plain[5]) == (dtype in (E4M3FN, E5M2))  # -1e-30 is -0 where -0 exists
    if dtype in (E4M3FNUZ, E5M2FNUZ):  # one NaN, whatever the sign
        assert set(gpu_cast(OUT_OF_RANGE, F32, dtype, 0).view(np.uint8)[[0, 1, 4]]) == {0x80}


# ---------------------------------------------------------------- Cast with the other types

def source_values(dtype: DType) -> np.ndarray:
    """Values of ``dtype`` to cast to float8: every fp16 and bf16, probing doubles (the
    float32 probes and doubles just beside them, which round through float as ml_dtypes does),
    integers around every float8 range and each type's extremes, both bools."""
    if dtype in (F16, BF16):
        return np.arange(1 << 16, dtype=np.uint16).view(host(dtype))
    if dtype == F32:
        return probes(E5M2)
    if dtype == F64:
        with np.errstate(invalid="ignore"):  # (signaling NaNs among the probes)
            near = probes(E4M3FN).astype(np.float64)
        return np.concatenate([near, near * (1 + 2.0**-40), near * (1 - 2.0**-40), [1e300, -1e300, 1e-300]])
    if dtype == B:
        return np.array([False, True])
    info = np.iinfo(dtype.numpy)
    wide = np.arange(max(info.min, -70000), min(info.max, 70000) + 1).astype(dtype.numpy)
    return np.concatenate([wide, np.array([info.min, info.max], dtype.numpy)])


@pytest.mark.parametrize("other", OTHERS, ids=short)
@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_cast_to_float8_from_every_type_gives_the_reference_bits(dtype, other):
    x = source_values(other)
    for saturate in (1, 0):
        got = gpu_cast(x, other, dtype, saturate)
        assert_same_bits(got, reference_cast(x, dtype, saturate), f"{other.short} -> {dtype.short} saturate={saturate}")


@pytest.mark.parametrize("other", OTHERS, ids=short)
@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_cast_from_float8_to_every_type_gives_the_reference_bits(dtype, other):
    x = codes(dtype)
    if other in INTS:  # NaN and inf have no integer value (ONNX leaves it undefined)
        x = x[np.isfinite(x.astype(np.float32))]
    assert_same_bits(gpu_cast(x, dtype, other), reference_cast(x, other), f"{dtype.short} -> {other.short}")


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("dst", FLOAT8, ids=short)
@pytest.mark.parametrize("src", FLOAT8, ids=short)
def test_cast_between_float8_types_gives_the_reference_bits(src, dst, saturate):
    got = gpu_cast(codes(src), src, dst, saturate)
    assert_same_bits(got, reference_cast(codes(src), dst, saturate), f"{src.short} -> {dst.short}")


# ---------------------------------------------------------------- QuantizeLinear and DequantizeLinear

def gpu(node: Node, types: list[TensorType], arrays: list[np.ndarray]) -> np.ndarray:
    (out,) = run_kernel(FakeDevice(32 << 20), elementwise_kernel(node, types), arrays)
    return out


def same_as_reference(node: Node, types: list[TensorType], arrays: list[np.ndarray]) -> np.ndarray:
    got = gpu(node, types, arrays)
    assert_same_values(got, reference(node, arrays), node.label)
    return got


EDGES = (np.inf, -np.inf, np.nan, 0.0, -0.0, 1e9, -1e9, 1e-30)


def specs() -> dict[str, tuple[Node, list[TensorType]]]:
    """The float8 Q/DQ kernels these tests run, by name (the GPU test runs them too)."""
    cases = {}
    for t in FLOAT8:
        cases[f"quantize to {t.short}"] = quantize((3, 67), t)
        cases[f"quantize to {t.short} without saturation"] = quantize((3, 67), t, saturate=0)
        cases[f"dequantize {t.short}"] = dequantize((4, 64), t)
    cases |= {
        "quantize without zero point": quantize((3, 67), None, output_dtype=int(E4M3FN)),
        "quantize float16": quantize((3, 67), E5M2, x=F16),
        "quantize bfloat16": quantize((3, 67), E4M3FN, x=BF16),
        "quantize int32": quantize((3, 67), E4M3FN, x=DType.INT32, scale=F32),
        "quantize per axis": quantize((2, 3, 4, 5), E4M3FN, scale_shape=(3,), axis=1),
        "quantize blocked": quantize((2, 8, 3), E5M2, scale_shape=(2, 2, 3), axis=1, block_size=4),
        "dequantize to float16": dequantize((4, 64), E4M3FN, F16),
        "dequantize to bfloat16": dequantize((4, 64), E5M2, BF16, zero=False),
        "dequantize per axis": dequantize((2, 3, 4, 5), E4M3FNUZ, scale_shape=(5,), axis=-1),
        "dequantize blocked": dequantize((4, 64), E5M2FNUZ, F16, scale_shape=(4, 4), axis=1, block_size=16),
    }
    return cases


def inputs(case: str, node: Node, types: list[TensorType]) -> list[np.ndarray]:
    """Random inputs for ``specs()[case]``: x over every float8 range (then the edge values),
    or every float8 code; a positive scale; a zero point of small float8 values."""
    rng = np.random.default_rng(sum(map(ord, case)))
    arrays = []
    for k, t in enumerate(types):
        if k == 0 and t.dtype in C.FLOAT8:  # DequantizeLinear's x: every code, repeated
            a = np.resize(codes(t.dtype), t.shape)
        elif k == 0 and t.dtype == DType.INT32:
            a = rng.integers(-10**6, 10**6, t.shape).astype(np.int32)
        elif k == 0:
            with np.errstate(over="ignore"):  # (past fp16's range: inf)
                a = (rng.standard_normal(t.shape) * 10.0 ** rng.uniform(-6, 6, t.shape)).astype(host(t.dtype))
                a.reshape(-1)[:len(EDGES)] = np.asarray(EDGES).astype(host(t.dtype))
        elif k == 1:
            a = rng.uniform(0.05, 4, t.shape).astype(host(t.dtype))
        else:
            a = np.asarray(rng.choice([0.0, 0.5, -1.5, 2.0], t.shape)).astype(host(t.dtype))
        arrays.append(a)
    return arrays


@pytest.mark.parametrize("case", list(specs()))
def test_each_float8_quantization_kernel_gives_the_reference_bits(case):
    node, types = specs()[case]
    same_as_reference(node, types, inputs(case, node, types))


@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_quantize_to_float8_divides_adds_the_zero_point_and_rounds_once_to_even(dtype):
    """2.125 / 2 = 1.0625, e4m3's tie between 1 and 1.125 (the even code, 1, wins; e5m2 is
    past its ties there): 1. A zero point of 0.125 is added before the one rounding: 1.1875,
    e4m3's tie between 1.125 and 1.25 (even: 1.25) and past e5m2's tie 1.125: 1.25. -0 plus a
    zero point of +0 is +0; without a zero point -0 stays -0 where the type has it."""
    x = np.array([2.125, -2.125, 1e6, -0.0], np.float32)
    node, types = quantize(x.shape, dtype)
    got = same_as_reference(node, types, [x, np.float32(2.0), np.asarray(0.0, dtype.numpy)]).astype(np.float32)
    np.testing.assert_array_equal(got, [1.0, -1.0, LARGEST[dtype], 0.0])
    assert not np.signbit(got[3])
    shifted = same_as_reference(node, types, [x, np.float32(2.0), np.asarray(0.125, dtype.numpy)]).astype(np.float32)
    assert shifted[0] == 1.25
    node, types = quantize(x.shape, None, output_dtype=int(dtype))
    plain = same_as_reference(node, types, [x, np.float32(2.0)]).astype(np.float32)
    assert np.signbit(plain[3]) == (dtype in (E4M3FN, E5M2))


def test_dequantize_subtracts_the_zero_point_in_float_then_scales():
    x = codes(E5M2)
    node, types = dequantize(x.shape, E5M2)
    zero = np.asarray(-57344.0, ml_dtypes.float8_e5m2)
    got = same_as_reference(node, types, [x, np.float32(0.5), zero])
    finite = np.isfinite(x.astype(np.float32))
    np.testing.assert_array_equal(got[finite], (x[finite].astype(np.float32) + np.float32(57344)) * np.float32(0.5))


def test_a_fused_quantize_dequantize_chain_holds_float8_in_registers_rounded_once():
    """Q -> DQ in one body (a fake-quantization kernel, float in and out): the float8 value
    is rounded (and saturated) once, where DequantizeLinear reads it."""
    values = np.random.default_rng(4).uniform(-200, 200, (4, 300)).astype(np.float32)
    values.reshape(-1)[:len(EDGES)] = EDGES
    kernel, got, want = fused_quantize_dequantize(np.array(0, ml_dtypes.float8_e4m3fn), values)
    assert [a.name for a in kernel.args] == ["in0", "out0"]
    assert kernel.source.count("rtx_f2f8(") == 1 + 1 and kernel.source.count("rtx_sat(") == 1 + 1
    assert_same_values(got, want)


def test_a_cast_to_float8_and_back_is_one_rounding_in_a_fused_body():
    x = TensorType(F32, (1000,))
    chain = fused([Node("Cast", ["x"], ["c"], {"to": int(E5M2), "saturate": 0}, name="narrow"),
                   Node("Cast", ["c"], ["y"], {"to": int(F32)}, name="wide")], {"x": x}, {})
    values = np.random.default_rng(5).choice(probes(E5M2), 1000)
    (got,) = run_kernel(FakeDevice(8 << 20), elementwise_kernel(chain, [x]), [values])
    assert_same_bits(got, reference_cast(values, E5M2, 0).astype(np.float32))


@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_isnan_and_isinf_read_float8_codes(dtype):
    x = codes(dtype)
    for op, want in (("IsNaN", np.isnan), ("IsInf", np.isinf)):
        node = Node(op, ["x"], ["y"], name=op.lower())
        (got,) = run_kernel(FakeDevice(8 << 20), elementwise_kernel(node, [TensorType(dtype, x.shape)]), [x])
        np.testing.assert_array_equal(got, want(x.astype(np.float32)), err_msg=f"{op} {dtype.short}")


# ---------------------------------------------------------------- what float8 is not

@pytest.mark.parametrize("node, types", [
    (Node("Relu", ["x"], ["y"], name="relu"), [TensorType(E4M3FN, (8,))]),
    (Node("Add", ["a", "b"], ["y"], name="add"), [TensorType(E5M2, (8,))] * 2),
])
def test_ops_that_compute_refuse_float8_it_has_no_arithmetic_in_onnx(node, types):
    with pytest.raises(CodegenError, match=f"no generated kernel for {node.op_type} on float8"):
        elementwise_kernel(node, types)


def test_kernels_that_compute_on_their_elements_still_refuse_float8():
    """``check`` without ``float8`` is what the arithmetic generators (reductions, scatters
    that combine, fills, ...) ask: float8 stays on the host there."""
    with pytest.raises(CodegenError, match="do not handle float8e4m3fn"):
        C.check(E4M3FN)
    assert C.check(E4M3FN, float8=True) == E4M3FN


def test_a_float8_copy_is_the_byte_copy_a_uint8_one_is():
    def source(dtype: DType) -> str:
        return transpose_kernel((2, 3, 4), (2, 0, 1), dtype).source

    assert source(E5M2FNUZ) == source(DType.UINT8)


# ---------------------------------------------------------------- NVRTC

def catalogue() -> dict[str, str]:
    """Every kind of float8 kernel: Cast both ways for each type (and from/to a double, an
    integer, fp16), the Q/DQ specs, a fused chain, a float8 transpose and pad."""
    kernels = []
    for t in FLOAT8:
        kernels += [elementwise_kernel(cast_node(t, s), [TensorType(F32, (5, 67))]) for s in (0, 1)]
        kernels.append(elementwise_kernel(cast_node(F32), [TensorType(t, (5, 67))]))
    kernels += [elementwise_kernel(cast_node(E4M3FN), [TensorType(src, (5, 67))]) for src in (F64, DType.INT64, F16)]
    kernels += [elementwise_kernel(cast_node(dst), [TensorType(E5M2, (5, 67))]) for dst in (DType.INT8, BF16, E4M3FN)]
    kernels += [elementwise_kernel(node, types) for node, types in specs().values()]
    x = TensorType(F16, (4, 300))
    kernels.append(elementwise_kernel(fused([Node("QuantizeLinear", ["x", "s"], ["q"], {"output_dtype": int(E5M2)}),
                                             Node("DequantizeLinear", ["q", "s"], ["y"])],
                                            {"x": x}, {"s": np.array(0.25, np.float16)}), [x]))
    kernels.append(transpose_kernel((2, 3, 33), (1, 0, 2), E4M3FN))
    kernels.append(pad_kernel((2, 3), [1, 0, 0, 2], E5M2, value=np.array(-1.5, ml_dtypes.float8_e5m2)))
    return {k.name: k.source for k in kernels}


def test_every_float8_kernel_compiles_for_every_supported_arch():
    compile_for_every_arch(catalogue())


# ---------------------------------------------------------------- whole models

FLOAT, E4, E5 = TensorProto.FLOAT, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2


def cast_model():
    """x -> each float8 type (saturating and not) -> float again by CastLike (a Cast once
    compiled)."""
    nodes, outputs = [], []
    for k, (to, saturate) in enumerate([(E4, 1), (E5, 0), (TensorProto.FLOAT8E4M3FNUZ, 1),
                                        (TensorProto.FLOAT8E5M2FNUZ, 0)]):
        nodes += [helper.make_node("Cast", ["x"], [f"n{k}"], to=to, saturate=saturate, name=f"narrow{k}"),
                  helper.make_node("CastLike", [f"n{k}", "x"], [f"y{k}"], name=f"wide{k}")]
        outputs.append((f"y{k}", FLOAT, [2, 8, 4, 4]))
    return make_model(nodes, [("x", FLOAT, [2, 8, 4, 4])], outputs, opset=21)


def qdq_model():
    """A float8 QDQ path with data movement between: per-channel QuantizeLinear to e4m3fn
    (float8 zero point), Transpose to NHWC, Slice, Concat, Gather, Reshape, DequantizeLinear;
    and a float8 output of its own (the quantized tensor)."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=1, name="quantize"),
        helper.make_node("Transpose", ["q"], ["t"], perm=[0, 2, 3, 1], name="nhwc"),
        helper.make_node("Slice", ["t", "starts", "ends"], ["s"], name="rows"),
        helper.make_node("Concat", ["s", "s"], ["c"], axis=1, name="twice"),
        helper.make_node("Gather", ["c", "index"], ["g"], axis=2, name="columns"),
        helper.make_node("Reshape", ["g", "flat"], ["r"], name="flatten"),
        helper.make_node("DequantizeLinear", ["r", "step", "origin"], ["y"], name="dequantize"),
    ]
    model = make_model(nodes, [("x", FLOAT, [2, 8, 4, 4])], [("y", FLOAT, None), ("q", E4, [2, 8, 4, 4])],
                       {"scale": np.linspace(0.25, 2, 8).astype(np.float32), "starts": np.array([1], np.int64),
                        "ends": np.array([3], np.int64), "index": np.array([0, 3, 3], np.int64),
                        "flat": np.array([-1], np.int64), "step": np.array(0.5, np.float32)}, opset=21)
    model.graph.initializer.extend([numpy_helper.from_array(np.zeros(8, ml_dtypes.float8_e4m3fn), "zero"),
                                    numpy_helper.from_array(np.array(0.5, ml_dtypes.float8_e4m3fn), "origin")])
    return model


def pad_model():
    """x -> e5m2 without saturation (past 57344: inf) -> Pad with a float8 value -> the
    padded tensor, and IsInf and IsNaN of it."""
    nodes = [helper.make_node("Cast", ["x"], ["n"], to=E5, saturate=0, name="narrow"),
             helper.make_node("Pad", ["n", "pads", "value"], ["p"], name="pad"),
             helper.make_node("IsInf", ["p"], ["inf"], name="inf"),
             helper.make_node("IsNaN", ["p"], ["nan"], name="nan")]
    model = make_model(nodes, [("x", FLOAT, [2, 8, 4, 4])],
                       [("p", E5, None), ("inf", TensorProto.BOOL, None), ("nan", TensorProto.BOOL, None)],
                       {"pads": np.array([0, 1, 0, 2, 0, 0, 3, 0], np.int64)}, opset=21)
    model.graph.initializer.append(numpy_helper.from_array(np.array(-1.5, ml_dtypes.float8_e5m2), "value"))
    return model


def feeds(seed: int) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-600, 600, (2, 8, 4, 4)).astype(np.float32)
    x.reshape(-1)[-4:] = [6e4, -6e4, 6.2e4, 1e5]  # e5m2: max, max, and inf twice
    x.reshape(-1)[:len(EDGES)] = EDGES
    return {"x": x}


@pytest.mark.parametrize("model", [cast_model, qdq_model, pad_model])
def test_float8_models_plan_wholly_on_the_gpu(model):
    report = plan_coverage(compile_onnx(model().SerializeToString()), {"x": (2, 8, 4, 4)}, "sm_86")
    assert report.host_nodes == []
    assert [s.kind for s in report.segments] == ["gpu"]


@pytest.mark.parametrize("model", [cast_model, qdq_model, pad_model])
def test_float8_models_run_on_the_fake_device_with_the_reference_bits(model, monkeypatch):
    device = FakeDevice().install(monkeypatch)
    proto = model()
    run = run_model(device, compiled(proto), feeds(0))
    want = reference_outputs(original(proto), feeds(0))
    assert set(run.outputs) == set(want)
    for name, w in want.items():
        assert_same_values(run.outputs[name], np.asarray(w), name)
