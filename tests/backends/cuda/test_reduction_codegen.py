"""Generated row-wise kernels (rtxrt/jit/codegen/reduction.py) compile with NVRTC for every
supported arch (no GPU), and what they do not cover is a CodegenError.

``CASES`` is the catalogue tests/backends/cuda/test_gpu_reduction.py runs on the device: every op in
float32 with a warp per row (67 columns) and a block per row (1500 columns; 9000 for the
1024-thread block), float16 and bfloat16 in one of the two each, and the axis/axes/keepdims
variants (opset 11 Softmax over flattened axes, Reduce over two trailing axes or all axes,
axes given as an input).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.reduction_source import ROW_OPS, reduction_kernel

from .helpers import compile_for_every_arch

F32, F16, BF16 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16
SHORT, LONG, HUGE = (3, 5, 67), (4, 1500), (2, 9000)
POSITIVE = (0.5, 3.0)  # sums of positive values: no cancellation, so fp32 order effects stay at 1e-7


@dataclass(frozen=True)
class Case:
    id: str
    node: Node
    inputs: tuple[TensorType | None, ...]
    opset: int = 21
    axes: tuple[int, ...] | None = None  # the constant axes input's value
    ranges: tuple[tuple[float, float] | None, ...] = ()  # per input; default (-3, 3)

    def kernel(self) -> KernelSource:
        return reduction_kernel(self.node, list(self.inputs), opset=self.opset, axes=self.axes)


def case(op_type: str, dtype: DType, shape: tuple[int, ...], *, params: int = 0, opset: int = 21,
         axes: tuple[int, ...] | None = None, suffix: str = "", ranges=(), **attrs) -> Case:
    names = ["x"] + [f"p{i}" for i in range(params)] + (["axes"] if axes is not None else [])
    types = [TensorType(dtype, shape)] + [TensorType(dtype, shape[-1:])] * params
    node = Node(op_type, names, ["y"], attrs, name=op_type.lower())
    return Case(f"{op_type}{suffix}-{dtype.short}-{'x'.join(map(str, shape))}", node, tuple(types), opset,
                axes, tuple(ranges))


NORM_RANGES = [None, (0.5, 2.0), (-1.0, 1.0)]  # x, scale, bias


def op_cases(dtype: DType, shape: tuple[int, ...]) -> list[Case]:
    return [
        case("Softmax", dtype, shape, axis=-1),
        case("LogSoftmax", dtype, shape),
        case("LayerNormalization", dtype, shape, params=2, ranges=NORM_RANGES, epsilon=1e-5),
        case("LayerNormalization", dtype, shape, params=1, ranges=NORM_RANGES, suffix="_nobias", epsilon=1e-3),
        case("RMSNormalization", dtype, shape, params=1, opset=23, ranges=NORM_RANGES, epsilon=1e-6),
        case("ReduceSum", dtype, shape, axes=(-1,), ranges=[POSITIVE], keepdims=1),
        case("ReduceMean", dtype, shape, axes=(-1,), ranges=[POSITIVE], keepdims=0),
        case("ReduceMax", dtype, shape, axes=(-1,), keepdims=1),
        case("ReduceMin", dtype, shape, axes=(-1,), keepdims=0),
    ]


def catalogue() -> list[Case]:
    cases = op_cases(F32, SHORT) + op_cases(F32, LONG) + op_cases(F16, SHORT) + op_cases(BF16, LONG)
    cases += [
        case("Softmax", F32, HUGE), case("LayerNormalization", F16, HUGE, params=2, ranges=NORM_RANGES),
        case("Softmax", F16, SHORT, opset=11, suffix="_opset11_axis1", axis=1),  # rows of 5 * 67
        # before opset 18, ReduceMean's axes are an attribute
        Case("ReduceMean_attr_axes-float32-3x5x67", Node("ReduceMean", ["x"], ["y"], {"axes": [1, 2]}),
             (TensorType(F32, SHORT),), 13, None, (POSITIVE,)),
        case("ReduceSum", F32, SHORT, axes=(2, 1), suffix="_two_axes", ranges=[POSITIVE], keepdims=0),
        case("ReduceMax", BF16, SHORT, axes=(), suffix="_all_axes", keepdims=0),
        case("ReduceSum", F16, (7, 33), opset=11, suffix="_opset11", ranges=[POSITIVE]),
    ]
    return cases


CASES: list[Case] = catalogue()


def test_the_catalogue_covers_every_row_op():
    assert {c.node.op_type for c in CASES} == set(ROW_OPS)
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_kernel_compiles_for_every_supported_arch():
    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    report = [f"{arch}: {s:.1f} s" for arch, _, s in compile_for_every_arch(kernels, 512)]
    print(f"\n{len(CASES)} cases -> {len(kernels)} kernels; " + "; ".join(report))


def test_short_rows_get_a_warp_and_long_rows_a_block():
    short = case("Softmax", F32, SHORT).kernel()
    assert short.launch.block == 128 and short.launch.grid() == -(-15 // 4)
    assert "__shfl_xor_sync" in short.source and "rtx_block_reduce<" not in short.source.split("extern")[1]
    long = case("Softmax", F32, LONG).kernel()
    assert long.launch.block == 256 and long.launch.grid() == 4
    assert "rtx_block_reduce<8>" in long.source and "__shared__" in long.source
    assert case("Softmax", F32, HUGE).kernel().launch.block == 1024


def test_kernel_describes_its_arguments_and_output_shapes():
    k = case("LayerNormalization", F16, SHORT, params=2).kernel()
    assert [(a.name, a.role, a.dtype, a.shape) for a in k.args] == [
        ("in0", BufferRole.IN, F16, SHORT), ("scale", BufferRole.IN, F16, (67,)), ("bias", BufferRole.IN, F16, (67,)),
        ("out0", BufferRole.OUT, F16, SHORT)]
    assert "#include" not in k.source and k.name in k.source
    assert case("ReduceSum", F32, SHORT, axes=(-1,), keepdims=1).kernel().outputs[0].shape == (3, 5, 1)
    assert case("ReduceSum", F32, SHORT, axes=(1, 2), keepdims=0).kernel().outputs[0].shape == (3,)
    assert case("ReduceMax", F32, SHORT, axes=(), keepdims=0).kernel().outputs[0].shape == ()
    assert case("Softmax", F32, SHORT).kernel().name == case("Softmax", F32, SHORT).kernel().name
    assert case("Softmax", F32, SHORT).kernel().name != case("Softmax", F32, LONG).kernel().name


def test_more_than_two_billion_elements_use_64_bit_indexes():
    k = case("ReduceSum", F16, (2**16, 2**15 + 1), axes=(-1,)).kernel()
    assert "unsigned long long row" in k.source


@pytest.mark.parametrize("node, types, kwargs, message", [
    (Node("Softmax", ["x"], ["y"], {"axis": 1}), [TensorType(F32, SHORT)], {}, "last axis"),
    (Node("ReduceSum", ["x", "a"], ["y"]), [TensorType(F32, SHORT), TensorType(DType.INT64, (1,))],
     {"axes": (1,)}, "trailing axes"),
    (Node("ReduceSum", ["x", "a"], ["y"]), [TensorType(F32, SHORT), TensorType(DType.INT64, (1,))], {},
     "run time"),
    (Node("ReduceMax", ["x"], ["y"], {"noop_with_empty_axes": 1}), [TensorType(F32, SHORT)], {}, "noop"),
    (Node("Softmax", ["x"], ["y"]), [TensorType(DType.FLOAT64, SHORT)], {}, "float64"),
    (Node("ReduceSum", ["x"], ["y"]), [TensorType(DType.INT32, SHORT)], {}, "int32"),
    (Node("Softmax", ["x"], ["y"]), [TensorType(F32, ("batch", 67))], {}, "static"),
    (Node("LayerNormalization", ["x", "s"], ["y", "mean"]), [TensorType(F32, SHORT)] * 2, {}, "first output"),
    (Node("LayerNormalization", ["x", "s"], ["y"], {"stash_type": 11}), [TensorType(F32, SHORT)] * 2, {},
     "stash_type"),
    (Node("LayerNormalization", ["x", "s"], ["y"]), [TensorType(F32, SHORT), TensorType(F16, (67,))], {},
     "scale and bias"),
    (Node("LayerNormalization", ["x", "s"], ["y"]), [TensorType(F32, SHORT), TensorType(F32, (5, 1))], {},
     "scale and bias"),
    (Node("Relu", ["x"], ["y"]), [TensorType(F32, SHORT)], {}, "not a row-wise op"),
])
def test_what_is_not_covered_is_a_codegen_error(node, types, kwargs, message):
    with pytest.raises(CodegenError, match=message):
        reduction_kernel(node, types, **kwargs)


def test_an_empty_batch_has_nothing_to_launch():
    assert case("Softmax", F32, (0, 67)).kernel().launch.grid() == 0
