"""Tactic selection: each step with several candidate programs runs every candidate on fresh
random data of its own shapes on the device, timed as CUDA graph replays (timing.py); the
fastest wins."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ....errors import ExecutionError
from ..plan.builder import Plan, Step
from ..run.executor import H2D, step_calls
from ..plan.forms import TensorForm, numpy_dtype
from ..plan.program import NodeProgram, Ref
from .timing import gpu_milliseconds


def autotune(plan: Plan, functions: Mapping[str, Any], cublas: Any, stream: Any,
             progress: Callable[[int, int], None] | None = None) -> dict[int, int]:
    """Step index -> index of its fastest candidate, for every step that has a choice."""
    choices = {}
    tuned = [i for i, s in enumerate(plan.steps) if len(s.candidates) > 1]
    for done, i in enumerate(tuned):
        choices[i] = _fastest(plan, plan.steps[i], functions, cublas, stream)
        if progress:
            progress(done + 1, len(tuned))
    return choices


def _fastest(plan: Plan, step: Step, functions: Mapping[str, Any], cublas: Any, stream: Any) -> int:
    import cupy

    rng = np.random.default_rng(len(step.label))
    inputs = [_random_buffer(plan.forms[v], rng) if v else None for v in step.inputs]
    outputs = [cupy.cuda.alloc(max(plan.forms[v].nbytes, 1)) if v else None for v in step.outputs]
    from cupy_backends.cuda.api.driver import CUDADriverError

    times, errors = [], []
    for program in step.candidates:
        try:
            times.append(_time_program(program, inputs, outputs, functions, cublas, stream))
        except CUDADriverError as exc:  # a tactic this GPU cannot launch (e.g. too many resources)
            times.append(float("inf"))
            errors.append(f"{program.label}: {exc}")
    if not np.isfinite(min(times)):
        raise ExecutionError(f"{step.label}: no tactic could be launched: {'; '.join(errors)}")
    return int(np.argmin(times))


def _time_program(program: NodeProgram, inputs: list, outputs: list, functions: Mapping[str, Any], cublas: Any,
                  stream: Any) -> float:
    import cupy

    offsets, total = {}, 0
    for name, nbytes in program.scratch.items():
        offsets[name] = total
        total += -(-nbytes // 256) * 256
    scratch = cupy.cuda.alloc(max(total, 1))
    consts = {name: _upload(a) for name, a in program.consts.items()}

    def address(ref: Ref) -> int:
        if ref.role == "in":
            return inputs[ref.key].ptr + ref.offset
        if ref.role == "out":
            return outputs[ref.key].ptr + ref.offset
        if ref.role == "scratch":
            return scratch.ptr + offsets[ref.key] + ref.offset
        return consts[ref.key].ptr + ref.offset

    return gpu_milliseconds(step_calls(program, address, functions, cublas, stream), stream)


def _random_buffer(form: TensorForm, rng: np.random.Generator) -> Any:
    """Device bytes of ``form`` holding values in [-1, 1] (never zeros: timing on zeros can
    flatter a kernel); integer values are small non-negative indexes."""
    if form.dtype.is_float:
        values = rng.uniform(0.1, 1.0, form.physical) * rng.choice([-1.0, 1.0], form.physical)
    else:
        values = rng.integers(0, 2, form.physical)
    return _upload(values.astype(numpy_dtype(form.dtype)))


def _upload(array: np.ndarray) -> Any:
    import cupy

    array = np.ascontiguousarray(array)
    memory = cupy.cuda.alloc(max(array.nbytes, 1))
    if array.nbytes:
        cupy.cuda.runtime.memcpy(memory.ptr, array.ctypes.data, array.nbytes, H2D)
    return memory
