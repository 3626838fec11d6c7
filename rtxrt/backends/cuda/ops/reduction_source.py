"""CUDA kernels for row-wise ops: Softmax, LogSoftmax, LayerNormalization, RMSNormalization
and ReduceSum/Mean/Max/Min, where the reduced axes are the trailing ones of the input.

A contiguous row-major input reduced over its trailing axes is a [rows, cols] matrix reduced
along its rows, so one kernel shape serves every op: one warp per row for short rows (up to
``WARP_ROW_MAX`` columns, ``WARP_ROWS_PER_BLOCK`` rows per block), else one block per row;
rows are walked grid-stride, so any grid is correct. Partial results are combined with
``__shfl_xor_sync`` butterflies (every lane ends with the same value) and, across the warps
of a block, through shared memory. Rows are re-read from global memory for each pass (the
second and third reads hit L1/L2).

Semantics are the reference backend's (rtxrt/backends/reference/ops): fp16/bf16 are
computed in fp32 with fp32 accumulation; softmax subtracts the row max first; the
normalizations round the normalized value to X's type before the scale and bias, as ONNX's
function bodies do. Shapes are baked in; in a generic plan the dims that vary over the
profile are int parameters, and the profile's longest row picks a warp or a block. What is
not covered raises CodegenError (other axes of Softmax from opset 13, non-trailing reduction
axes, float64 or integer tensors, stash_type other than float32, the Mean/InvStdDev outputs
of LayerNormalization), and the runtime runs the node with the reference backend.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ..codegen.device_helpers import NAN_MAX_MIN
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, is_dynamic, upper
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    loop_kernel,
)
from ..plan.program import BufferRole

ROW_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
REDUCE_OPS = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18}  # op -> axes-input opset
ROW_OPS = ("Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization", *REDUCE_OPS)
WARP_ROW_MAX = 1024  # longer rows get a block each
WARP_ROWS_PER_BLOCK = 4
_ONNX = ("", "ai.onnx")
F32 = DType.FLOAT32

# Sum and the NaN-propagating max/min (numpy's max/min) as functors, and the warp and block reductions.
HELPERS = NAN_MAX_MIN + r"""
struct RtxSum { __device__ __forceinline__ float operator()(float a, float b) const { return a + b; } };
struct RtxMax { __device__ __forceinline__ float operator()(float a, float b) const { return rtx_max(a, b); } };
struct RtxMin { __device__ __forceinline__ float operator()(float a, float b) const { return rtx_min(a, b); } };
template <typename Op> __device__ __forceinline__ float rtx_warp_reduce(float v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Every warp combines the per-warp partials itself, so no second broadcast is needed; the
// trailing barrier keeps the next reduction from overwriting partials still being read.
template <int NWARPS, typename Op>
__device__ __forceinline__ float rtx_block_reduce(float v, Op op, float identity, float* partial) {
  v = rtx_warp_reduce(v, op);
  const unsigned lane = threadIdx.x & 31u;
  if (lane == 0u) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  v = lane < (unsigned)NWARPS ? partial[lane] : identity;
  v = rtx_warp_reduce(v, op);
  __syncthreads();
  return v;
}
"""


@dataclass(frozen=True)
class RowProblem:
    """What a row kernel computes: ``op`` over [rows, cols] of ``dtype``."""

    op: str
    dtype: DType
    shape: tuple[int, ...]  # the input's
    out_shape: tuple[int, ...]
    rows: int
    cols: int
    row_rank: int  # how many trailing dims make a row
    epsilon: float = 0.0
    has_bias: bool = False


def reduction_kernel(node: Node, inputs: Sequence[TensorType | None], *, opset: int = 21,
                     axes: Sequence[int] | None = None) -> KernelSource:
    """The kernel computing ``node`` (one of ROW_OPS) on inputs of these static types (None
    for omitted optional inputs). ``opset`` is the model's default-domain opset (axis and
    axes rules changed with it); ``axes`` is the value of a Reduce op's constant axes input
    (from opset 13 for ReduceSum, 18 for the others), which is not a kernel argument."""
    return _generate(row_problem(node, inputs, opset=opset, axes=axes))


def row_problem(node: Node, inputs: Sequence[TensorType | None], *, opset: int = 21,
                axes: Sequence[int] | None = None) -> RowProblem:
    """``node`` as a [rows, cols] problem; CodegenError for what the kernels do not cover."""
    if node.domain not in _ONNX or node.op_type not in ROW_OPS:
        raise CodegenError(f"{node.label} is not a row-wise op")
    if not inputs or inputs[0] is None or not inputs[0].is_static:
        raise CodegenError(f"{node.label}: row kernels need a static input shape")
    x = inputs[0]
    dtype, shape = x.dtype, tuple(_dim(d) for d in x.shape)
    if dtype not in ROW_DTYPES:
        raise CodegenError(f"{node.label}: row kernels take float32, float16 or bfloat16, not {dtype.short}")
    if sum(1 for o in node.outputs if o) != 1 or not node.outputs[0]:
        raise CodegenError(f"{node.label}: only the first output is generated")
    rank = len(shape)
    op = node.op_type
    if op in REDUCE_OPS:
        start, out_shape = _reduced_axes(node, shape, opset, axes)
        return RowProblem(op, dtype, shape, out_shape, math.prod(shape[:start]), math.prod(shape[start:]),
                          rank - start)
    if rank == 0:
        raise CodegenError(f"{node.label}: no row kernel for a scalar input")
    if op in ("Softmax", "LogSoftmax"):
        if opset >= 13:
            start = _axis(node, node.attr("axis", -1), rank)
            if start != rank - 1:
                raise CodegenError(f"{node.label}: softmax over axis {start} of rank {rank}; "
                                   "row kernels cover the last axis")
        else:  # before opset 13: over the input flattened to 2-D at ``axis``
            start = _axis(node, node.attr("axis", 1), rank)
        return RowProblem(op, dtype, shape, shape, math.prod(shape[:start]), math.prod(shape[start:]),
                          rank - start)
    # LayerNormalization, RMSNormalization: over axes [axis, rank)
    start = _axis(node, node.attr("axis", -1), rank)
    if int(node.attr("stash_type", 1)) != int(F32):
        raise CodegenError(f"{node.label}: stash_type {node.attr('stash_type')} (row kernels stash in float32)")
    wanted = 3 if op == "LayerNormalization" else 2
    params = list(inputs[1:wanted]) + [None] * (wanted - len(inputs))
    if params[0] is None:
        raise CodegenError(f"{node.label} has no scale input")
    for t in params:
        if t is not None and (t.dtype != dtype or not t.is_static
                              or _strip(tuple(int(d) for d in t.shape)) != _strip(shape[start:])):
            raise CodegenError(f"{node.label}: scale and bias must be {dtype.short} of shape "
                               f"{list(shape[start:])}, got {t}")
    return RowProblem(op, dtype, shape, shape, math.prod(shape[:start]), math.prod(shape[start:]),
                      rank - start, float(node.attr("epsilon", 1e-5)), params[-1] is not None and op == "LayerNormalization")


def _dim(d: int) -> int:
    """A dim as the kernels take it: a plain int, or the DimInt of a generic plan kept as it is."""
    return d if is_dynamic(d) else int(d)


def _axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= int(axis) < rank:
        raise CodegenError(f"{node.label}: axis {axis} is out of range for rank {rank}")
    return int(axis) % rank


def _strip(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without leading 1s: a parameter of shape [1, 768] serves rows of 768."""
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _reduced_axes(node: Node, shape: tuple[int, ...], opset: int,
                  axes: Sequence[int] | None) -> tuple[int, tuple[int, ...]]:
    """The first reduced axis (all from it to the end are reduced) and the output shape."""
    if opset >= REDUCE_OPS[node.op_type]:
        if len(node.inputs) > 1 and node.inputs[1]:
            if axes is None:
                raise CodegenError(f"{node.label}: axes computed at run time (pass the constant's value)")
            listed = [int(a) for a in axes]
        else:
            listed = []
    else:
        listed = [int(a) for a in node.attr("axes", None) or []]
    rank = len(shape)
    if not listed:
        if node.attr("noop_with_empty_axes", 0):
            raise CodegenError(f"{node.label}: noop_with_empty_axes with no axes is a copy, not a reduction")
        listed = list(range(rank))
    resolved = sorted({_axis(node, a, rank) for a in listed})
    start = rank - len(resolved)
    if resolved != list(range(start, rank)):
        raise CodegenError(f"{node.label}: reduces axes {resolved} of rank {rank}; row kernels cover "
                           "trailing axes")
    keep = bool(node.attr("keepdims", 1))
    return start, shape[:start] + ((1,) * (rank - start) if keep else ())


# ---------------------------------------------------------------- source


def _generate(p: RowProblem) -> KernelSource:
    args = [KernelArg("in0", BufferRole.IN, 0, p.dtype, p.shape)]
    if p.op in ("LayerNormalization", "RMSNormalization"):
        row_shape = p.shape[len(p.shape) - p.row_rank:]
        args.append(KernelArg("scale", BufferRole.IN, 1, p.dtype, row_shape))
        if p.has_bias:
            args.append(KernelArg("bias", BufferRole.IN, 2, p.dtype, row_shape))
    args.append(KernelArg("out0", BufferRole.OUT, 0, p.dtype, p.out_shape))
    cols = upper(p.cols)  # in a generic plan: the longest row of the profile decides
    if cols <= WARP_ROW_MAX:
        block, per_row = 32 * WARP_ROWS_PER_BLOCK, 32
    else:
        block = 256 if cols <= 8192 else 1024
        per_row = block
    return KernelSource.named("rtx_row_", _source(p, args, block, per_row), LaunchPolicy(p.rows * per_row, block),
                              args)


def _source(p: RowProblem, args: list[KernelArg], block: int, per_row: int) -> str:
    big = upper(p.rows * p.cols) >= 2**31 or upper(p.rows) >= 2**31
    idx = "unsigned long long" if big else "unsigned int"
    warp = per_row == 32
    if warp:
        rows_per_block = block // 32
        first = f"({idx})blockIdx.x * {rows_per_block}u + (threadIdx.x >> 5)"
        step = f"({idx})gridDim.x * {rows_per_block}u"
        tid, stride, writer = "(threadIdx.x & 31u)", 32, "(threadIdx.x & 31u) == 0u"
    else:
        first, step = f"({idx})blockIdx.x", f"({idx})gridDim.x"
        tid, stride, writer = "threadIdx.x", block, "threadIdx.x == 0u"

    def reduce(var: str, op: str, identity: str) -> str:
        if warp:
            return f"{var} = rtx_warp_reduce({var}, {op}());"
        return f"{var} = rtx_block_reduce<{block // 32}>({var}, {op}(), {identity}, rtx_partial);"

    t = p.dtype
    cols = c_int(p.cols, "ull" if big else "u")
    loop = f"for ({idx} c = {tid}; c < {cols}; c += {stride}u)"
    x = C.load("x[c]", t)
    count = _count(p.cols)  # numpy divides by the count as float32
    ninf, pinf = C.literal(-math.inf, F32), C.literal(math.inf, F32)
    body: list[str] = []
    if p.op in ("Softmax", "LogSoftmax"):
        body += [f"float m = {ninf};", f"{loop} m = RtxMax()(m, {x});", reduce("m", "RtxMax", ninf),
                 "float s = 0.0f;", f"{loop} s += expf({x} - m);", reduce("s", "RtxSum", "0.0f")]
        if p.op == "Softmax":
            body.append(f"{loop} y[c] = {C.store(f'expf({x} - m) / s', t)};")
        else:
            body += ["const float ls = logf(s);", f"{loop} y[c] = {C.store(f'({x} - m) - ls', t)};"]
    elif p.op == "LayerNormalization":
        eps = C.literal(p.epsilon, F32)
        affine = f"rn * {C.load('scale[c]', t)}"
        if p.has_bias:
            affine = f"{C.round_to(f'({affine})', t)} + {C.load('bias[c]', t)}"
        body += ["float s = 0.0f;", f"{loop} s += {x};", reduce("s", "RtxSum", "0.0f"),
                 f"const float mean = s / {count};",
                 "float q = 0.0f;", f"{loop} {{ const float d = {x} - mean; q += d * d; }}",
                 reduce("q", "RtxSum", "0.0f"),
                 f"const float inv = 1.0f / sqrtf(q / {count} + {eps});",
                 (f"{loop} {{ const float rn = {C.round_to(f'(({x} - mean) * inv)', t)}; "
                  f"y[c] = {C.store(affine, t)}; }}")]
    elif p.op == "RMSNormalization":
        eps = C.literal(p.epsilon, F32)
        body += ["float q = 0.0f;", f"{loop} {{ const float v = {x}; q += v * v; }}", reduce("q", "RtxSum", "0.0f"),
                 f"const float rms = sqrtf(q / {count} + {eps});",
                 (f"{loop} {{ const float rn = {C.round_to(f'({x} / rms)', t)}; "
                  f"y[c] = {C.store('rn * ' + C.load('scale[c]', t), t)}; }}")]
    else:
        kind = {"ReduceSum": ("RtxSum", "0.0f"), "ReduceMean": ("RtxSum", "0.0f"),
                "ReduceMax": ("RtxMax", ninf), "ReduceMin": ("RtxMin", pinf)}[p.op]
        value = f"s / {count}" if p.op == "ReduceMean" else "s"
        body += [f"float s = {kind[1]};", f"{loop} s = {kind[0]}()(s, {x});", reduce("s", *kind),
                 f"if ({writer}) out0[row] = {C.store(value, t)};"]
    stored = C.storage_type(t)
    params = [f"const {stored}* __restrict__ {a.name}" if a.role is BufferRole.IN else f"{stored}* __restrict__ {a.name}"
              for a in args]
    pointers = [f"const {stored}* x = in0 + row * {cols};"]
    if p.op not in REDUCE_OPS:
        pointers.append(f"{stored}* y = out0 + row * {cols};")
    rows = c_int(p.rows, "ull" if big else "u")
    head = [f"// rtxrt row kernel: {p.op} over [{p.rows}, {p.cols}] {t.short}, "
            + ("a warp per row" if warp else f"a block of {block} per row"), C.PRELUDE.strip(), HELPERS.strip()]
    return loop_kernel(head, params, f"for ({idx} row = {first}; row < {rows}; row += {step}) {{", pointers + body,
                       block=block, before_loop=[] if warp else ["  __shared__ float rtx_partial[32];"])


def _count(n: int) -> str:
    """The element count ``n`` as a float32 C operand (a conversion when ``n`` is a dim argument)."""
    return f"((float)({n}))" if is_dynamic(n) else C.literal(float(n), F32)
