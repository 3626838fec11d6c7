"""Generated reduction kernels (rtxrt/backends/cuda/ops/reduction*.py) compile with NVRTC (no
GPU: every kernel of the catalogue for sm_75 and sm_90, one of each kind and type for every
supported arch), describe their arguments and launches, and what they do not cover is a
CodegenError naming the node.

``CASES`` is the catalogue tests/backends/cuda/test_gpu_reduction.py runs on the device and
tests/backends/cuda/test_reduction_axes.py runs on the fake device (its ``columns`` kernels):

- rows (the reduced axes are the trailing ones): every op in float32 with a warp per row (67
  columns) and a block per row (1500 columns; 9000 for the 1024-thread block), float16 and
  bfloat16 in one of the two each, and the axis/axes/keepdims variants (opset 11 Softmax and
  Hardmax over flattened axes, Reduce over two trailing axes or all axes, axes as an input);
- strided (any other axes): every Reduce op, ArgMax/ArgMin and Softmax/LogSoftmax/Hardmax
  over axis 1 of an NCHW tensor (the ``columns`` kernel, a thread per output) and over axis 1
  of [3, 700, 10] (the ``split`` kernel, warps splitting each output's 700 elements), then
  several non-adjacent axes, negative axes, keepdims 0/1, noop_with_empty_axes, axes as an
  opset-13 attribute, an axis of size 1, ties (select_last_index) and NaNs for the
  arg-reductions, in each of float32, float16 and bfloat16;
- LayerNormalization with its Mean and InvStdDev outputs (``STATS_CASES``): axis -1, -2 and 1
  of 2-D to 4-D inputs, a warp and a block per row, float32, float16 and bfloat16 (stash type
  float32), with only Mean, only InvStdDev, and both.

``random_inputs``, ``reference`` and ``compare`` are the comparison both runners use.
Tolerances, by the stored type:
- float32: rtol 1e-5, atol 1e-6 (summation order and expf/logf differ from numpy's by a few
  ulp; the sums are over positive inputs, products over inputs near 1, so order effects
  stay relative);
- float16: rtol 1e-3, atol 1e-3; bfloat16: rtol 1e-2, atol 1e-2 (one ulp; both sides compute
  in fp32 and round once);
- except LayerNormalization/RMSNormalization in float16/bfloat16, which round the normalized
  value to X's type before scale and bias (as ONNX does): where the fp32 values on the two
  sides round to neighbouring narrow values, the one-ulp step is multiplied by the scale and
  rounded again, so atol there is tol * (1 + 2 * max|scale|);
- int64 (ArgMax/ArgMin): exact;
- LayerNormalization's Mean and InvStdDev: float32 on both sides, computed from the same
  float32 values, so only the summation order differs: rtol 1e-5, atol 1e-6 (a simulation of
  the kernels' order over these cases differs from numpy's by at most 6e-8 in the mean and
  1.1e-7 relative in InvStdDev).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.reduction import node_kernel
from rtxrt.backends.cuda.ops.reduction_source import ROW_OPS, reduction_kernel
from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType

from .helpers import compile_for_every_arch

F32, F16, BF16, I64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.INT64
SHORT, LONG, HUGE = (3, 5, 67), (4, 1500), (2, 9000)
CHANNELS, DEEP, SPREAD = (2, 19, 6, 7), (3, 700, 10), (4, 6, 50, 3)
POSITIVE = (0.5, 3.0)  # sums of positive values: no cancellation, so fp32 order effects stay at 1e-7
NEAR_ONE = (0.99, 1.01)  # products of up to 1500 of them stay far from overflow
NORM_RANGES = [None, (0.5, 2.0), (-1.0, 1.0)]  # x, scale, bias
ARGS = ("ArgMax", "ArgMin", "Hardmax")
REDUCE = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
ALONG = ("Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin")  # take one ``axis``
NORMS = ("LayerNormalization", "RMSNormalization")


@dataclass(frozen=True)
class Case:
    id: str
    node: Node
    inputs: tuple[TensorType | None, ...]
    opset: int = 21
    axes: tuple[int, ...] | None = None  # the constant axes input's value
    ranges: tuple[tuple[float, float] | None, ...] = ()  # per input; default (-3, 3)
    tactic: str | None = None  # a strided kernel ("columns", "split"); None: the first offered
    values: str = "uniform"  # "ties": integers in ±{1, 2}; "nan": ties and some NaNs (arg-reductions)

    def kernel(self) -> KernelSource:
        return node_kernel(self.node, list(self.inputs), opset=self.opset, axes=self.axes, tactic=self.tactic)


def case(op_type: str, dtype: DType, shape: tuple[int, ...], *, params: int = 0, opset: int = 21,
         axes: tuple[int, ...] | None = None, suffix: str = "", ranges=(), tactic: str | None = None,
         values: str = "uniform", outputs: tuple[str, ...] = ("y",), **attrs) -> Case:
    names = ["x"] + [f"p{i}" for i in range(params)] + (["axes"] if axes is not None else [])
    row = shape[int(attrs.get("axis", -1)) % len(shape):] if op_type in NORMS else shape[-1:]
    types = [TensorType(dtype, shape)] + [TensorType(dtype, row)] * params
    node = Node(op_type, names, list(outputs), attrs, name=op_type.lower())
    tail = f"-{tactic}" if tactic else ""
    return Case(f"{op_type}{suffix}-{dtype.short}-{'x'.join(map(str, shape))}{tail}", node, tuple(types), opset,
                axes, tuple(ranges), tactic, values)


def ranges_for(op: str) -> list[tuple[float, float]]:
    """Inputs that keep a reduction's result well conditioned (see the module docstring)."""
    if op in ("ReduceSum", "ReduceMean", "ReduceLogSum"):
        return [POSITIVE]
    return [NEAR_ONE] if op == "ReduceProd" else []


def op_cases(dtype: DType, shape: tuple[int, ...]) -> list[Case]:
    """Every op over the last axis (rows)."""
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
        case("ReduceProd", dtype, shape, axes=(-1,), ranges=[NEAR_ONE], keepdims=1),
        case("ReduceL1", dtype, shape, axes=(-1,), keepdims=0),
        case("ReduceL2", dtype, shape, axes=(-1,), keepdims=1),
        case("ReduceSumSquare", dtype, shape, axes=(-1,), keepdims=0),
        case("ReduceLogSum", dtype, shape, axes=(-1,), ranges=[POSITIVE], keepdims=1),
        case("ReduceLogSumExp", dtype, shape, axes=(-1,), keepdims=0),
        case("ArgMax", dtype, shape, axis=-1),
        case("ArgMin", dtype, shape, axis=-1, keepdims=0, select_last_index=1, suffix="_last", values="ties"),
        case("Hardmax", dtype, shape, values="ties"),
    ]


STATS = {"mean": ("y", "mean"), "invstd": ("y", "", "inv_std"), "stats": ("y", "mean", "inv_std")}


def stats_case(dtype: DType, shape: tuple[int, ...], axis: int, outputs: str) -> Case:
    """LayerNormalization over ``axis`` writing Y and the ``STATS[outputs]`` statistics."""
    return case("LayerNormalization", dtype, shape, params=2, ranges=NORM_RANGES, outputs=STATS[outputs],
                suffix=f"_{outputs}_axis{axis}", axis=axis, epsilon=1e-5)


STATS_CASES = [
    stats_case(F32, SHORT, -1, "stats"),  # rows of 67: a warp each
    stats_case(F16, LONG, -1, "stats"),  # 2-D, rows of 1500: a block each
    stats_case(BF16, (2, 3, 4, 50), -1, "mean"),
    stats_case(F32, (2, 3, 4, 50), 1, "mean"),  # rows of 600 over three axes
    stats_case(BF16, (6, 40, 64), 1, "stats"),  # rows of 2560 over two axes: a block each
    stats_case(F16, SHORT, -2, "invstd"),
    stats_case(F32, (8, 300), -2, "invstd"),  # one row: the whole 2-D input
    stats_case(BF16, (4, 3, 5, 7), -2, "stats"),
    stats_case(F16, (2, 3, 4, 50), -1, "invstd"),
]


def strided_op_cases(op: str) -> list[Case]:
    """``op`` over axis 1 of NCHW (float32, a thread per output) and of [3, 700, 10] (float16,
    warps splitting each output's elements)."""
    if op in ALONG:
        keepdims = {"keepdims": 0} if op in ("ArgMax", "ArgMin") else {}
        return [case(op, F32, CHANNELS, suffix="_axis1", axis=1),
                case(op, F16, DEEP, suffix="_axis1", tactic="split", axis=1, **keepdims)]
    return [case(op, F32, CHANNELS, axes=(1,), suffix="_axis1", ranges=ranges_for(op), keepdims=1),
            case(op, F16, DEEP, axes=(1,), suffix="_axis1", ranges=ranges_for(op), tactic="split", keepdims=0)]


def catalogue() -> list[Case]:
    cases = op_cases(F32, SHORT) + op_cases(F32, LONG) + op_cases(F16, SHORT) + op_cases(BF16, LONG)
    cases += [
        case("Softmax", F32, HUGE), case("LayerNormalization", F16, HUGE, params=2, ranges=NORM_RANGES),
        case("ArgMax", F32, HUGE, axis=1), case("Hardmax", BF16, HUGE, values="ties"),
        case("Softmax", F16, SHORT, opset=11, suffix="_opset11_axis1", axis=1),  # rows of 5 * 67
        case("Hardmax", F32, SHORT, opset=11, suffix="_opset11_axis1", values="ties", axis=1),
        # before opset 18, ReduceMean's axes are an attribute
        Case("ReduceMean_attr_axes-float32-3x5x67", Node("ReduceMean", ["x"], ["y"], {"axes": [1, 2]}),
             (TensorType(F32, SHORT),), 13, None, (POSITIVE,)),
        case("ReduceSum", F32, SHORT, axes=(2, 1), suffix="_two_axes", ranges=[POSITIVE], keepdims=0),
        case("ReduceMax", BF16, SHORT, axes=(), suffix="_all_axes", keepdims=0),
        case("ReduceSum", F16, (7, 33), opset=11, suffix="_opset11", ranges=[POSITIVE]),
    ]
    for op in (*REDUCE, "Softmax", "LogSoftmax", *ARGS):
        cases += strided_op_cases(op)
    for tactic in ("columns", "split"):
        cases += [
            case("ReduceSum", F32, SPREAD, axes=(0, 2), suffix="_axes02", ranges=[POSITIVE], tactic=tactic, keepdims=0),
            case("ReduceLogSumExp", BF16, (2, 40, 3, 5), axes=(1, 3), suffix="_axes13", tactic=tactic, keepdims=0),
            case("ArgMax", F32, (3, 50, 4), suffix="_nan", values="nan", tactic=tactic, axis=1),
            case("ArgMin", F32, (3, 50, 4), suffix="_nan_last", values="nan", tactic=tactic, axis=1,
                 select_last_index=1),
            case("Hardmax", F32, (64, 5), suffix="_axis0", values="ties", tactic=tactic, axis=0),
        ]
    cases += [
        case("ReduceMax", BF16, SPREAD, axes=(-4, -2), suffix="_negative_axes", keepdims=1),
        case("ReduceMean", F16, (300, 5), axes=(0,), suffix="_axis0", ranges=[POSITIVE], keepdims=1),
        case("ReduceL1", BF16, DEEP, axes=(0, 1), suffix="_axes01", tactic="columns", keepdims=1),
        case("ReduceProd", BF16, CHANNELS, axes=(0, 2, 3), suffix="_axes023", ranges=[NEAR_ONE], keepdims=0),
        case("ReduceL2", F32, (3, 5, 7), opset=18, suffix="_noop", noop_with_empty_axes=1),
        case("ReduceLogSumExp", F16, (3, 5, 7), axes=(), suffix="_noop", noop_with_empty_axes=1),
        case("ReduceSumSquare", BF16, (3, 5, 7), opset=13, suffix="_noop", noop_with_empty_axes=1),
        Case("ReduceMean_attr_axes02-float32-3x5x7", Node("ReduceMean", ["x"], ["y"], {"axes": [0, 2], "keepdims": 0}),
             (TensorType(F32, (3, 5, 7)),), 13, None, (POSITIVE,)),
        case("Softmax", F32, (37, 9), suffix="_axis0", axis=0),
        case("Softmax", BF16, (37, 9), suffix="_axis0", tactic="split", axis=0),
        case("LogSoftmax", BF16, CHANNELS, suffix="_axis-3", axis=-3),
        case("ArgMax", F16, (5, 40, 6), suffix="_axis-2_last", values="ties", axis=-2, keepdims=0, select_last_index=1),
        case("ArgMin", BF16, DEEP, suffix="_axis1", values="ties", tactic="split", axis=1),
        case("ArgMax", F32, (4, 1, 5), suffix="_size1", axis=1),
        case("Softmax", F16, (4, 1, 5), suffix="_size1", axis=1),
    ]
    return cases + STATS_CASES


CASES: list[Case] = catalogue()


# ---------------------------------------------------------------- the comparison both runners use

def storage(dtype: DType) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype == BF16 else np.dtype(dtype.numpy)


def random_inputs(case: Case) -> list[np.ndarray]:
    """The case's inputs, seeded by its id: uniform in its ranges (never zeros), or small
    integers (ties) with some NaNs planted."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    ranges = list(case.ranges) + [None] * (len(case.inputs) - len(case.ranges))
    arrays = []
    for t, bounds in zip(case.inputs, ranges):
        shape = tuple(int(d) for d in t.shape)
        if case.values == "uniform" or arrays:
            low, high = bounds or (-3.0, 3.0)
            values = rng.uniform(low, high, shape).astype(storage(t.dtype))
            values[values == 0] = np.asarray(high).astype(values.dtype)  # never zeros
        else:
            values = rng.choice(np.array([-2.0, -1.0, 1.0, 2.0]), shape)
            if case.values == "nan":
                values[rng.random(shape) < 0.05] = np.nan
            values = values.astype(storage(t.dtype))
        arrays.append(values)
    return arrays


def reference_outputs(case: Case, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The reference backend's outputs, by the node's output positions."""
    inputs: list[np.ndarray] = list(arrays)
    if case.axes is not None:
        inputs.append(np.array(case.axes, np.int64))
    kernel = find_kernel(case.node.op_type)(case.node, case.opset, None)
    result = kernel.run(*inputs)
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def reference(case: Case, arrays: list[np.ndarray]) -> np.ndarray:
    return reference_outputs(case, arrays)[0]


TOLERANCE = {F32: (1e-5, 1e-6), F16: (1e-3, 1e-3), BF16: (1e-2, 1e-2)}
STATS_TOLERANCE = (1e-5, 1e-6)
POISON = {F32: (np.uint32, 0x7FC00000), F16: (np.uint16, 0x7E00), BF16: (np.uint16, 0x7FC0), I64: (np.int64, -1)}


def poisoned(out_dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """An output buffer's bits before the launch: a NaN (-1 for indices), so an element never
    written shows."""
    bits, value = POISON[out_dtype]
    return np.full(shape, value, dtype=bits)


def compare(got: np.ndarray, want: np.ndarray, kernel: KernelSource, case: Case, arrays: list[np.ndarray]) -> None:
    """``got`` (the kernel's output, viewed as its type) against the reference's ``want``."""
    dtype = kernel.outputs[0].dtype
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    if dtype == I64:
        assert (got != -1).all(), f"{case.id}: {int((got == -1).sum())} elements not written"
        np.testing.assert_array_equal(got, want, err_msg=case.id)
        return
    wide = got.astype(np.float64)
    assert not np.isnan(wide).any(), f"{case.id}: {int(np.isnan(wide).sum())} elements not written"
    rtol, atol = TOLERANCE[dtype]
    if case.node.op_type in NORMS and dtype != F32:
        atol = atol * (1 + 2 * float(np.abs(arrays[1].astype(np.float64)).max()))
    np.testing.assert_allclose(wide, want.astype(np.float64), rtol=rtol, atol=atol, err_msg=case.id)


def compare_outputs(gots: list[np.ndarray], kernel: KernelSource, case: Case, arrays: list[np.ndarray]) -> None:
    """Every output the kernel wrote (``gots``, in ``kernel.outputs`` order) against the
    reference's: the first as ``compare`` says, LayerNormalization's Mean and InvStdDev in float32."""
    wants = reference_outputs(case, arrays)
    compare(gots[0], wants[0], kernel, case, arrays)
    assert [a.index for a in kernel.outputs[1:]] == [i for i, o in enumerate(case.node.outputs) if o and i]
    for got, arg in zip(gots[1:], kernel.outputs[1:]):
        want, what = wants[arg.index], f"{case.id} output {arg.index}"
        assert got.shape == want.shape and got.dtype == want.dtype == np.float32, (what, got.shape, want.shape)
        assert not np.isnan(got).any(), f"{what}: {int(np.isnan(got).sum())} elements not written"
        rtol, atol = STATS_TOLERANCE
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------- the catalogue itself

def test_the_catalogue_covers_every_op_over_rows_and_over_other_axes_with_each_kernel():
    assert {c.node.op_type for c in CASES} == set(ROW_OPS)
    assert len({c.id for c in CASES}) == len(CASES)
    kinds = {}
    for c in CASES:
        kinds.setdefault(c.node.op_type, set()).add(c.kernel().name.split("_")[1])
    for op in (*REDUCE, "Softmax", "LogSoftmax", *ARGS):
        assert kinds[op] == {"row", "cols", "split"}, (op, kinds[op])
    dtypes = {(c.node.op_type, c.inputs[0].dtype) for c in CASES}
    assert all((op, dt) in dtypes for op in ROW_OPS for dt in (F32, F16, BF16))


def test_every_kernel_compiles_for_the_oldest_arch_and_hopper():
    """sm_75 lacks the bf16 conversion instruction (the kernels round by bit arithmetic there)."""
    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    for arch in ("sm_75", "sm_90"):
        cubins = compile_many(kernels.items(), arch)
        assert set(cubins) == set(kernels) and all(c.startswith(b"\x7fELF") and len(c) > 512 for c in cubins.values())


def test_a_kernel_of_each_kind_and_type_compiles_for_every_supported_arch():
    chosen: dict[tuple[str, DType], KernelSource] = {}
    for c in CASES:
        k = c.kernel()
        chosen.setdefault((k.name.split("_")[1], c.inputs[0].dtype), k)
    assert len(chosen) == 9  # rows, columns and split kernels in three types
    kernels = {k.name: k.source for k in chosen.values()}
    report = [f"{arch}: {s:.1f} s" for arch, _, s in compile_for_every_arch(kernels, 512)]
    print(f"\n{len(chosen)} kernels; " + "; ".join(report))


# ---------------------------------------------------------------- row kernels

def test_short_rows_get_a_warp_and_long_rows_a_block():
    short = case("Softmax", F32, SHORT).kernel()
    assert short.launch.block == 128 and short.launch.grid() == -(-15 // 4)
    assert "__shfl_xor_sync" in short.source and "rtx_block_reduce<" not in short.source.split("extern")[1]
    long = case("Softmax", F32, LONG).kernel()
    assert long.launch.block == 256 and long.launch.grid() == 4
    assert "rtx_block_reduce<8>" in long.source and "__shared__" in long.source
    assert case("Softmax", F32, HUGE).kernel().launch.block == 1024


def test_arg_reductions_over_rows_combine_value_and_index_pairs():
    warp = case("ArgMax", F32, SHORT, axis=-1).kernel()
    assert "rtx_warp_arg<true, false>(b, bi);" in warp.source and "out0[row] = bi;" in warp.source
    block = case("ArgMin", F32, LONG, axis=-1, select_last_index=1).kernel()
    assert "rtx_block_arg<8, false, true>(b, bi, rtx_partial, rtx_partial_index);" in block.source
    assert "__shared__ long long rtx_partial_index[32];" in block.source
    hard = case("Hardmax", F16, LONG).kernel()
    assert "rtx_block_arg<8, true, false>" in hard.source
    assert "y[c] = rtx_f2h((long long)c == bi ? 1.0f : 0.0f);" in hard.source


def test_the_split_kernel_combines_where_every_thread_of_the_block_arrives():
    """Its combines hold __syncthreads: they sit outside the branch on live lanes (a lane past
    the last output arrives too), in a loop every thread of a block runs alike."""
    split = [c.kernel() for c in CASES if c.tactic == "split"]
    assert len(split) >= 20
    for k in split:
        body = k.source.split("extern")[1].splitlines()
        assert any(line.strip().startswith("for (unsigned int o0 = (unsigned int)blockIdx.x * 32u") for line in body)
        live = next(line for line in body if "const bool live" in line)
        combines = [line for line in body if "rtx_split_reduce<" in line or "rtx_split_arg<" in line]
        assert combines and all(_indent(line) == _indent(live) for line in combines), k.source


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


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
    arg = case("ArgMax", F16, CHANNELS, axis=1, keepdims=0).kernel()
    assert [(a.name, a.dtype, a.shape) for a in arg.args] == [("in0", F16, CHANNELS), ("out0", I64, (2, 6, 7))]
    assert "long long* __restrict__ out0" in arg.source
    assert case("ArgMin", F32, SHORT, axis=0).kernel().outputs[0].shape == (1, 5, 67)
    assert case("ReduceL2", F32, SPREAD, axes=(0, 2), keepdims=1).kernel().outputs[0].shape == (1, 6, 1, 3)
    assert case("ReduceL1", F32, SPREAD, axes=(0, 2), keepdims=0).kernel().outputs[0].shape == (6, 3)
    noop = case("ReduceSum", F32, SPREAD, axes=(), noop_with_empty_axes=1).kernel()
    assert noop.outputs[0].shape == SPREAD and noop.launch.elements == 4 * 6 * 50 * 3  # a per-element map
    assert case("Hardmax", BF16, CHANNELS, axis=2).kernel().outputs[0].shape == CHANNELS


def test_layer_norm_declares_its_mean_and_inv_std_outputs_in_float32_with_a_row_kept_as_ones():
    both = stats_case(F16, (2, 3, 4, 50), 1, "stats").kernel()
    assert [(a.name, a.role, a.index, a.dtype, a.shape) for a in both.args] == [
        ("in0", BufferRole.IN, 0, F16, (2, 3, 4, 50)), ("scale", BufferRole.IN, 1, F16, (3, 4, 50)),
        ("bias", BufferRole.IN, 2, F16, (3, 4, 50)), ("out0", BufferRole.OUT, 0, F16, (2, 3, 4, 50)),
        ("out1", BufferRole.OUT, 1, F32, (2, 1, 1, 1)), ("out2", BufferRole.OUT, 2, F32, (2, 1, 1, 1))]
    assert "float* __restrict__ out1, float* __restrict__ out2" in both.source
    only_inv = stats_case(BF16, SHORT, -2, "invstd").kernel()
    assert [(a.name, a.index, a.dtype, a.shape) for a in only_inv.outputs] == [
        ("out0", 0, BF16, SHORT), ("out2", 2, F32, (3, 1, 1))]
    only_mean = stats_case(F32, (8, 300), -1, "mean").kernel()
    assert [(a.name, a.index, a.shape) for a in only_mean.outputs] == [("out0", 0, (8, 300)), ("out1", 1, (8, 1))]


def test_the_statistics_cases_cover_each_axis_rank_type_and_output_subset():
    kernels = [c.kernel() for c in STATS_CASES]
    assert {c.node.attrs["axis"] for c in STATS_CASES} == {-1, -2, 1}
    assert {len(c.inputs[0].shape) for c in STATS_CASES} == {2, 3, 4}
    assert {c.inputs[0].dtype for c in STATS_CASES} == {F32, F16, BF16}
    assert {tuple(a.index for a in k.outputs) for k in kernels} == {(0, 1), (0, 2), (0, 1, 2)}
    assert {k.launch.block for k in kernels} == {128, 256}  # a warp and a block per row


@pytest.mark.parametrize("shape, writer", [(SHORT, "(threadIdx.x & 31u) == 0u"), (LONG, "threadIdx.x == 0u")])
def test_without_mean_and_inv_std_the_layer_norm_kernel_is_unchanged(shape, writer):
    """The statistics cost one store a row where the node has them, and nothing where not:
    the one-output kernel is the three-output kernel without the two pointers and the store."""
    plain = case("LayerNormalization", F32, shape, params=2).kernel()
    full = case("LayerNormalization", F32, shape, params=2, outputs=STATS["stats"]).kernel()
    store = f"    if ({writer}) {{ out1[row] = mean; out2[row] = inv; }}\n"
    assert full.source.count(store) == 1 and "out1" not in plain.source and "out2" not in plain.source
    stripped = full.source.replace(store, "").replace(", float* __restrict__ out1, float* __restrict__ out2", "")
    assert stripped.replace(full.name, plain.name) == plain.source
    assert (full.launch, full.dims) == (plain.launch, plain.dims)


def test_more_than_two_billion_elements_use_64_bit_indexes():
    k = case("ReduceSum", F16, (2**16, 2**15 + 1), axes=(-1,)).kernel()
    assert "unsigned long long row" in k.source
    strided = case("ReduceSum", F16, (2**16, 2**15 + 1), axes=(0,)).kernel()
    assert "unsigned long long o" in strided.source and "unsigned int" not in strided.source.split("extern")[1]


@pytest.mark.parametrize("node, types, kwargs, message", [
    (Node("ReduceSum", ["x", "a"], ["y"], name="n"), [TensorType(F32, SHORT), TensorType(DType.INT64, (1,))], {},
     "ReduceSum node 'n': axes computed at run time"),
    (Node("Softmax", ["x"], ["y"], name="n"), [TensorType(DType.FLOAT64, SHORT)], {}, "Softmax node 'n'.*float64"),
    (Node("ArgMax", ["x"], ["y"], name="n"), [TensorType(DType.INT32, SHORT)], {}, "ArgMax node 'n'.*int32"),
    (Node("ReduceL2", ["x"], ["y"], name="n"), [TensorType(DType.INT64, SHORT)], {}, "ReduceL2 node 'n'.*int64"),
    (Node("Softmax", ["x"], ["y"]), [TensorType(F32, ("batch", 67))], {}, "static"),
    (Node("Hardmax", ["x"], ["y"], name="n"), [TensorType(F32, ())], {}, "Hardmax node 'n': no kernel for a scalar"),
    (Node("ArgMin", ["x"], ["y"], {"axis": 3}, name="n"), [TensorType(F32, SHORT)], {}, "axis 3 is out of range"),
    (Node("ReduceMax", ["x"], ["y"], {"axes": [0, 5]}, name="n"), [TensorType(F32, SHORT)], {"opset": 13},
     "ReduceMax node 'n': axis 5 is out of range for rank 3"),
    (Node("LayerNormalization", ["x", "s"], ["", "mean"]), [TensorType(F32, SHORT)] * 2, {}, "first output"),
    (Node("Softmax", ["x"], ["y", "z"]), [TensorType(F32, SHORT)], {}, "first output"),
    (Node("LayerNormalization", ["x", "s"], ["y"], {"stash_type": 11}), [TensorType(F32, SHORT)] * 2, {},
     "stash_type"),
    (Node("LayerNormalization", ["x", "s"], ["y", "mean", "inv"], {"stash_type": 16}), [TensorType(BF16, SHORT)] * 2,
     {}, "stash_type 16"),
    (Node("LayerNormalization", ["x", "s"], ["y"]), [TensorType(F32, SHORT), TensorType(F16, (67,))], {},
     "scale and bias"),
    (Node("LayerNormalization", ["x", "s"], ["y"]), [TensorType(F32, SHORT), TensorType(F32, (5, 1))], {},
     "scale and bias"),
    (Node("Relu", ["x"], ["y"], name="n"), [TensorType(F32, SHORT)], {}, "Relu node 'n' is not a reduction"),
])
def test_what_is_not_covered_is_a_codegen_error_naming_the_node(node, types, kwargs, message):
    with pytest.raises(CodegenError, match=message):
        node_kernel(node, types, **kwargs)


def test_the_row_generator_alone_refuses_axes_that_are_not_trailing():
    with pytest.raises(CodegenError, match="Softmax node 'sm': Softmax over axes \\[1\\].*not over the trailing axes"):
        reduction_kernel(Node("Softmax", ["x"], ["y"], {"axis": 1}, name="sm"), [TensorType(F32, SHORT)])
    assert reduction_kernel(Node("Softmax", ["x"], ["y"], {"axis": 2}), [TensorType(F32, SHORT)]).name.startswith(
        "rtx_row_")


def test_an_empty_batch_has_nothing_to_launch():
    assert case("Softmax", F32, (0, 67)).kernel().launch.grid() == 0
    assert case("Softmax", F32, (0, 67, 3), axis=1).kernel().launch.grid() == 0
    assert case("ReduceSum", F32, (0, 67, 3), axes=(1,), tactic="split").kernel().launch.grid() == 0
