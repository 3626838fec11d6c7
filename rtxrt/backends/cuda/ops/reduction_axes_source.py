"""CUDA kernels for reductions, softmax and arg-reductions over axes that are not the trailing
ones (the row kernels of reduction_source.py take those): a channel softmax of NCHW, a mean
over axis 1, ReduceSum over axes [0, 2], a noop_with_empty_axes per-element map.

The input is walked as nested loops (``Walk``): dims of a fixed size 1 are dropped and
neighbouring dims that are both kept or both reduced merge, so axis 1 of NCHW is [outer,
reduced, inner] with kept groups (N, stride C*H*W) and (H*W, stride 1) and one reduced group
(C, stride H*W); any axis set is some such list of (size, stride) groups. An output's index
splits over the kept groups into its base offset, and its elements are the base plus the
reduced groups' offsets. Outputs of the ops that write the input's shape (Softmax,
LogSoftmax, Hardmax) are at the same offsets as their inputs.

Two kernels over that mapping (both grid-stride, so any grid is correct):
- ``columns``: a thread per output, folding its elements in nested loops. Where the innermost
  axis is kept (inner > 1), the threads of a warp read neighbouring addresses at every step.
  A plain loop kernel (the fake device runs it).
- ``split``: a block per 32 consecutive outputs (one a lane) whose ``SPLIT_WARPS`` warps take
  every ``SPLIT_WARPS``-th element of each and combine their partials through shared memory:
  eight times the threads for few outputs with many elements each.

The math (folds, LogSumExp's shift, the arg order) is reduction_source.py's: fp16/bf16
computed in fp32, the reference backend's semantics. In a generic plan the dims that vary are
int parameters, and the choice between the kernels looks only at the profile's bounds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..codegen import ctypes_map as C
from ..codegen.device_helpers import NAN_MAX_MIN
from ..codegen.dynamic import c_int, dims_text, upper
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole
from .reduction_source import (
    ARG_HELPERS,
    ARG_OPS,
    FOLDS,
    HELPERS,
    FUNCTOR,
    IDENTITY,
    LAST_INDEX,
    NEG_INF,
    POS_INF,
    PROD_HELPER,
    Reduction,
    count_literal,
    finite_max_line,
    is_one,
)

SPLIT_WARPS = 8
COLUMNS_BLOCK = 256
SPLIT_MIN_COUNT = 32  # fewer elements an output: nothing to split
SPLIT_FIRST_COUNT, SPLIT_FIRST_OUTPUTS = 128, 16384  # many elements, few outputs: split first

# The ``split`` kernel's combines: each lane's SPLIT_WARPS partials meet in shared memory; every
# warp reads them all in the same order (so all hold the same value); the trailing barrier
# keeps the next combine from overwriting partials still being read.
SPLIT_REDUCE = r"""
template <int NW, typename Op> __device__ __forceinline__ float rtx_split_reduce(float v, Op op, float (*part)[32]) {
  const unsigned lane = threadIdx.x & 31u;
  part[threadIdx.x >> 5][lane] = v;
  __syncthreads();
  v = part[0][lane];
  for (int w = 1; w < NW; ++w) v = op(v, part[w][lane]);
  __syncthreads();
  return v;
}
"""
SPLIT_ARG = r"""
template <int NW, bool MAX, bool LAST>
__device__ __forceinline__ void rtx_split_arg(float& v, long long& i, float (*pv)[32], long long (*pi)[32]) {
  const unsigned lane = threadIdx.x & 31u;
  pv[threadIdx.x >> 5][lane] = v; pi[threadIdx.x >> 5][lane] = i;
  __syncthreads();
  v = pv[0][lane]; i = pi[0][lane];
  for (int w = 1; w < NW; ++w)
    if (rtx_arg_better<MAX, LAST>(pv[w][lane], pi[w][lane], v, i)) { v = pv[w][lane]; i = pi[w][lane]; }
  __syncthreads();
}
"""

Group = tuple[int, int]  # (size, stride in elements of the input)


@dataclass(frozen=True)
class Walk:
    """The input as nested loops: ``kept`` groups index the outputs (row-major, outermost
    first), ``reduced`` groups the elements each output folds."""

    kept: tuple[Group, ...]
    reduced: tuple[Group, ...]

    @property
    def outputs(self) -> int:
        return math.prod(size for size, _ in self.kept)

    @property
    def count(self) -> int:
        return math.prod(size for size, _ in self.reduced)


def walk(shape: Sequence[int], axes: Sequence[int]) -> Walk:
    """``shape`` (contiguous, row-major) reduced over ``axes`` as merged loop groups. Which dims
    drop or merge depends on their being fixed 1s and on the axes only, never on a varying
    dim's value, so a generic plan walks the same loops at every shape."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step = step * d
    strides.reverse()
    groups: list[tuple[bool, int, int]] = []  # (reduced, size, stride)
    for i, d in enumerate(shape):
        if is_one(d):
            continue
        reduced = i in axes
        if groups and groups[-1][0] == reduced:  # the outer one's stride is the inner's times its size
            groups[-1] = (reduced, groups[-1][1] * d, strides[i])
        else:
            groups.append((reduced, d, strides[i]))
    return Walk(tuple((s, t) for r, s, t in groups if not r), tuple((s, t) for r, s, t in groups if r))


def strided_tactics(r: Reduction) -> list[str]:
    """The kernels offered for ``r``, best first by the profile's bounds: ``split`` where outputs
    are few and each folds many elements, else ``columns``."""
    w = walk(r.shape, r.axes)
    if upper(w.count) < SPLIT_MIN_COUNT:
        return ["columns"]
    if upper(w.count) >= SPLIT_FIRST_COUNT and upper(w.outputs) < SPLIT_FIRST_OUTPUTS:
        return ["split", "columns"]
    return ["columns", "split"]


def strided_kernel(r: Reduction, tactic: str = "columns") -> KernelSource:
    """The ``tactic`` kernel ("columns" or "split") computing ``r`` over any axes."""
    w = walk(r.shape, r.axes)
    args = [KernelArg("in0", BufferRole.IN, 0, r.dtype, r.shape), KernelArg("out0", BufferRole.OUT, 0, r.out_dtype,
                                                                           r.out_shape)]
    index, suffix = index_type(max(upper(math.prod(r.shape)), upper(w.outputs)))
    k = _Kernel(r, w, index, suffix, tactic == "split")
    body = _body(r, k)
    params = [f"const {C.storage_type(r.dtype)}* __restrict__ in0", f"{C.storage_type(r.out_dtype)}* __restrict__ out0"]
    how = (f"{SPLIT_WARPS} warps split each of 32 outputs a block" if k.split else "a thread per output")
    head = [f"// rtxrt strided kernel: {r.op} over axes {list(r.axes)} of {dims_text(r.shape)} {r.dtype.short}; "
            f"kept {_groups_text(w.kept)}, reduced {_groups_text(w.reduced)}; {how}", C.PRELUDE.strip()]
    arg = r.op in ARG_OPS or r.op == "Hardmax"
    if k.split:
        head += [HELPERS.strip(), PROD_HELPER if r.op == "ReduceProd" else ""]
        head += [ARG_HELPERS.strip(), SPLIT_ARG.strip()] if arg else [SPLIT_REDUCE.strip()]
        shared = [f"  __shared__ float rtx_part[{SPLIT_WARPS}][32];"]
        shared += [f"  __shared__ long long rtx_part_index[{SPLIT_WARPS}][32];"] if arg else []
        shared += ["  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;"]
        loop = (f"for ({index} o0 = ({index})blockIdx.x * 32u; o0 < {c_int(w.outputs, suffix)}; "
                f"o0 += ({index})gridDim.x * 32u) {{")
        launch = LaunchPolicy(-(-w.outputs // 32) * 32 * SPLIT_WARPS, 32 * SPLIT_WARPS)
        block = 32 * SPLIT_WARPS
    else:
        head.append(NAN_MAX_MIN.strip())
        shared = []
        loop = grid_stride_loop(index, suffix, w.outputs, "o")
        launch = LaunchPolicy(w.outputs, COLUMNS_BLOCK)
        block = COLUMNS_BLOCK
    source = loop_kernel([h for h in head if h], params, loop, body, block=block, before_loop=shared)
    return KernelSource.named("rtx_split_" if k.split else "rtx_cols_", source, launch, args)


def _groups_text(groups: Sequence[Group]) -> str:
    return "[" + ", ".join(f"{s}@{t}" for s, t in groups) + "]"


@dataclass(frozen=True)
class _Kernel:
    """How one of the two kernels reaches an output's elements and combines partials."""

    r: Reduction
    w: Walk
    index: str
    suffix: str
    split: bool

    def lit(self, value: int) -> str:
        return c_int(value, self.suffix)

    def base(self) -> list[str]:
        """Lines setting ``base``, the input offset of output ``o``'s first element."""
        kept = self.w.kept
        if not kept:
            return [f"const {self.index} base = 0u;"]
        lines = [f"{self.index} r = o;"]
        names = [""] * len(kept)
        for g in range(len(kept) - 1, 0, -1):  # innermost first; the outermost is what is left
            size = self.lit(kept[g][0])
            lines.append(f"const {self.index} k{g} = r % {size}; r /= {size};")
            names[g] = f"k{g}"
        names[0] = "r"
        terms = [self._times(n, stride) for n, (_, stride) in zip(names, kept)]
        return lines + [f"const {self.index} base = {' + '.join(terms)};"]

    def _times(self, name: str, stride: int) -> str:
        return name if is_one(stride) else f"{name} * {self.lit(stride)}"

    def over(self, lines: Sequence[str]) -> list[str]:
        """``lines`` run for each element of output ``o``, in order of its index ``j`` (along
        the one reduced axis, where ArgMax/Hardmax need it), with ``q`` its offset and ``v`` its
        value; a split kernel's warp takes every SPLIT_WARPS-th element."""
        reduced = self.w.reduced or ((1, 1),)  # nothing reduced: each output folds its one element
        load = f"const float v = {C.load('in0[q]', self.r.dtype)};"
        if self.split:
            head = [f"if (live) for ({self.index} j = warp; j < {self.lit(self.w.count)}; j += {SPLIT_WARPS}u) {{"]
            if len(reduced) == 1:
                head.append(f"  const {self.index} q = base + {self._times('j', reduced[0][1])};")
            else:
                head += [f"  {self.index} t = j, q = base;"]
                for g in range(len(reduced) - 1, 0, -1):
                    size, stride = reduced[g]
                    head.append(f"  q += {self._times(f'(t % {self.lit(size)})', stride)}; t /= {self.lit(size)};")
                head.append(f"  q += {self._times('t', reduced[0][1])};")
            return head + [f"  {load}"] + [f"  {line}" for line in lines] + ["}"]
        out, pad, prev = [], "", "base"
        for g, (size, stride) in enumerate(reduced):
            j = "j" if len(reduced) == 1 else f"j{g}"
            q = "q" if g == len(reduced) - 1 else f"q{g}"
            out += [f"{pad}for ({self.index} {j} = 0u; {j} < {self.lit(size)}; ++{j}) {{",
                    f"{pad}  const {self.index} {q} = {prev} + {self._times(j, stride)};"]
            pad, prev = pad + "  ", q
        out += [f"{pad}{load}"] + [f"{pad}{line}" for line in lines]
        for g in range(len(reduced) - 1, -1, -1):
            out.append("  " * g + "}")
        return out

    def combine(self, var: str, kind: str) -> list[str]:
        """Lines combining the partial ``var`` of this thread with its output's others."""
        if not self.split:
            return []
        return [f"{var} = rtx_split_reduce<{SPLIT_WARPS}>({var}, {FUNCTOR[kind]}(), rtx_part);"]

    def write(self, value: str) -> str:
        """The line storing ``value`` as output ``o``."""
        guard = "if (live && warp == 0u) " if self.split else ""
        return f"{guard}out0[o] = {value};"


def _body(r: Reduction, k: _Kernel) -> list[str]:
    head = (["const " + k.index + " o = o0 + lane;", f"const bool live = o < {k.lit(k.w.outputs)};",
             f"{k.index} base = 0u;", "if (live) {", *(f"  {line}" for line in _assign(k.base())), "}"]
            if k.split else k.base())
    return head + _op_lines(r, k)


def _assign(lines: list[str]) -> list[str]:
    """The base lines assigning the split kernel's ``base`` (declared before the live test)."""
    last = lines[-1].split(" base = ", 1)[1]
    return lines[:-1] + [f"base = {last}"]


def _fold(k: _Kernel, var: str, kind: str, pre: str) -> list[str]:
    """``var = combine(var, pre)`` over the elements, then across the output's threads."""
    step = {"sum": f"{var} += {pre};", "prod": f"{var} *= {pre};",
            "max": f"{var} = rtx_max({var}, {pre});", "min": f"{var} = rtx_min({var}, {pre});"}[kind]
    return [f"float {var} = {IDENTITY[kind]};", *k.over([step]), *k.combine(var, kind)]


def _op_lines(r: Reduction, k: _Kernel) -> list[str]:
    t, out_t = r.dtype, r.out_dtype
    if r.op in ("Softmax", "LogSoftmax", "ReduceLogSumExp"):
        lines = [*_fold(k, "m", "max", "v")]
        lines += [finite_max_line("m")] if r.op == "ReduceLogSumExp" else []
        lines += _fold(k, "s", "sum", "expf(v - m)")
        if r.op == "ReduceLogSumExp":
            return lines + [k.write(C.store("logf(s) + m", t))]
        if r.op == "Softmax":
            return lines + k.over([f"out0[q] = {C.store('expf(v - m) / s', t)};"])
        return lines + ["const float ls = logf(s);"] + k.over([f"out0[q] = {C.store('(v - m) - ls', t)};"])
    if r.op in ARG_OPS or r.op == "Hardmax":
        lines = _arg_lines(r, k)
        if r.op == "Hardmax":
            return lines + k.over([f"out0[q] = {C.store('(long long)j == bi ? 1.0f : 0.0f', t)};"])
        return lines + [k.write("bi")]
    fold = FOLDS[r.op]
    lines = _fold(k, "s", fold.combine, fold.pre.format(v="v"))
    return lines + [k.write(C.store(fold.post.format(s="s", n=count_literal(r.count)), out_t))]


def _arg_lines(r: Reduction, k: _Kernel) -> list[str]:
    """The best (value, index) of output ``o`` into ``b``, ``bi``. A thread of the columns
    kernel sees the elements in index order, so a plain test keeps the first (or last)
    extreme; the split kernel's warps combine with the total order of rtx_arg_better."""
    hi, last = r.op != "ArgMin", r.select_last
    init = [f"float b = {NEG_INF if hi else POS_INF};"]
    if k.split:
        order = f"{'true' if hi else 'false'}, {'true' if last else 'false'}"
        keep = f"if (rtx_arg_better<{order}>(v, (long long)j, b, bi)) {{ b = v; bi = (long long)j; }}"
        return init + [f"long long bi = {'-1LL' if last else LAST_INDEX};", *k.over([keep]),
                       f"rtx_split_arg<{SPLIT_WARPS}, {order}>(b, bi, rtx_part, rtx_part_index);"]
    beats = ">" if hi else "<"
    # a later equal value wins with select_last_index, and so does a later NaN; else only a first NaN
    test = f"v {beats}= b || v != v" if last else f"v {beats} b || (v != v && b == b)"
    return init + ["long long bi = 0;", *k.over([f"if ({test}) {{ b = v; bi = (long long)j; }}"])]

