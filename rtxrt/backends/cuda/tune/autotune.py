"""Tactic selection: each step with several candidate programs runs every candidate on fresh
random data of its own shapes on the device, timed as CUDA graph replays (timing.py); the
fastest wins. Steps alike in all that their timing sees (``timing_key``: a transformer's
layers, a ResNet stage's blocks) are timed once and take the same choice, and a problem timed
for another model on this GPU is not timed again (timing_cache.py)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ....errors import ExecutionError
from ..plan.arena import Allocation, ArenaLayout, step_alone
from ..plan.builder import Plan, Step
from ..run.executor import H2D, step_calls
from ..plan.forms import TensorForm, numpy_dtype
from ..plan.program import NodeProgram
from .timing import gpu_milliseconds
from .timing_cache import problem_digest


def autotune(plan: Plan, functions: Mapping[str, Any], cublas: Any, stream: Any,
             progress: Callable[[int, int], None] | None = None,
             timings: dict[str, str] | None = None) -> dict[int, int]:
    """Step index -> index of its fastest candidate, for every step that has a choice.
    ``timings``: problem digest -> the label that won there before (timing_cache.py), looked
    up before timing a step; the problems timed here are added to it."""
    timings = {} if timings is None else timings
    choices: dict[int, int] = {}
    timed: dict[tuple, int] = {}  # timing_key -> the choice made for it
    tuned = [i for i, s in enumerate(plan.steps) if len(s.candidates) > 1]
    for done, i in enumerate(tuned):
        step = plan.steps[i]
        key = timing_key(plan, step)
        if key not in timed:
            labels, digest = [p.label for p in step.candidates], problem_digest(key)
            known = timings.get(digest)
            timed[key] = labels.index(known) if known in labels else _fastest(plan, step, functions, cublas, stream)
            timings[digest] = labels[timed[key]]
        choices[i] = timed[key]
        if progress:
            progress(done + 1, len(tuned))
    return choices


def timing_key(plan: Plan, step: Step) -> tuple:
    """What timing ``step``'s candidates sees: the forms of its inputs and outputs and each
    candidate's launches (kernels, grids, dim arguments), cuBLAS calls, copies, scratch and
    constants by shape and type (their values do not change a kernel's time)."""
    forms = tuple(plan.forms[v] if v else None for v in (*step.inputs, *step.outputs))
    return forms, tuple((p.label, tuple(p.steps), tuple(sorted(p.scratch.items())),
                         tuple(sorted((name, a.shape, a.dtype.str) for name, a in p.consts.items())))
                        for p in step.candidates)


def _fastest(plan: Plan, step: Step, functions: Mapping[str, Any], cublas: Any, stream: Any) -> int:
    """Each candidate laid out on its own (arena.step_alone): the inputs and outputs lie at the
    same places for every candidate, so one arena holding the random inputs serves them all."""
    import cupy

    rng = np.random.default_rng(len(step.label))
    layouts = [step_alone([plan.forms[v].nbytes if v else None for v in step.inputs],
                          [plan.forms[v].nbytes if v else None for v in step.outputs], p) for p in step.candidates]
    arena = cupy.cuda.alloc(max(max(layout.arena_bytes for layout in layouts), 1))
    for v, place in zip(step.inputs, layouts[0].steps[0].inputs):
        if v:
            _upload(arena.ptr + place.offset, _random_values(plan.forms[v], rng))
    from cupy_backends.cuda.api.driver import CUDADriverError

    times, errors = [], []
    for program, layout in zip(step.candidates, layouts):
        try:
            times.append(_time_program(program, layout, arena, functions, cublas, stream))
        except CUDADriverError as exc:  # a tactic this GPU cannot launch (e.g. too many resources)
            times.append(float("inf"))
            errors.append(f"{program.label}: {exc}")
    if not np.isfinite(min(times)):
        raise ExecutionError(f"{step.label}: no tactic could be launched: {'; '.join(errors)}")
    return int(np.argmin(times))


def _time_program(program: NodeProgram, layout: ArenaLayout, arena: Any, functions: Mapping[str, Any], cublas: Any,
                  stream: Any) -> float:
    import cupy

    weights = cupy.cuda.alloc(max(layout.weights_bytes, 1))
    (step,) = layout.steps
    for name, array in program.consts.items():
        _upload(weights.ptr + step.consts[name].offset, array)
    address = step.addresses({Allocation.ARENA: arena.ptr, Allocation.WEIGHTS: weights.ptr})
    return gpu_milliseconds(step_calls(program, address, functions, cublas, stream), stream)


def _random_values(form: TensorForm, rng: np.random.Generator) -> np.ndarray:
    """The bytes of ``form`` holding values in [-1, 1] (never zeros: timing on zeros can
    flatter a kernel); integer values are small non-negative indexes."""
    if form.dtype.is_float:
        values = rng.uniform(0.1, 1.0, form.physical) * rng.choice([-1.0, 1.0], form.physical)
    else:
        values = rng.integers(0, 2, form.physical)
    return values.astype(numpy_dtype(form.dtype))


def _upload(dst: int, array: np.ndarray) -> None:
    import cupy

    array = np.ascontiguousarray(array)
    if array.nbytes:
        cupy.cuda.runtime.memcpy(dst, array.ctypes.data, array.nbytes, H2D)
