"""The indexing lowerings' programs on the GPU agree with the reference backend.

Runs every case of tests/backends/cuda/test_indexing_codegen.py, every tactic its lowering
offers (the ``winner`` scatters with their atomics included, which the fake device cannot
run): kernels compiled with NVRTC for the probed GPU's arch, the program's copies and
launches run in order on the case's inputs, into outputs and scratch poisoned with NaN bytes
(0xFF) so an element nothing writes shows up.

Tolerances: bit-exact (gathers, scatters with every reduction, fills, Trilu, OneHot, Range,
EyeLike, the serial CumSum), except the chunked CumSum of floats, which adds in another
order than the reference (SCAN_TOLERANCE there: relative to the running sum of magnitudes).
"""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops import lower
from rtxrt.backends.cuda.plan.forms import TensorForm
from rtxrt.ir.dtypes import DType
from tests.backends.cuda.test_indexing_codegen import (
    ATOMIC_TACTICS,
    CASES,
    Case,
    compare,
    context,
    indices,
    load,
    lower_case,
    make_node,
    reference,
    rng_for,
    run_program,
    values,
)

pytestmark = pytest.mark.gpu


def stress_cases() -> list[Case]:
    """Work big enough for many blocks, and scatters with thousands of duplicate targets
    (the winner scheme's atomics race on every one of them)."""
    rng = rng_for("gpu stress")
    data, rows = values(rng, (1000, 64), DType.FLOAT32), indices(rng, (50000, 1), 100)
    grid = values(rng, (300, 400), DType.FLOAT16)
    return [
        Case("ScatterND_many_duplicates", make_node("ScatterND", 3),
             (data, rows, values(rng, (50000, 64), DType.FLOAT32))),
        Case("ScatterND_many_duplicates_add", make_node("ScatterND", 3, reduction="add"),
             (data, rows[:3000], values(rng, (3000, 64), DType.FLOAT32)), opset=16),
        Case("ScatterElements_many_duplicates", make_node("ScatterElements", 3, axis=1),
             (grid, indices(rng, (300, 4000), 7), values(rng, (300, 4000), DType.FLOAT16))),
        Case("CumSum_long_lines", make_node("CumSum", 2), (values(rng, (3, 200000), DType.FLOAT32), np.array(1)),
             frozenset({1})),
        Case("CumSum_long_lines_int64_exclusive_reverse", make_node("CumSum", 2, exclusive=1, reverse=1),
             (values(rng, (2, 100000), DType.INT64), np.array(-1)), frozenset({1})),
        Case("GatherND_big", make_node("GatherND", 2), (values(rng, (500, 300, 8), DType.FLOAT16),
                                                          indices(rng, (20000, 2), 300))),
    ]


STRESS = stress_cases()


@pytest.fixture(scope="module")
def functions():
    from rtxrt.backends.cuda.device import probe

    arch = probe().arch
    kernels = {name: source for case in (*CASES, *STRESS) for p in lower_case(case)
               for name, source in p.kernels.items()}
    import cupy

    return load(cupy, compile_many(kernels.items(), arch))


def run(functions, case: Case, program, grid: int | None = None) -> np.ndarray:
    import cupy

    return run_program(cupy, functions, program, case.inputs, poison=True, grid=grid)[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_tactic_gives_the_reference_result_on_the_gpu(case: Case, functions):
    want = reference(case)
    for program in lower_case(case):
        compare(run(functions, case, program), want, case, program)


@pytest.mark.parametrize("case", STRESS, ids=lambda c: c.id)
def test_big_work_and_many_duplicates_give_the_reference_result_every_time(case: Case, functions):
    want = reference(case)
    programs = lower_case(case)
    for program in programs:
        for _ in range(3 if program.label in ATOMIC_TACTICS else 1):  # same result, whatever the thread order
            compare(run(functions, case, program), want, case, program)


def test_the_winner_scheme_is_offered_where_its_atomics_pay():
    labels = [p.label for p in lower_case(STRESS[0])]
    assert labels[0] == "scatter_nd_winner", labels


def test_a_grid_smaller_than_the_work_still_covers_all_of_it(functions):
    chosen = ("GatherElements_axis0", "ScatterND_slices", "ScatterElements_rows", "CumSum_long_line",
              "OneHot_last", "ConstantOfShape_fp32", "Trilu_upper_k2-fp16")
    for case in (c for c in (*CASES, *STRESS) if c.id in chosen or c.id == "ScatterND_many_duplicates"):
        for program in lower_case(case):
            compare(run(functions, case, program, grid=1), reference(case), case, program)


def test_a_fill_of_the_graph_storage_type_is_rounded_on_the_gpu(functions):
    import cupy

    case = Case("narrow", make_node("ConstantOfShape", 1, value=np.array([1.1], np.float32)),
                (np.array([64, 33], np.int64),), frozenset({0}))
    (program,) = lower(context(case, outputs=[TensorForm(DType.FLOAT16, (64, 33))]))
    kernels = compile_many(program.kernels.items(), _arch())
    got = run_program(cupy, load(cupy, kernels), program, case.inputs, poison=True)[0]
    assert got.dtype == np.float16 and np.all(got == np.float16(1.1))


def _arch() -> str:
    from rtxrt.backends.cuda.device import probe

    return probe().arch
