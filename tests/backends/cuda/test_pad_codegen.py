"""ONNX Pad runs on the GPU: one generated kernel (rtxrt/backends/cuda/ops/pad.py and
pad_source.py) for every mode (constant, reflect, edge, wrap), any rank, pads that grow or
(negative) crop an axis, the ``axes`` input, every dtype a data movement kernel moves, and a
constant value known at plan time or read on the device. It is bit-exact with the reference
backend's Pad (it only moves data), compiles with NVRTC for every supported arch, keeps one
source over a generic plan's profile, and a model with Pad plans with no host step.

``CASES`` is the catalogue: each case is one Pad node with its inputs, lowered by the real
lowering and run by the fake device's interpreter (an element the kernel never writes, or a
read outside the input, faults there); tests/backends/cuda/test_gpu_pad.py runs the same
catalogue on a GPU.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.ops.context import LowerContext, Unsupported
from rtxrt.backends.cuda.ops.lowering import find_lowering
from rtxrt.backends.cuda.ops.pad import lower_pad
from rtxrt.backends.cuda.ops.pad_source import constant_bits, pad_kernel
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.forms import NHWC, TensorForm, device_dtype, numpy_dtype
from rtxrt.backends.cuda.plan.program import BufferRole, Launch, NodeProgram
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.engine import load_engine, run_engine, run_model

from .helpers import compile_for_every_arch

F32, F16, BF16, F64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64
I8, I16, I32, I64 = DType.INT8, DType.INT16, DType.INT32, DType.INT64
U8, U16, U32, U64, BOOL = DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64, DType.BOOL
MODES = ("constant", "reflect", "edge", "wrap")
EMPTY = ()  # a constant_value tensor of no elements (the value is then 0)
LABEL = "Pad node 'pad'"  # how errors name the node of every case


# ---------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class PadCase:
    """One Pad node: data of ``shape`` and ``dtype``; ``pads`` as the node gives them (over
    ``axes`` where given); ``value``: constant_value (None: omitted; EMPTY: no elements), a
    plan-time constant unless ``runtime_value`` (then computed on the device). Before opset
    11 pads and value are attributes."""

    id: str
    shape: tuple[int, ...]
    pads: tuple[int, ...]
    mode: str = "constant"
    dtype: DType = F32
    value: Any = None
    runtime_value: bool = False
    axes: tuple[int, ...] | None = None
    opset: int = 21

    @property
    def node(self) -> Node:
        attrs: dict[str, Any] = {"mode": self.mode}
        if self.opset < 11:
            attrs["pads"] = list(self.pads)
            if self.value is not None:
                attrs["value"] = float(self.value)
            return Node("Pad", ["x"], ["y"], attrs, name="pad")
        names = ["x", "pads", "" if self.value is None else "cv", "" if self.axes is None else "axes"]
        while not names[-1]:
            names.pop()
        return Node("Pad", names, ["y"], attrs, name="pad")

    def operands(self, x: np.ndarray) -> list[np.ndarray | None]:
        """The node's inputs (None: omitted), ``x`` first."""
        if self.opset < 11:
            return [x]
        values: list[np.ndarray | None] = [x, np.array(self.pads, np.int64), None, None]
        if self.value is not None:
            values[2] = np.asarray(self.value, numpy_dtype(self.dtype))
        if self.axes is not None:
            values[3] = np.array(self.axes, np.int64)
        return values[:len(self.node.inputs)]

    def out_shape(self) -> tuple[int, ...]:
        """Each named axis grows by its begin and end pads (negative ones shrink it)."""
        rank = len(self.shape)
        axes = list(range(rank)) if self.axes is None else [a % rank for a in self.axes]
        out = list(self.shape)
        for i, axis in enumerate(axes):
            out[axis] = self.shape[axis] + self.pads[i] + self.pads[i + len(axes)]
        return tuple(out)


def cases() -> list[PadCase]:
    out = []
    geometries = [  # (id, shape, pads, axes, opset)
        ("1d", (7,), (3, 5), None, 21),
        ("1d_wider_than_the_axis", (3,), (8, 11), None, 21),  # several periods of reflect and wrap
        ("2d_every_axis", (4, 5), (1, 2, 3, 4), None, 21),
        # an axis cropped at one end and grown at the other
        ("3d_crop_and_grow", (5, 6, 7), (-1, 2, 0, 3, -2, 1), None, 21),
        ("4d_image", (2, 3, 5, 6), (0, 0, 2, 1, 0, 0, 1, 3), None, 13),
        ("5d_size_one_axis", (2, 1, 3, 2, 4), (1, 2, 0, 1, 2, 2, 1, 1, 0, 3), None, 21),
        ("axes_input", (3, 4, 5), (2, 1, 0, 3), (-1, 0), 18),
        ("repeated_axis_last_wins", (3, 4), (9, 1, 9, 2), (1, -1), 18),
        ("opset10_attributes", (3, 4), (1, 2, 2, 1), None, 10),
        ("crop_only", (5, 6), (-1, -2, -1, 0), None, 21),
        ("no_pads", (2, 3), (0, 0, 0, 0), None, 11),
        ("scalar", (), (), None, 21),
        ("empty_result_by_cropping", (3, 4), (0, -2, 0, -2), None, 21),
        ("empty_input_axis_not_padded", (0, 3), (0, 1, 0, 1), None, 21),
    ]
    for mode in MODES:
        for gid, shape, pads, axes, opset in geometries:
            value = 1.5 if mode == "constant" and gid != "no_pads" else None
            out.append(PadCase(f"{gid}-{mode}", shape, pads, mode, F32, value, axes=axes, opset=opset))
    # every dtype, through the crop-and-grow geometry
    for dtype in (F32, F16, BF16, F64, I8, I16, I32, I64, U8, U16, U32, U64, BOOL):
        value = True if dtype == BOOL else 7 if not dtype.is_float else -2.75
        for mode in MODES:
            value_here = value if mode == "constant" else None
            out.append(PadCase(f"dtype-{mode}-{dtype.short}", (5, 6, 7), (-1, 2, 0, 3, -2, 1), mode, dtype, value_here))
    # the constant value: baked in (bits as numpy converts them), omitted, empty, or read on the device
    nan = np.array(0x7FC12345, np.uint32).view(np.float32)[()]  # a NaN with a payload: copied, never recomputed
    out += [
        PadCase("value_nan_payload-float32", (3, 4), (1, 1, 1, 1), value=nan),
        PadCase("value_negative_zero-float16", (3, 4), (1, 1, 1, 1), dtype=F16, value=-0.0),
        PadCase("value_rounded-bfloat16", (3, 4), (1, 1, 1, 1), dtype=BF16, value=1.1),
        PadCase("value_beyond_float64-int64", (3, 4), (1, 1, 1, 1), dtype=I64, value=2**62 + 1),  # exact
        PadCase("value_beyond_float64-uint64", (3, 4), (1, 1, 1, 1), dtype=U64, value=2**64 - 3),
        PadCase("value_omitted-int32", (3, 4), (0, 2, 1, 0), dtype=I32),
        PadCase("value_empty_tensor-float32", (3, 4), (0, 2, 1, 0), value=EMPTY),
        PadCase("value_opset10_default-float32", (3, 4), (1, 0, 0, 2), opset=10),
        PadCase("value_runtime-float32", (5, 6, 7), (-1, 2, 0, 3, -2, 1), value=-4.25, runtime_value=True),
        PadCase("value_runtime-float16", (2, 3, 5, 6), (0, 0, 2, 1, 0, 0, 1, 3), dtype=F16, value=3.5,
                runtime_value=True),
        PadCase("value_runtime-bool", (4, 5), (1, 2, 3, 4), dtype=BOOL, value=True, runtime_value=True),
        PadCase("value_runtime_crop_only-int64", (5, 6), (-1, -2, -1, 0), dtype=I64, value=9, runtime_value=True),
        PadCase("value_runtime_axes-int8", (3, 4, 5), (2, 1, 0, 3), dtype=I8, value=-5, runtime_value=True,
                axes=(-1, 0), opset=18),
        PadCase("empty_input_grown-constant", (0, 3), (2, 1, 0, 0), value=6.0),  # every element is the value
        PadCase("empty_input_grown_runtime-constant", (0, 3), (2, 1, 0, 0), value=6.0, runtime_value=True),
        PadCase("large_pads-constant", (2, 3), (40, 1, 35, 2), value=2.0),
    ]
    return out


CASES = cases()


# ---------------------------------------------------------------- lowering, inputs, reference

def context(case: PadCase, *, x: TensorForm | None = None, out: TensorForm | None = None,
            known: bool = True) -> LowerContext:
    """What the builder shows the lowering of ``case``'s node: pads and axes known (unless
    ``known`` is False), constant_value known unless the case computes it on the device."""
    operands = case.operands(np.zeros(case.shape, numpy_dtype(case.dtype)))
    forms = [None if a is None else TensorForm(DType.from_numpy(a.dtype), tuple(a.shape)) for a in operands]
    forms[0] = x or TensorForm(case.dtype, case.shape)
    consts = [None] + [a if known else None for a in operands[1:]]
    if len(consts) > 2 and case.runtime_value:
        consts[2] = None
    return LowerContext(case.node, forms, [out or TensorForm(case.dtype, case.out_shape())], consts, case.opset,
                        "sm_86", 46)


def lowered(case: PadCase) -> NodeProgram:
    (program,) = lower_pad(context(case))
    return program


def random_inputs(case: PadCase) -> list[np.ndarray | None]:
    """The case's inputs with random data (seeded by the case): floats never 0, salted with
    -0.0, infinities and NaN (moved bit for bit); ints over the dtype's small values."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    storage = numpy_dtype(case.dtype)
    if case.dtype == BOOL:
        x = rng.random(case.shape) < 0.5
    elif case.dtype.is_float:
        x = rng.uniform(-3, 3, case.shape).astype(storage)
        x[x == 0] = 1
        flat = x.reshape(-1)
        flat[:3] = np.array([-0.0, np.inf, np.nan], np.float32)[:flat.size].astype(storage)
    else:
        info = np.iinfo(storage)
        x = rng.integers(max(info.min, -100), min(info.max, 100), case.shape, endpoint=True).astype(storage)
    return case.operands(x)


def reference(case: PadCase, arrays: list[np.ndarray | None]) -> np.ndarray:
    kernel = find_kernel("Pad")(case.node, case.opset, None)
    return np.asarray(kernel.run(*arrays))


def run_on_fake_device(program: NodeProgram, arrays: list[np.ndarray | None], grid: int | None = None) -> np.ndarray:
    """``program``'s launches on a fake device, each pointer the node's input or output its
    Ref names, the launch's dim arguments after them; the output back on the host."""
    device = FakeDevice(16 << 20)
    cupy = device.cupy
    form = program.outputs[0]
    out = cupy.ndarray(tuple(int(d) for d in form.shape), device_dtype(form.dtype))
    on_device = {k: cupy.asarray(np.ascontiguousarray(a).view(device_dtype(DType.from_numpy(a.dtype))))
                 for k, a in enumerate(arrays) if a is not None}
    for step in program.steps:
        assert isinstance(step, Launch), step
        module = cupy.cuda.function.Module()
        module.load(program.kernels[step.kernel].encode())
        pointers = [on_device[r.key] if r.role is BufferRole.IN else out for r in step.args]
        blocks = step.grid if grid is None else (min(grid, step.grid[0]), 1, 1)
        module.get_function(step.kernel)(blocks, step.block, (*pointers, *(np.int32(d) for d in step.dims)))
    return out.get().view(numpy_dtype(form.dtype))


def assert_bit_exact(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, the reference {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, the reference {want.dtype}"
    assert got.tobytes() == np.ascontiguousarray(want).tobytes(), f"{what}: differs from the reference\n{got}\n{want}"


def kernel_source(program: NodeProgram) -> str:
    (source,) = program.kernels.values()
    return source


# ---------------------------------------------------------------- every case, bit-exact

def test_pad_is_a_gpu_lowering():
    assert find_lowering("", "Pad") is lower_pad


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_kernel_matches_the_reference_bit_for_bit(case: PadCase):
    program = lowered(case)
    assert program.outputs == [TensorForm(case.dtype, case.out_shape())]
    arrays = random_inputs(case)
    assert_bit_exact(run_on_fake_device(program, arrays), reference(case, arrays), case.id)


@pytest.mark.parametrize("case_id", ["4d_image-reflect", "1d_wider_than_the_axis-wrap", "dtype-constant-bfloat16",
                                     "value_runtime-float16"])
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id: str):
    case = next(c for c in CASES if c.id == case_id)
    arrays = random_inputs(case)
    assert_bit_exact(run_on_fake_device(lowered(case), arrays, grid=1), reference(case, arrays), case.id)


def test_every_kernel_compiles_with_nvrtc_for_every_supported_arch():
    kernels = {}
    for case in CASES:
        kernels.update(lowered(case).kernels)
    for program in generic_programs():
        kernels.update(program.kernels)
    archs = [arch for arch, _, _ in compile_for_every_arch(kernels)]
    assert {"sm_75", "sm_90"} <= set(archs)


# ---------------------------------------------------------------- what the lowering makes

def test_an_empty_result_launches_nothing():
    for case in CASES:
        if 0 in case.out_shape():
            assert lowered(case).steps == [], case.id


def test_an_empty_input_grown_in_constant_mode_reads_nothing_and_writes_the_value():
    case = next(c for c in CASES if c.id == "empty_input_grown-constant")
    got = run_on_fake_device(lowered(case), random_inputs(case))
    assert got.shape == (2, 4) and np.all(got == 6.0)


def test_a_plan_time_value_is_baked_into_the_source_and_a_runtime_one_is_read_through_a_pointer():
    baked = lowered(PadCase("baked", (3, 4), (1, 1, 1, 1), value=2.0))
    (launch,) = baked.steps
    assert [(r.role, r.key) for r in launch.args] == [(BufferRole.IN, 0), (BufferRole.OUT, 0)]
    assert "0x40000000u" in kernel_source(baked)  # 2.0f's bits
    assert kernel_source(lowered(PadCase("other", (3, 4), (1, 1, 1, 1), value=3.0))) != kernel_source(baked)

    read = PadCase("read", (3, 4), (1, 1, 1, 1), value=2.0, runtime_value=True)
    program = lowered(read)
    (launch,) = program.steps
    assert [(r.role, r.key) for r in launch.args] == [(BufferRole.IN, 0), (BufferRole.IN, 2), (BufferRole.OUT, 0)]
    for value in (2.0, -7.5, np.inf):  # one kernel, every value
        arrays = random_inputs(read)
        arrays[2] = np.asarray(value, np.float32)
        assert_bit_exact(run_on_fake_device(program, arrays), reference(read, arrays), f"value {value}")


def test_the_constant_is_converted_to_the_data_type_as_numpy_pad_converts_it():
    assert constant_bits(np.array(0x7FC12345, np.uint32).view(np.float32)[()], F32) == 0x7FC12345
    assert constant_bits(-0.0, F16) == 0x8000
    assert constant_bits(1.0, BF16) == 0x3F80
    assert constant_bits(np.asarray(1.1, ml_dtypes.bfloat16)[()], BF16) == 0x3F8D
    assert constant_bits(2.7, I32) == 2  # truncated, as assigning 2.7 into an int32 array does
    assert constant_bits(-1, U8) == 0xFF
    assert constant_bits(True, BOOL) == 1
    assert constant_bits(-3, I64) == 2**64 - 3


def test_axes_that_are_not_grown_merge_and_pads_within_one_period_need_no_division():
    spatial = lowered(PadCase("s", (2, 3, 8, 8), (0, 0, 1, 1, 0, 0, 1, 1), "reflect"))
    assert kernel_source(spatial).count("r /=") == 2  # [N*C, H, W]: batch and channels walked as one
    last = lowered(PadCase("l", (4, 5, 6), (0, 0, 2, 0, 0, 3), "edge"))
    assert kernel_source(last).count("r /=") == 1  # [4*5, 6+5]
    for mode in ("reflect", "wrap"):
        assert "%=" not in kernel_source(lowered(PadCase("n", (7,), (3, 5), mode)))
        assert "%=" in kernel_source(lowered(PadCase("w", (3,), (8, 11), mode)))
    crop = lowered(PadCase("c", (5, 6), (-1, -2, -1, 0)))
    assert "?" not in kernel_source(crop)  # a slice: no value, no index map


# ---------------------------------------------------------------- what it refuses, and why

def refusal(case: PadCase, **kw) -> str:
    with pytest.raises(CodegenError) as info:
        lower_pad(context(case, **kw))
    assert isinstance(info.value, Unsupported)
    message = str(info.value)
    assert LABEL in message, message
    return message


def test_pads_and_axes_must_be_known_when_the_plan_is_made():
    assert "pads" in refusal(PadCase("p", (3, 4), (1, 1, 1, 1), "edge"), known=False)
    case = PadCase("a", (3, 4), (1, 1), "edge", axes=(1,), opset=18)
    ctx = context(case)
    ctx.consts[3] = None
    with pytest.raises(Unsupported, match=f"{LABEL}: axes must be known"):
        lower_pad(ctx)


def test_malformed_pads_are_refused_with_what_is_wrong():
    assert "unknown mode 'circular'" in refusal(PadCase("m", (3, 4), (1, 1, 1, 1), "circular"))
    assert "begin and an end" in refusal(PadCase("n", (3, 4), (1, 1, 1), "edge"),
                                         out=TensorForm(F32, (3, 4)))
    assert "out of range" in refusal(PadCase("o", (3, 4), (1, 1), "edge", axes=(2,), opset=18),
                                     out=TensorForm(F32, (3, 4)))
    assert "crop axis 0" in refusal(PadCase("c", (3,), (-2, -2), "constant"), out=TensorForm(F32, (0,)))
    assert "the graph says" in refusal(PadCase("g", (3, 4), (1, 1, 1, 1), "edge"), out=TensorForm(F32, (5, 5)))


def test_reflect_edge_and_wrap_cannot_pad_an_empty_axis():
    for mode in ("reflect", "edge", "wrap"):
        assert f"{mode} mode cannot pad it" in refusal(PadCase("e", (0, 3), (1, 0, 0, 0), mode))
        assert f"{mode} mode cannot pad it" in refusal(PadCase("c", (2, 3), (0, -3, 0, 1), mode))  # cropped away


def test_forms_the_kernel_cannot_take_are_refused():
    case = PadCase("f", (1, 3, 4, 4), (0, 0, 1, 1, 0, 0, 1, 1), "edge")
    assert "logical layout" in refusal(case, x=TensorForm(F32, (1, 3, 4, 4), NHWC))
    assert "complex64" in refusal(replace(case, dtype=DType.COMPLEX64))
    runtime = PadCase("r", (3, 4), (1, 1, 1, 1), dtype=F16, value=1.0, runtime_value=True)
    ctx = context(runtime)
    ctx.inputs[2] = TensorForm(F32, ())  # the value kept wider than the data
    with pytest.raises(Unsupported, match=f"{LABEL}: constant_value is held as float32, the data as float16"):
        lower_pad(ctx)


# ---------------------------------------------------------------- generic plans

def generic_program(case: PadCase, varying: dict[int, tuple[int, int]]) -> NodeProgram:
    """``lower_pad`` as a generic plan shows it the node: the input's axes in ``varying``
    (axis -> bounds) are dim arguments, and so are the output's (its bounds moved by the
    axis's pads), bound to their sizes in ``case``."""
    rank = len(case.shape)
    out_shape = case.out_shape()
    bindings, x_dims, out_dims = {}, list(case.shape), list(out_shape)
    for axis, (lo, hi) in varying.items():
        grow = out_shape[axis] - case.shape[axis]
        for side, dims, size, bounds in (("i", x_dims, case.shape[axis], (lo, hi)),
                                         ("o", out_dims, out_shape[axis], (lo + grow, hi + grow))):
            name = f"rtxd_{side}0_{axis}"
            bindings[name] = size
            dims[axis] = dim(size, name, max(bounds[0], 0), bounds[1])
    assert len(x_dims) == rank
    ctx = context(case, x=TensorForm(case.dtype, tuple(x_dims)), out=TensorForm(case.dtype, tuple(out_dims)))
    with dim_bindings(bindings):
        (program,) = lower_pad(ctx)
    return program


PROFILE = {0: (1, 4), 2: (2, 16), 3: (2, 16)}  # batch and image size of an NCHW input
PROFILE_SHAPES = [(1, 3, 2, 2), (4, 3, 16, 9), (2, 3, 5, 13)]


def generic_cases() -> list[PadCase]:
    """Every mode over a varying image, pads growing and cropping it (reflect: several
    periods on one axis)."""
    return [PadCase(f"generic-{mode}", PROFILE_SHAPES[0], (0, 1, 3, -1, 0, 0, 9, 2), mode,
                    value=-1.0 if mode == "constant" else None) for mode in MODES]


def generic_programs() -> list[NodeProgram]:
    return [generic_program(replace(case, shape=shape), PROFILE)
            for case in generic_cases() for shape in PROFILE_SHAPES]


@pytest.mark.parametrize("case", generic_cases(), ids=lambda c: c.id)
def test_a_generic_plan_has_one_source_over_the_profile_right_at_each_shape(case: PadCase):
    sources, dims = set(), set()
    for shape in PROFILE_SHAPES:
        at = replace(case, shape=shape)
        program = generic_program(at, PROFILE)
        sources.add(kernel_source(program))
        (launch,) = program.steps
        dims.add(launch.dims)
        arrays = random_inputs(at)
        assert_bit_exact(run_on_fake_device(program, arrays), reference(at, arrays), f"{case.id} at {shape}")
    assert len(sources) == 1, "the source depends on the dims' values"
    assert len(dims) == len(PROFILE_SHAPES)  # the sizes travel as dim arguments


def test_reflect_of_an_axis_that_may_hold_one_element_reflects_it_onto_itself():
    case = PadCase("r", (2, 1), (0, 2, 0, 3), "reflect")
    sources = set()
    for rows in (1, 2, 5):
        at = replace(case, shape=(2, rows))
        program = generic_program(at, {1: (1, 8)})
        sources.add(kernel_source(program))
        arrays = random_inputs(at)
        assert_bit_exact(run_on_fake_device(program, arrays), reference(at, arrays), f"{rows} rows")
    assert len(sources) == 1


def test_an_axis_that_may_be_cropped_away_pads_only_in_constant_mode():
    for mode in ("reflect", "edge", "wrap"):
        case = PadCase("e", (2, 4), (0, -1, 0, 2), mode)
        expected = f"{LABEL}: axis 1 may be empty once cropped .*; {mode} mode cannot pad it"
        with pytest.raises(Unsupported, match=expected):
            generic_program(case, {1: (1, 8)})
    case = PadCase("c", (2, 1), (0, -1, 0, 2), value=5.0)
    for cols in (1, 4):
        at = replace(case, shape=(2, cols))
        arrays = random_inputs(at)
        assert_bit_exact(run_on_fake_device(generic_program(at, {1: (1, 8)}), arrays), reference(at, arrays),
                         f"{cols} columns")


def test_the_generator_formats_dims_and_never_reads_their_values():
    n = dim(5, "rtxd_i0_1", 2, 64)
    with dim_bindings({"rtxd_i0_1": 5}):
        kernel = pad_kernel((3, n), (0, 2, 0, 1), F16, "wrap")
    assert kernel.dims == (5,) and "rtxd_i0_1" in kernel.source and "int rtxd_i0_1" in kernel.source


# ---------------------------------------------------------------- whole models

def model_of(nodes: list[Node], inputs: dict[str, tuple], outputs: list[str],
             initializers: dict[str, np.ndarray] | None = None, opset: int = 21) -> Model:
    graph = Graph(nodes, list(inputs), outputs, {n: TensorType(F32, s) for n, s in inputs.items()},
                  dict(initializers or {}))
    return Model(graph, {"": opset})


def every_mode_model() -> Model:
    """Reflect, then constant with a value fed at run time (graph input ``v``, a scalar),
    then edge over ``axes``, then wrap: four Pads, no host step."""
    nodes = [
        Node("Pad", ["x", "p_reflect"], ["a"], {"mode": "reflect"}, name="reflect"),
        Node("Pad", ["a", "p_constant", "v"], ["b"], {"mode": "constant"}, name="constant"),
        Node("Pad", ["b", "p_edge", "", "axes"], ["c"], {"mode": "edge"}, name="edge"),
        Node("Pad", ["c", "p_wrap"], ["y"], {"mode": "wrap"}, name="wrap"),
    ]
    consts = {"p_reflect": np.array([0, 1, 2, 3, 0, 2, 1, 4], np.int64),
              "p_constant": np.array([1, 0, -1, 2, 0, 1, 3, -2], np.int64),
              "p_edge": np.array([2, 0, 1, 3], np.int64), "axes": np.array([-1, 1], np.int64),
              "p_wrap": np.array([0, 0, 7, 1, 0, 0, 2, 9], np.int64)}
    return model_of(nodes, {"x": (2, 3, 6, 5), "v": ()}, ["y"], consts, opset=18)


def test_a_model_of_pads_plans_with_no_host_step_and_runs_as_the_reference(monkeypatch):
    model = every_mode_model()
    plan = build_plan(model, {"x": (2, 3, 6, 5), "v": ()}, arch="sm_86", sm_count=46)
    assert plan.host_steps == []
    assert [s.candidates[0].label for s in plan.steps if s.node is not None] == ["pad"] * 4
    x = np.random.default_rng(0).uniform(-3, 3, (2, 3, 6, 5)).astype(np.float32)
    run = run_model(FakeDevice().install(monkeypatch), model, {"x": x, "v": np.float32(-9.5)})
    for value in (-9.5, 4.0):  # one engine, the value read at every run
        feeds = {"x": x, "v": np.asarray(value, np.float32)}
        got = run.again(feeds).outputs["y"]
        assert_bit_exact(got, ReferenceExecutor(model).run(feeds)["y"], f"four Pads, value {value}")


def test_a_model_of_opset_10_pads_plans_with_no_host_step(monkeypatch):
    nodes = [Node("Pad", ["x"], ["a"], {"mode": "constant", "pads": [1, 0, 2, 1], "value": 0.5}, name="c"),
             Node("Pad", ["a"], ["y"], {"mode": "reflect", "pads": [2, 1, 1, 2]}, name="r")]
    model = model_of(nodes, {"x": (4, 5)}, ["y"], opset=10)
    assert build_plan(model, {"x": (4, 5)}, arch="sm_86", sm_count=46).host_steps == []
    x = np.random.default_rng(1).uniform(-3, 3, (4, 5)).astype(np.float32)
    run = run_model(FakeDevice().install(monkeypatch), model, {"x": x})
    assert_bit_exact(run.outputs["y"], ReferenceExecutor(model).run({"x": x})["y"], "opset 10")


def test_a_generic_plan_of_pads_is_one_set_of_kernels_over_the_profile(monkeypatch):
    model = every_mode_model()
    model.graph.types["x"] = TensorType(F32, ("n", 3, "h", "w"))
    dims = dim_ranges(model, sample_shapes({"x": ((1, 3, 4, 4), (2, 3, 8, 8), (3, 3, 20, 20)), "v": ((), (), ())}))
    kernels = []
    for k, shape in enumerate([(1, 3, 4, 4), (3, 3, 17, 9)]):
        plan = build_plan(model, {"x": shape, "v": ()}, arch="sm_86", sm_count=46, dims=dims)
        assert plan.host_steps == []
        final = finalize(plan)
        kernels.append(dict(final.kernels))
        with monkeypatch.context() as patch:
            engine = load_engine(FakeDevice().install(patch), final)
            feeds = {"x": np.random.default_rng(k).uniform(-3, 3, shape).astype(np.float32), "v": np.float32(k)}
            got = run_engine(engine, feeds)["y"]
        assert_bit_exact(got, ReferenceExecutor(model).run(feeds)["y"], f"generic plan at {shape}")
    assert kernels[0] == kernels[1]


def test_the_catalogue_covers_every_mode_with_negative_pads_axes_and_empty_results():
    for mode in MODES:
        mine = [c for c in CASES if c.mode == mode]
        assert any(min(c.pads, default=0) < 0 for c in mine)
        assert any(c.axes is not None for c in mine)
        assert any(math.prod(c.out_shape()) == 0 for c in mine)
        assert {len(c.shape) for c in mine} >= {0, 1, 2, 3, 4, 5}
