"""Pad's generated kernels on the GPU agree with the reference backend bit for bit.

Runs every case of tests/backends/cuda/test_pad_codegen.py (each mode, rank, dtype, negative
pads, ``axes``, empty results, a constant value baked in or read on the device), lowered by
the real lowering, compiled with NVRTC for the probed GPU's arch and launched as the
program's Launches say (each pointer the node input or output its Ref names, then the dim
arguments) on the case's seeded inputs, into outputs poisoned with 0xFF bytes (NaN for
floats), so an element the kernel never writes shows up. Also: a grid smaller than the work,
a generic plan's one kernel at every shape of its profile, and a model of four Pads through
the real Engine with no host step.
"""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.forms import numpy_dtype
from rtxrt.backends.cuda.plan.program import BufferRole, Launch, NodeProgram
from rtxrt.backends.reference.executor import ReferenceExecutor
from tests.backends.cuda.helpers import load_cubins
from tests.backends.cuda.test_pad_codegen import (
    CASES,
    PROFILE,
    PROFILE_SHAPES,
    PadCase,
    assert_bit_exact,
    every_mode_model,
    generic_cases,
    generic_program,
    generic_programs,
    lowered,
    random_inputs,
    reference,
)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """Every kernel of the catalogue and of the generic cases, compiled for this GPU."""
    from rtxrt.backends.cuda.device import probe

    kernels = {}
    for program in [lowered(case) for case in CASES] + generic_programs():
        kernels.update(program.kernels)
    return load_cubins(kernels, tmp_path_factory.mktemp("cubins"), probe().arch)


def launch(modules, program: NodeProgram, arrays: list[np.ndarray | None], grid: int | None = None) -> np.ndarray:
    """``program``'s launches on the GPU; the output (poisoned with 0xFF first) on the host.
    Buffers travel as raw bytes: every dtype (bfloat16, bool, a 0-d scalar) moves alike."""
    import cupy

    form = program.outputs[0]
    storage = numpy_dtype(form.dtype)
    nbytes = int(np.prod([int(d) for d in form.shape], dtype=np.int64)) * storage.itemsize
    out = cupy.full(max(nbytes, 1), 0xFF, cupy.uint8)
    inputs = {k: cupy.asarray(np.frombuffer(np.ascontiguousarray(a).tobytes() or b"\0", np.uint8))
              for k, a in enumerate(arrays) if a is not None}
    for step in program.steps:
        assert isinstance(step, Launch), step
        pointers = [inputs[r.key] if r.role is BufferRole.IN else out for r in step.args]
        blocks = step.grid if grid is None else (min(grid, step.grid[0]), 1, 1)
        function = modules[step.kernel].get_function(step.kernel)
        function(blocks, step.block, (*pointers, *(np.int32(d) for d in step.dims)))
    cupy.cuda.get_current_stream().synchronize()
    host = out.get()[:nbytes]
    return host.view(storage).reshape(tuple(int(d) for d in form.shape))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_kernel_matches_the_reference_bit_for_bit(case: PadCase, modules):
    arrays = random_inputs(case)
    assert_bit_exact(launch(modules, lowered(case), arrays), reference(case, arrays), case.id)


@pytest.mark.parametrize("case_id", ["4d_image-reflect", "1d_wider_than_the_axis-wrap", "dtype-constant-bfloat16",
                                     "value_runtime-float16", "large_pads-constant"])
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id: str, modules):
    case = next(c for c in CASES if c.id == case_id)
    arrays = random_inputs(case)
    assert_bit_exact(launch(modules, lowered(case), arrays, grid=1), reference(case, arrays), case.id)


@pytest.mark.parametrize("case", generic_cases(), ids=lambda c: c.id)
def test_a_generic_kernel_is_right_at_every_shape_of_its_profile(case: PadCase, modules):
    from dataclasses import replace

    for shape in PROFILE_SHAPES:
        at = replace(case, shape=shape)
        arrays = random_inputs(at)
        assert_bit_exact(launch(modules, generic_program(at, PROFILE), arrays), reference(at, arrays),
                         f"{case.id} at {shape}")


def test_a_model_of_pads_runs_on_the_gpu_with_no_host_step():
    import cupy

    from rtxrt.backends.cuda.compile.nvrtc import compile_many
    from rtxrt.backends.cuda.jit import GpuContext
    from rtxrt.backends.cuda.run.executor import Engine

    gpu = GpuContext()
    model = every_mode_model()
    plan = build_plan(model, {"x": (2, 3, 6, 5), "v": ()}, arch=gpu.info.arch, sm_count=gpu.info.sm_count)
    assert plan.host_steps == []
    final = finalize(plan)
    with gpu.device:
        engine = Engine(final, compile_many(final.kernels.items(), gpu.info.arch), stream=gpu.stream,
                        cublas=gpu.cublas)
        x = np.random.default_rng(0).uniform(-3, 3, (2, 3, 6, 5)).astype(np.float32)
        for value in (-9.5, 4.0):  # one engine (its CUDA graph replayed), the value read at every run
            feeds = {"x": x, "v": np.asarray(value, np.float32)}
            outputs = engine.run(feeds)
            gpu.stream.synchronize()
            got = cupy.asnumpy(outputs["y"])
            assert_bit_exact(got, ReferenceExecutor(model).run(feeds)["y"], f"four Pads, value {value}")
