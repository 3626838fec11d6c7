"""Data movement: transposes, slices, splits, concatenation, gathers, broadcasts, casts
between float types, and the view ops (a copy where the memory plan cannot alias them)."""
from __future__ import annotations

from .data_movement_source import (
    CAST_DTYPES,
    MAX_CONCAT_INPUTS,
    cast_kernel,
    concat_kernel,
    expand_kernel,
    gather_kernel,
    slice_kernel,
    tile_kernel,
    transpose_kernel,
)
from ....ir.ops import view_ops
from ..codegen.dynamic import is_dynamic
from ..codegen.kernel_source import KernelSource
from ..plan.forms import NHWC, TO_NHWC, TensorForm
from ..plan.program import BufferRole, Copy, NodeProgram, Ref
from .context import LowerContext, Unsupported, kernel_args, launch_of, single_kernel
from .lowering import LOWERINGS



def lower_view(ctx: LowerContext) -> list[NodeProgram]:
    """Same bytes, another shape: a copy the memory plan turns into an alias when it can."""
    ctx.require_logical()
    x = ctx.input(0)
    out = TensorForm(x.dtype, ctx.outputs[0].shape)
    if out.nbytes != x.nbytes:
        raise Unsupported(f"{ctx.node.label}: {x.describe()} and {out.describe()} differ in size")
    steps = [Copy(Ref.input(0), Ref.output(0), x.nbytes)] if x.nbytes else []
    return [NodeProgram(steps, [out], label="view")]


def lower_transpose(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x = ctx.input(0)
    kernel = transpose_kernel(x.shape, ctx.node.attr("perm"), x.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "transpose")]


def lower_slice(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    node, x = ctx.node, ctx.input(0)
    if ctx.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends = (_ints(ctx.const(i, name)) for i, name in ((1, "starts"), (2, "ends")))
        axes = _ints(ctx.const(3, "axes")) if ctx.has(3) else None
        steps = _ints(ctx.const(4, "steps")) if ctx.has(4) else None
    out = ctx.outputs[0].shape
    kernel = slice_kernel(x.shape, starts, ends, x.dtype, axes, steps,
                          out_shape=out if _generic(x.shape, out) else None)
    return [single_kernel(kernel, [TensorForm(x.dtype, out)], "slice")]


def lower_split(ctx: LowerContext) -> list[NodeProgram]:
    """One slice kernel per output; the sizes are the outputs' (already inferred)."""
    ctx.require_logical()
    node, x = ctx.node, ctx.input(0)
    axis = int(node.attr("axis", 0)) % len(x.shape)
    program = NodeProgram([], [], label="split")
    start = 0
    for j, form in enumerate(ctx.outputs):
        if form is None:
            raise Unsupported(f"{node.label}: output {j} has no type")
        end = form.shape[axis] if not is_dynamic(start) and start == 0 else start + form.shape[axis]
        out = form.shape if _generic(x.shape, form.shape) else None
        kernel = _retarget(slice_kernel(x.shape, [start], [end], x.dtype, [axis], out_shape=out), j)
        _add(program, kernel)
        program.outputs.append(TensorForm(x.dtype, form.shape))
        start = end
    return [program]


def lower_concat(ctx: LowerContext) -> list[NodeProgram]:
    node = ctx.node
    forms = [ctx.input(i) for i in range(len(node.inputs))]
    if len(forms) > MAX_CONCAT_INPUTS:
        raise Unsupported(f"{node.label}: more than {MAX_CONCAT_INPUTS} inputs")
    layouts = {f.layout for f in forms}
    if len(layouts) != 1 or len({f.dtype for f in forms}) != 1:
        raise Unsupported(f"{node.label}: inputs differ in layout or type")
    layout = layouts.pop()
    axis = int(node.attr("axis")) % len(forms[0].shape)
    if layout == NHWC:
        axis = TO_NHWC.index(axis)
    kernel = concat_kernel([f.physical for f in forms], axis, forms[0].dtype)
    return [single_kernel(kernel, [TensorForm(forms[0].dtype, ctx.outputs[0].shape, layout)], "concat")]


def lower_gather(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x, indices = ctx.input(0), ctx.input(1)
    kernel = gather_kernel(x.shape, indices.shape, int(ctx.node.attr("axis", 0)), x.dtype, indices.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "gather")]


def lower_expand(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x = ctx.input(0)
    out = ctx.outputs[0].shape
    # a generic plan: the output's dims, which the target's values here are at these shapes only
    target = out if _generic(x.shape, out) else _ints(ctx.const(1, "shape"))
    kernel = expand_kernel(x.shape, target, x.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "expand")]


def lower_tile(ctx: LowerContext) -> list[NodeProgram]:
    ctx.require_logical()
    x = ctx.input(0)
    kernel = tile_kernel(x.shape, _ints(ctx.const(1, "repeats")), x.dtype)
    return [single_kernel(kernel, [TensorForm(x.dtype, ctx.outputs[0].shape)], "tile")]


def conversion(src: TensorForm, dst: TensorForm) -> list[KernelSource]:
    """The kernels turning a value stored as ``src`` into ``dst`` (same logical shape): a
    cast, a layout transpose, or both (cast first: the narrower side moves fewer bytes when
    narrowing, and either order is exact)."""
    kernels = []
    if src.dtype != dst.dtype:
        if src.dtype not in CAST_DTYPES or dst.dtype not in CAST_DTYPES:
            raise Unsupported(f"no conversion from {src.describe()} to {dst.describe()}")
        kernels.append(cast_kernel(src.physical, src.dtype, dst.dtype))
    if not TensorForm(dst.dtype, src.shape, src.layout).same_bytes(dst):
        perm = TO_NHWC if dst.layout == NHWC else (0, 3, 1, 2)
        kernels.append(transpose_kernel(src.physical, perm, dst.dtype))
    return kernels


def _retarget(kernel: KernelSource, output: int) -> KernelSource:
    """A single-output kernel writing output ``output`` of the node."""
    from dataclasses import replace

    args = tuple(replace(a, index=output) if a.role is BufferRole.OUT else a for a in kernel.args)
    return replace(kernel, args=args)


def _add(program: NodeProgram, kernel: KernelSource) -> None:
    launch = launch_of(kernel, kernel_args(kernel))
    if all(launch.grid):
        program.steps.append(launch)
    program.kernels[kernel.name] = kernel.source


def _generic(*shapes) -> bool:
    """Whether any of ``shapes`` holds a dim that varies over a generic plan's profile."""
    return any(is_dynamic(d) for shape in shapes for d in shape)


def _ints(value) -> list[int]:
    return [int(v) for v in value.reshape(-1)]

for _op in view_ops():
    LOWERINGS.add(_op, lower_view)
for _op, _lowering in {"Transpose": lower_transpose, "Slice": lower_slice, "Split": lower_split, "Concat": lower_concat,
                       "Gather": lower_gather, "Expand": lower_expand, "Tile": lower_tile}.items():
    LOWERINGS.add(_op, _lowering)
