"""What a lowering sees of one node, and the helpers every lowering shares."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from ....ir.dtypes import DType
from ....ir.graph import Node
from ..codegen import CodegenError
from ..codegen.kernel_source import GridLaunch, KernelSource
from ..plan.forms import TensorForm
from ..plan.program import Launch, NodeProgram, Ref

T = TypeVar("T")


class WrongForm(CodegenError):
    """A lowering that could take the node if some inputs came in other forms (a residual
    channels-last like the output, say): ``wanted`` maps input index -> form. The builder
    converts those inputs and lowers again."""

    def __init__(self, message: str, wanted: Mapping[int, TensorForm]):
        super().__init__(message)
        self.wanted = dict(wanted)


class NeedsValue(CodegenError):
    """A lowering that needs the value of input ``index`` when the plan is made, which is not
    known then (a graph input, or computed from one): the runtime plans such a model per value
    of the graph inputs it comes from (backends/parameter_inputs.py)."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


NODE_IDENTITY = "node"  # in LowerContext.reads: the lowering made a constant of this node's own
Unsupported = CodegenError  # a lowering that cannot take these forms raises it; the builder tries others


@dataclass
class LowerContext:
    """``inputs``: the forms the node's inputs are presented in (None: omitted); ``outputs``:
    the forms the graph would like its outputs in (a lowering may write others and say so);
    ``consts``: host values (logical) of the inputs known at plan time; ``tune``: offer
    alternative tactics for the autotuner; ``memo``: kept from plan to plan of one model (see
    ``model_constant``). In a generic plan, the dims of ``inputs`` and ``outputs`` that vary
    over the profile are DimInts (codegen/dynamic.py)."""

    node: Node
    inputs: list[TensorForm | None]
    outputs: list[TensorForm | None]
    consts: list[np.ndarray | None]
    opset: int
    arch: str
    sm_count: int
    tune: bool = True
    memo: dict = field(default_factory=dict)
    wanted: str | None = None  # with tune off: the tactic (label) to offer, where the lowering can
    # What the lowering read beyond the forms (const input indices, NODE_IDENTITY): two nodes
    # alike in forms and in these get the same programs (plan/lowering_memo.py).
    reads: set = field(default_factory=set, init=False, compare=False, repr=False)

    def tactics(self, candidates: Sequence[T], label: Callable[[T], str]) -> list[T]:
        """Which of ``candidates`` (best first) to offer: every one when tuning, else the
        ``wanted`` one where it is among them, else the first."""
        if self.tune:
            return list(candidates)
        return [t for t in candidates if label(t) == self.wanted][:1] or list(candidates[:1])

    def model_constant(self, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """A program constant (packed weights, say) made by ``make`` from the node's constant
        inputs and attributes only, never from the input shapes: made once per model and node,
        and the same array object in every plan, so the engines of a profile share its bytes."""
        self.reads.add(NODE_IDENTITY)
        key = ("program constant", self.node.name or self.node.label, name)
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def input(self, i: int) -> TensorForm:
        form = self.inputs[i] if i < len(self.inputs) else None
        if form is None:
            raise Unsupported(f"{self.node.label}: input {i} is omitted")
        return form

    def const(self, i: int, what: str = "") -> np.ndarray:
        self.reads.add(i)
        value = self.consts[i] if i < len(self.consts) else None
        if value is None:
            raise NeedsValue(f"{self.node.label}: {what or f'input {i}'} must be known when the plan is made", i)
        return value

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def require_logical(self) -> None:
        """For lowerings that index memory as the logical shape says."""
        if any(f is not None and f.layout for f in self.inputs):
            raise Unsupported(f"{self.node.label}: takes its inputs in the logical layout")

    def out_dtype(self, i: int = 0) -> DType:
        form = self.outputs[i]
        if form is None:
            raise Unsupported(f"{self.node.label}: output {i} has no type")
        return form.dtype


def launch_of(kernel: KernelSource, args: tuple[Ref, ...]) -> Launch:
    """The launch of ``kernel`` (in a generic plan its grid and dims are DimInts, which the
    plan builder makes plain ints: a lowering template keeps them as expressions)."""
    if isinstance(kernel.launch, GridLaunch):
        return Launch(kernel.name, tuple(kernel.launch.grid), tuple(kernel.launch.block), args, kernel.dims)
    return Launch(kernel.name, (kernel.launch.grid(), 1, 1), (kernel.launch.block, 1, 1), args, kernel.dims)


def kernel_args(kernel: KernelSource, bound: Mapping[Ref, Ref] | None = None) -> tuple[Ref, ...]:
    """Refs for a generated kernel's arguments: the node's own inputs and outputs, except
    where ``bound`` points one elsewhere (an input the program packed as a constant, say)."""
    bound = bound or {}
    return tuple(bound.get(a.ref, a.ref) for a in kernel.args)


def single_kernel(kernel: KernelSource, outputs: list[TensorForm | None], label: str = "") -> NodeProgram:
    """The program of one kernel launched on the node's inputs and outputs."""
    steps = [launch_of(kernel, kernel_args(kernel))]
    if not all(steps[0].grid):  # nothing to compute (an empty tensor)
        steps = []
    return NodeProgram(steps, outputs, {kernel.name: kernel.source}, label=label or kernel.name.rsplit("_", 1)[0])
