"""Generated kernels that only move data: Transpose (and the NCHW<->NHWC layout conversions),
Slice, Expand, Tile, Concat, Gather, and Cast between the float storage types.

Shapes are concrete, so they are baked into the source. Copies move elements as unsigned
integers of the element's size: an fp16 and an int16 transpose of one shape are one kernel,
and the result is bit-exact for every dtype. Each kernel walks the output row-major with a
grid-stride loop (coalesced writes) and reads the input where the op maps that element.

Transpose, Slice, Expand and Tile are all one "strided copy": the input offset of output
element (c0, c1, ...) is ``base + sum(c_d * m_d)`` with per-dim multipliers ``m_d`` that may
be 0 (broadcast) or negative (negative slice steps). Tile is an Expand over interleaved dims:
(r0, d0, r1, d1, ...) with multiplier 0 on the repeat dims has the same row-major layout as
the tiled output. Neighbouring dims walked alike are merged, so few divisions remain
(NCHW->NHWC becomes a 3-D transpose [N, C, HW] -> [N, HW, C]).

In a generic plan the dims that vary over the profile are kernel arguments (codegen/dynamic.py):
merges, 16-byte vectorization and index widths are decided from the dims' expressions and
bounds (``same_dim``, ``divisible``, ``upper``), so the source is the same at every shape.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce

import numpy as np

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dims_text, divisible, is_dynamic, lower, same_dim, upper
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole
from .elementwise_source import broadcast_shape, broadcast_strides

MAX_CONCAT_INPUTS = 8
CAST_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16})
_BYTES = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long", 16: "uint4"}
_INT32_LIMIT = 2**31


# ---------------------------------------------------------------- public API

def transpose_kernel(shape: Sequence[int], perm: Sequence[int] | None, dtype: DType) -> KernelSource:
    """ONNX Transpose of a contiguous ``shape`` tensor (``perm`` None: reverse the axes)."""
    shape = _shape(shape)
    rank = len(shape)
    perm = tuple(range(rank - 1, -1, -1)) if perm is None else tuple(int(p) for p in perm)
    if sorted(perm) != list(range(rank)):
        raise CodegenError(f"Transpose: perm {list(perm)} is not a permutation of {rank} axes")
    strides = _contiguous(shape)
    out = tuple(shape[p] for p in perm)
    return _strided_copy("Transpose", shape, out, [strides[p] for p in perm], 0, dtype, dtype,
                         f"perm {list(perm)}")


def layout_conversion(shape: Sequence[int], to_nhwc: bool, dtype: DType) -> KernelSource:
    """The copy the runtime inserts at an NHWC region's border: channels-first ``shape``
    (N, C, *spatial) to channels-last when ``to_nhwc``, else channels-last ``shape``
    (N, *spatial, C) to channels-first. Any spatial rank (>= 1)."""
    rank = len(shape)
    if rank < 3:
        raise CodegenError(f"layout conversion needs a rank >= 3 tensor, got shape {list(shape)}")
    perm = (0, *range(2, rank), 1) if to_nhwc else (0, rank - 1, *range(1, rank - 1))
    return transpose_kernel(shape, perm, dtype)


def slice_kernel(shape: Sequence[int], starts: Sequence[int], ends: Sequence[int], dtype: DType,
                 axes: Sequence[int] | None = None, steps: Sequence[int] | None = None,
                 out_shape: Sequence[int] | None = None) -> KernelSource:
    """ONNX Slice with static starts/ends/axes/steps (negative axes, starts and ends count
    from the end; out-of-range bounds clamp; negative steps walk backwards), as Python's
    slicing computes it.

    In a generic plan (dims of the profile in ``shape``), ``out_shape`` (the output's shape,
    whose dims the plan names) gives the sizes of the sliced axes, and a start that is a dim
    (as Split gives) is taken as already in range with a positive step."""
    shape = _shape(shape)
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise CodegenError("Slice: starts, ends, axes and steps differ in length")
    lo, step = [0] * rank, [1] * rank
    out = list(shape)
    for start, end, axis, s in zip(starts, ends, axes, steps):
        if not -rank <= axis < rank:
            raise CodegenError(f"Slice: axis {axis} is out of range for rank {rank}")
        if s == 0:
            raise CodegenError("Slice: a step must not be 0")
        axis %= rank
        begin, _, stride = slice(int(start), int(end), s).indices(int(shape[axis]))
        lo[axis], step[axis] = begin, stride
        out[axis] = len(range(*slice(int(start), int(end), s).indices(int(shape[axis]))))
        if is_dynamic(shape[axis]) or is_dynamic(start) or (out_shape is not None and is_dynamic(out_shape[axis])):
            lo[axis], out[axis] = _generic_slice(shape[axis], start, s, begin, out[axis],
                                                 None if out_shape is None else out_shape[axis])
    strides = _contiguous(shape)
    live = all(is_dynamic(n) or n for n in out)
    base = reduce(lambda a, b: b if _zero(a) else a + b,
                  [b * st for b, st, n in zip(lo, strides, out) if is_dynamic(n) or n], 0) if live else 0
    return _strided_copy("Slice", shape, tuple(out), [s * st for s, st in zip(step, strides)], base,
                         dtype, dtype, f"starts {dims_text(lo)} steps {step}")


def _generic_slice(size: int, start: int, step: int, begin: int, count: int, out_size: int | None) -> tuple[int, int]:
    """The first index and the length of a slice of an axis of ``size`` in a generic plan, as
    the same expressions at every shape of the profile where that can be told from the
    profile's bounds (else the values here: correct, but a kernel of these shapes alone).
    ``begin`` and ``count`` are the values here; ``out_size`` the output's size (a dim where
    it varies)."""
    if out_size is not None:
        if int(out_size) != count:
            raise CodegenError(f"Slice: the output's axis has {int(out_size)} elements, the slice {count}")
        count = out_size
    if is_dynamic(start):  # a dim: Split's offsets, in range by construction
        if step != 1:
            raise CodegenError("Slice: a start that varies over the profile needs step 1")
        return start, count
    start = int(start)
    if step > 0:
        if 0 <= start <= lower(size):
            return start, count
        if start < 0 and -start <= lower(size):
            return size + start, count
    else:
        if start >= upper(size) - 1:
            return size - 1, count
        if 0 <= start < lower(size):
            return start, count
        if start < 0 and -start <= lower(size):
            return size + start, count
    return begin, count


def _zero(value: int) -> bool:
    return not is_dynamic(value) and value == 0


def expand_kernel(shape: Sequence[int], target: Sequence[int], dtype: DType) -> KernelSource:
    """ONNX Expand: ``shape`` broadcast against ``target`` (numpy's rule, either may be 1)."""
    shape = _shape(shape)
    out = broadcast_shape([shape, _shape(target)])
    mults = None if out is None else broadcast_strides(shape, out)
    if out is None or mults is None:
        raise CodegenError(f"Expand: shape {dims_text(shape)} does not broadcast to {dims_text(target)}")
    return _strided_copy("Expand", shape, out, mults, 0, dtype, dtype, f"to {dims_text(out)}")


def tile_kernel(shape: Sequence[int], repeats: Sequence[int], dtype: DType) -> KernelSource:
    """ONNX Tile: ``repeats[a]`` copies of ``shape`` along each axis a."""
    shape = _shape(shape)
    repeats = tuple(int(r) for r in repeats)
    if len(repeats) != len(shape) or min(repeats, default=0) < 0:
        raise CodegenError(f"Tile: repeats {list(repeats)} must be one non-negative count per axis of {list(shape)}")
    strides = _contiguous(shape)
    dims = [d for r, n in zip(repeats, shape) for d in (r, n)]
    mults = [m for s in strides for m in (0, s)]
    kernel = _strided_copy("Tile", shape, tuple(dims), mults, 0, dtype, dtype, f"repeats {list(repeats)}")
    out = tuple(r * n for r, n in zip(repeats, shape))
    return _with_output_shape(kernel, out)


def cast_kernel(shape: Sequence[int], src: DType, dst: DType) -> KernelSource:
    """Cast between storage types fp32, fp16 and bf16 (round to nearest even), as at graph
    inputs and outputs whose storage differs from the graph's; the same type is a copy."""
    shape = _shape(shape)
    if src not in CAST_DTYPES or dst not in CAST_DTYPES:
        raise CodegenError(f"Cast kernels convert between float32, float16 and bfloat16, not "
                           f"{src.short} -> {dst.short}")
    return _strided_copy("Cast", shape, shape, _contiguous(shape), 0, src, dst, f"to {dst.short}")


def concat_kernel(shapes: Sequence[Sequence[int]], axis: int, dtype: DType) -> KernelSource:
    """ONNX Concat of up to 8 inputs along ``axis`` (negative counts from the end). Each
    output row (all dims before ``axis``) is the inputs' rows side by side."""
    shapes = [_shape(s) for s in shapes]
    if not 1 <= len(shapes) <= MAX_CONCAT_INPUTS:
        raise CodegenError(f"Concat kernels take 1 to {MAX_CONCAT_INPUTS} inputs, got {len(shapes)}")
    rank = len(shapes[0])
    if not -rank <= axis < rank:
        raise CodegenError(f"Concat: axis {axis} is out of range for rank {rank}")
    axis %= rank
    for s in shapes:
        if len(s) != rank or s[:axis] != shapes[0][:axis] or s[axis + 1:] != shapes[0][axis + 1:]:
            raise CodegenError(f"Concat: shapes {[dims_text(s) for s in shapes]} differ off axis {axis}")
    out = (*shapes[0][:axis], _sum([s[axis] for s in shapes]), *shapes[0][axis + 1:])
    total = math.prod(out)
    outer = math.prod(out[:axis])
    rows = [math.prod(s[axis:]) for s in shapes]  # elements of one input row
    width = _sum(rows)
    index, suffix = index_type(total)
    elem = _BYTES[dtype.itemsize]
    body = []
    if is_dynamic(outer) or outer > 1:
        body += [f"const {index} row = i / {c_int(width, suffix)};",
                 f"const {index} col = i - row * {c_int(width, suffix)};"]
    else:
        body += [f"const {index} row = 0; const {index} col = i;"]
    branches, offset = [], 0
    live = [(k, n) for k, n in enumerate(rows) if is_dynamic(n) or n]
    for j, (k, n) in enumerate(live):
        read = f"out0[i] = in{k}[row * {c_int(n, suffix)} + (col - {c_int(offset, suffix)})];"
        end = _sum([offset, n])
        if j == len(live) - 1:
            branches.append(f"else {{ {read} }}" if j else read)
        else:
            branches.append(f"{'else ' if j else ''}if (col < {c_int(end, suffix)}) {{ {read} }}")
        offset = end
    params = [f"const {elem}* __restrict__ in{k}" for k in range(len(shapes))] + [f"{elem}* __restrict__ out0"]
    source = _kernel_source(f"Concat along axis {axis} of [{', '.join(dims_text(s) for s in shapes)}]", params,
                            total, body + branches)
    args = [KernelArg(f"in{k}", BufferRole.IN, k, dtype, s) for k, s in enumerate(shapes)]
    args.append(KernelArg("out0", BufferRole.OUT, 0, dtype, out))
    return _finish("rtx_concat_", source, total, args)


def gather_kernel(shape: Sequence[int], indices_shape: Sequence[int], axis: int, dtype: DType,
                  index_dtype: DType = DType.INT64) -> KernelSource:
    """ONNX Gather along ``axis`` with int64 or int32 indices; negative indices count from
    the end. Out-of-range indices are an error in ONNX; here they are clamped, never read
    outside the input."""
    shape, indices_shape = _shape(shape), _shape(indices_shape)
    if index_dtype not in (DType.INT64, DType.INT32):
        raise CodegenError(f"Gather: indices must be int64 or int32, got {index_dtype.short}")
    rank = len(shape)
    if not -rank <= axis < rank:
        raise CodegenError(f"Gather: axis {axis} is out of range for rank {rank}")
    axis %= rank
    out = (*shape[:axis], *indices_shape, *shape[axis + 1:])
    outer, size, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    count = math.prod(indices_shape)
    total = math.prod(out)
    index, suffix = index_type(max(upper(total), upper(math.prod(shape))))
    elem = _BYTES[dtype.itemsize]
    size_ll = _c_ll(size)
    last = _c_ll(size - 1) if is_dynamic(size) else f"{max(size - 1, 0)}LL"
    body = [
        f"{index} r = i;",
        f"const {index} c2 = r % {c_int(inner, suffix)}; r /= {c_int(inner, suffix)};",
        f"const {index} c1 = r % {c_int(count, suffix)}; const {index} c0 = r / {c_int(count, suffix)};",
        "long long k = (long long)idx[c1];",
        f"if (k < 0) k += {size_ll};",
        f"k = k < 0 ? 0 : k >= {size_ll} ? {last} : k;  // out of range: clamped",
        f"out0[i] = in0[(c0 * {c_int(size, suffix)} + ({index})k) * {c_int(inner, suffix)} + c2];",
    ]
    params = [f"const {elem}* __restrict__ in0", f"const {C.storage_type(index_dtype)}* __restrict__ idx",
              f"{elem}* __restrict__ out0"]
    if outer * size * inner == 0 and total:
        raise CodegenError(f"Gather: cannot take indices from an empty axis of {list(shape)}")
    source = _kernel_source(f"Gather axis {axis} of {dims_text(shape)} by {dims_text(indices_shape)}", params, total,
                            body, index=(index, suffix))
    args = (KernelArg("in0", BufferRole.IN, 0, dtype, shape), KernelArg("idx", BufferRole.IN, 1, index_dtype, indices_shape),
            KernelArg("out0", BufferRole.OUT, 0, dtype, out))
    return _finish("rtx_gather_", source, total, list(args))


# ---------------------------------------------------------------- the strided copy

def _strided_copy(op: str, in_shape: tuple[int, ...], out: tuple[int, ...], mults: Sequence[int], base: int,
                  src: DType, dst: DType, what: str) -> KernelSource:
    for dtype in (src, dst):  # (a float8 or sub-byte integer copy moves bytes)
        C.check(dtype, float8=True, sub_byte=True)
    total, in_total = math.prod(out), math.prod(in_shape)
    dims, walk = _collapse(list(out), list(mults))
    if src == dst and (vector := _vector_width(dims, walk, base, src.itemsize)) > 1:
        dims, walk = [*dims[:-1], dims[-1] // vector], [m // vector for m in walk]
        walk[-1], base = 1, base // vector
        total, in_total = total // vector, in_total // vector
    else:
        vector = 1
    index, suffix = index_type(max(upper(total), upper(in_total)))
    wide = max(upper(total), upper(in_total)) >= _INT32_LIMIT
    offset_type, lsuf = ("long long", "LL") if wide else ("int", "")
    body = []
    contiguous = len(walk) == len(dims) and all(same_dim(m, c) for m, c in zip(walk, _contiguous(dims)))
    if contiguous and same_dim(base, 0):
        where = "i"  # the input is read where the output is written (Cast, a no-op Transpose)
    else:
        coords = [f"c{d}" for d in range(len(dims))]
        if len(dims) > 1:
            body.append(f"{index} r = i;")
            for d in range(len(dims) - 1, 0, -1):
                n = c_int(dims[d], suffix)
                body.append(f"const {index} {coords[d]} = r % {n}; r /= {n};")
            body.append(f"const {index} {coords[0]} = r;")
        elif dims:
            body.append(f"const {index} c0 = i;")
        terms = [f"({offset_type}){c} * ({_c_offset(m, offset_type, lsuf)})"
                 for c, m in zip(coords, walk) if is_dynamic(m) or m]
        body.append(f"const {offset_type} src = {' + '.join([f'({_c_offset(base, offset_type, lsuf)})', *terms])};")
        where = "src"
    if src == dst:
        elem = _BYTES[src.itemsize * vector]
        in_type = out_type = elem
        body.append(f"out0[i] = in0[{where}];")
    else:
        in_type, out_type = C.storage_type(src), C.storage_type(dst)
        body.append(f"out0[i] = {C.store(C.load(f'in0[{where}]', src), dst)};")
    params = [f"const {in_type}* __restrict__ in0", f"{out_type}* __restrict__ out0"]
    source = _kernel_source(f"{op} {what}: {dims_text(in_shape)} -> {dims_text(out)}", params, total, body,
                            prelude=src != dst, index=(index, suffix))
    args = [KernelArg("in0", BufferRole.IN, 0, src, in_shape), KernelArg("out0", BufferRole.OUT, 0, dst, out)]
    return _finish(f"rtx_{op.lower()}_", source, total, args)


def _vector_width(dims: list[int], walk: list[int], base: int, itemsize: int) -> int:
    """Elements per 16-byte vector when every contiguous run of the copy is whole, aligned
    vectors (buffers start 256-byte aligned), else 1: a plain copy moves vectors, not
    elements (4-8x fewer threads and index computations)."""
    width = 16 // itemsize
    if width == 1 or not dims or any(not is_dynamic(n) and n == 0 for n in dims) or not same_dim(walk[-1], 1):
        return 1
    if not divisible(dims[-1], width) or not divisible(base, width) or not all(divisible(m, width) for m in walk[:-1]):
        return 1
    return width


def _collapse(dims: list[int], mults: list[int]) -> tuple[list[int], list[int]]:
    """Drop size-1 dims and merge neighbours walked alike (m_d == m_{d+1} * n_{d+1}). A dim
    of a generic plan stays, even where it is 1 or 0 at these shapes."""
    if any(not is_dynamic(n) and n == 0 for n in dims):
        return [0], [0]
    keep = [d for d, n in enumerate(dims) if is_dynamic(n) or n != 1]
    dims, mults = [dims[d] for d in keep], [mults[d] for d in keep]
    d = len(dims) - 2
    while d >= 0:
        if same_dim(mults[d], mults[d + 1] * dims[d + 1]):
            dims[d] *= dims[d + 1]
            mults[d] = mults[d + 1]
            del dims[d + 1], mults[d + 1]
        d -= 1
    return dims, mults


# ---------------------------------------------------------------- shared pieces

def _kernel_source(comment: str, params: list[str], total: int, body: list[str], prelude: bool = False,
                   index: tuple[str, str] | None = None) -> str:
    index, suffix = index or index_type(total)
    head = [f"// rtxrt data movement kernel: {comment}", *([C.PRELUDE.strip()] if prelude else [])]
    return loop_kernel(head, params, grid_stride_loop(index, suffix, total), body)


def _finish(prefix: str, source: str, total: int, args: list[KernelArg]) -> KernelSource:
    return KernelSource.named(prefix, source, LaunchPolicy(total), args)


def _with_output_shape(kernel: KernelSource, shape: tuple[int, ...]) -> KernelSource:
    args = tuple(KernelArg(a.name, a.role, a.index, a.dtype, shape) if a.role is BufferRole.OUT else a
                 for a in kernel.args)
    return KernelSource(kernel.name, kernel.source, kernel.launch, args)


def _contiguous(shape: Sequence[int]) -> list[int]:
    strides, step = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d], step = step, step * shape[d]
    return strides


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as ints; the dims of a generic plan stay dims."""
    if any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise CodegenError(f"data movement kernels need static shapes, got {list(shape)}")
    return tuple(d if is_dynamic(d) else int(d) for d in shape)


def _sum(values: Sequence[int]) -> int:
    """The sum of ``values`` (no ``0 +`` in front of a dim's expression)."""
    return reduce(lambda a, b: b if _zero(a) else a + b, values, 0)


def _c_ll(value: int) -> str:
    """``value`` as a long long C operand."""
    return f"((long long)({value}))" if is_dynamic(value) else f"{int(value)}LL"


def _c_offset(value: int, offset_type: str, lsuf: str) -> str:
    """``value`` (a multiplier or base offset) as an operand of ``offset_type``."""
    return f"({offset_type})({value})" if is_dynamic(value) else f"{int(value)}{lsuf}"
