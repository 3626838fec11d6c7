"""Generated kernels for the index-driven ops: GatherElements, GatherND, ScatterND and
ScatterElements (with reductions none/add/mul/max/min), and the pieces the fill and scan
kernels of indexing_fill_source.py share with them.

Every kernel is a grid-stride loop. Shapes may hold DimInts (codegen/dynamic.py): sizes are
formatted into the source as expressions and every decision about the source's text is made
from ``upper``/``lower``/``is_dynamic``, so one source serves every shape of a profile.

Indices: int64 or int32; a negative index counts from the end of its axis, as ONNX says.
An index still outside the axis is an error in ONNX (numpy, and so the reference backend,
raises IndexError); here gathers clamp it into the axis (as data_movement_source's Gather
does) and scatters skip that update, so no kernel reads or writes outside its buffers.

Scatters are deterministic and combine duplicate targets in update order, as the reference
backend does (numpy's fancy assignment keeps the last write; ``ufunc.at`` applies every
update in order). Four schemes:

- columns (ScatterND): the output starts as a copy of the data; thread ``j`` of the slice
  applies every update's element ``j`` in order. No two threads touch one element.
- lines (ScatterElements): thread per line of the indices along the axis; updates collide
  only within a line (their other coordinates are their own), which one thread walks in order.
- scan (ScatterND): thread per output element, which walks all the updates and applies
  those that hit it, in order. Parallel over the output; worth it while updates are few.
- winner (reduction none only): each target's last update is found with an integer
  ``atomicMax`` of the update's position into a scratch array (a result independent of
  thread order), then only that update is written. Parallel over the updates.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dims_text, is_dynamic, upper
from ..codegen.kernel_source import KernelArg, KernelSource, LaunchPolicy, grid_stride_loop, index_type, loop_kernel
from ..plan.program import BufferRole

INDEX_DTYPES = frozenset({DType.INT32, DType.INT64})
REDUCTIONS = ("none", "add", "mul", "max", "min")
OWNER = "owner"  # the winner scheme's scratch array (int32, one entry per target), by KernelArg name
_BITS = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}
_INT32_LIMIT = 2**31


# ---------------------------------------------------------------- shared pieces

def checked_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    """``shape`` as ints (a generic plan's DimInts kept)."""
    if any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise CodegenError(f"{what}: indexing kernels need static shapes, got {list(shape)}")
    return tuple(d if is_dynamic(d) else int(d) for d in shape)


def bits_type(dtype: DType) -> str:
    """The unsigned C type an element is moved as (bit-exact for every type)."""
    C.check(dtype)
    return _BITS[dtype.itemsize]


def check_index_dtype(dtype: DType, what: str) -> None:
    if dtype not in INDEX_DTYPES:
        raise CodegenError(f"{what}: indices must be int64 or int32, got {dtype.short}")


def normalize_axis(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise CodegenError(f"{what}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d], step = step, step * shape[d]
    return strides


def one(value: int) -> bool:
    """A size that is 1 at every shape of the profile."""
    return not is_dynamic(value) and value == 1


def zero(value: int) -> bool:
    return not is_dynamic(value) and value == 0


def c_ll(value: int) -> str:
    """``value`` as a long long C operand."""
    return f"((long long)({value}))" if is_dynamic(value) else f"{int(value)}LL"


def coordinates(flat: str, dims: Sequence[int], index: str, suffix: str, prefix: str = "c") -> tuple[list[str], list[str]]:
    """Lines splitting ``flat`` (row-major over ``dims``) into coordinates, and each dim's
    coordinate as a C operand ("0" for dims that are 1 at every shape)."""
    live = [d for d, n in enumerate(dims) if not one(n)]
    names = ["0"] * len(dims)
    if not live:
        return [], names
    lines = [f"{index} {prefix}r = {flat};"] if len(live) > 1 else []
    for d in reversed(live[1:]):
        n = c_int(dims[d], suffix)
        lines.append(f"const {index} {prefix}{d} = {prefix}r % {n}; {prefix}r /= {n};")
        names[d] = f"{prefix}{d}"
    first = live[0]
    lines.append(f"const {index} {prefix}{first} = {f'{prefix}r' if len(live) > 1 else flat};")
    names[first] = f"{prefix}{first}"
    return lines, names


def offset(coords: Sequence[str], strides: Sequence[int], suffix: str) -> str:
    """sum(coord * stride) as a C expression (terms of coordinate 0 or stride 0 dropped)."""
    terms = []
    for c, s in zip(coords, strides):
        if c == "0" or zero(s):
            continue
        terms.append(c if one(s) else f"{c} * {c_int(s, suffix)}")
    return " + ".join(terms) or f"0{suffix}"


def load_index(var: str, element: str, size: int, *, clamp: bool) -> list[str]:
    """Lines reading index ``element`` into long long ``var``, counted from the end where
    negative, then clamped into [0, size) (``clamp``) or, else, ``var_ok`` says whether it
    lies in the axis."""
    size_ll = c_ll(size)
    lines = [f"long long {var} = (long long){element};", f"if ({var} < 0) {var} += {size_ll};"]
    if clamp:
        lines.append(f"{var} = {var} >= {size_ll} ? {size_ll} - 1 : {var};  // out of range: clamped")
        lines.append(f"{var} = {var} < 0 ? 0 : {var};")
    else:
        lines.append(f"const bool {var}_ok = {var} >= 0 && {var} < {size_ll};  // out of range: skipped")
    return lines


def index_types(*totals: int) -> tuple[str, str]:
    """32-bit loop and offset arithmetic where every extent fits at every shape, else 64-bit."""
    return index_type(max(upper(t) for t in totals))


def make_kernel(prefix: str, comment: str, params: Sequence[str], total: int, body: Sequence[str],
                args: Sequence[KernelArg], index: tuple[str, str], *, head: Sequence[str] = ()) -> KernelSource:
    """A grid-stride kernel over ``[0, total)``."""
    loop = grid_stride_loop(index[0], index[1], total)
    source = loop_kernel([f"// rtxrt indexing kernel: {comment}", *head], params, loop, body)
    return KernelSource.named(prefix, source, LaunchPolicy(total), args)


# ---------------------------------------------------------------- reductions

def combine(old: str, new: str, reduction: str, dtype: DType) -> str:
    """The stored value of ``reduction(old, new)`` for stored values ``old`` and ``new``
    (plain names: each may be read twice), as numpy computes it: floats add and multiply in
    their register type (fp16/bf16 in float, rounded once), integers wrap, bool adds as or
    and multiplies as and; max/min propagate NaN and, on ties, keep the value numpy keeps
    (float16: the old one, other floats: the new one)."""
    if reduction == "none":
        return new
    if dtype == DType.BOOL:
        return f"(unsigned char)({old} {'|' if reduction in ('add', 'max') else '&'} {new})"
    if reduction in ("add", "mul"):
        op = "+" if reduction == "add" else "*"
        if dtype.is_float:
            return C.store(f"{C.load(old, dtype)} {op} {C.load(new, dtype)}", dtype)
        wide = C.unsigned_type(dtype)  # signed overflow is undefined in C++; wrap as numpy does
        return f"({C.storage_type(dtype)})(({wide}){old} {op} ({wide}){new})"
    if reduction not in ("max", "min"):
        raise CodegenError(f"unknown reduction {reduction!r}")
    a, b = C.load(old, dtype), C.load(new, dtype)
    strict = ">" if reduction == "max" else "<"
    if not dtype.is_float:
        return f"({a} {strict}= {b} ? {old} : {new})"
    tie = "=" if dtype == DType.FLOAT16 else ""
    return f"(({a} {strict}{tie} {b} || {a} != {a}) ? {old} : {new})"


def _apply(target: str, update: str, reduction: str, dtype: DType) -> list[str]:
    """Lines combining ``update`` into the element ``target`` (read, combine, write back)."""
    if reduction == "none":
        return [f"{target} = {update};"]
    elem = C.storage_type(dtype)
    return [f"const {elem} a = {target}; const {elem} b = {update};", f"{target} = {combine('a', 'b', reduction, dtype)};"]


def check_reduction(reduction: str, dtype: DType, what: str) -> None:
    if reduction not in REDUCTIONS:
        raise CodegenError(f"{what}: reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    C.check(dtype)


# ---------------------------------------------------------------- gathers

def gather_elements_kernel(shape: Sequence[int], indices_shape: Sequence[int], axis: int, dtype: DType,
                           index_dtype: DType = DType.INT64) -> KernelSource:
    """ONNX GatherElements: ``out[c] = data[c with c[axis] = indices[c]]``; the output has
    the indices' shape, which may be smaller than the data's off the axis."""
    what = "GatherElements"
    shape, ishape = checked_shape(shape, what), checked_shape(indices_shape, what)
    check_index_dtype(index_dtype, what)
    if len(shape) != len(ishape) or not shape:
        raise CodegenError(f"{what}: data {dims_text(shape)} and indices {dims_text(ishape)} need one rank >= 1")
    axis = normalize_axis(axis, len(shape), what)
    if any(d != axis and int(i) > int(n) for d, (i, n) in enumerate(zip(ishape, shape))):
        raise CodegenError(f"{what}: indices {dims_text(ishape)} exceed data {dims_text(shape)} off axis {axis}")
    total = math.prod(ishape)
    if not is_dynamic(shape[axis]) and shape[axis] == 0 and total:
        raise CodegenError(f"{what}: cannot take elements from an empty axis of {dims_text(shape)}")
    index, suffix = index_types(total, math.prod(shape))
    lines, coords = coordinates("i", ishape, index, suffix)
    coords[axis] = f"({index})k"
    body = [*lines, *load_index("k", "idx[i]", shape[axis], clamp=True),
            f"out0[i] = in0[{offset(coords, contiguous_strides(shape), suffix)}];"]
    params, args = gather_params(dtype, index_dtype, shape, ishape, ishape)
    return make_kernel("rtx_gather_elements_", f"{what} axis {axis} of {dims_text(shape)} by {dims_text(ishape)}",
                       params, total, body, args, (index, suffix))


def gather_nd_shape(shape: Sequence[int], indices_shape: Sequence[int], batch_dims: int) -> tuple[int, ...]:
    """GatherND's output shape (the indices' last dim, the index depth, must be fixed)."""
    what = "GatherND"
    if not indices_shape:
        raise CodegenError(f"{what}: indices must have rank >= 1")
    depth = indices_shape[-1]
    if is_dynamic(depth):
        raise CodegenError(f"{what}: the index depth (the indices' last dim) must be the same at every shape")
    b = int(batch_dims)
    if not 0 <= b < min(len(shape), len(indices_shape)) or b + depth > len(shape):
        raise CodegenError(f"{what}: indices {dims_text(indices_shape)} with batch_dims={b} do not fit "
                           f"data {dims_text(shape)}")
    if any(int(x) != int(y) for x, y in zip(shape[:b], indices_shape[:b])):
        raise CodegenError(f"{what}: batch dims of data {dims_text(shape)} and indices {dims_text(indices_shape)} differ")
    return (*indices_shape[:-1], *shape[b + depth:])


def gather_nd_kernel(shape: Sequence[int], indices_shape: Sequence[int], batch_dims: int, dtype: DType,
                     index_dtype: DType = DType.INT64) -> KernelSource:
    """ONNX GatherND with ``batch_dims``: each index row (the indices' last axis, of fixed
    depth m) picks the slice ``data[batch, i0, ..., i(m-1), ...]`` of its batch."""
    what = "GatherND"
    shape, ishape = checked_shape(shape, what), checked_shape(indices_shape, what)
    check_index_dtype(index_dtype, what)
    out = gather_nd_shape(shape, ishape, batch_dims)
    b, m = int(batch_dims), int(ishape[-1])
    batch, rows = math.prod(shape[:b]), math.prod(ishape[b:-1])
    inner = math.prod(shape[b + m:])  # elements of one picked slice
    per_batch = math.prod(shape[b:])
    total = math.prod(out)
    if total and any(zero(n) for n in shape[b:b + m]):
        raise CodegenError(f"{what}: cannot index an empty axis of {dims_text(shape)}")
    index, suffix = index_types(total, math.prod(shape), math.prod(ishape))
    strides = contiguous_strides(shape)
    body = []
    row = "i"
    if not one(inner):
        body.append(f"const {index} e = i % {c_int(inner, suffix)}; const {index} row = i / {c_int(inner, suffix)};")
        row = "row"
    terms = [] if one(inner) else ["e"]
    if not one(batch):
        body.append(f"const {index} t = {row} / {c_int(rows, suffix)};  // the batch")
        terms.append(f"t * {c_int(per_batch, suffix)}")
    for c in range(m):
        at = f"{row} * {m}{suffix} + {c}{suffix}" if m > 1 else row
        body += load_index(f"k{c}", f"idx[{at}]", shape[b + c], clamp=True)
        stride = strides[b + c]
        terms.append(f"({index})k{c}" if one(stride) else f"({index})k{c} * {c_int(stride, suffix)}")
    body.append(f"out0[i] = in0[{' + '.join(terms) or f'0{suffix}'}];")
    params, args = gather_params(dtype, index_dtype, shape, ishape, out)
    return make_kernel("rtx_gather_nd_", f"{what} batch_dims {b} of {dims_text(shape)} by {dims_text(ishape)}",
                       params, total, body, args, (index, suffix))


# ---------------------------------------------------------------- ScatterND

class ScatterNDProblem:
    """ScatterND's sizes: ``updates`` slices (one per index row) of ``inner`` elements, each
    written into one of ``targets`` slices of the data."""

    def __init__(self, shape: Sequence[int], indices_shape: Sequence[int], updates_shape: Sequence[int],
                 dtype: DType, index_dtype: DType, reduction: str):
        what = "ScatterND"
        self.shape, self.ishape = checked_shape(shape, what), checked_shape(indices_shape, what)
        self.ushape = checked_shape(updates_shape, what)
        check_index_dtype(index_dtype, what)
        check_reduction(reduction, dtype, what)
        if not self.ishape or is_dynamic(self.ishape[-1]) or self.ishape[-1] > len(self.shape):
            raise CodegenError(f"{what}: indices {dims_text(self.ishape)} need a fixed last dim of at most "
                               f"the data's rank {len(self.shape)}")
        self.depth = int(self.ishape[-1])
        want = (*self.ishape[:-1], *self.shape[self.depth:])
        if len(want) != len(self.ushape) or any(int(a) != int(b) for a, b in zip(want, self.ushape)):
            raise CodegenError(f"{what}: updates {dims_text(self.ushape)} should be {dims_text(want)}")
        self.dtype, self.index_dtype, self.reduction = dtype, index_dtype, reduction
        self.updates = math.prod(self.ishape[:-1])
        self.inner = math.prod(self.shape[self.depth:])
        self.targets = math.prod(self.shape[:self.depth])
        self.total = math.prod(self.shape)
        self.index = index_types(self.total, math.prod(self.ushape), math.prod(self.ishape))

    def describe(self) -> str:
        return (f"ScatterND reduction {self.reduction} of {dims_text(self.ushape)} into {dims_text(self.shape)} "
                f"at {dims_text(self.ishape)}")

    def target(self, u: str) -> list[str]:
        """Lines computing ``long long t``, the target slice of update row ``u``, and ``t_ok``."""
        index, suffix = self.index
        m = self.depth
        lines, ok = ["long long t = 0;"], []
        for c in range(m):
            at = f"{u} * {m}{suffix} + {c}{suffix}" if m > 1 else u
            lines += load_index(f"k{c}", f"idx[{at}]", self.shape[c], clamp=False)
            lines.append(f"t = t * {c_ll(self.shape[c])} + k{c};" if c else "t = k0;")
            ok.append(f"k{c}_ok")
        lines.append(f"const bool t_ok = {' && '.join(ok) or 'true'};")
        return lines

    def params(self, *, data: bool = True, updates: bool = True, owner: str = "") -> tuple[list[str], list[KernelArg]]:
        return scatter_params(self, self.ushape, self.targets, data=data, updates=updates, owner=owner)


def scatter_nd_columns_kernel(p: ScatterNDProblem) -> KernelSource:
    """Thread ``j`` of a slice applies element ``j`` of every update, in order, to the output
    (which must hold a copy of the data already)."""
    index, suffix = p.index
    body = [f"for ({index} u = 0; u < {c_int(p.updates, suffix)}; ++u) {{", *(f"  {x}" for x in p.target("u")),
            "  if (t_ok) {",
            *(f"    {x}" for x in _apply(f"out0[({index})t * {c_int(p.inner, suffix)} + i]",
                                          f"upd[u * {c_int(p.inner, suffix)} + i]", p.reduction, p.dtype)),
            "  }", "}"]
    params, args = p.params(data=False)
    return make_kernel("rtx_scatter_nd_columns_", p.describe(), params, p.inner, body, args, p.index,
                       head=_prelude(p.dtype, p.reduction))


def scatter_nd_scan_kernel(p: ScatterNDProblem) -> KernelSource:
    """Thread per output element: the data's value, then every update that hits it, in order."""
    index, suffix = p.index
    elem = C.storage_type(p.dtype) if p.reduction != "none" else bits_type(p.dtype)
    inner = c_int(p.inner, suffix)
    body = [f"const {index} j = i % {inner}; const long long slice = (long long)(i / {inner});" if not one(p.inner)
            else f"const {index} j = 0; const long long slice = (long long)i;",
            f"{elem} v = in0[i];",
            f"for ({index} u = 0; u < {c_int(p.updates, suffix)}; ++u) {{", *(f"  {x}" for x in p.target("u")),
            "  if (t_ok && t == slice) {",
            *(f"    {x}" for x in _apply("v", f"upd[u * {inner} + j]", p.reduction, p.dtype)),
            "  }", "}", "out0[i] = v;"]
    params, args = p.params()
    return make_kernel("rtx_scatter_nd_scan_", p.describe(), params, p.total, body, args, p.index,
                       head=_prelude(p.dtype, p.reduction))


def scatter_nd_claim_kernel(p: ScatterNDProblem) -> KernelSource:
    """Winner scheme, step 1: each target slice's entry of ``owner`` (all -1 before) becomes
    the position of the last update row that hits it."""
    _check_winner(p.reduction, p.updates, "ScatterND")
    body = [*p.target("i"), f"if (t_ok) atomicMax(&{OWNER}[t], (int)i);"]
    params, args = p.params(data=False, updates=False, owner="out")
    return make_kernel("rtx_scatter_nd_claim_", p.describe(), params, p.updates, body, args, p.index)


def scatter_nd_winner_kernel(p: ScatterNDProblem) -> KernelSource:
    """Winner scheme, step 2: thread per update element; only the winning row writes."""
    _check_winner(p.reduction, p.updates, "ScatterND")
    index, suffix = p.index
    inner = c_int(p.inner, suffix)
    body = [f"const {index} j = i % {inner}; const {index} row = i / {inner};" if not one(p.inner)
            else f"const {index} j = 0; const {index} row = i;",
            *p.target("row"),
            f"if (t_ok && {OWNER}[t] == (int)row) out0[({index})t * {inner} + j] = upd[i];"]
    params, args = p.params(data=False, owner="in")
    return make_kernel("rtx_scatter_nd_winner_", p.describe(), params, p.updates * p.inner, body, args, p.index)


def _check_winner(reduction: str, updates: int, what: str) -> None:
    if reduction != "none":
        raise CodegenError(f"{what}: the winner scheme writes the last update only (reduction none)")
    if upper(updates) >= _INT32_LIMIT:
        raise CodegenError(f"{what}: the winner scheme numbers updates as int32")


def _prelude(dtype: DType, reduction: str) -> list[str]:
    return [C.PRELUDE.strip()] if reduction != "none" and dtype in C.NARROW_FLOATS else []


# ---------------------------------------------------------------- ScatterElements

class ScatterElementsProblem:
    """ScatterElements: ``out[c with c[axis] = indices[c]] = updates[c]`` for every position
    ``c`` of the indices (whose shape the updates share, at most the data's off the axis)."""

    def __init__(self, shape: Sequence[int], indices_shape: Sequence[int], updates_shape: Sequence[int], axis: int,
                 dtype: DType, index_dtype: DType, reduction: str):
        what = "ScatterElements"
        self.shape, self.ishape = checked_shape(shape, what), checked_shape(indices_shape, what)
        ushape = checked_shape(updates_shape, what)
        check_index_dtype(index_dtype, what)
        check_reduction(reduction, dtype, what)
        if len(self.shape) != len(self.ishape) or not self.shape:
            raise CodegenError(f"{what}: data {dims_text(self.shape)} and indices {dims_text(self.ishape)} "
                               "need one rank >= 1")
        if len(ushape) != len(self.ishape) or any(int(a) != int(b) for a, b in zip(ushape, self.ishape)):
            raise CodegenError(f"{what}: updates {dims_text(ushape)} and indices {dims_text(self.ishape)} differ")
        self.axis = normalize_axis(axis, len(self.shape), what)
        if any(d != self.axis and int(i) > int(n) for d, (i, n) in enumerate(zip(self.ishape, self.shape))):
            raise CodegenError(f"{what}: indices {dims_text(self.ishape)} exceed data {dims_text(self.shape)} "
                               f"off axis {self.axis}")
        self.dtype, self.index_dtype, self.reduction = dtype, index_dtype, reduction
        self.updates = math.prod(self.ishape)
        self.length = self.ishape[self.axis]  # updates per line
        self.lines = math.prod(self.ishape[:self.axis]) * math.prod(self.ishape[self.axis + 1:])
        self.total = math.prod(self.shape)
        self.index = index_types(self.total, self.updates)

    def describe(self) -> str:
        return (f"ScatterElements axis {self.axis} reduction {self.reduction} of {dims_text(self.ishape)} "
                f"into {dims_text(self.shape)}")

    def params(self, *, updates: bool = True, owner: str = "") -> tuple[list[str], list[KernelArg]]:
        return scatter_params(self, self.ishape, self.total, data=False, updates=updates, owner=owner)

    def target(self, coords: list[str]) -> str:
        """The output offset of coordinates ``coords`` (the axis' one replaced by ``k``)."""
        index, suffix = self.index
        coords = list(coords)
        coords[self.axis] = f"({index})k"
        return offset(coords, contiguous_strides(self.shape), suffix)


def scatter_elements_lines_kernel(p: ScatterElementsProblem) -> KernelSource:
    """Thread per line of the indices along the axis, walking it in order (the output must
    hold a copy of the data already)."""
    index, suffix = p.index
    off_axis = [n if d != p.axis else 1 for d, n in enumerate(p.ishape)]
    lines, coords = coordinates("i", off_axis, index, suffix)
    coords[p.axis] = "p"
    at = offset(coords, contiguous_strides(p.ishape), suffix)  # the line's p-th index and update
    body = [*lines, f"for ({index} p = 0; p < {c_int(p.length, suffix)}; ++p) {{",
            f"  const {index} at = {at};",
            *(f"  {x}" for x in load_index("k", "idx[at]", p.shape[p.axis], clamp=False)),
            "  if (k_ok) {",
            *(f"    {x}" for x in _apply(f"out0[{p.target(coords)}]", "upd[at]", p.reduction, p.dtype)),
            "  }", "}"]
    params, args = p.params()
    return make_kernel("rtx_scatter_elements_lines_", p.describe(), params, p.lines, body, args, p.index,
                       head=_prelude(p.dtype, p.reduction))


def scatter_elements_claim_kernel(p: ScatterElementsProblem) -> KernelSource:
    """Winner scheme, step 1: each output element's ``owner`` entry (all -1 before) becomes
    the (flat) position of the last update that hits it."""
    _check_winner(p.reduction, p.updates, "ScatterElements")
    index, suffix = p.index
    lines, coords = coordinates("i", p.ishape, index, suffix)
    body = [*lines, *load_index("k", "idx[i]", p.shape[p.axis], clamp=False),
            f"if (k_ok) atomicMax(&{OWNER}[{p.target(coords)}], (int)i);"]
    params, args = p.params(updates=False, owner="out")
    return make_kernel("rtx_scatter_elements_claim_", p.describe(), params, p.updates, body, args, p.index)


def scatter_elements_winner_kernel(p: ScatterElementsProblem) -> KernelSource:
    """Winner scheme, step 2: thread per update; only each element's last update writes."""
    _check_winner(p.reduction, p.updates, "ScatterElements")
    index, suffix = p.index
    lines, coords = coordinates("i", p.ishape, index, suffix)
    body = [*lines, *load_index("k", "idx[i]", p.shape[p.axis], clamp=False),
            "if (k_ok) {", f"  const {index} to = {p.target(coords)};",
            f"  if ({OWNER}[to] == (int)i) out0[to] = upd[i];", "}"]
    params, args = p.params(owner="in")
    return make_kernel("rtx_scatter_elements_winner_", p.describe(), params, p.updates, body, args, p.index)


def scatter_params(p, updates_shape: tuple[int, ...], owners: int, *, data: bool, updates: bool,
                   owner: str) -> tuple[list[str], list[KernelArg]]:
    """A scatter kernel's parameters, in order: the data (when it copies it), the indices,
    the updates, the owner table ("in" read, "out" written) with one slot per target
    (``owners`` of them), and the output unless the kernel only fills the owner table."""
    elem = C.storage_type(p.dtype) if p.reduction != "none" else bits_type(p.dtype)
    params, args = [], []
    if data:
        params.append(f"const {elem}* __restrict__ in0")
        args.append(KernelArg("in0", BufferRole.IN, 0, p.dtype, p.shape))
    params.append(f"const {C.storage_type(p.index_dtype)}* __restrict__ idx")
    args.append(KernelArg("idx", BufferRole.IN, 1, p.index_dtype, p.ishape))
    if updates:
        params.append(f"const {elem}* __restrict__ upd")
        args.append(KernelArg("upd", BufferRole.IN, 2, p.dtype, updates_shape))
    if owner:
        params.append(f"{'const ' if owner == 'in' else ''}int* __restrict__ {OWNER}")
        role = BufferRole.IN if owner == "in" else BufferRole.OUT
        args.append(KernelArg(OWNER, role, 3 if owner == "in" else 1, DType.INT32, (owners,)))
    if owner != "out":
        params.append(f"{elem}* __restrict__ out0")
        args.append(KernelArg("out0", BufferRole.OUT, 0, p.dtype, p.shape))
    return params, args


def gather_params(dtype: DType, index_dtype: DType, shape: tuple[int, ...], ishape: tuple[int, ...],
                  out: tuple[int, ...]) -> tuple[list[str], list[KernelArg]]:
    """A gather kernel's parameters: the data (moved as raw bits), the indices, the output."""
    elem = bits_type(dtype)
    params = [f"const {elem}* __restrict__ in0", f"const {C.storage_type(index_dtype)}* __restrict__ idx",
              f"{elem}* __restrict__ out0"]
    args = [KernelArg("in0", BufferRole.IN, 0, dtype, shape), KernelArg("idx", BufferRole.IN, 1, index_dtype, ishape),
            KernelArg("out0", BufferRole.OUT, 0, dtype, out)]
    return params, args
