"""What a reduction-like node computes (``Reduction``: the op, its resolved axes, its output),
the per-op math every reduction kernel shares (``FOLDS``, the arg-reduction order), and the
CUDA row kernels for the trailing case: Softmax, LogSoftmax, Hardmax, LayerNormalization,
RMSNormalization, every Reduce* op and ArgMax/ArgMin, where the reduced axes are the trailing
ones of the input.

A contiguous row-major input reduced over its trailing axes is a [rows, cols] matrix reduced
along its rows, so one kernel shape serves every op: one warp per row for short rows (up to
``WARP_ROW_MAX`` columns, ``WARP_ROWS_PER_BLOCK`` rows per block), else one block per row;
rows are walked grid-stride, so any grid is correct. Partial results are combined with
``__shfl_xor_sync`` butterflies (every lane ends with the same value) and, across the warps
of a block, through shared memory. Rows are re-read from global memory for each pass (the
second and third reads hit L1/L2). Other axes are the strided kernels' (reduction_axes_source.py).

Semantics are the reference backend's (rtxrt/backends/reference/ops): fp16/bf16 are
computed in fp32 with fp32 accumulation; softmax subtracts the row max first; LogSumExp
subtracts the max unless it is infinite; ArgMax/ArgMin return the first (or, with
select_last_index, the last) index of the extreme, a NaN counting as the extreme (numpy's
argmax/argmin); the normalizations round the normalized value to X's type before the scale
and bias, as ONNX's function bodies do. LayerNormalization's optional Mean and InvStdDev
outputs (float32, X's shape with the normalized axes kept as 1s: one value a row) are written
by the row's first thread where the node has them, and cost nothing where it has not. Shapes
are baked in; in a generic plan the dims that vary over the profile are int parameters, and
the profile's longest row picks a warp or a block. What is not covered raises CodegenError
(float64 or integer tensors, axes computed at run time, stash_type other than float32), and
the runtime runs the node with the reference backend.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ....ir.ops.reduce import axes_input_since
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
REDUCE_OPS = {op: axes_input_since(op) for op in (  # op -> the opset from which axes is an input
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")}
ARG_OPS = ("ArgMax", "ArgMin")
ALONG_AXIS_OPS = ("Softmax", "LogSoftmax", "Hardmax")  # write the input's shape
NORM_OPS = ("LayerNormalization", "RMSNormalization")
ROW_OPS = (*ALONG_AXIS_OPS, *NORM_OPS, *REDUCE_OPS, *ARG_OPS)  # every op of this family
WARP_ROW_MAX = 1024  # longer rows get a block each
WARP_ROWS_PER_BLOCK = 4
_ONNX = ("", "ai.onnx")
F32 = DType.FLOAT32
NEG_INF, POS_INF = C.literal(-math.inf, F32), C.literal(math.inf, F32)
STAT_VALUES = {1: "mean", 2: "inv"}  # LayerNormalization's output position -> the register holding it
LAST_INDEX = "0x7fffffffffffffffLL"  # the index an empty partial of ArgMax/ArgMin holds: it loses every tie

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
PROD_HELPER = ("struct RtxProd { __device__ __forceinline__ float operator()(float a, float b) const "
               "{ return a * b; } };")

# ArgMax/ArgMin as the maximum of (value, index) pairs under a total order, so partials
# combine in any order: a NaN beats every number (numpy returns the first NaN), and equal
# values go to the lower index (the higher with select_last_index, LAST).
ARG_HELPERS = r"""
template <bool MAX, bool LAST>
__device__ __forceinline__ bool rtx_arg_better(float a, long long ia, float b, long long ib) {
  const bool an = a != a, bn = b != b;
  if (an != bn) return an;
  if (an || a == b) return LAST ? ia > ib : ia < ib;
  return MAX ? a > b : a < b;
}
template <bool MAX, bool LAST> __device__ __forceinline__ void rtx_warp_arg(float& v, long long& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const long long oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (rtx_arg_better<MAX, LAST>(ov, oi, v, i)) { v = ov; i = oi; }
  }
}
// Lanes past the warp count take warp 0's partial again: a duplicate does not change a maximum.
template <int NWARPS, bool MAX, bool LAST>
__device__ __forceinline__ void rtx_block_arg(float& v, long long& i, float* pv, long long* pi) {
  rtx_warp_arg<MAX, LAST>(v, i);
  const unsigned lane = threadIdx.x & 31u;
  if (lane == 0u) { pv[threadIdx.x >> 5] = v; pi[threadIdx.x >> 5] = i; }
  __syncthreads();
  const unsigned from = lane < (unsigned)NWARPS ? lane : 0u;
  v = pv[from]; i = pi[from];
  rtx_warp_arg<MAX, LAST>(v, i);
  __syncthreads();
}
"""


# ---------------------------------------------------------------- what a node computes


@dataclass(frozen=True)
class Fold:
    """A Reduce op as a fold of float registers: ``s = combine(s, pre(v))`` from the combine's
    identity over the reduced elements ``v``, then ``post`` of ``s`` and the count ``n``."""

    combine: str  # "sum", "prod", "max" or "min"
    pre: str = "{v}"
    post: str = "{s}"


FOLDS = {
    "ReduceSum": Fold("sum"), "ReduceMean": Fold("sum", post="{s} / {n}"), "ReduceMax": Fold("max"),
    "ReduceMin": Fold("min"), "ReduceProd": Fold("prod"), "ReduceL1": Fold("sum", "fabsf({v})"),
    "ReduceL2": Fold("sum", "{v} * {v}", "sqrtf({s})"), "ReduceSumSquare": Fold("sum", "{v} * {v}"),
    "ReduceLogSum": Fold("sum", post="logf({s})"),
}  # ReduceLogSumExp takes two passes (max, then the sum of exponentials)
IDENTITY = {"sum": "0.0f", "prod": "1.0f", "max": NEG_INF, "min": POS_INF}
FUNCTOR = {"sum": "RtxSum", "prod": "RtxProd", "max": "RtxMax", "min": "RtxMin"}


@dataclass(frozen=True)
class Reduction:
    """``op`` over ``axes`` (resolved, sorted; none: each output folds one element) of an input
    of ``dtype`` and ``shape``, writing ``out_shape`` of ``out_dtype``."""

    op: str
    dtype: DType
    shape: tuple[int, ...]
    axes: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_dtype: DType
    select_last: bool = False  # ArgMax/ArgMin's select_last_index
    epsilon: float = 0.0
    has_bias: bool = False
    stats: tuple[int, ...] = ()  # the output positions of LayerNormalization's Mean (1), InvStdDev (2) it has

    @property
    def trailing(self) -> bool:
        """Whether each output folds one contiguous run of the input: the reduced axes are the
        last ones but for axes of a fixed size 1 after them."""
        if not self.axes:
            return False
        return all(i in self.axes or is_one(self.shape[i]) for i in range(self.axes[0], len(self.shape)))

    @property
    def count(self) -> int:
        """The elements each output folds."""
        return math.prod(self.shape[i] for i in self.axes)

    def describe(self) -> str:
        return f"{self.op} over axes {list(self.axes)} of [{', '.join(str(d) for d in self.shape)}] {self.dtype.short}"


def is_one(d: int) -> bool:
    """A dim that is 1 at every shape of the profile (a DimInt may be 1 here and not elsewhere)."""
    return not is_dynamic(d) and int(d) == 1


def reduction_problem(node: Node, inputs: Sequence[TensorType | None], *, opset: int = 21,
                      axes: Sequence[int] | None = None) -> Reduction:
    """``node`` (one of ROW_OPS) on inputs of these static types (None for omitted optional
    inputs) as a Reduction; CodegenError for what the kernels do not cover. ``opset`` is the
    model's default-domain opset (axis and axes rules changed with it); ``axes`` is the value
    of a Reduce op's constant axes input (from opset 13 for ReduceSum, 18 for the others)."""
    if node.domain not in _ONNX or node.op_type not in ROW_OPS:
        raise CodegenError(f"{node.label} is not a reduction, softmax or row normalization")
    if not inputs or inputs[0] is None or not inputs[0].is_static:
        raise CodegenError(f"{node.label}: reduction kernels need a static input shape")
    x = inputs[0]
    dtype, shape = x.dtype, tuple(_dim(d) for d in x.shape)
    if dtype not in ROW_DTYPES:
        raise CodegenError(f"{node.label}: reduction kernels take float32, float16 or bfloat16, not {dtype.short}")
    rank, op = len(shape), node.op_type
    stats = tuple(i for i, o in enumerate(node.outputs) if o and i)
    if not node.outputs or not node.outputs[0] or (stats and op != "LayerNormalization"):
        raise CodegenError(f"{node.label}: only the first output is generated")
    if op in REDUCE_OPS:
        reduced = _reduced_axes(node, shape, opset, axes)
        return Reduction(op, dtype, shape, reduced, _kept(shape, reduced, bool(node.attr("keepdims", 1))), dtype)
    if rank == 0:
        raise CodegenError(f"{node.label}: no kernel for a scalar input")
    if op in ARG_OPS:
        reduced = (_axis(node, node.attr("axis", 0), rank),)
        return Reduction(op, dtype, shape, reduced, _kept(shape, reduced, bool(node.attr("keepdims", 1))),
                         DType.INT64, select_last=bool(node.attr("select_last_index", 0)))
    if op in ALONG_AXIS_OPS:
        if opset >= 13:
            reduced = (_axis(node, node.attr("axis", -1), rank),)
        else:  # before opset 13: over the input flattened to 2-D at ``axis``
            reduced = tuple(range(_axis(node, node.attr("axis", 1), rank), rank))
        return Reduction(op, dtype, shape, reduced, shape, dtype)
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
    return Reduction(op, dtype, shape, tuple(range(start, rank)), shape, dtype,
                     epsilon=float(node.attr("epsilon", 1e-5)),
                     has_bias=params[-1] is not None and op == "LayerNormalization", stats=stats)


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


def _reduced_axes(node: Node, shape: tuple[int, ...], opset: int, axes: Sequence[int] | None) -> tuple[int, ...]:
    """A Reduce op's axes, resolved and sorted: none where noop_with_empty_axes makes an empty
    list a per-element map (and for a scalar, as the reference backend does)."""
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
    if rank == 0 or (not listed and node.attr("noop_with_empty_axes", 0)):
        return ()
    return tuple(sorted({_axis(node, a, rank) for a in listed or range(rank)}))


def _kept(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def count_literal(n: int) -> str:
    """The element count ``n`` as a float32 C operand (a conversion when ``n`` is a dim argument)."""
    return f"((float)({n}))" if is_dynamic(n) else C.literal(float(n), F32)


def finite_max_line(m: str) -> str:
    """LogSumExp's shift: numpy's subtracts the max only where it is finite (inf - inf is nan)."""
    return f"if (!(fabsf({m}) < {POS_INF})) {m} = 0.0f;"


# ---------------------------------------------------------------- row kernels


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
    out_dtype: DType | None = None  # the input's where None
    select_last: bool = False
    stats: tuple[int, ...] = ()  # as Reduction.stats

    @property
    def stats_shape(self) -> tuple[int, ...]:
        """The shape of LayerNormalization's Mean and InvStdDev: the input's, a row kept as 1s."""
        return (*self.shape[:len(self.shape) - self.row_rank], *(1,) * self.row_rank)


def reduction_kernel(node: Node, inputs: Sequence[TensorType | None], *, opset: int = 21,
                     axes: Sequence[int] | None = None) -> KernelSource:
    """The row kernel computing ``node`` (one of ROW_OPS) over trailing axes (see
    ``reduction_problem`` for the arguments); CodegenError where the axes are not the trailing
    ones (the lowering, ops/reduction.py, gives those the strided kernels)."""
    return row_kernel(row_problem(node, inputs, opset=opset, axes=axes))


def row_problem(node: Node, inputs: Sequence[TensorType | None], *, opset: int = 21,
                axes: Sequence[int] | None = None) -> RowProblem:
    """``node`` as a [rows, cols] problem; CodegenError for what the row kernels do not cover."""
    return rows_of(reduction_problem(node, inputs, opset=opset, axes=axes), node.label)


def rows_of(r: Reduction, label: str = "") -> RowProblem:
    """A trailing Reduction as [rows, cols]: the kept dims make the rows, the reduced the columns."""
    if not r.trailing:
        raise CodegenError(f"{label or r.op}: {r.describe()} is not over the trailing axes (row kernels "
                           "cover those; the strided kernels the others)")
    rows = math.prod(d for i, d in enumerate(r.shape) if i not in r.axes)
    return RowProblem(r.op, r.dtype, r.shape, r.out_shape, rows, r.count, len(r.shape) - r.axes[0], r.epsilon,
                      r.has_bias, r.out_dtype, r.select_last, r.stats)


def row_kernel(p: RowProblem) -> KernelSource:
    """The row kernel of ``p``: a warp per row up to WARP_ROW_MAX columns, else a block."""
    args = [KernelArg("in0", BufferRole.IN, 0, p.dtype, p.shape)]
    if p.op in NORM_OPS:
        row_shape = p.shape[len(p.shape) - p.row_rank:]
        args.append(KernelArg("scale", BufferRole.IN, 1, p.dtype, row_shape))
        if p.has_bias:
            args.append(KernelArg("bias", BufferRole.IN, 2, p.dtype, row_shape))
    args.append(KernelArg("out0", BufferRole.OUT, 0, p.out_dtype or p.dtype, p.out_shape))
    args += [KernelArg(f"out{i}", BufferRole.OUT, i, F32, p.stats_shape) for i in p.stats]
    cols = upper(p.cols)  # in a generic plan: the longest row of the profile decides
    if cols <= WARP_ROW_MAX:
        block, per_row = 32 * WARP_ROWS_PER_BLOCK, 32
    else:
        block = 256 if cols <= 8192 else 1024
        per_row = block
    return KernelSource.named("rtx_row_", _source(p, args, block, per_row), LaunchPolicy(p.rows * per_row, block),
                              args)


@dataclass(frozen=True)
class _Row:
    """How one row kernel walks its row: the column loop, the load of ``x[c]``, and how the
    threads of a row combine (a warp's butterfly, or the block's)."""

    loop: str
    x: str
    warp: bool
    block: int
    writer: str

    def reduce(self, var: str, combine: str) -> str:
        if self.warp:
            return f"{var} = rtx_warp_reduce({var}, {FUNCTOR[combine]}());"
        return (f"{var} = rtx_block_reduce<{self.block // 32}>({var}, {FUNCTOR[combine]}(), {IDENTITY[combine]}, "
                "rtx_partial);")


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
    t = p.dtype
    cols = c_int(p.cols, "ull" if big else "u")
    row = _Row(f"for ({idx} c = {tid}; c < {cols}; c += {stride}u)", C.load("x[c]", t), warp, block, writer)
    if p.op in ("Softmax", "LogSoftmax"):
        body = _softmax_body(p, row)
    elif p.op in NORM_OPS:
        body = _norm_body(p, row)
    elif p.op in ARG_OPS or p.op == "Hardmax":
        body = _arg_body(p, row)
    else:
        body = _reduce_body(p, row)
    params = [f"const {C.storage_type(a.dtype)}* __restrict__ {a.name}" if a.role is BufferRole.IN
              else f"{C.storage_type(a.dtype)}* __restrict__ {a.name}" for a in args]
    stored = C.storage_type(t)
    pointers = [f"const {stored}* x = in0 + row * {cols};"]
    if p.op not in REDUCE_OPS and p.op not in ARG_OPS:
        pointers.append(f"{stored}* y = out0 + row * {cols};")
    rows = c_int(p.rows, "ull" if big else "u")
    head = [f"// rtxrt row kernel: {p.op} over [{p.rows}, {p.cols}] {t.short}, "
            + ("a warp per row" if warp else f"a block of {block} per row"), C.PRELUDE.strip(), HELPERS.strip()]
    if p.op == "ReduceProd":
        head.append(PROD_HELPER)
    shared = [] if warp else ["  __shared__ float rtx_partial[32];"]
    if p.op in ARG_OPS or p.op == "Hardmax":
        head.append(ARG_HELPERS.strip())
        shared += [] if warp else ["  __shared__ long long rtx_partial_index[32];"]
    return loop_kernel(head, params, f"for ({idx} row = {first}; row < {rows}; row += {step}) {{", pointers + body,
                       block=block, before_loop=shared)


def _softmax_body(p: RowProblem, row: _Row) -> list[str]:
    loop, x = row.loop, row.x
    body = [f"float m = {NEG_INF};", f"{loop} m = RtxMax()(m, {x});", row.reduce("m", "max"),
            "float s = 0.0f;", f"{loop} s += expf({x} - m);", row.reduce("s", "sum")]
    if p.op == "Softmax":
        return body + [f"{loop} y[c] = {C.store(f'expf({x} - m) / s', p.dtype)};"]
    return body + ["const float ls = logf(s);", f"{loop} y[c] = {C.store(f'({x} - m) - ls', p.dtype)};"]


def _norm_body(p: RowProblem, row: _Row) -> list[str]:
    loop, x, t = row.loop, row.x, p.dtype
    count, eps = count_literal(p.cols), C.literal(p.epsilon, F32)
    if p.op == "RMSNormalization":
        return ["float q = 0.0f;", f"{loop} {{ const float v = {x}; q += v * v; }}", row.reduce("q", "sum"),
                f"const float rms = sqrtf(q / {count} + {eps});",
                (f"{loop} {{ const float rn = {C.round_to(f'({x} / rms)', t)}; "
                 f"y[c] = {C.store('rn * ' + C.load('scale[c]', t), t)}; }}")]
    affine = f"rn * {C.load('scale[c]', t)}"
    if p.has_bias:
        affine = f"{C.round_to(f'({affine})', t)} + {C.load('bias[c]', t)}"
    return ["float s = 0.0f;", f"{loop} s += {x};", row.reduce("s", "sum"),
            f"const float mean = s / {count};",
            "float q = 0.0f;", f"{loop} {{ const float d = {x} - mean; q += d * d; }}",
            row.reduce("q", "sum"),
            f"const float inv = 1.0f / sqrtf(q / {count} + {eps});",
            *_stats_lines(p, row),
            (f"{loop} {{ const float rn = {C.round_to(f'(({x} - mean) * inv)', t)}; "
             f"y[c] = {C.store(affine, t)}; }}")]


def _stats_lines(p: RowProblem, row: _Row) -> list[str]:
    """LayerNormalization's Mean and InvStdDev, where the node has them: every thread of the
    row holds both after the reductions, so its first thread stores them."""
    stores = " ".join(f"out{i}[row] = {STAT_VALUES[i]};" for i in p.stats)
    return [f"if ({row.writer}) {{ {stores} }}"] if stores else []


def _reduce_body(p: RowProblem, row: _Row) -> list[str]:
    loop, x, t = row.loop, row.x, p.dtype
    if p.op == "ReduceLogSumExp":
        return [f"float m = {NEG_INF};", f"{loop} m = RtxMax()(m, {x});", row.reduce("m", "max"),
                finite_max_line("m"), "float s = 0.0f;", f"{loop} s += expf({x} - m);", row.reduce("s", "sum"),
                f"if ({row.writer}) out0[row] = {C.store('logf(s) + m', t)};"]
    fold = FOLDS[p.op]
    functor = FUNCTOR[fold.combine]
    if fold.pre == "{v}":
        step = f"{loop} s = {functor}()(s, {x});"
    else:
        step = f"{loop} {{ const float v = {x}; s = {functor}()(s, {fold.pre.format(v='v')}); }}"
    value = fold.post.format(s="s", n=count_literal(p.cols))
    return [f"float s = {IDENTITY[fold.combine]};", step, row.reduce("s", fold.combine),
            f"if ({row.writer}) out0[row] = {C.store(value, t)};"]


def _arg_body(p: RowProblem, row: _Row) -> list[str]:
    """ArgMax/ArgMin (and Hardmax's first maximum): every thread keeps its best (value, index),
    the threads of the row combine them, and the winner is the row's."""
    hi = p.op != "ArgMin"
    order = f"{'true' if hi else 'false'}, {'true' if p.select_last else 'false'}"
    body = [f"float b = {NEG_INF if hi else POS_INF};", f"long long bi = {'-1LL' if p.select_last else LAST_INDEX};",
            f"{row.loop} {{ const float v = {row.x}; "
            f"if (rtx_arg_better<{order}>(v, (long long)c, b, bi)) {{ b = v; bi = (long long)c; }} }}",
            f"rtx_warp_arg<{order}>(b, bi);" if row.warp
            else f"rtx_block_arg<{row.block // 32}, {order}>(b, bi, rtx_partial, rtx_partial_index);"]
    if p.op == "Hardmax":
        return body + [f"{row.loop} y[c] = {C.store('(long long)c == bi ? 1.0f : 0.0f', p.dtype)};"]
    return body + [f"if ({row.writer}) out0[row] = bi;"]
