"""Bugs planted in generated CUDA, to prove the fake-device checks catch them.

Each ``SourcePlant`` edits kernel sources on their way to the fake device and counts the
kernels it changed; ``require()`` raises PlantNotApplied (not an AssertionError) when it
changed none, so a test expecting the check to fail cannot pass because the edit no longer
matches what the generators write. ``swap_bias_and_residual`` plants a binding bug in a
finalized plan instead: the bias and residual Refs of every fused launch trade places.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace

from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.plan.builder import FinalPlan
from rtxrt.backends.cuda.plan.program import Launch


class PlantNotApplied(RuntimeError):
    """The planted edit found nothing to change: the generated code no longer looks as the
    plant expects (update the plant)."""


class SourcePlant:
    def __init__(self, name: str, edit: Callable[[str], tuple[str, int]]):
        self.name, self.edit = name, edit
        self.changed: list[str] = []  # the kernels it changed (their first line)

    def __call__(self, source: str) -> str:
        new, count = self.edit(source)
        if count:
            self.changed.append(source.lstrip().splitlines()[0] if source.strip() else "")
        return new

    def engine_hook(self, name: str, source: str) -> str:
        """For load_engine's ``mutate``."""
        return self(source)

    def require(self) -> None:
        if not self.changed:
            raise PlantNotApplied(f"the planted bug {self.name!r} matched no generated kernel")


def _relu_max_one(source: str) -> tuple[str, int]:
    """``rtx_max(x, 0)`` (ReLU, in an elementwise kernel or a fused activation) as ``rtx_max(x, 1)``,
    the constant keeping its type."""
    source, floats = re.subn(r"rtx_max\((\w+), \(0x0\.0p\+0(f?)\)\)", r"rtx_max(\1, (0x1.0p+0\2))", source)
    source, ints = re.subn(r"rtx_max\((\w+), \(([a-z ]+)\)0\)", r"rtx_max(\1, (\2)1)", source)
    return source, floats + ints


def _sub_as_add(source: str) -> tuple[str, int]:
    """An op line that is exactly one subtraction (Sub; ints subtract as unsigned) as an addition."""
    source, floats = re.subn(r"(= )\((\w+) - (\w+)\);", r"\1(\2 + \3);", source)
    source, ints = re.subn(r"\(\((unsigned [a-z ]+)\)(\w+) - \(\1\)(\w+)\)", r"((\1)\2 + (\1)\3)", source)
    return source, floats + ints


def _residual_swapped(source: str) -> tuple[str, int]:
    """A fused epilogue adding its residual Z after the activation where it should before, or
    before where it should after: the residual statement and ``x = rtx_act(x);`` trade places."""
    lines = source.split("\n")
    act = [i for i, line in enumerate(lines) if line.strip() == "x = rtx_act(x);"]
    residual = [i for i, line in enumerate(lines) if re.match(r"\s*x \+= .*\bZ\[", line)]
    if len(act) != 1 or len(residual) != 1:
        return source, 0
    (a,), (z,) = act, residual
    lines[a], lines[z] = lines[z], lines[a]
    return "\n".join(lines), 1


def relu_max_one() -> SourcePlant:
    return SourcePlant("ReLU emitted as max(x, 1)", _relu_max_one)


def sub_as_add() -> SourcePlant:
    return SourcePlant("Sub emitted as +", _sub_as_add)


def residual_swapped() -> SourcePlant:
    return SourcePlant("residual added on the wrong side of the activation", _residual_swapped)


def swap_bias_and_residual(final: FinalPlan, catalog: Mapping[str, KernelSource]) -> int:
    """Swap the bias and residual pointers of every launch of ``final`` whose kernel takes
    both (a fused GEMM or conv epilogue); returns how many launches changed (PlantNotApplied
    if none)."""
    swapped = 0
    for program in final.programs:
        for k, step in enumerate(program.steps):
            if not isinstance(step, Launch) or step.kernel not in catalog:
                continue
            names = [a.name for a in catalog[step.kernel].args]
            if "bias" in names and "Z" in names:
                args = list(step.args)
                b, z = names.index("bias"), names.index("Z")
                args[b], args[z] = args[z], args[b]
                program.steps[k] = replace(step, args=tuple(args))
                swapped += 1
    if not swapped:
        raise PlantNotApplied("no launch takes both a bias and a residual")
    return swapped
