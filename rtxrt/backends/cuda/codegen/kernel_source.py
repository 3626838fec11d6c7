"""How a generated kernel is described to the runtime, shared by every generator
(elementwise, GEMM, reductions): its source and name, its pointer arguments and its launch.

This module imports nothing from the generators, so each of them can import it.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ....ir.dtypes import DType
from ..plan.program import BufferRole, Ref
from .dynamic import c_int, dim_arguments, plan_memo, upper

BLOCK = 256
MAX_GRID = 2**31 - 1


@dataclass(frozen=True)
class KernelArg:
    """One pointer parameter: an input (``index`` is its position among the node's inputs,
    omitted optional inputs have none) or an output (its position among the outputs)."""

    name: str
    role: BufferRole  # IN or OUT
    index: int
    dtype: DType  # storage type in memory
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.role not in (BufferRole.IN, BufferRole.OUT):
            raise ValueError(f"kernel argument {self.name!r}: a generated kernel's pointers are the node's inputs "
                             f"and outputs, not {self.role!r}")

    @property
    def ref(self) -> Ref:
        """The node buffer this argument points to."""
        return Ref(self.role, self.index)


@dataclass(frozen=True)
class LaunchPolicy:
    """A 1-D grid-stride launch over ``elements`` output elements. Any grid size is correct;
    ``grid()`` gives one thread per element, or ``sm_count * blocks_per_sm`` blocks when the
    caller prefers fewer, longer-lived ones. ``grid() == 0``: nothing to do, do not launch."""

    elements: int
    block: int = BLOCK

    def grid(self, sm_count: int | None = None, blocks_per_sm: int = 8) -> int:
        blocks = min(-(-self.elements // self.block), MAX_GRID)
        return min(blocks, sm_count * blocks_per_sm) if sm_count else blocks


@dataclass(frozen=True)
class GridLaunch:
    """A 3-D launch: ``grid`` blocks of ``block`` threads with ``smem_bytes`` of static shared
    memory (for kernels whose blocks own tiles: GEMM, attention). A zero in ``grid``: nothing
    to do, do not launch."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem_bytes: int = 0


@dataclass(frozen=True)
class KernelSource:
    """A generated kernel: ``name`` is a hash of ``source`` (same source, same name: compile
    once, cache by it); the kernel's parameters are ``args`` in order, all pointers to
    contiguous row-major buffers, then one ``int`` per dim argument the source uses
    (dynamic.py), whose values at the planned shapes are ``dims``."""

    name: str
    source: str
    launch: LaunchPolicy | GridLaunch
    args: tuple[KernelArg, ...]
    dims: tuple[int, ...] = field(default=(), kw_only=True)

    @classmethod
    def named(cls, prefix: str, source: str, launch: LaunchPolicy | GridLaunch,
              args: Sequence[KernelArg], **extra: object) -> KernelSource:
        """The kernel of ``source``, whose ``extern "C"`` function is called ``KERNEL_NAME``,
        named ``prefix`` + a hash of that source (``extra``: a subclass's own fields)."""
        if source.count(KERNEL_NAME) != 1:
            raise ValueError(f"a {prefix} kernel's source names {KERNEL_NAME} {source.count(KERNEL_NAME)} times")
        names, values = dim_arguments(source)
        name, source = _finished(prefix, source, names)
        return cls(name, source, launch, tuple(args), dims=values, **extra)

    @property
    def inputs(self) -> tuple[KernelArg, ...]:
        return tuple(a for a in self.args if a.role is BufferRole.IN)

    @property
    def outputs(self) -> tuple[KernelArg, ...]:
        return tuple(a for a in self.args if a.role is BufferRole.OUT)


KERNEL_NAME = "__RTX_KERNEL__"  # stands for the kernel's name until the source is hashed


@plan_memo(maxsize=1024)
def _finished(prefix: str, source: str, names: tuple[str, ...]) -> tuple[str, str]:
    """The kernel's name and its final source, ``int`` parameters for the dim arguments
    ``names`` added (memoized: a generic plan makes the same sources at every new shape)."""
    if names:
        source = _with_parameters(source, [f"int {n}" for n in names])
    name = kernel_name(prefix, source)
    return name, source.replace(KERNEL_NAME, name)


def _with_parameters(source: str, params: list[str]) -> str:
    """``source`` with ``params`` appended to the parameter list of its ``KERNEL_NAME``."""
    start = source.index(KERNEL_NAME + "(") + len(KERNEL_NAME) + 1
    depth, end = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(source[end], 0)
        end += 1
    end -= 1  # the closing parenthesis
    existing = source[start:end].strip()
    return source[:end] + (", " if existing and existing != "void" else "") + ", ".join(params) + source[end:]


def kernel_name(prefix: str, source: str) -> str:
    """``prefix`` and a hash of ``source``: the same source gets the same name."""
    return prefix + hashlib.sha256(source.encode()).hexdigest()[:20]


def index_type(total: int) -> tuple[str, str]:
    """32-bit loop indexes while ``i + gridDim * blockDim`` cannot wrap (at any shape of the
    profile), else 64-bit."""
    return ("unsigned int", "u") if 2 * upper(total) + BLOCK < 2**32 else ("unsigned long long", "ull")


def grid_stride_loop(index: str, suffix: str, total: int, var: str = "i") -> str:
    """The opening line of a loop of ``var`` over ``[0, total)``, one step a thread of the grid."""
    return (f"for ({index} {var} = blockIdx.x * ({index})blockDim.x + threadIdx.x; {var} < {c_int(total, suffix)};"
            f" {var} += ({index})gridDim.x * blockDim.x) {{")


def loop_kernel(head: Sequence[str], params: Sequence[str], loop: str, body: Sequence[str], *,
                block: int = BLOCK, before_loop: Sequence[str] = ()) -> str:
    """The source of a kernel named ``KERNEL_NAME``: the ``head`` lines (comment, preludes), then
    ``extern "C" __global__`` over ``params``, whose body is ``loop`` (an opening ``for`` line)
    around the ``body`` lines."""
    return "\n".join([
        *head,
        f'extern "C" __global__ void __launch_bounds__({block}) {KERNEL_NAME}({", ".join(params)}) {{',
        *before_loop,
        f"  {loop}",
        *(f"    {line}" for line in body),
        "  }",
        "}",
        "",
    ])


def pixel_coordinates(layout: str, shape: Sequence[int], chw: tuple[int, int, int], out_hw: tuple[int, int],
                      total: int) -> tuple[str, str, str, list[str], int, int]:
    """For kernels with one thread per output pixel of a 4-D image (NCHW or NHWC) of
    ``total`` elements, reading an input of ``shape`` whose C, H, W are ``chw``: the index
    type and literal suffix, the input offset type, the lines turning ``r`` (the output index)
    into ``x``, ``y`` (and ``ch``) and the input's ``base`` offset of that (n, c), and the
    input's row and column strides in elements."""
    c, h, w = chw
    oh, ow = out_hw
    index, suffix = index_type(max(upper(total), upper(math.prod(shape))))
    off = "long long" if upper(math.prod(shape)) >= 2**31 else "int"
    if layout == "NCHW":
        coords = [f"const {index} x = r % {c_int(ow, suffix)}; r /= {c_int(ow, suffix)};",
                  f"const {index} y = r % {c_int(oh, suffix)}; r /= {c_int(oh, suffix)};",
                  f"const {off} base = ({off})r * {h * w};"]
        return index, suffix, off, coords, w, 1
    coords = [f"const {index} ch = r % {c_int(c, suffix)}; r /= {c_int(c, suffix)};",
              f"const {index} x = r % {c_int(ow, suffix)}; r /= {c_int(ow, suffix)};",
              f"const {index} y = r % {c_int(oh, suffix)}; r /= {c_int(oh, suffix)};",
              f"const {off} base = ({off})r * {h * w * c} + ({off})ch;"]
    return index, suffix, off, coords, w * c, c
