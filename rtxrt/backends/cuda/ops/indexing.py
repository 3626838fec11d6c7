"""GPU lowerings of the long-tail indexing ops: CumSum, Trilu, OneHot, GatherElements,
GatherND, ScatterND, ScatterElements, ConstantOfShape, Range and EyeLike (kernels in
indexing_source.py and indexing_fill_source.py).

Every op takes its inputs in the logical layout. Inputs that shape the source (CumSum's
axis, a constant Trilu k) must be known when the plan is made; OneHot's depth is a constant
or the size of its output's new axis. Values (OneHot's values, Range's start and delta, a
runtime Trilu k) are read on the device.

Where an op has several schemes (CumSum: serial or chunked; scatters: columns, lines, scan
or winner) each is a tactic, cheapest first by a rough cost model over the profile's largest
shapes; tactics far costlier than the cheapest are not offered (the autotuner would time
them for nothing).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen.dynamic import upper
from ..codegen.kernel_source import KernelSource
from ..plan.forms import TensorForm
from ..plan.program import Copy, NodeProgram, Ref
from .context import LowerContext, Unsupported, kernel_args, launch_of, single_kernel
from .indexing_fill_source import (
    PARTIALS,
    Scan,
    chunks,
    eye_kernel,
    fill_kernel,
    one_hot_kernel,
    partials_bytes,
    range_kernel,
    scan_chunk_finish_kernel,
    scan_chunk_offsets_kernel,
    scan_chunk_sums_kernel,
    scan_kernel,
    trilu_kernel,
)
from .indexing_source import (
    OWNER,
    ScatterElementsProblem,
    ScatterNDProblem,
    gather_elements_kernel,
    gather_nd_kernel,
    scatter_elements_claim_kernel,
    scatter_elements_lines_kernel,
    scatter_elements_winner_kernel,
    scatter_nd_claim_kernel,
    scatter_nd_columns_kernel,
    scatter_nd_scan_kernel,
    scatter_nd_winner_kernel,
)
from .lowering import LOWERINGS

SCAN_CHUNK = 64  # elements a thread of the chunked scan sums
# The cost model, in rough nanoseconds: a launch; a step of a loop over cached indices (per
# SM and ns, the whole GPU busy); a step of a thread's serial walk through memory (latency
# bound where one thread's steps depend on each other, as a scatter's read-modify-writes
# do; a scan's loads can run ahead); and streaming bandwidth (bytes per ns).
_LAUNCH, _CACHED_STEPS_PER_SM_NS, _ROUND_TRIP, _WALK_STEP, _BYTES_PER_NS = 3000, 24, 800, 50, 500
_THREADS_PER_SM = 2048
_OFFER_WITHIN = 16  # tactics up to this many times the cheapest one's cost are offered


def _lowering(*ops: str) -> Callable:
    """Registers a lowering for ``ops``; a CodegenError from a generator becomes an
    Unsupported naming the node."""
    def register(fn: Callable[[LowerContext], list[NodeProgram]]) -> Callable[[LowerContext], list[NodeProgram]]:
        @functools.wraps(fn)
        def lowering(ctx: LowerContext) -> list[NodeProgram]:
            try:
                return fn(ctx)
            except CodegenError as exc:
                if str(exc).startswith(ctx.node.label):
                    raise
                raise Unsupported(f"{ctx.node.label}: {exc}") from None
        for op in ops:
            LOWERINGS.add(op, lowering)
        return lowering
    return register


# ---------------------------------------------------------------- gathers

@_lowering("GatherElements")
def lower_gather_elements(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x, indices = ctx.input(0), ctx.input(1)
    kernel = gather_elements_kernel(x.shape, indices.shape, int(ctx.node.attr("axis", 0)), x.dtype, indices.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "gather_elements")]


@_lowering("GatherND")
def lower_gather_nd(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x, indices = ctx.input(0), ctx.input(1)
    kernel = gather_nd_kernel(x.shape, indices.shape, int(ctx.node.attr("batch_dims", 0)), x.dtype, indices.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "gather_nd")]


# ---------------------------------------------------------------- scatters

@_lowering("ScatterND")
def lower_scatter_nd(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    data, indices, updates = _scatter_inputs(ctx)
    p = ScatterNDProblem(data.shape, indices.shape, updates.shape, data.dtype, indices.dtype,
                         str(ctx.node.attr("reduction", "none")))
    out = [TensorForm(data.dtype, ctx.outputs[0].shape)]
    copy = _copy_cost(data)
    costs = {"scatter_nd_scan": _LAUNCH + _cached_steps(ctx, upper(p.total) * upper(p.updates)),
             "scatter_nd_columns": 2 * _LAUNCH + copy + _waves(ctx, p.inner) * upper(p.updates) * _ROUND_TRIP}
    if p.reduction == "none" and upper(p.updates) < 2**31:
        costs["scatter_nd_winner"] = 4 * _LAUNCH + copy + _streamed(p.targets, p.updates, p.updates * p.inner)

    def build(label: str) -> NodeProgram:
        if label == "scatter_nd_scan":
            return single_kernel(scatter_nd_scan_kernel(p), out, label)
        if label == "scatter_nd_columns":
            return _program(label, out, [scatter_nd_columns_kernel(p)], first=_copy_data(data))
        return _winner(label, out, data, p.targets, scatter_nd_claim_kernel(p), scatter_nd_winner_kernel(p))

    return [build(label) for label in ctx.tactics(_by_cost(costs), str)]


@_lowering("ScatterElements")
def lower_scatter_elements(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    data, indices, updates = _scatter_inputs(ctx)
    p = ScatterElementsProblem(data.shape, indices.shape, updates.shape, int(ctx.node.attr("axis", 0)), data.dtype,
                               indices.dtype, str(ctx.node.attr("reduction", "none")))
    out = [TensorForm(data.dtype, ctx.outputs[0].shape)]
    copy = _copy_cost(data)
    costs = {"scatter_elements_lines": 2 * _LAUNCH + copy + _waves(ctx, p.lines) * upper(p.length) * _ROUND_TRIP}
    if p.reduction == "none" and upper(p.updates) < 2**31:
        costs["scatter_elements_winner"] = 4 * _LAUNCH + copy + _streamed(p.total, p.updates, p.updates)

    def build(label: str) -> NodeProgram:
        if label == "scatter_elements_lines":
            return _program(label, out, [scatter_elements_lines_kernel(p)], first=_copy_data(data))
        return _winner(label, out, data, p.total, scatter_elements_claim_kernel(p), scatter_elements_winner_kernel(p))

    return [build(label) for label in ctx.tactics(_by_cost(costs), str)]


def _scatter_inputs(ctx: LowerContext) -> tuple[TensorForm, TensorForm, TensorForm]:
    data, indices, updates = ctx.input(0), ctx.input(1), ctx.input(2)
    if data.dtype != updates.dtype:
        raise Unsupported(f"{ctx.node.label}: data ({data.describe()}) and updates ({updates.describe()}) "
                          "are stored in different types")
    return data, indices, updates


def _winner(label: str, out: list[TensorForm | None], data: TensorForm, targets: int, claim: KernelSource,
            write: KernelSource) -> NodeProgram:
    """Copy the data, mark every target unowned (-1), let each target's last update claim it
    (atomicMax of its position), then write the winners."""
    unowned = fill_kernel((targets,), DType.INT32, -1, scratch=OWNER)
    return _program(label, out, [unowned, claim, write], first=_copy_data(data), scratch={OWNER: targets * 4})


def _copy_data(data: TensorForm) -> list[Copy]:
    """The output starts as a copy of the data (input 0)."""
    return [Copy(Ref.input(0), Ref.output(0), data.nbytes)] if data.nbytes else []


def _copy_cost(data: TensorForm) -> int:
    return _LAUNCH + 2 * upper(data.size) * data.dtype.itemsize // _BYTES_PER_NS


def _streamed(*elements: int) -> int:
    """Elementwise passes over ``elements`` (at their largest), about 16 bytes an element."""
    return sum(16 * upper(n) for n in elements) // _BYTES_PER_NS


def _cached_steps(ctx: LowerContext, steps: int) -> int:
    return steps // (ctx.sm_count * _CACHED_STEPS_PER_SM_NS)


# ---------------------------------------------------------------- CumSum

@_lowering("CumSum")
def lower_cumsum(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x = ctx.input(0)
    node = ctx.node
    s = Scan(x.shape, _scalar(ctx, 1, "axis"), x.dtype, bool(node.attr("exclusive", 0)), bool(node.attr("reverse", 0)))
    out = [TensorForm(x.dtype, ctx.outputs[0].shape)]
    stream = _streamed(s.total, s.total)
    costs = {"cumsum": _LAUNCH + max(stream, _waves(ctx, s.lines) * upper(s.length) * _WALK_STEP)}
    if upper(s.length) >= 4 * SCAN_CHUNK:
        count = upper(chunks(s, SCAN_CHUNK))
        costs["cumsum_chunked"] = 3 * _LAUNCH + 2 * stream + _WALK_STEP * (
            _waves(ctx, upper(s.lines) * count) * 2 * SCAN_CHUNK + _waves(ctx, s.lines) * count)

    def build(label: str) -> NodeProgram:
        if label == "cumsum":
            return single_kernel(scan_kernel(s), out, label)
        kernels = [scan_chunk_sums_kernel(s, SCAN_CHUNK), scan_chunk_offsets_kernel(s, SCAN_CHUNK),
                   scan_chunk_finish_kernel(s, SCAN_CHUNK)]
        return _program(label, out, kernels, scratch={PARTIALS: partials_bytes(s, SCAN_CHUNK)})

    return [build(label) for label in ctx.tactics(_by_cost(costs), str)]


# ---------------------------------------------------------------- position-valued ops

@_lowering("Trilu")
def lower_trilu(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x = ctx.input(0)
    k: int | None = 0
    if ctx.has(1):
        if ctx.consts[1] is not None:
            k = _scalar(ctx, 1, "k")
        elif ctx.input(1).dtype != DType.INT64:
            raise Unsupported(f"{ctx.node.label}: k must be int64, got {ctx.input(1).describe()}")
        else:
            k = None  # read on the device
    kernel = trilu_kernel(x.shape, bool(ctx.node.attr("upper", 1)), k, x.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "trilu")]


@_lowering("OneHot")
def lower_one_hot(ctx: LowerContext) -> list[NodeProgram]:
    """The depth is a constant, or else the size of the output's new axis (the plan knows the
    output's shape, so it knows the depth)."""
    ctx.require_logical()
    indices, values = ctx.input(0), ctx.input(2)
    if len(values.shape) != 1 or upper(values.shape[0]) != 2:
        raise Unsupported(f"{ctx.node.label}: values must hold [off_value, on_value], got {values.describe()}")
    axis = int(ctx.node.attr("axis", -1))
    out = ctx.outputs[0].shape
    if ctx.consts[1] is not None:
        depth = int(np.asarray(ctx.const(1, "depth")).reshape(-1)[0])  # truncated, as the reference does
    elif -len(out) <= axis < len(out):
        depth = out[axis]
    else:
        raise Unsupported(f"{ctx.node.label}: axis {axis} is out of range for a rank-{len(out)} output")
    kernel = one_hot_kernel(indices.shape, indices.dtype, depth, axis, values.dtype)
    return [single_kernel(kernel, [TensorForm(values.dtype, out)], "one_hot")]


@_lowering("ConstantOfShape")
def lower_constant_of_shape(ctx: LowerContext) -> list[NodeProgram]:
    """A fill of the output's shape (the shape input is known when the plan is made, so the
    output's form already has it)."""
    value = ctx.node.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    logical = DType.from_numpy(value.dtype)
    wanted = ctx.out_dtype(0)
    # a float value the graph stores narrower (fp16 storage, say) is written rounded to it
    dtype = wanted if wanted.is_float and logical.is_float else logical
    kernel = fill_kernel(ctx.outputs[0].shape, dtype, value.reshape(-1)[0])
    return [single_kernel(kernel, [TensorForm(dtype, ctx.outputs[0].shape)], "constant_of_shape")]


@_lowering("Range")
def lower_range(ctx: LowerContext) -> list[NodeProgram]:
    """A fill of ``start + i * delta``: the output's length is static (the plan knows it),
    start and delta are read on the device."""
    start, delta = ctx.input(0), ctx.input(2)
    if start.dtype != delta.dtype or start.layout or delta.layout:
        raise Unsupported(f"{ctx.node.label}: start {start.describe()} and delta {delta.describe()} must be "
                          "stored alike")
    (count,) = ctx.outputs[0].shape
    stash = DType.FLOAT64 if int(ctx.node.attr("stash_type", 1)) == DType.FLOAT64 else DType.FLOAT32
    kernel = range_kernel(count, start.dtype, stash)
    return [single_kernel(kernel, [TensorForm(start.dtype, ctx.outputs[0].shape)], "range")]


@_lowering("EyeLike")
def lower_eye_like(ctx: LowerContext) -> list[NodeProgram]:
    x = ctx.input(0)
    dtype = ctx.out_dtype(0)
    kernel = eye_kernel(x.shape, int(ctx.node.attr("k", 0)), dtype)
    return [single_kernel(kernel, [TensorForm(dtype, ctx.outputs[0].shape)], "eye_like")]


# ---------------------------------------------------------------- shared

def _program(label: str, outputs: list[TensorForm | None], kernels: Sequence[KernelSource], *,
             first: Sequence[Copy] = (), scratch: dict[str, int] | None = None) -> NodeProgram:
    """The ``first`` steps, then a launch of each kernel (none where it has nothing to do);
    a kernel argument named for a scratch buffer points at it."""
    scratch = dict(scratch or {})
    program = NodeProgram(list(first), outputs, label=label, scratch=scratch)
    for kernel in kernels:
        bound = {a.ref: Ref.scratch(a.name) for a in kernel.args if a.name in scratch}
        launch = launch_of(kernel, kernel_args(kernel, bound))
        if all(launch.grid):
            program.steps.append(launch)
        program.kernels[kernel.name] = kernel.source
    return program


def _scalar(ctx: LowerContext, i: int, what: str) -> int:
    value = np.asarray(ctx.const(i, what)).reshape(-1)
    if value.size != 1:
        raise Unsupported(f"{ctx.node.label}: {what} must hold one value, got {value.size}")
    return int(value[0])


def _waves(ctx: LowerContext, threads: int) -> int:
    """How many times over the GPU's resident threads ``threads`` (at their largest) fill it."""
    return max(1, math.ceil(upper(threads) / (ctx.sm_count * _THREADS_PER_SM)))


def _by_cost(costs: dict[str, int]) -> list[str]:
    """Tactic labels, cheapest first, without those far costlier than the cheapest."""
    best = min(costs.values())
    return [label for label, cost in sorted(costs.items(), key=lambda kv: kv[1]) if cost <= _OFFER_WITHIN * best]
