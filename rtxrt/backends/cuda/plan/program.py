"""What the CUDA backend runs, as plain data: per node a ``NodeProgram`` (kernel launches,
cuBLAS calls, copies, or a host fallback) whose pointer arguments are ``Ref``s to the node's
inputs, outputs, scratch and packed constants. The builder resolves refs to arena offsets."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ....ir.dtypes import DType
from .forms import TensorForm


class BufferRole(Enum):
    """Whose buffer a pointer argument points into: one vocabulary for a generated kernel's
    arguments (KernelArg, IN or OUT) and a program's pointers (Ref)."""

    IN = "input"  # one of the node's inputs, by position
    OUT = "output"  # one of the node's outputs, by position
    SCRATCH = "scratch"  # one of the program's scratch buffers, by name
    CONST = "const"  # one of the program's packed constants, by name

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Ref:
    """A pointer argument: with ``role`` IN / OUT, ``key`` is the position among the node's
    inputs / outputs; with SCRATCH or CONST it names one of the program's buffers."""

    role: BufferRole
    key: int | str
    offset: int = 0  # bytes

    def __post_init__(self) -> None:
        if not isinstance(self.role, BufferRole):
            raise TypeError(f"a Ref's role is a BufferRole, not {self.role!r}")

    @classmethod
    def input(cls, index: int) -> Ref:
        return cls(BufferRole.IN, index)

    @classmethod
    def output(cls, index: int) -> Ref:
        return cls(BufferRole.OUT, index)

    @classmethod
    def scratch(cls, name: str) -> Ref:
        return cls(BufferRole.SCRATCH, name)

    @classmethod
    def const(cls, name: str) -> Ref:
        return cls(BufferRole.CONST, name)


@dataclass(frozen=True)
class Launch:
    """A kernel launch (generated kernels declare their shared memory statically): pointers
    ``args``, then the kernel's dim arguments ``dims`` (ints; codegen/dynamic.py)."""

    kernel: str  # a name in NodeProgram.kernels
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Ref, ...]
    dims: tuple[int, ...] = ()


@dataclass(frozen=True)
class Gemm:
    """A row-major cuBLAS GEMM: ``c = alpha * op(a) @ op(b) + beta * c`` (see jit.cublas)."""

    a: Ref
    b: Ref
    c: Ref
    m: int
    n: int
    k: int
    dtype: DType
    out_dtype: DType
    compute: str = "fp32"
    trans_a: bool = False
    trans_b: bool = False
    lda: int | None = None
    ldb: int | None = None
    ldc: int | None = None
    alpha: float = 1.0
    beta: float = 0.0
    batch: int = 1
    stride_a: int | None = None
    stride_b: int | None = None
    stride_c: int | None = None


@dataclass(frozen=True)
class Copy:
    src: Ref
    dst: Ref
    nbytes: int


@dataclass(frozen=True)
class HostRun:
    """Run the node with the reference backend on the host: its inputs are copied down in
    their logical form, its outputs copied up. Breaks CUDA graph capture where it sits."""


Step = Launch | Gemm | Copy | HostRun


@dataclass
class NodeProgram:
    """One way of computing one node. ``outputs`` are the forms it writes its outputs in
    (the builder converts where the graph stores them otherwise); ``label`` names the tactic."""

    steps: list[Step]
    outputs: list[TensorForm | None]
    kernels: dict[str, str] = field(default_factory=dict)  # name -> CUDA source
    scratch: dict[str, int] = field(default_factory=dict)  # name -> bytes
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bytes as the device holds them
    label: str = ""

    @property
    def on_host(self) -> bool:
        return any(isinstance(s, HostRun) for s in self.steps)
