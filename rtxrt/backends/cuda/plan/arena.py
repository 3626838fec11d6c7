"""Where the buffers a step's pointers name lie: device values and scratch in the arena (one
allocation, offsets from the memory plan), constants in the weights (one allocation). The
engine and the autotuner both turn a step's Refs into pointers through a ``StepLayout``,
adding the base pointers of the allocations they made."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from ...memory_plan import ALIGNMENT
from .program import BufferRole, NodeProgram, Ref

K = TypeVar("K")


class Allocation(Enum):
    ARENA = "arena"  # device values and scratch, reused by liveness
    WEIGHTS = "weights"  # the model's constants (weights and what follows from them), uploaded once
    SHAPE = "shape"  # constants that follow from the input shapes (positions, masks), uploaded once


@dataclass(frozen=True)
class Place:
    """Bytes at ``offset`` from the base of ``allocation``."""

    allocation: Allocation
    offset: int

    def plus(self, nbytes: int) -> Place:
        return Place(self.allocation, self.offset + nbytes)


@dataclass(frozen=True)
class StepLayout:
    """Where one step's buffers lie: its inputs and outputs by position (None: omitted), its
    program's scratch buffers and constants by name."""

    inputs: tuple[Place | None, ...]
    outputs: tuple[Place | None, ...]
    scratch: Mapping[str, Place]
    consts: Mapping[str, Place]

    def place(self, ref: Ref) -> Place:
        if ref.role is BufferRole.IN:
            base = self.inputs[ref.key]
        elif ref.role is BufferRole.OUT:
            base = self.outputs[ref.key]
        elif ref.role is BufferRole.SCRATCH:
            base = self.scratch[ref.key]
        else:
            base = self.consts[ref.key]
        if base is None:
            raise KeyError(f"{ref}: the step has no such buffer")
        return base.plus(ref.offset)

    def addresses(self, bases: Mapping[Allocation, int]) -> Callable[[Ref], int]:
        """Ref -> pointer, given the base pointer of each allocation."""
        def address(ref: Ref) -> int:
            place = self.place(ref)
            return bases[place.allocation] + place.offset

        return address


@dataclass(frozen=True)
class ArenaLayout:
    """Every step's layout, the place of every device value (constants included) by name, and
    how many bytes each allocation needs."""

    values: Mapping[str, Place]
    steps: Sequence[StepLayout]
    arena_bytes: int
    weights_bytes: int
    shape_bytes: int = 0


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to the alignment every buffer starts at."""
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def pack(sizes: Iterable[tuple[K, int]], allocation: Allocation, start: int = 0) -> tuple[dict[K, Place], int]:
    """Buffers of ``sizes`` one after another from ``start``, each rounded up to the
    alignment: their places and the end."""
    places, cursor = {}, start
    for key, nbytes in sizes:
        places[key] = Place(allocation, cursor)
        cursor += aligned(nbytes)
    return places, cursor


def step_alone(inputs: Sequence[int | None], outputs: Sequence[int | None], program: NodeProgram) -> ArenaLayout:
    """One step laid out on its own (the autotuner runs it so): the arena holds its inputs, then
    its outputs (their places do not depend on the program), then the program's scratch; the
    weights hold the program's constants. ``inputs`` / ``outputs``: bytes (None: omitted)."""
    io = [((BufferRole.IN, i), n) for i, n in enumerate(inputs) if n is not None]
    io += [((BufferRole.OUT, i), n) for i, n in enumerate(outputs) if n is not None]
    places, end = pack(io, Allocation.ARENA)
    scratch, end = pack(program.scratch.items(), Allocation.ARENA, end)
    consts, weights = pack(((name, array.nbytes) for name, array in program.consts.items()), Allocation.WEIGHTS)
    step = StepLayout(tuple(places.get((BufferRole.IN, i)) for i in range(len(inputs))),
                      tuple(places.get((BufferRole.OUT, i)) for i in range(len(outputs))), scratch, consts)
    return ArenaLayout({}, [step], end, weights)
