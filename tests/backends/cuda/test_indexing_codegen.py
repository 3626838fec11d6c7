"""GPU lowerings of the long-tail indexing ops (rtxrt/backends/cuda/ops/indexing.py): CumSum,
Trilu, OneHot, GatherElements, GatherND, ScatterND, ScatterElements, ConstantOfShape, Range
and EyeLike.

``CASES`` is the catalogue: each case is a node, the values of all its inputs and which of
them the planner knows. ``lower_case`` lowers it as the plan builder would; every program
(tactic) it offers runs on the fake device (tests/fake_gpu: bounds, uninitialized reads and
write races checked) and must give the reference backend's result bit for bit (data
movement, fills, serial CumSum) or, for the chunked CumSum of floats, within rounding.
tests/backends/cuda/test_gpu_indexing.py runs the same catalogue on a GPU.

What the kernels promise beyond the reference backend (which raises on these):
- out-of-range indices: gathers clamp them into the axis, scatters skip the update;
- duplicate scatter targets: updates apply in their order (reduction none: the last wins),
  as numpy applies them, whichever tactic runs;
- the ``winner`` scatter tactic uses atomics the fake device cannot interpret: it is compiled
  here and run on the GPU only.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops import LowerContext, Unsupported, lower
from rtxrt.backends.cuda.ops.indexing_fill_source import fill_kernel
from rtxrt.backends.cuda.ops.indexing_source import gather_elements_kernel
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.forms import TensorForm, device_dtype, numpy_dtype
from rtxrt.backends.cuda.plan.program import BufferRole, Copy, Launch, NodeProgram
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from tests.fake_gpu.device import FakeDevice

F32, F16, BF16, F64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64
I64, I32, I16, I8, U8, U32, BOOL = (DType.INT64, DType.INT32, DType.INT16, DType.INT8, DType.UINT8, DType.UINT32,
                                    DType.BOOL)
ATOMIC_TACTICS = ("scatter_nd_winner", "scatter_elements_winner")  # GPU only: the fake device has no atomics
# The chunked CumSum of floats adds in another order than the reference: relative error bounds
SCAN_TOLERANCE = {F32: 1e-5, F64: 1e-12, F16: 2e-3, BF16: 1.6e-2}


# ----------------------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class Case:
    id: str
    node: Node
    inputs: tuple[np.ndarray | None, ...]  # every input of the node (None: omitted), logical values
    known: frozenset[int] = frozenset()  # the inputs the planner knows when it plans
    opset: int = 21


def make_node(op_type: str, inputs: int, **attrs) -> Node:
    return Node(op_type, [f"x{i}" for i in range(inputs)], ["y"], attrs, name=op_type.lower())


def values(rng: np.random.Generator, shape: Sequence[int], dtype: DType) -> np.ndarray:
    """Random data of ``dtype``: floats in (-3, 3), never 0; small integers; both bools."""
    if dtype == BOOL:
        return rng.random(shape) < 0.5
    if dtype.is_float:
        v = rng.uniform(-3, 3, shape)
        v[v == 0] = 1
        return v.astype(numpy_dtype(dtype))
    low = 0 if dtype.numpy.kind == "u" else -100
    return rng.integers(low, 100, shape).astype(dtype.numpy)


def indices(rng: np.random.Generator, shape: Sequence[int], size: int, dtype: DType = I64) -> np.ndarray:
    """Indices anywhere on an axis of ``size``, counted from either end."""
    return rng.integers(-size, size, shape).astype(dtype.numpy)


def scalar(value, dtype: DType) -> np.ndarray:
    return np.array(value, numpy_dtype(dtype))


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def gather_cases() -> list[Case]:
    rng, cases = rng_for("gathers"), []
    for cid, shape, ishape, axis, dtype, itype in [
        ("axis0", (5, 6, 7), (3, 6, 7), 0, F32, I64),
        ("last-fp16-int32", (4, 5, 9), (4, 5, 3), -1, F16, I32),
        ("longer_than_axis-bf16", (3, 8), (3, 12), 1, BF16, I64),
        ("rank1-int64", (10,), (15,), 0, I64, I64),
        ("rank4-bool", (2, 3, 4, 5), (2, 6, 4, 5), 1, BOOL, I32),
        ("middle-uint8", (3, 4, 2), (3, 1, 2), 1, U8, I64),
    ]:
        cases.append(Case(f"GatherElements_{cid}", make_node("GatherElements", 2, axis=axis),
                          (values(rng, shape, dtype), indices(rng, ishape, shape[axis], itype))))
    for cid, shape, ishape, batch, dtype, itype in [
        ("pairs", (4, 5, 6), (3, 2), 0, F32, I64),
        ("points-fp16", (4, 5, 6), (2, 3, 3), 0, F16, I64),
        ("rows-int64-int32", (7, 3), (2, 2, 1), 0, I64, I32),
        ("batch1", (2, 5, 6), (2, 4, 1), 1, F32, I64),
        ("batch2-bf16", (2, 3, 5, 4), (2, 3, 2, 1), 2, BF16, I64),
        ("batch1_full_depth-uint8", (3, 4, 5), (3, 2, 2), 1, U8, I64),
    ]:
        depth = ishape[-1]
        where = np.stack([indices(rng, ishape[:-1], shape[batch + c]) for c in range(depth)], -1).astype(itype.numpy)
        cases.append(Case(f"GatherND_{cid}", make_node("GatherND", 2, batch_dims=batch),
                          (values(rng, shape, dtype), where), opset=13))
    return cases


def scatter_nd_indices(rng: np.random.Generator, rows: Sequence[int], dims: Sequence[int], dtype: DType = I64):
    """Index rows into ``dims`` (negative ones included) where rows 0 and 1 hit one target
    (-1 counted from the end is the last): duplicates on purpose."""
    where = np.stack([indices(rng, rows, n) for n in dims], -1)
    flat = where.reshape(-1, len(dims))
    if flat.shape[0] >= 2:
        flat[1] = [(k - n) if k >= 0 else (k + n) for k, n in zip(flat[0], dims)]  # the same target, other end
    return where.astype(dtype.numpy)


def scatter_cases() -> list[Case]:
    rng, cases = rng_for("scatters"), []
    for cid, shape, rows, depth, dtype, reduction, itype in [
        ("slices", (4, 5, 6), (3,), 1, F32, "none", I64),
        ("rows_add-fp16", (6, 4), (8,), 1, F16, "add", I64),
        ("mul-bf16", (3, 4, 5), (2, 2), 2, BF16, "mul", I64),
        ("elements_max", (4, 5), (6,), 2, F32, "max", I32),
        ("min-float64", (5, 3), (4,), 1, F64, "min", I64),
        ("add-int32", (5, 3), (7,), 1, I32, "add", I64),
        ("max-int64", (4, 3, 2), (5,), 2, I64, "max", I64),
        ("mul-int8", (6,), (9,), 1, I8, "mul", I64),
        ("none-bool", (3, 4), (2,), 1, BOOL, "none", I64),
        ("none_full-uint8", (4, 5), (6,), 2, U8, "none", I32),
        ("add-bool", (4, 3), (5,), 1, BOOL, "add", I64),
    ]:
        where = scatter_nd_indices(rng, rows, shape[:depth], itype)
        updates = values(rng, (*rows, *shape[depth:]), dtype)
        cases.append(Case(f"ScatterND_{cid}", make_node("ScatterND", 3, reduction=reduction),
                          (values(rng, shape, dtype), where, updates), opset=18))
    nan_data = np.array([[np.nan, 1, -2], [3, np.nan, 0.5]], np.float32)
    nan_updates = np.array([[2, np.nan, -5], [np.nan, 1, 7], [0.25, 0.5, np.nan]], np.float32)
    for reduction in ("max", "min"):
        cases.append(Case(f"ScatterND_nan_{reduction}", make_node("ScatterND", 3, reduction=reduction),
                          (nan_data, np.array([[0], [1], [-2]], np.int64), nan_updates), opset=18))
    for cid, shape, ishape, axis, dtype, reduction, itype in [
        ("rows", (5, 4), (3, 4), 0, F32, "none", I64),
        ("add-fp16", (3, 6), (3, 9), 1, F16, "add", I64),
        ("mul-int32", (2, 3, 4), (2, 3, 6), -1, I32, "mul", I32),
        ("max-bf16", (4, 5), (4, 7), 1, BF16, "max", I64),
        ("min-float64", (4, 3), (6, 3), 0, F64, "min", I64),
        ("none-bool", (3, 5), (3, 5), 1, BOOL, "none", I64),
        ("corner-int64", (4, 5), (2, 3), 1, I64, "none", I64),
        ("add_corner-uint8", (4, 5, 2), (2, 6, 1), 1, U8, "add", I64),
    ]:
        where = indices(rng, ishape, shape[axis], itype)
        cases.append(Case(f"ScatterElements_{cid}", make_node("ScatterElements", 3, axis=axis, reduction=reduction),
                          (values(rng, shape, dtype), where, values(rng, ishape, dtype)), opset=18))
    return cases


def cumsum_cases() -> list[Case]:
    rng, cases = rng_for("cumsum"), []
    for cid, shape, axis, dtype, exclusive, reverse in [
        ("rows", (4, 50), 1, F32, 0, 0),
        ("exclusive", (4, 50), -1, F32, 1, 0),
        ("reverse", (3, 7, 5), 1, F32, 0, 1),
        ("exclusive_reverse", (3, 7, 5), 0, F32, 1, 1),
        ("fp16", (6, 40), 1, F16, 0, 0),
        ("bf16_reverse", (2, 30, 3), 1, BF16, 0, 1),
        ("float64", (5, 9), 0, F64, 1, 0),
        ("int64", (3, 11), 1, I64, 0, 0),
        ("uint32_reverse", (8, 4), 0, U32, 0, 1),
        ("rank1", (33,), 0, F32, 0, 0),
        ("long_line", (1, 1000), 1, F32, 0, 0),
        ("long_line_exclusive_reverse-fp16", (2, 700), -1, F16, 1, 1),
        ("long_column-float64", (600, 3), 0, F64, 0, 1),
    ]:
        cases.append(Case(f"CumSum_{cid}", make_node("CumSum", 2, exclusive=exclusive, reverse=reverse),
                          (values(rng, shape, dtype), np.array(axis, np.int64)), frozenset({1})))
    wrapping = rng.integers(2**29, 2**30, (3, 300)).astype(np.int32)  # sums wrap around 2**31
    cases.append(Case("CumSum_int32_wraps_axis_int32", make_node("CumSum", 2),
                      (wrapping, np.array([1], np.int32)), frozenset({1}), opset=11))
    return cases


def position_cases() -> list[Case]:
    rng, cases = rng_for("positions"), []
    for cid, shape, upper, k, dtype in [
        ("upper", (5, 7), 1, None, F32), ("lower", (7, 5), 0, None, F32),
        ("upper_k2-fp16", (3, 6, 6), 1, 2, F16), ("lower_k-1-int64", (2, 4, 6), 0, -1, I64),
        ("upper_k-100", (4, 4), 1, -100, F32), ("lower_k100-bool", (2, 3, 4, 5), 0, 100, BOOL),
        ("upper_k-3-bf16", (6, 4), 1, -3, BF16),
    ]:
        inputs = (values(rng, shape, dtype),) + (() if k is None else (np.array(k, np.int64),))
        cases.append(Case(f"Trilu_{cid}", make_node("Trilu", len(inputs), upper=upper), inputs,
                          frozenset({1}) if k is not None else frozenset()))
    for cid, k, upper in [("runtime_k1", 1, 1), ("runtime_k-2", -2, 0)]:
        cases.append(Case(f"Trilu_{cid}", make_node("Trilu", 2, upper=upper),
                          (values(rng, (3, 5, 6), F32), np.array(k, np.int64))))
    for cid, ishape, itype, depth, axis, dtype in [
        ("last", (3, 4), I64, 5, -1, F32),
        ("first-int32", (6,), I32, 4, 0, I64),
        ("middle-float_indices", (2, 5), F32, 6, 1, F32),
        ("fp16_indices-bf16", (4, 3), F16, 3, -2, BF16),
        ("scalar_float_depth", (2, 3, 2), I64, 4.7, 3, U8),
    ]:
        where = rng.integers(-2 * int(depth), 2 * int(depth), ishape).astype(numpy_dtype(itype))
        if itype.is_float:
            where = (where + 0.5).astype(numpy_dtype(itype))  # fractions truncate towards 0
        on_off = values(rng, (2,), dtype)
        cases.append(Case(f"OneHot_{cid}", make_node("OneHot", 3, axis=axis),
                          (where, np.array([depth], np.float32 if isinstance(depth, float) else np.int64), on_off),
                          frozenset({1}), opset=11))
    cases.append(Case("OneHot_depth_from_the_output_shape", make_node("OneHot", 3, axis=0),
                      (indices(rng, (3, 2), 6, I32), np.array(6.0, np.float32), values(rng, (2,), F16))))
    for cid, shape, value in [("fp32", (3, 5, 7), np.array([1.5], np.float32)), ("vector_fp16", (4, 16), np.array([-2.25], np.float16)),
                              ("int64", (9,), np.array([-7], np.int64)), ("bool", (2, 3), np.array([True])),
                              ("default_zero", (6, 6), None), ("int8", (5, 7), np.array([-3], np.int8))]:
        attrs = {} if value is None else {"value": value}
        cases.append(Case(f"ConstantOfShape_{cid}", make_node("ConstantOfShape", 1, **attrs),
                          (np.array(shape, np.int64),), frozenset({0})))
    for cid, start, limit, delta, dtype in [
        ("fp32", 0.5, 7.0, 0.25, F32), ("fp16", -3.0, 4.0, 0.375, F16), ("bf16", 1.0, 40.0, 1.5, BF16),
        ("float64", -1.25, 2.0, 0.1, F64), ("int32_down", 10, -20, -3, I32), ("int64", -5, 100, 7, I64),
        ("int16", 3, 30, 2, I16),
    ]:
        cases.append(Case(f"Range_{cid}", make_node("Range", 3),
                          (scalar(start, dtype), scalar(limit, dtype), scalar(delta, dtype)), frozenset({1})))
    for cid, shape, k, dtype, attrs in [
        ("square", (5, 5), 0, F32, {}), ("wide_k2", (4, 7), 2, F32, {}), ("tall_k-3-int32", (7, 4), -3, F32, {"dtype": int(I32)}),
        ("off_the_matrix-fp16", (3, 4), 10, F16, {}), ("bool", (4, 4), 1, BOOL, {}), ("bf16", (3, 5), -1, BF16, {}),
    ]:
        cases.append(Case(f"EyeLike_{cid}", make_node("EyeLike", 1, k=k, **attrs), (values(rng, shape, dtype),)))
    return cases


def empty_cases() -> list[Case]:
    """Nothing to gather, no updates to scatter, an empty axis to scan: nothing is launched
    that would touch memory, and the outputs are what the reference gives."""
    rng = rng_for("empty")
    return [
        Case("GatherElements_empty", make_node("GatherElements", 2, axis=1),
             (values(rng, (3, 4), F32), indices(rng, (3, 0), 4))),
        Case("ScatterND_no_updates", make_node("ScatterND", 3),
             (values(rng, (3, 4), F32), np.zeros((0, 1), np.int64), np.zeros((0, 4), np.float32))),
        Case("ScatterElements_no_updates", make_node("ScatterElements", 3, axis=1),
             (values(rng, (3, 4), F16), np.zeros((3, 0), np.int64), np.zeros((3, 0), np.float16))),
        Case("CumSum_empty_axis", make_node("CumSum", 2), (values(rng, (3, 0), F32), np.array(1)), frozenset({1})),
    ]


CASES: list[Case] = gather_cases() + scatter_cases() + cumsum_cases() + position_cases() + empty_cases()


# ----------------------------------------------------------------------------- lowering and running

def reference(case: Case) -> np.ndarray:
    inputs = list(case.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    with np.errstate(all="ignore"):
        result = find_kernel(case.node.op_type)(case.node, case.opset, None).run(*inputs)
    return np.asarray(result[0] if isinstance(result, (tuple, list)) else result)


def form_of(array: np.ndarray) -> TensorForm:
    return TensorForm(DType.from_numpy(array.dtype), tuple(array.shape))


def context(case: Case, *, tune: bool = True, inputs: Sequence[TensorForm | None] | None = None,
            outputs: Sequence[TensorForm] | None = None, sm_count: int = 46) -> LowerContext:
    """What the plan builder shows the node's lowering (forms as the arrays are, unless given)."""
    forms = list(inputs) if inputs is not None else [None if a is None else form_of(a) for a in case.inputs]
    outs = list(outputs) if outputs is not None else [form_of(reference(case))]
    consts = [a if i in case.known else None for i, a in enumerate(case.inputs)]
    return LowerContext(case.node, forms, outs, consts, case.opset, "sm_86", sm_count, tune=tune)


def lower_case(case: Case, *, tune: bool = True, out: TensorForm | None = None) -> list[NodeProgram]:
    """``case``'s programs (its output's form: ``out``, else as the reference computes it)."""
    return lower(context(case, tune=tune, outputs=None if out is None else [out]))


def load(cupy, binaries: Mapping[str, bytes]) -> dict[str, object]:
    """Kernel name -> function, one module per binary (a cubin, or the fake device's source)."""
    functions = {}
    for name, binary in binaries.items():
        module = cupy.cuda.function.Module()
        module.load(binary)
        functions[name] = module.get_function(name)
    return functions


def run_program(cupy, functions: Mapping[str, object], program: NodeProgram,
                arrays: Sequence[np.ndarray | None], *, poison: bool, grid: int | None = None,
                stand_in: Callable[[Launch, Callable], bool] | None = None) -> list[np.ndarray]:
    """``program`` run on ``cupy``'s device (the real CuPy or a FakeDevice's) with the node's
    inputs ``arrays``: its copies, then its launches (grids capped at ``grid`` blocks where
    given). Outputs and scratch start as NaN bytes (0xFF) where ``poison``, else
    uninitialized (the fake device then faults on a read of what nothing wrote).
    ``stand_in(launch, address)``: does a launch's work itself instead (returns True)."""
    def buffer(nbytes: int):
        nbytes = max(int(nbytes), 1)
        return cupy.asarray(np.full(nbytes, 0xFF, np.uint8)) if poison else cupy.ndarray((nbytes,), np.uint8)

    inputs = [None if a is None else cupy.asarray(np.ascontiguousarray(a).view(device_dtype(DType.from_numpy(a.dtype))))
              for a in arrays]
    outputs = [buffer(form.nbytes) for form in program.outputs]
    scratch = {name: buffer(nbytes) for name, nbytes in program.scratch.items()}

    def address(ref) -> int:
        held = {BufferRole.IN: inputs, BufferRole.OUT: outputs, BufferRole.SCRATCH: scratch}[ref.role][ref.key]
        return int(held.data.ptr) + ref.offset

    for step in program.steps:
        if isinstance(step, Launch) and stand_in is not None and stand_in(step, address):
            continue
        if isinstance(step, Launch):
            blocks = step.grid if grid is None else (min(grid, step.grid[0]), 1, 1)
            args = tuple(np.uint64(address(r)) for r in step.args) + tuple(np.int32(d) for d in step.dims)
            functions[step.kernel](blocks, step.block, args)
        elif isinstance(step, Copy):
            cupy.cuda.runtime.memcpy(address(step.dst), address(step.src), int(step.nbytes), 3)  # device to device
        else:
            raise AssertionError(f"{program.label}: unexpected step {step!r}")
    cupy.cuda.runtime.deviceSynchronize()
    results = []
    for out, form in zip(outputs, program.outputs):
        nbytes = int(form.nbytes)
        raw = out.get()[:nbytes] if nbytes else np.zeros(0, np.uint8)
        results.append(raw.view(numpy_dtype(form.dtype)).reshape(tuple(int(d) for d in form.shape)))
    return results


def on_fake_device(program: NodeProgram, arrays: Sequence[np.ndarray | None], **kw) -> np.ndarray:
    device = FakeDevice(32 << 20)
    functions = load(device.cupy, {name: source.encode() for name, source in program.kernels.items()})
    return run_program(device.cupy, functions, program, arrays, poison=False, **kw)[0]


def compare(got: np.ndarray, want: np.ndarray, case: Case, program: NodeProgram) -> None:
    """Bit for bit, except the chunked CumSum of floats (within ``SCAN_TOLERANCE``)."""
    what = f"{case.id} [{program.label}]"
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    dtype = DType.from_numpy(want.dtype)
    if program.label == "cumsum_chunked" and dtype.is_float:
        tol = SCAN_TOLERANCE[dtype]
        scale = np.abs(np.cumsum(np.abs(case.inputs[0].astype(np.float64)), axis=int(case.inputs[1].reshape(-1)[0])))
        error = np.abs(got.astype(np.float64) - want.astype(np.float64))
        assert np.all(error <= tol * (scale + 1)), f"{what}: off by up to {error.max():.3g}"
        return
    assert got.tobytes() == np.ascontiguousarray(want).tobytes(), f"{what}: {got} != {want}"


# ----------------------------------------------------------------------------- the catalogue runs

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_tactic_gives_the_reference_result_on_the_fake_device(case: Case):
    programs = lower_case(case)
    want = reference(case)
    ran = 0
    for program in programs:
        assert not program.on_host, program.label
        assert program.steps or want.size == 0, f"{program.label}: nothing to run"
        if program.label in ATOMIC_TACTICS:
            continue
        compare(on_fake_device(program, case.inputs), want, case, program)
        ran += 1
    assert ran, f"{case.id}: no tactic the fake device can run: {[p.label for p in programs]}"


def test_every_kernel_compiles_for_sm_75_and_sm_90():
    kernels = {name: source for case in CASES for p in lower_case(case) for name, source in p.kernels.items()}
    for arch in ("sm_75", "sm_90"):
        cubins = compile_many(kernels.items(), arch)
        assert set(cubins) == set(kernels)
        assert all(c.startswith(b"\x7fELF") for c in cubins.values())


def test_a_grid_smaller_than_the_work_still_covers_all_of_it():
    for case in (c for c in CASES if c.id in ("GatherElements_axis0", "ScatterND_rows_add-fp16", "CumSum_long_line",
                                              "Trilu_upper_k2-fp16", "OneHot_last", "ConstantOfShape_fp32")):
        for program in lower_case(case):
            if program.label not in ATOMIC_TACTICS:
                compare(on_fake_device(program, case.inputs, grid=1), reference(case), case, program)


# ----------------------------------------------------------------------------- what the spec leaves to us

def by_label(programs: list[NodeProgram]) -> dict[str, NodeProgram]:
    return {p.label: p for p in programs}


def test_negative_indices_count_from_the_end_of_their_axis():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    gather = Case("g", make_node("GatherElements", 2, axis=1), (data, np.array([[-1], [-4], [2]], np.int64)))
    np.testing.assert_array_equal(on_fake_device(lower_case(gather)[0], gather.inputs), [[3], [4], [10]])
    nd = Case("n", make_node("GatherND", 2), (data, np.array([[-1, -1], [0, -4]], np.int64)))
    np.testing.assert_array_equal(on_fake_device(lower_case(nd)[0], nd.inputs), [11, 0])
    scatter = Case("s", make_node("ScatterND", 3), (data, np.array([[-3]], np.int64), np.full((1, 4), -1, np.float32)))
    for program in lower_case(scatter):
        if program.label not in ATOMIC_TACTICS:
            assert on_fake_device(program, scatter.inputs)[0].tolist() == [-1, -1, -1, -1], program.label
    hot = Case("h", make_node("OneHot", 3), (np.array([-1, -3, 3, -4], np.int64), np.array(3), np.array([0, 1], np.int64)),
               frozenset({1}))
    np.testing.assert_array_equal(on_fake_device(lower_case(hot)[0], hot.inputs),
                                  [[0, 0, 1], [1, 0, 0], [0, 0, 0], [0, 0, 0]])  # 3 and -4 are off the classes


def test_out_of_range_indices_are_clamped_by_gathers_and_skipped_by_scatters():
    """The reference backend raises IndexError; the kernels never leave their buffers (the
    fake device faults on any access outside an allocation)."""
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    far = np.array([[7], [-9], [1]], np.int64)
    gather = Case("g", make_node("GatherElements", 2, axis=1), (data, far))
    got = on_fake_device(lower_case(gather, out=TensorForm(F32, (3, 1)))[0], gather.inputs)
    np.testing.assert_array_equal(got, [[3], [4], [9]])
    nd = Case("n", make_node("GatherND", 2), (data, np.array([[5, 0], [1, -100]], np.int64)))
    np.testing.assert_array_equal(on_fake_device(lower_case(nd, out=TensorForm(F32, (2,)))[0], nd.inputs), [8, 4])
    updates = np.full((3, 1), -1, np.float32)
    elements = Case("e", make_node("ScatterElements", 3, axis=1, reduction="add"), (data, far, updates), opset=18)
    expected = data.copy()
    expected[2, 1] -= 1
    got = on_fake_device(lower_case(elements, out=TensorForm(F32, (3, 4)))[0], elements.inputs)
    np.testing.assert_array_equal(got, expected)
    rows = Case("r", make_node("ScatterND", 3), (data, np.array([[3], [-4], [1]], np.int64), np.zeros((3, 4), np.float32)))
    expected = data.copy()
    expected[1] = 0
    for program in lower_case(rows, out=TensorForm(F32, (3, 4))):
        if program.label not in ATOMIC_TACTICS:
            np.testing.assert_array_equal(on_fake_device(program, rows.inputs), expected, err_msg=program.label)


def test_duplicate_scatter_targets_apply_in_update_order():
    """ONNX leaves reduction none with duplicates undefined; here the last update wins (as
    numpy's assignment does), and reductions apply every duplicate in order."""
    data = np.zeros((2, 3), np.float32)
    where = np.array([[1], [1], [-1]], np.int64)
    updates = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)
    last = Case("last", make_node("ScatterND", 3), (data, where, updates))
    summed = Case("sum", make_node("ScatterND", 3, reduction="add"), (data, where, updates), opset=16)
    for case, row in ((last, [7, 8, 9]), (summed, [12, 15, 18])):
        for program in lower_case(case):
            if program.label not in ATOMIC_TACTICS:
                got = on_fake_device(program, case.inputs)
                assert got.tolist() == [[0, 0, 0], row], (case.id, program.label)


def claimed_owners(case: Case) -> np.ndarray:
    """What the winner scheme's claim kernel leaves (with its atomicMax, which the fake device
    cannot run): per target, the position of the last update hitting it, else -1."""
    data, where = case.inputs[0], case.inputs[1].astype(np.int64)
    if case.node.op_type == "ScatterND":
        depth = where.shape[-1]
        rows = where.reshape(-1, depth) + np.where(where.reshape(-1, depth) < 0, data.shape[:depth], 0)
        ok = np.all((rows >= 0) & (rows < data.shape[:depth]), axis=1)
        owner = np.full(math.prod(data.shape[:depth]), -1, np.int32)
        targets = np.ravel_multi_index(tuple(rows[ok].T), data.shape[:depth]) if depth else np.zeros(ok.sum(), int)
    else:
        axis = case.node.attrs.get("axis", 0) % data.ndim
        coords = list(np.indices(where.shape))
        coords[axis] = where + np.where(where < 0, data.shape[axis], 0)
        ok = ((coords[axis] >= 0) & (coords[axis] < data.shape[axis])).reshape(-1)
        owner = np.full(data.size, -1, np.int32)
        targets = np.ravel_multi_index(tuple(c.reshape(-1)[ok] for c in coords), data.shape)
    np.maximum.at(owner, targets, np.arange(ok.size, dtype=np.int32)[ok])
    return owner


def test_the_winner_scatters_write_the_last_update_of_each_target_given_their_claims():
    """The winner programs on the fake device, their claim kernel's atomics done by numpy:
    the copy, the fill of the owners, and the write of each target's winner."""
    ran = 0
    for case in CASES:
        for program in lower_case(case):
            if program.label not in ATOMIC_TACTICS:
                continue
            device = FakeDevice(32 << 20)
            cupy = device.cupy

            def claims(launch: Launch, address) -> bool:
                if "_claim_" not in launch.kernel:
                    return False
                owner = claimed_owners(case)
                cupy.cuda.runtime.memcpy(address(launch.args[-1]), owner.ctypes.data, owner.nbytes, 1)  # to device
                return True

            functions = load(cupy, {name: source.encode() for name, source in program.kernels.items()})
            (got,) = run_program(cupy, functions, program, case.inputs, poison=False, stand_in=claims)
            compare(got, reference(case), case, program)
            ran += 1
    assert ran >= 6


def test_gather_elements_indices_smaller_than_the_data_read_its_corner():
    """ONNX: the output has the indices' shape; off the axis the data may be larger."""
    rng = rng_for("corner")
    data, where = values(rng, (5, 6), F32), indices(rng, (3, 4), 6)
    case = Case("corner", make_node("GatherElements", 2, axis=1), (data, where))
    got = lower(context(case, outputs=[TensorForm(F32, (3, 4))]))[0]
    np.testing.assert_array_equal(on_fake_device(got, case.inputs), np.take_along_axis(data[:3], where, axis=1))


def test_scatter_tactics_follow_the_work():
    """Few updates: every output element scanning them is cheapest. Many updates of wide
    slices: a thread per slice element (columns) or, for reduction none, the winner scheme.
    Reductions never get the winner scheme (it writes one update per target)."""
    rng = rng_for("tactics")
    few = Case("few", make_node("ScatterND", 3), (values(rng, (64, 32), F32), indices(rng, (2, 1), 64),
                                                  values(rng, (2, 32), F32)))
    assert [p.label for p in lower_case(few)][0] == "scatter_nd_scan"
    wide = Case("wide", make_node("ScatterND", 3), (values(rng, (4096, 256), F32), indices(rng, (2048, 1), 4096),
                                                    values(rng, (2048, 256), F32)))
    assert [p.label for p in lower_case(wide)][0] == "scatter_nd_winner"
    assert [p.label for p in lower_case(wide)] == ["scatter_nd_winner"]  # the others would take 30x as long
    summed = Case("summed", make_node("ScatterND", 3, reduction="add"), wide.inputs, opset=16)
    assert [p.label for p in lower_case(summed)] == ["scatter_nd_columns", "scatter_nd_scan"]
    winner = by_label(lower_case(wide))["scatter_nd_winner"]
    assert [type(s).__name__ for s in winner.steps] == ["Copy", "Launch", "Launch", "Launch"]
    assert winner.scratch == {"owner": 4096 * 4}
    assert not lower(context(wide, tune=False))[1:]  # without tuning: the cheapest only


def test_a_long_cumsum_line_is_scanned_in_chunks_and_many_lines_serially():
    rng = rng_for("scan tactics")
    line = Case("line", make_node("CumSum", 2), (values(rng, (1, 100000), F32), np.array(1)), frozenset({1}))
    programs = lower_case(line)
    assert programs[0].label == "cumsum_chunked" and len(programs[0].steps) == 3
    assert programs[0].scratch == {"partials": math.ceil(100000 / 64) * 4}
    many = Case("many", make_node("CumSum", 2), (values(rng, (100000, 8), F32), np.array(1)), frozenset({1}))
    assert [p.label for p in lower_case(many)] == ["cumsum"]


def test_scans_accumulate_narrow_floats_in_float():
    """1 + 2048 * 2**-11... in fp16 steps would stall at 1; in float it reaches 2."""
    x = np.concatenate([[1.0], np.full(2048, 2.0**-11)]).astype(np.float16)
    case = Case("fp16 sum", make_node("CumSum", 2), (x, np.array(0)), frozenset({1}))
    for program in lower_case(case):
        assert on_fake_device(program, case.inputs)[-1] == np.float16(2.0), program.label


def test_constant_of_shape_stores_a_float_value_in_the_storage_type_the_graph_wants():
    case = Case("narrow", make_node("ConstantOfShape", 1, value=np.array([1.1], np.float32)),
                (np.array([3, 8], np.int64),), frozenset({0}))
    (program,) = lower(context(case, outputs=[TensorForm(F16, (3, 8))]))
    got = on_fake_device(program, case.inputs)
    assert got.dtype == np.float16 and np.all(got == np.float16(1.1))


def test_fills_store_whole_16_byte_vectors_where_every_shape_allows():
    assert "uint4" in fill_kernel((4, 16), F16, 1.0).source
    assert "uint4" not in fill_kernel((3, 5), F16, 1.0).source
    n = dim(8, "rtxd_o0_0", 1, 64)
    with dim_bindings({"rtxd_o0_0": 8}):
        assert "uint4" in fill_kernel((n, 4), F32, 1.0).source  # 4 floats a row, any row count
        assert "uint4" not in fill_kernel((n, 3), F32, 1.0).source


def lowering(op: str, inputs: tuple, known: tuple[int, ...] = (), **attrs) -> Callable[[], list[NodeProgram]]:
    """Lowering a node of ``op`` on ``inputs`` (``known``: those the planner knows), later."""
    case = Case(op, make_node(op, len(inputs), **attrs), inputs, frozenset(known), 18)
    return lambda: lower(context(case, outputs=[form_of(inputs[0])]))  # (the reference rejects some)


F32_ZEROS, NO_INDEX = np.zeros((3, 2), np.float32), np.zeros((1, 1), np.int64)


@pytest.mark.parametrize("make, message", [
    (lowering("CumSum", (F32_ZEROS, np.array(1))), "CumSum node 'cumsum': axis must be known"),
    (lowering("OneHot", (np.zeros(3, np.int64), np.array(0), np.array([0, 1], np.float32)), (1,)),
     "OneHot node 'onehot': .*depth must be positive"),
    (lowering("ScatterND", (F32_ZEROS, NO_INDEX, np.zeros((1, 2), np.float16))),
     "ScatterND node 'scatternd': data .* and updates .* are stored in different types"),
    (lowering("GatherElements", (F32_ZEROS, F32_ZEROS)),
     "GatherElements node 'gatherelements': .*indices must be int64 or int32"),
    (lowering("ScatterElements", (F32_ZEROS, NO_INDEX, np.zeros((1, 1), np.float32)), reduction="mean"),
     "ScatterElements node 'scatterelements': .*reduction 'mean'"),
    (lowering("Trilu", (np.zeros(4, np.float32),)), "Trilu node 'trilu': .*rank >= 2"),
    (lowering("Trilu", (F32_ZEROS, np.array(1, np.int32))), "Trilu node 'trilu': k must be int64"),
])
def test_what_cannot_be_lowered_is_an_unsupported_naming_the_node(make, message):
    with pytest.raises(Unsupported, match=message):
        make()


def test_a_varying_index_depth_is_unsupported():
    d = dim(2, "rtxd_i1_1", 1, 3)
    data, where = np.zeros((4, 5), np.float32), np.zeros((3, 2), np.int64)
    case = Case("depth", make_node("GatherND", 2), (data, where))
    with dim_bindings({"rtxd_i1_1": 2}), pytest.raises(Unsupported, match="GatherND node 'gathernd': .*index depth"):
        lower(context(case, inputs=[form_of(data), TensorForm(I64, (3, d))], outputs=[TensorForm(F32, (3,))]))


def test_gather_elements_kernels_move_bits_so_same_size_types_share_one():
    assert gather_elements_kernel((4, 5), (4, 2), 1, F16).name == gather_elements_kernel((4, 5), (4, 2), 1, I16).name
    assert gather_elements_kernel((4, 5), (4, 2), 1, F32).name != gather_elements_kernel((4, 5), (4, 2), 1, F16).name


# ----------------------------------------------------------------------------- shape-generic kernels

def generic_programs(case: Case, varying: Mapping[int, Sequence[int]], out_varying: Sequence[int],
                     bounds: tuple[int, int] = (1, 4096)) -> list[NodeProgram]:
    """``case`` lowered as a generic plan's builder would: the axes ``varying[input]`` (and
    ``out_varying`` of the output) are DimInts named for their place, bound to the values here."""
    bindings: dict[str, int] = {}

    def form(array: np.ndarray | None, side: str, axes: Sequence[int]) -> TensorForm | None:
        if array is None:
            return None
        shape = []
        for axis, n in enumerate(array.shape):
            if axis in axes:
                name = f"rtxd_{side}_{axis}"
                bindings[name] = int(n)
                shape.append(dim(int(n), name, *bounds))
            else:
                shape.append(int(n))
        return TensorForm(DType.from_numpy(array.dtype), tuple(shape))

    inputs = [form(a, f"i{k}", varying.get(k, ())) for k, a in enumerate(case.inputs)]
    outputs = [form(reference(case), "o0", out_varying)]
    with dim_bindings(bindings):
        return lower(context(case, inputs=inputs, outputs=outputs))


GENERIC = [  # (op, make(rng, n, m) -> inputs, known, attrs, varying input axes, varying output axes, opset)
    ("GatherElements", lambda r, n, m: (values(r, (n, 6), F32), indices(r, (n, m), 6)), (), {"axis": 1},
     {0: (0,), 1: (0, 1)}, (0, 1), 13),
    ("GatherND", lambda r, n, m: (values(r, (n, 5, 3), F16), indices(r, (n, m, 1), 5)), (), {"batch_dims": 1},
     {0: (0,), 1: (0, 1)}, (0, 1), 13),
    ("ScatterND", lambda r, n, m: (values(r, (n, 4), F32), indices(r, (m, 1), n), values(r, (m, 4), F32)), (),
     {"reduction": "add"}, {0: (0,), 1: (0,), 2: (0,)}, (0,), 16),
    ("ScatterND", lambda r, n, m: (values(r, (n, m), F16), indices(r, (5, 1), n), values(r, (5, m), F16)), (),
     {}, {0: (0, 1), 2: (1,)}, (0, 1), 16),
    ("ScatterElements", lambda r, n, m: (values(r, (n, m), U8), indices(r, (n, 2), m), values(r, (n, 2), U8)), (),
     {"axis": 1}, {0: (0, 1), 1: (0,), 2: (0,)}, (0, 1), 18),
    ("ScatterElements", lambda r, n, m: (values(r, (n, m), I32), indices(r, (n, 3), m), values(r, (n, 3), I32)), (),
     {"axis": 1, "reduction": "max"}, {0: (0, 1), 1: (0,), 2: (0,)}, (0, 1), 18),
    ("CumSum", lambda r, n, m: (values(r, (n, m * 40), F32), np.array(1)), (1,), {"reverse": 1},
     {0: (0, 1)}, (0, 1), 14),
    ("Trilu", lambda r, n, m: (values(r, (2, n, m), F16),), (), {"upper": 0}, {0: (1, 2)}, (1, 2), 14),
    ("OneHot", lambda r, n, m: (indices(r, (n, m), 5), np.array(5), values(r, (2,), F32)), (1,), {"axis": 1},
     {0: (0, 1)}, (0, 2), 11),
    ("OneHot", lambda r, n, m: (indices(r, (n,), m, I32), np.array(m), values(r, (2,), BF16)), (), {},
     {0: (0,)}, (0, 1), 11),  # the depth: the output's varying dim
    ("ConstantOfShape", lambda r, n, m: (np.array([n, m], np.int64),), (0,), {"value": np.array([4], np.int32)},
     {}, (0, 1), 21),
    ("Range", lambda r, n, m: (np.array(2.0, np.float32), np.array(2.0 + 0.5 * (n + m), np.float32),
                               np.array(0.5, np.float32)), (1,), {}, {}, (0,), 11),
    ("EyeLike", lambda r, n, m: (values(r, (n, m), F32),), (), {"k": 1}, {0: (0, 1)}, (0, 1), 9),
]


@pytest.mark.parametrize("op, make, known, attrs, varying, out_varying, opset", GENERIC,
                         ids=[f"{g[0]}-{g[3].get('reduction', 'none')}-{len(g[2])}" for g in GENERIC])
def test_a_generic_lowering_is_one_source_at_every_shape_and_right_at_each(op, make, known, attrs, varying,
                                                                          out_varying, opset):
    rng = rng_for(f"generic {op}")
    sources, kernels = [], {}
    for n, m in ((3, 5), (7, 2)):
        case = Case(f"{op} {n}x{m}", make_node(op, len(make(rng, n, m)), **attrs), make(rng, n, m), frozenset(known),
                    opset)
        programs = generic_programs(case, varying, out_varying)
        sources.append([sorted(p.kernels.values()) for p in programs])
        assert any("rtxd_" in s for p in programs for s in p.kernels.values()), f"{op}: no dim arguments"
        runnable = [p for p in programs if p.label not in ATOMIC_TACTICS]
        assert runnable, f"{op}: no tactic the fake device can run: {[p.label for p in programs]}"
        for program in programs:
            kernels.update(program.kernels)
        for program in runnable:
            compare(on_fake_device(program, case.inputs), reference(case), case, program)
    assert sources[0] == sources[1], f"{op}: the source depends on the dims' values"
    assert all(compile_many(kernels.items(), "sm_86").values())


# ----------------------------------------------------------------------------- end to end

def model_of(nodes: list[Node], inputs: Mapping[str, tuple[DType, tuple[int, ...]]], outputs: list[str],
             initializers: Mapping[str, np.ndarray] | None = None,
             types: Mapping[str, tuple[DType, tuple[int, ...]]] | None = None) -> Model:
    typed = {n: TensorType(*t) for n, t in {**inputs, **(types or {})}.items()}
    return Model(Graph(nodes, list(inputs), outputs, typed, dict(initializers or {})), {"": 18})


def end_to_end_models() -> list[tuple[str, Model, dict[str, np.ndarray]]]:
    """One small model per op, each fed at run time (the planner folds what it can compute)."""
    rng = rng_for("models")
    x = values(rng, (6, 8), F32)
    rows = np.array([[1], [-2], [1]], np.int64)
    models = [
        ("CumSum", [Node("CumSum", ["x", "axis"], ["y"], {"exclusive": 1}, name="scan")], {"x": x},
         {"axis": np.array(1, np.int64)}, None),
        ("Trilu", [Node("Trilu", ["x", "k"], ["y"], {"upper": 0}, name="tri")], {"x": x, "k": np.array(-1, np.int64)},
         None, None),
        ("OneHot", [Node("OneHot", ["i", "depth", "v"], ["y"], name="hot")],
         {"i": indices(rng, (4, 3), 7), "v": np.array([-1, 2], np.float32)}, {"depth": np.array(7, np.int64)}, None),
        ("GatherElements", [Node("GatherElements", ["x", "i"], ["y"], {"axis": 1}, name="ge")],
         {"x": x, "i": indices(rng, (6, 3), 8)}, None, None),
        ("GatherND", [Node("GatherND", ["x", "i"], ["y"], name="gnd")], {"x": x, "i": indices(rng, (5, 1), 6)},
         None, None),
        ("ScatterND", [Node("ScatterND", ["x", "i", "u"], ["y"], {"reduction": "add"}, name="snd")],
         {"x": x, "i": rows, "u": values(rng, (3, 8), F32)}, None, None),
        ("ScatterElements", [Node("ScatterElements", ["x", "i", "u"], ["y"], {"axis": 0}, name="se")],
         {"x": x, "i": indices(rng, (2, 8), 6), "u": values(rng, (2, 8), F32)}, None, None),
        ("ConstantOfShape", [Node("Shape", ["x"], ["s"]), Node("ConstantOfShape", ["s"], ["y"],
                                                                 {"value": np.array([0.5], np.float32)}, name="cos")],
         {"x": values(rng, (520, 512), F32)}, None, None),  # more than the planner computes ahead (2**18 values)
        ("Range", [Node("Range", ["start", "limit", "delta"], ["y"], name="range")],
         {"start": np.array(1.5, np.float32)}, {"limit": np.array(9.0, np.float32), "delta": np.array(0.5, np.float32)},
         {"y": (F32, (15,))}),
        ("EyeLike", [Node("EyeLike", ["x"], ["y"], {"k": -2}, name="eye")], {"x": x}, None, None),
    ]
    out = []
    for op, nodes, feeds, inits, types in models:
        inputs = {n: (DType.from_numpy(a.dtype), a.shape) for n, a in feeds.items()}
        out.append((op, model_of(nodes, inputs, ["y"], inits, types), feeds))
    return out


END_TO_END = end_to_end_models()


@pytest.mark.parametrize("op, model, feeds", END_TO_END, ids=[m[0] for m in END_TO_END])
def test_a_model_of_each_op_plans_without_a_host_step(op, model, feeds):
    plan = build_plan(model, {n: a.shape for n, a in feeds.items()}, arch="sm_86", sm_count=46)
    assert plan.host_steps == [], [(s.label, s.why_host) for s in plan.host_steps]
    assert any(s.node is not None and s.node.op_type == op for s in plan.steps), [s.label for s in plan.steps]


@pytest.mark.parametrize("op, model, feeds", END_TO_END, ids=[m[0] for m in END_TO_END])
def test_a_model_of_each_op_runs_on_the_fake_engine_as_the_reference_does(monkeypatch, op, model, feeds):
    from tests.fake_gpu.engine import KernelCatalog, check_bindings, check_matches_reference, reference_outputs, run_model

    device = FakeDevice(64 << 20).install(monkeypatch)
    catalog = KernelCatalog().install(monkeypatch)
    run = run_model(device, model, feeds, prefer=lambda step, program: program.label not in ATOMIC_TACTICS)
    check_matches_reference(run.outputs, reference_outputs(model, feeds), tol=0.0, what=op)
    assert check_bindings(run.engine, catalog, run.records, meaning=scratch_or_node_buffer)


def scratch_or_node_buffer(arg, step, program, launch):
    """A kernel argument named for one of the program's scratch buffers points at it."""
    from tests.fake_gpu.engine import Buffer, node_buffer

    return Buffer("scratch", arg.name) if arg.name in program.scratch else node_buffer(arg, step, program, launch)
