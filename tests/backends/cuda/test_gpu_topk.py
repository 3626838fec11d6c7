"""TopK's generated kernels on the GPU agree with the reference backend exactly: values bit
for bit, indices equal.

Runs every case of tests/backends/cuda/test_topk_codegen.py (axes first, middle and last;
largest and smallest; ties, which go to the lower index; NaNs, above +inf; K = 1 and K = the
row's length; rows of 1, 37, 1024, 5000, 8400 and 100000 elements; one row and thousands;
float32, float16, bfloat16, float64 and integer types; K sorted in shared memory and in a
global scratch; either output omitted), lowered by the real lowering, compiled with NVRTC for
the probed GPU's arch and launched as the program's Launches say (each pointer the node
input, output or scratch its Ref names, then the dim arguments) on the case's seeded inputs,
into outputs poisoned with 0xFF bytes, so an element the kernel never writes shows up. Also:
a grid of fewer blocks than rows, a generic plan's one kernel at every shape of its profile,
and a detector head (TopK, then a Gather by its indices) through the real Engine with no
host step.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.forms import numpy_dtype
from rtxrt.backends.cuda.plan.program import BufferRole, Launch, NodeProgram
from rtxrt.backends.reference.executor import ReferenceExecutor
from tests.backends.cuda.helpers import load_cubins
from tests.backends.cuda.test_topk_codegen import (
    CASES,
    GENERIC,
    TopKCase,
    assert_matches_reference,
    detector_head_model,
    generic_program,
    generic_programs,
    lowered,
    random_inputs,
    reference,
)

pytestmark = pytest.mark.gpu

FEWER_BLOCKS = TopKCase("fewer_blocks_than_rows", (5, 9000), 1, 6000, data="ties")  # sm_count 1: 2 slices


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """Every kernel of the catalogue and of the generic cases, compiled for this GPU."""
    from rtxrt.backends.cuda.device import probe

    kernels = {}
    for program in [lowered(c) for c in CASES] + generic_programs() + [lowered(FEWER_BLOCKS, sm_count=1)]:
        kernels.update(program.kernels)
    return load_cubins(kernels, tmp_path_factory.mktemp("cubins"), probe().arch)


def launch(modules, program: NodeProgram, arrays: list[np.ndarray]) -> list[np.ndarray | None]:
    """``program``'s launches on the GPU; its outputs (poisoned with 0xFF first; None where
    omitted) on the host. Buffers travel as raw bytes: every dtype (bfloat16, bool) moves alike."""
    import cupy

    outputs = [None if f is None else cupy.full(max(int(f.nbytes), 1), 0xFF, cupy.uint8) for f in program.outputs]
    scratch = {name: cupy.zeros(nbytes, cupy.uint8) for name, nbytes in program.scratch.items()}
    inputs = [cupy.asarray(np.frombuffer(np.ascontiguousarray(a).tobytes() or b"\0", np.uint8)) for a in arrays]
    for step in program.steps:
        assert isinstance(step, Launch), step
        pointers = [inputs[r.key] if r.role is BufferRole.IN else outputs[r.key] if r.role is BufferRole.OUT
                    else scratch[r.key] for r in step.args]
        function = modules[step.kernel].get_function(step.kernel)
        function(step.grid, step.block, (*pointers, *(np.int32(d) for d in step.dims)))
    cupy.cuda.get_current_stream().synchronize()
    return [None if out is None else out.get()[:int(f.nbytes)].view(numpy_dtype(f.dtype)).reshape(
        tuple(int(d) for d in f.shape)) for out, f in zip(outputs, program.outputs)]


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_the_kernel_matches_the_reference_exactly(c: TopKCase, modules):
    arrays = random_inputs(c)
    assert_matches_reference(launch(modules, lowered(c), arrays), reference(c, arrays), c.id)


def test_blocks_fewer_than_the_rows_walk_them_and_reuse_their_scratch_slice(modules):
    program = lowered(FEWER_BLOCKS, sm_count=1)
    assert program.steps[0].grid[0] == 2
    arrays = random_inputs(FEWER_BLOCKS)
    assert_matches_reference(launch(modules, program, arrays), reference(FEWER_BLOCKS, arrays), FEWER_BLOCKS.id)


@pytest.mark.parametrize("c, varying, shapes", GENERIC, ids=[g[0].id for g in GENERIC])
def test_a_generic_kernel_is_right_at_every_shape_of_its_profile(c: TopKCase, varying, shapes, modules):
    for shape in shapes:
        at = replace(c, shape=shape)
        arrays = random_inputs(at)
        assert_matches_reference(launch(modules, generic_program(at, varying), arrays), reference(at, arrays),
                                 f"{c.id} at {shape}")


def test_a_detector_head_runs_on_the_gpu_with_no_host_step():
    import cupy

    from rtxrt.backends.cuda.compile.nvrtc import compile_many
    from rtxrt.backends.cuda.jit import GpuContext
    from rtxrt.backends.cuda.run.executor import Engine

    gpu = GpuContext()
    model = compile_onnx(detector_head_model().SerializeToString())
    shapes = {"scores": (1, 8400), "boxes": (1, 8400, 4)}
    plan = build_plan(model, shapes, arch=gpu.info.arch, sm_count=gpu.info.sm_count)
    assert plan.host_steps == []
    final = finalize(plan)
    with gpu.device:
        engine = Engine(final, compile_many(final.kernels.items(), gpu.info.arch), stream=gpu.stream,
                        cublas=gpu.cublas)
        for seed in (0, 1):  # one engine (its CUDA graph replayed) on new scores
            rng = np.random.default_rng(seed)
            feeds = {"scores": rng.integers(0, 50, shapes["scores"]).astype(np.float32),  # ties
                     "boxes": rng.uniform(0, 640, shapes["boxes"]).astype(np.float32)}
            outputs = engine.run(feeds)
            gpu.stream.synchronize()
            want = ReferenceExecutor(model).run(feeds)
            for name in ("best", "picked"):
                got = cupy.asnumpy(outputs[name])
                assert got.tobytes() == np.ascontiguousarray(want[name]).tobytes(), f"{name}, seed {seed}"
