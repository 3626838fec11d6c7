"""Generated kernels whose values follow from each element's position: ConstantOfShape (a
fill), EyeLike, Range, Trilu, OneHot, and CumSum's scans along an axis.

As in indexing_source.py, shapes may hold DimInts and the source is decided from the dims'
expressions and bounds only. Data is moved as unsigned integers of the element's size, so
Trilu, OneHot and the fills are bit-exact for every type.

CumSum accumulates fp16/bf16 in float (as the reference backend does), float32 in float,
float64 in double and integers in wrapping unsigned arithmetic. The serial scan (a thread per
line, walking the axis in order) adds in the reference's order and is bit-exact; the chunked
scan (partial sums of fixed-size chunks, their prefix per line, then each chunk from its
prefix) adds in another order: exact for integers, within rounding for floats.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dims_text, divisible, is_dynamic
from ..codegen.kernel_source import KernelArg, KernelSource
from ..plan.forms import numpy_dtype
from ..plan.program import BufferRole
from .indexing_source import (
    bits_type,
    c_ll,
    checked_shape,
    coordinates,
    index_types,
    make_kernel,
    normalize_axis,
    one,
    zero,
)

PARTIALS = "partials"  # the chunked scan's scratch array, by KernelArg name
RANGE_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT64, DType.FLOAT16, DType.BFLOAT16, DType.INT8, DType.INT16,
                          DType.INT32, DType.INT64, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64})
SCAN_DTYPES = RANGE_DTYPES


def _bits_of(value: object, dtype: DType) -> int:
    """The bit pattern of ``value`` as an element of ``dtype``."""
    array = np.asarray(value).astype(numpy_dtype(dtype)).reshape(-1)[:1]
    return int(array.view(f"u{dtype.itemsize}")[0])


def _hex(bits: int, dtype: DType) -> str:
    return f"(({bits_type(dtype)})0x{bits:x}{'ull' if dtype.itemsize == 8 else 'u'})"


# ---------------------------------------------------------------- ConstantOfShape

def fill_kernel(shape: Sequence[int], dtype: DType, value: object, *, scratch: str = "") -> KernelSource:
    """Every element of a ``shape`` tensor set to ``value`` (converted to ``dtype``): 16-byte
    stores where the element count is a multiple of a vector at every shape. ``scratch``:
    fill the program's scratch buffer of that name (an argument so named, one past the
    node's outputs) instead of output 0."""
    shape = checked_shape(shape, "ConstantOfShape")
    C.check(dtype)
    bits, total = _bits_of(value, dtype), math.prod(shape)
    width = 16 // dtype.itemsize
    if divisible(total, width) and not zero(total):
        pattern = np.full(width, bits, f"u{dtype.itemsize}").view(np.uint32)
        words = ", ".join(f"0x{int(w):x}u" for w in pattern)
        elem, store, count = "uint4", f"out0[i] = make_uint4({words});", total // width
    else:
        elem, store, count = bits_type(dtype), f"out0[i] = {_hex(bits, dtype)};", total
    index = index_types(count)
    name = scratch or "out0"
    arg = KernelArg(name, BufferRole.OUT, 1 if scratch else 0, dtype, shape)
    return make_kernel("rtx_fill_", f"fill {dims_text(shape)} {dtype.short} with bits 0x{bits:x}",
                       [f"{elem}* __restrict__ {name}"], count, [store.replace("out0[", f"{name}[")], [arg], index)


# ---------------------------------------------------------------- EyeLike

def eye_kernel(shape: Sequence[int], k: int, dtype: DType) -> KernelSource:
    """EyeLike: a 2-D ``shape`` tensor of ones on diagonal ``k`` (column - row == k), zeros elsewhere."""
    shape = checked_shape(shape, "EyeLike")
    if len(shape) != 2:
        raise CodegenError(f"EyeLike: the input must be 2-D, got {dims_text(shape)}")
    C.check(dtype)
    rows, cols = shape
    total = math.prod(shape)
    index, suffix = index_types(total)
    body = [f"const long long col = (long long)(i % {c_int(cols, suffix)}), row = (long long)(i / {c_int(cols, suffix)});",
            f"out0[i] = col - row == {C.literal(k, DType.INT64)} ? {_hex(_bits_of(1, dtype), dtype)} : "
            f"{_hex(0, dtype)};"]
    arg = KernelArg("out0", BufferRole.OUT, 0, dtype, shape)
    return make_kernel("rtx_eye_", f"EyeLike k {int(k)} {dims_text(shape)} {dtype.short}",
                       [f"{bits_type(dtype)}* __restrict__ out0"], total, body, [arg], (index, suffix))


# ---------------------------------------------------------------- Range

def range_kernel(count: int, dtype: DType, stash: DType = DType.FLOAT32) -> KernelSource:
    """Range: ``out[i] = start + i * delta`` with start and delta read from the device (0-d
    tensors, inputs 0 and 2), as the reference computes it: floats in their own type,
    fp16/bf16 in ``stash`` (float32, or float64) rounded once, integers in wrapping int64."""
    (count,) = checked_shape((count,), "Range")
    if dtype not in RANGE_DTYPES:
        raise CodegenError(f"Range: no kernel for {dtype.short}")
    index, suffix = index_types(count)
    elem = C.storage_type(dtype)
    if dtype.is_float:
        compute = DType.FLOAT64 if dtype == DType.FLOAT64 or (dtype in C.NARROW_FLOATS and stash == DType.FLOAT64) \
            else DType.FLOAT32
        ctype = C.register_type(compute)
        s = C.convert(C.load("start[0]", dtype), dtype, compute)
        d = C.convert(C.load("delta[0]", dtype), dtype, compute)
        value = f"({ctype})i * d + s"
        value = C.store(value if compute == DType.FLOAT32 else C.convert(value, compute, dtype), dtype)
        before = [f"const {ctype} s = {s}, d = {d};"]
    else:
        before = ["const unsigned long long s = (unsigned long long)(long long)start[0];",
                  "const unsigned long long d = (unsigned long long)(long long)delta[0];"]
        value = f"({elem})(s + (unsigned long long)i * d)"
    params = [f"const {elem}* __restrict__ start", f"const {elem}* __restrict__ delta", f"{elem}* __restrict__ out0"]
    args = [KernelArg("start", BufferRole.IN, 0, dtype, ()), KernelArg("delta", BufferRole.IN, 2, dtype, ()),
            KernelArg("out0", BufferRole.OUT, 0, dtype, (count,))]
    head = [C.PRELUDE.strip()] if dtype in C.NARROW_FLOATS else []
    return make_kernel("rtx_range_", f"Range of {count} {dtype.short}", params, count,
                       [*before, f"out0[i] = {value};"], args, (index, suffix), head=head)


# ---------------------------------------------------------------- Trilu

def trilu_kernel(shape: Sequence[int], upper: bool, k: int | None, dtype: DType) -> KernelSource:
    """Trilu: the upper (column - row >= k) or lower (column - row <= k) triangle of each of
    the last two axes' matrices, zeros elsewhere; ``k`` None: read from input 1 (an int64
    scalar on the device)."""
    shape = checked_shape(shape, "Trilu")
    if len(shape) < 2:
        raise CodegenError(f"Trilu: the input must have rank >= 2, got {dims_text(shape)}")
    elem = bits_type(dtype)
    rows, cols = shape[-2:]
    total = math.prod(shape)
    index, suffix = index_types(total)
    lines, coords = coordinates("i", (math.prod(shape[:-2]), rows, cols), index, suffix)
    diagonal = "kp[0]" if k is None else C.literal(int(k), DType.INT64)
    keep = ">=" if upper else "<="
    body = [*lines, f"const long long diagonal = (long long){coords[2]} - (long long){coords[1]};",
            f"out0[i] = diagonal {keep} {diagonal} ? in0[i] : ({elem})0;"]
    params = [f"const {elem}* __restrict__ in0", *(["const long long* __restrict__ kp"] if k is None else []),
              f"{elem}* __restrict__ out0"]
    args = [KernelArg("in0", BufferRole.IN, 0, dtype, shape),
            *([KernelArg("kp", BufferRole.IN, 1, DType.INT64, ())] if k is None else []),
            KernelArg("out0", BufferRole.OUT, 0, dtype, shape)]
    what = f"Trilu {'upper' if upper else 'lower'} k {'input' if k is None else int(k)} of {dims_text(shape)}"
    return make_kernel("rtx_trilu_", what, params, total, body, args, (index, suffix))


# ---------------------------------------------------------------- OneHot

def one_hot_kernel(indices_shape: Sequence[int], index_dtype: DType, depth: int, axis: int,
                   dtype: DType) -> KernelSource:
    """OneHot: ``values[1]`` where an index (truncated to an integer; negative ones count
    from ``depth``) equals the position along the new ``axis``, else ``values[0]``; indices
    outside [-depth, depth) match no position. ``values`` is read from the device; ``depth``
    may be a dim of a generic plan (the output's, where the plan knows only that)."""
    ishape = checked_shape(indices_shape, "OneHot")
    C.check(index_dtype)
    elem = bits_type(dtype)
    if not is_dynamic(depth):
        depth = int(depth)
        if depth < 1:
            raise CodegenError(f"OneHot: depth must be positive, got {depth}")
    axis = normalize_axis(axis, len(ishape) + 1, "OneHot")
    out = (*ishape[:axis], depth, *ishape[axis:])
    inner = math.prod(ishape[axis:])
    total = math.prod(out)
    index, suffix = index_types(total)
    body = []
    if one(inner):
        body.append(f"const {index} n = 0, r = i;")
    else:
        body.append(f"const {index} n = i % {c_int(inner, suffix)}, r = i / {c_int(inner, suffix)};")
    body.append(f"const {index} c = r % {c_int(depth, suffix)}, o = r / {c_int(depth, suffix)};")
    at = "n" if not axis else f"o * {c_int(inner, suffix)} + n"  # the index's offset
    source = C.load(f"idx[{at}]", index_dtype)
    if index_dtype.is_float:  # NaN matches nothing (numpy makes it INT64_MIN; a GPU's cvt 0)
        body += [f"const {C.register_type(index_dtype)} x = {source};",
                 "long long k = x != x ? -(1LL << 62) : (long long)x;"]
    else:
        body.append(f"long long k = (long long){source};")
    body += [f"if (k < 0) k += {c_ll(depth)};", "out0[i] = k == (long long)c ? values[1] : values[0];"]
    params = [f"const {C.storage_type(index_dtype)}* __restrict__ idx", f"const {elem}* __restrict__ values",
              f"{elem}* __restrict__ out0"]
    args = [KernelArg("idx", BufferRole.IN, 0, index_dtype, ishape), KernelArg("values", BufferRole.IN, 2, dtype, (2,)),
            KernelArg("out0", BufferRole.OUT, 0, dtype, out)]
    head = [C.PRELUDE.strip()] if index_dtype in C.NARROW_FLOATS else []
    return make_kernel("rtx_one_hot_", f"OneHot depth {depth} axis {axis} of {dims_text(ishape)}", params, total,
                       body, args, (index, suffix), head=head)


# ---------------------------------------------------------------- CumSum

class Scan:
    """CumSum of a ``shape`` tensor along ``axis``: ``lines`` independent scans of ``length``
    elements, ``inner`` apart in memory."""

    def __init__(self, shape: Sequence[int], axis: int, dtype: DType, exclusive: bool, reverse: bool):
        self.shape = checked_shape(shape, "CumSum")
        if not self.shape:
            raise CodegenError("CumSum: the input must have rank >= 1")
        if dtype not in SCAN_DTYPES:
            raise CodegenError(f"CumSum: no kernel for {dtype.short}")
        self.axis = normalize_axis(axis, len(self.shape), "CumSum")
        self.dtype, self.exclusive, self.reverse = dtype, bool(exclusive), bool(reverse)
        self.outer, self.length = math.prod(self.shape[:self.axis]), self.shape[self.axis]
        self.inner = math.prod(self.shape[self.axis + 1:])
        self.lines = self.outer * self.inner
        self.total = math.prod(self.shape)
        self.index = index_types(self.total)
        if dtype.is_float:
            self.acc = "double" if dtype == DType.FLOAT64 else "float"
        else:
            self.acc = C.unsigned_type(dtype)  # integers wrap, as numpy's do
        self.acc_dtype = {"float": DType.FLOAT32, "double": DType.FLOAT64, "unsigned int": DType.UINT32,
                          "unsigned long long": DType.UINT64}[self.acc]

    def describe(self) -> str:
        flags = "".join([" exclusive" if self.exclusive else "", " reverse" if self.reverse else ""])
        return f"CumSum axis {self.axis}{flags} of {dims_text(self.shape)} {self.dtype.short}"

    def add(self, acc: str, element: str) -> str:
        value = C.load(element, self.dtype) if self.dtype.is_float else f"({self.acc}){element}"
        return f"{acc} += {value};"

    def store(self, acc: str) -> str:
        return C.store(acc, self.dtype) if self.dtype.is_float else f"({C.storage_type(self.dtype)}){acc}"

    def line_start(self, line: str) -> list[str]:
        """Lines computing ``base``, the offset of line ``line``'s first element."""
        index, suffix = self.index
        inner = c_int(self.inner, suffix)
        if one(self.inner):
            return [f"const {index} base = {line} * {c_int(self.length, suffix)};"]
        if one(self.outer):
            return [f"const {index} base = {line};"]
        return [f"const {index} base = ({line} / {inner}) * {c_int(self.length * self.inner, suffix)} + {line} % {inner};"]

    def position(self, p: str) -> str:
        """The offset of the ``p``-th element in scan order from its line's start."""
        index, suffix = self.index
        q = f"({c_int(self.length, suffix)} - 1{suffix} - {p})" if self.reverse else p
        return f"base + {q}" if one(self.inner) else f"base + {q} * {c_int(self.inner, suffix)}"

    def walk(self, begin: str, end: str) -> list[str]:
        """Lines scanning positions [begin, end) of a line from ``acc``, writing the outputs."""
        index, _ = self.index
        step = ([f"  out0[at] = {self.store('acc')};", f"  {self.add('acc', 'x')}"] if self.exclusive
                else [f"  {self.add('acc', 'x')}", f"  out0[at] = {self.store('acc')};"])
        return [f"for ({index} p = {begin}; p < {end}; ++p) {{", f"  const {index} at = {self.position('p')};",
                f"  const {C.storage_type(self.dtype)} x = in0[at];", *step, "}"]

    def params(self, *, data: bool = True, partials: str = "", out: bool = True) -> tuple[list[str], list[KernelArg]]:
        elem = C.storage_type(self.dtype)
        params, args = [], []
        if data:
            params.append(f"const {elem}* __restrict__ in0")
            args.append(KernelArg("in0", BufferRole.IN, 0, self.dtype, self.shape))
        if partials:
            params.append(f"{'const ' if partials == 'in' else ''}{self.acc}* __restrict__ {PARTIALS}")
            role = BufferRole.IN if partials == "in" else BufferRole.OUT
            args.append(KernelArg(PARTIALS, role, 2 if partials == "in" else 1, self.acc_dtype, ()))
        if out:
            params.append(f"{elem}* __restrict__ out0")
            args.append(KernelArg("out0", BufferRole.OUT, 0, self.dtype, self.shape))
        return params, args

    def head(self) -> list[str]:
        return [C.PRELUDE.strip()] if self.dtype in C.NARROW_FLOATS else []


def scan_kernel(s: Scan) -> KernelSource:
    """Thread per line, walking the axis in the reference's order (bit-exact)."""
    _, suffix = s.index
    body = [*s.line_start("i"), f"{s.acc} acc = 0;", *s.walk(f"0{suffix}", c_int(s.length, suffix))]
    params, args = s.params()
    return make_kernel("rtx_cumsum_", s.describe(), params, s.lines, body, args, s.index, head=s.head())


def chunks(s: Scan, chunk: int) -> int:
    """How many chunks of ``chunk`` elements cover a line."""
    return (s.length + (chunk - 1)) // chunk


def scan_chunk_sums_kernel(s: Scan, chunk: int) -> KernelSource:
    """Chunked scan, step 1: thread per (line, chunk) sums its chunk into ``partials``."""
    index, suffix = s.index
    count = chunks(s, chunk)
    element = f"in0[{s.position('p')}]"
    body = [*_chunk_of(s, chunk, count), f"{s.acc} acc = 0;",
            f"for ({index} p = begin; p < end; ++p) {{ {s.add('acc', element)} }}",
            f"{PARTIALS}[i] = acc;"]
    params, args = s.params(partials="out", out=False)
    return make_kernel("rtx_cumsum_chunks_", f"{s.describe()} chunk {chunk}", params, s.lines * count, body, args,
                       s.index, head=s.head())


def scan_chunk_offsets_kernel(s: Scan, chunk: int) -> KernelSource:
    """Chunked scan, step 2: thread per line turns its chunks' sums into exclusive prefixes."""
    index, suffix = s.index
    count = chunks(s, chunk)
    body = [f"{s.acc} run = 0;", f"for ({index} g = 0; g < {c_int(count, suffix)}; ++g) {{",
            f"  const {index} at = i * {c_int(count, suffix)} + g;",
            f"  const {s.acc} sum = {PARTIALS}[at]; {PARTIALS}[at] = run; run += sum;", "}"]
    params, args = s.params(data=False, partials="out", out=False)
    return make_kernel("rtx_cumsum_offsets_", f"{s.describe()} chunk {chunk}", params, s.lines, body, args, s.index)


def scan_chunk_finish_kernel(s: Scan, chunk: int) -> KernelSource:
    """Chunked scan, step 3: thread per (line, chunk) scans its chunk from its prefix."""
    count = chunks(s, chunk)
    body = [*_chunk_of(s, chunk, count), f"{s.acc} acc = {PARTIALS}[i];", *s.walk("begin", "end")]
    params, args = s.params(partials="in")
    return make_kernel("rtx_cumsum_finish_", f"{s.describe()} chunk {chunk}", params, s.lines * count, body, args,
                       s.index, head=s.head())


def _chunk_of(s: Scan, chunk: int, count: int) -> list[str]:
    """Lines splitting ``i`` into (line, chunk) and the chunk's scan positions [begin, end)."""
    index, suffix = s.index
    n = c_int(count, suffix)
    length = c_int(s.length, suffix)
    return [f"const {index} line = i / {n}, begin = (i % {n}) * {chunk}{suffix};",
            *s.line_start("line"),
            f"const {index} end = begin + {chunk}{suffix} < {length} ? begin + {chunk}{suffix} : {length};"]


def partials_bytes(s: Scan, chunk: int) -> int:
    """Bytes of the chunked scan's scratch (a DimInt in a generic plan)."""
    return s.lines * chunks(s, chunk) * s.acc_dtype.itemsize
