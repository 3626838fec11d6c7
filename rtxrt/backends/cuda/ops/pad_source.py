"""The generated kernel of ONNX Pad: constant, reflect, edge and wrap modes, any rank, pads
that grow an axis or (negative) crop it.

As the reference backend computes it (backends/reference/ops/tensor.py ``pad``), each axis
is first cropped by its negative pads, then grown by its positive ones, the mode reading the
cropped axis of ``n`` elements. Output coordinate ``o`` of an axis grown by ``lo`` in front
is ``j = o - lo`` on the cropped axis, and reads:

- constant: the value where ``j`` is outside ``[0, n)``;
- edge: ``j`` clamped to ``[0, n - 1]``;
- wrap: ``j mod n``;
- reflect: ``j`` reflected at both ends, period ``2 (n - 1)`` (an axis of one element
  reflects onto itself), as numpy's ``pad`` computes it for pads of any width.

The kernel walks the output row-major with a grid-stride loop and moves elements as unsigned
integers of the element's size (bit-exact for every dtype). Only grown axes get an index map;
an axis only cropped is a slice (its offset folds into one base offset), and neighbouring
axes that are not grown and read whole rows merge into one, so few divisions remain.

In a generic plan (codegen/dynamic.py) the input's dims may be DimInts: the pads are fixed,
so every decision (which axes merge, single-fold or modular index maps, index widths) is made
from the pads and the dims' bounds, and the source is the same at every shape of the profile.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dims_text, is_dynamic, lower, same_dim, upper
from ..codegen.kernel_source import KernelArg, KernelSource, LaunchPolicy, grid_stride_loop, index_type, loop_kernel
from ..plan.forms import numpy_dtype
from ..plan.program import BufferRole

PAD_MODES = ("constant", "reflect", "edge", "wrap")
_BYTES = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}
_INT32_LIMIT = 2**31


@dataclass(frozen=True)
class RuntimeValue:
    """A constant value read on the device from node input ``index`` (a tensor of
    ``shape``, at least one element; its first is the value), not known at plan time."""

    index: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Axis:
    """One axis of the walk: ``size`` output elements read at input stride ``stride``;
    grown axes (``lo`` or ``hi`` > 0) map through the mode on a cropped axis of ``n``."""

    size: int
    stride: int
    lo: int = 0
    hi: int = 0
    n: int = 0

    @property
    def grown(self) -> bool:
        return self.lo > 0 or self.hi > 0


# ---------------------------------------------------------------- public API

def pad_kernel(shape: Sequence[int], pads: Sequence[int], dtype: DType, mode: str = "constant",
               value: float | int | bool | np.generic | RuntimeValue = 0) -> KernelSource:
    """ONNX Pad of a contiguous ``shape`` tensor by ``pads`` (ONNX order: every axis's
    begin, then every axis's end; negative crops). ``value`` (constant mode only): a
    plan-time scalar, converted to ``dtype`` as numpy's ``pad`` does, or a RuntimeValue."""
    shape = tuple(d if is_dynamic(d) else int(d) for d in shape)
    pads = [int(p) for p in pads]
    rank = len(shape)
    if mode not in PAD_MODES:
        raise CodegenError(f"Pad: unknown mode {mode!r} (expected one of {', '.join(PAD_MODES)})")
    if len(pads) != 2 * rank:
        raise CodegenError(f"Pad: pads {pads} must hold a begin and an end for each of the {rank} axes")
    C.check(dtype, float8=True)  # (elements move as bits: float8 too)
    axes = _axes(shape, pads[:rank], pads[rank:], mode)
    out = tuple(_cropped(shape[d], pads[d], pads[d + rank]) + max(pads[d], 0) + max(pads[d + rank], 0)
                for d in range(rank))
    total = math.prod(out)
    if any(not is_dynamic(d) and d == 0 for d in out):
        total, axes = 0, []  # nothing to write (a literal bound: the launch is skipped)
    fill = None  # what a constant-mode element outside the input holds
    if mode == "constant" and any(a.grown for a in axes):
        runtime = isinstance(value, RuntimeValue)
        fill = "cv[0]" if runtime else _literal(constant_bits(value, dtype), dtype.itemsize)
    source = _source(shape, out, total, pads, axes, dtype, mode, fill)
    args = [KernelArg("in0", BufferRole.IN, 0, dtype, shape)]
    if fill == "cv[0]":
        args.append(KernelArg("cv", BufferRole.IN, value.index, dtype, tuple(value.shape)))
    args.append(KernelArg("out0", BufferRole.OUT, 0, dtype, out))
    return KernelSource.named("rtx_pad_", source, LaunchPolicy(total), args)


def constant_bits(value: float | int | bool | np.generic, dtype: DType) -> int:
    """The bits of ``value`` stored as ``dtype``, converted exactly as the reference
    backend's ``np.pad(..., constant_values=value)`` converts it (NaN payloads, -0.0, the
    truncation of a float into an integer tensor included)."""
    storage = numpy_dtype(dtype)
    padded = np.pad(np.empty(0, storage), (1, 0), mode="constant", constant_values=value)
    return int(padded.view(f"u{storage.itemsize}")[0])


# ---------------------------------------------------------------- the walk

def _axes(shape: tuple[int, ...], begins: list[int], ends: list[int], mode: str) -> list[_Axis]:
    """The axes of the walk (see _Axis), outermost first: size-1 axes that are not grown
    dropped, neighbouring plain axes that read whole rows merged."""
    strides = _strides(shape)
    axes: list[_Axis] = []
    for d, (size, b, e) in enumerate(zip(shape, begins, ends)):
        n = _cropped(size, b, e)
        if lower(n) < 0:
            raise CodegenError(f"Pad: pads ({b}, {e}) crop axis {d} of {dims_text([size])} elements below nothing")
        lo, hi = max(b, 0), max(e, 0)
        if (lo or hi) and mode != "constant" and lower(n) <= 0:
            what = "is empty once cropped"
            if is_dynamic(n):
                what = "may be empty once cropped (at some shape of the profile)"
            raise CodegenError(f"Pad: axis {d} {what}; {mode} mode cannot pad it")
        if lo or hi:
            axes.append(_Axis(n + lo + hi, strides[d], lo, hi, n))
        elif is_dynamic(n) or n != 1:
            axes.append(_Axis(n, strides[d]))
    merged: list[_Axis] = []
    for axis in axes:  # an outer plain axis steps over whole inner rows: one axis of both
        prev = merged[-1] if merged else None
        if prev and not prev.grown and not axis.grown and same_dim(prev.stride, axis.stride * axis.size):
            merged[-1] = _Axis(prev.size * axis.size, axis.stride)
        else:
            merged.append(axis)
    return merged


def _source(shape: tuple[int, ...], out: tuple[int, ...], total: int, pads: list[int], axes: list[_Axis],
            dtype: DType, mode: str, fill: str | None) -> str:
    rank = len(shape)
    in_total = math.prod(shape)
    index, suffix = index_type(max(upper(total), upper(in_total)))
    # the first element read: each axis's front crop
    base = 0
    for b, stride in zip(pads[:rank], _strides(shape)):
        if b < 0:
            base = -b * stride if not is_dynamic(base) and base == 0 else base + -b * stride
    # 32-bit coordinates and offsets where every term of ``src`` (also the unread ones of
    # constant mode, outside the input), 2 n - 2 and the pads stay far from overflow
    reach = upper(base) + sum(upper(a.size) * upper(a.stride) for a in axes)
    widest = max([upper(total), upper(in_total), reach, *(2 * upper(a.n) for a in axes), *(2 * abs(p) for p in pads)])
    off = "long long" if widest >= _INT32_LIMIT else "int"
    body: list[str] = []
    if len(axes) > 1:
        body.append(f"{index} r = i;")
        for d in range(len(axes) - 1, 0, -1):
            n = c_int(axes[d].size, suffix)
            body.append(f"const {index} c{d} = r % {n}; r /= {n};")
        body.append(f"const {index} c0 = r;")
    elif axes:
        body.append(f"const {index} c0 = i;")
    terms, inside = [], []
    for d, axis in enumerate(axes):
        if not axis.grown:
            terms.append(_times(f"({off})c{d}", axis.stride, off))
            continue
        body += _index_map(f"j{d}", f"c{d}", axis, mode, off)
        if mode == "constant":
            inside += _inside(f"j{d}", axis, off)
        terms.append(_times(f"j{d}", axis.stride, off))
    body.append(f"const {off} src = {' + '.join([_signed(base, off), *terms])};")
    if inside:
        body.append(f"out0[i] = ({' && '.join(inside)}) ? in0[src] : {fill};")
    else:
        body.append("out0[i] = in0[src];")
    elem = _BYTES[dtype.itemsize]
    params = [f"const {elem}* __restrict__ in0", *([f"const {elem}* __restrict__ cv"] if fill == "cv[0]" else []),
              f"{elem}* __restrict__ out0"]
    comment = (f"// rtxrt data movement kernel: Pad {mode} pads {pads}: {dims_text(shape)} -> {dims_text(out)}")
    return loop_kernel([comment], params, grid_stride_loop(index, suffix, total), body)


def _index_map(j: str, c: str, axis: _Axis, mode: str, off: str) -> list[str]:
    """Lines setting ``j`` to the cropped-axis element output coordinate ``c`` reads (in
    constant mode, possibly outside the axis: _inside tells)."""
    n = _signed(axis.n, off)
    lines = [f"{off} {j} = ({off}){c} - {axis.lo};" if axis.lo else f"{off} {j} = ({off}){c};"]
    if mode == "constant":
        return lines
    if mode == "edge" or (mode == "reflect" and not is_dynamic(axis.n) and axis.n == 1):
        if axis.lo:
            lines.append(f"{j} = {j} < 0 ? 0 : {j};")
        if axis.hi:
            lines.append(f"{j} = {j} >= {n} ? {_less(axis.n, 1, off)} : {j};")
        return lines
    if mode == "wrap":
        if axis.lo <= lower(axis.n) and axis.hi <= lower(axis.n):  # one period at most: no division
            if axis.lo:
                lines.append(f"{j} = {j} < 0 ? {j} + {n} : {j};")
            if axis.hi:
                lines.append(f"{j} = {j} >= {n} ? {j} - {n} : {j};")
            return lines
        # C's % keeps the sign of j, which is negative only in front
        return lines + [f"{j} %= {n};", *([f"{j} = {j} < 0 ? {j} + {n} : {j};"] if axis.lo else [])]
    # reflect
    if axis.lo <= lower(axis.n) - 1 and axis.hi <= lower(axis.n) - 1:  # one fold at most: no division
        if axis.lo:
            lines.append(f"{j} = {j} < 0 ? -{j} : {j};")
        if axis.hi:
            lines.append(f"{j} = {j} >= {n} ? {_less(2 * axis.n, 2, off)} - {j} : {j};")
        return lines
    period = f"p{j[1:]}"
    lines.append(f"const {off} {period} = {_less(2 * axis.n, 2, off)};")
    fold = [f"{j} %= {period};", *([f"{j} = {j} < 0 ? {j} + {period} : {j};"] if axis.lo else []),
            f"{j} = {j} >= {n} ? {period} - {j} : {j};"]
    if lower(axis.n) <= 1:  # an axis of one element (at some shape) reflects onto itself
        return lines + [f"if ({period} == 0) {{ {j} = 0; }} else {{ {' '.join(fold)} }}"]
    return lines + fold


def _inside(j: str, axis: _Axis, off: str) -> list[str]:
    """Constant mode: the conditions for ``j`` to lie on the cropped axis (a side that is
    not grown needs none: the walk never leaves it there)."""
    return ([f"{j} >= 0"] if axis.lo else []) + ([f"{j} < {_signed(axis.n, off)}"] if axis.hi else [])


# ---------------------------------------------------------------- small pieces

def _cropped(size: int, begin: int, end: int) -> int:
    """An axis of ``size`` once its negative pads crop it."""
    return size - max(-begin, 0) - max(-end, 0)


def _less(value: int, k: int, off: str) -> str:
    """``value - k`` as a C operand of ``off`` (folded where ``value`` is fixed)."""
    return f"{_signed(value, off)} - {k}" if is_dynamic(value) else _signed(int(value) - k, off)


def _strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d], step = step, step * shape[d]
    return strides


def _signed(value: int, off: str) -> str:
    """``value`` (a size, stride or offset; a dim expression where it varies) as a C
    operand of the signed type ``off``."""
    if is_dynamic(value):
        return f"(({off})({value}))"
    return f"{int(value)}LL" if off == "long long" else str(int(value))


def _times(coordinate: str, stride: int, off: str) -> str:
    """``coordinate * stride`` (just the coordinate where the stride is 1 at every shape)."""
    return coordinate if same_dim(stride, 1) else f"{coordinate} * {_signed(stride, off)}"


def _literal(bits: int, itemsize: int) -> str:
    """A constant's bits as a literal of the element's unsigned type."""
    if itemsize == 8:
        return f"0x{bits:x}ull"
    return f"({_BYTES[itemsize]})0x{bits:x}u"
