"""ONNX TopK runs on the GPU: one generated kernel (rtxrt/backends/cuda/ops/topk.py and
topk_source.py) for any axis, largest or smallest, K from the attribute (before opset 10) or
the plan-time K input, every dtype a generated kernel takes, either output omitted. Rows that
fit shared memory are bitonic-sorted there (``topk_sort``); longer rows are radix-selected
(``topk_select``), the K best then sorted in shared memory, or in a global scratch where K is
longer than shared memory holds. Values and indices are exactly the reference backend's:
equal values by lower index, NaN above +inf, -0.0 equal to +0.0, values copied bit for bit.

``CASES`` is the catalogue. Here every kernel compiles with NVRTC for every supported arch,
and the cases run on the CPU in tests/backends/cuda/block_emulator.py (the kernels use
shared memory and barriers, which the fake device's interpreter does not model), compared
with the reference backend; tests/backends/cuda/test_gpu_topk.py runs the whole catalogue on
a GPU. Also: which path the lowering picks, what it refuses and why, one source over a
generic plan's profile, and models with TopK planned with every node on the GPU.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.context import LowerContext, NeedsValue, Unsupported
from rtxrt.backends.cuda.ops.lowering import find_lowering
from rtxrt.backends.cuda.ops.topk import lower_topk
from rtxrt.backends.cuda.ops.topk_source import (
    INDEX,
    KEYS,
    SCRATCH_MAX,
    SELECT,
    SHARED_SORT,
    SORT,
    TopK,
    topk_kernel,
)
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.cuda.plan.forms import NHWC, TensorForm, numpy_dtype
from rtxrt.backends.cuda.plan.program import BufferRole, Launch, NodeProgram
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node
from tests.helpers import make_model

from . import block_emulator
from .helpers import compile_for_every_arch

F32, F16, BF16, F64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64
I8, I32, I64, U8, U64, BOOL = DType.INT8, DType.INT32, DType.INT64, DType.UINT8, DType.UINT64, DType.BOOL
LABEL = "TopK node 'topk'"  # how errors name the node of every case
SM_COUNT = 46


# ---------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class TopKCase:
    """One TopK node over ``shape``: ``k`` along ``axis``. ``data``: "random", "ties" (a few
    distinct values) or "nan" (salted with NaNs of both signs, -0.0 beside +0.0 and
    infinities). ``outputs``: the node's output names, "" where omitted. Before opset 10 K
    is an attribute; opset 10 has no largest/sorted attributes."""

    id: str
    shape: tuple[int, ...]
    axis: int
    k: int
    dtype: DType = F32
    largest: int = 1
    data: str = "random"
    opset: int = 21
    sorted: int = 1
    outputs: tuple[str, str] = ("values", "indices")

    @property
    def node(self) -> Node:
        if self.opset < 10:
            return Node("TopK", ["x"], list(self.outputs), {"axis": self.axis, "k": self.k}, name="topk")
        attrs: dict[str, Any] = {"axis": self.axis}
        if self.opset >= 11:
            attrs |= {"largest": self.largest, "sorted": self.sorted}
        return Node("TopK", ["x", "k"], list(self.outputs), attrs, name="topk")

    def operands(self, x: np.ndarray) -> list[np.ndarray]:
        return [x] if self.opset < 10 else [x, np.array([self.k], np.int64)]

    @property
    def out_shape(self) -> tuple[int, ...]:
        axis = self.axis % len(self.shape)
        return (*self.shape[:axis], self.k, *self.shape[axis + 1:])


def cases() -> list[TopKCase]:
    c = TopKCase
    return [
        # shared-memory sort: every axis, largest and smallest, K from 1 to the row's length
        c("row37-last_axis", (3, 37), -1, 5),
        c("row37-first_axis", (37, 4, 3), 0, 6, largest=0),
        c("row37-middle_axis-k_is_the_row", (3, 37, 4), 1, 37),
        c("row37-middle_axis-smallest-k_is_the_row", (3, 37, 4), 1, 37, largest=0),
        c("row1024-k1", (5, 1024), 1, 1),
        c("row1024-k1-smallest", (5, 1024), -1, 1, largest=0),
        c("rows_of_one", (6, 1), 1, 1),
        c("one_row_of_one", (1,), 0, 1),
        c("one_row-smallest", (37,), 0, 10, largest=0),
        c("many_rows", (3000, 37), 1, 3),
        c("k0", (3, 37), 1, 0),
        # ties by lower index, NaN above +inf, -0.0 equal to +0.0
        c("ties-largest", (4, 37), 1, 20, data="ties"),
        c("ties-smallest", (4, 37), 1, 20, largest=0, data="ties"),
        c("nan-largest", (3, 37), 1, 37, data="nan"),
        c("nan-smallest", (3, 37), 1, 37, largest=0, data="nan"),
        # narrow floats and integers
        c("row1024-float16", (8, 1024), 1, 100, F16, data="nan"),
        c("row1024-bfloat16-smallest", (4, 1024), 1, 100, BF16, largest=0, data="nan"),
        c("row1000-int64", (4, 1000), 1, 10, I64),
        c("row1000-int64-smallest-ties", (4, 1000), 1, 500, I64, largest=0, data="ties"),
        c("float64", (3, 100), 1, 30, F64, data="nan"),
        c("int32-axis0", (50, 3), 0, 50, I32, largest=0),
        c("int8-ties", (2, 200), 1, 150, I8, data="ties"),
        c("uint8", (2, 200), 1, 20, U8, largest=0),
        c("uint64", (2, 300), 1, 20, U64),
        c("bool", (3, 40), 1, 40, BOOL, largest=0),
        # radix select (rows longer than shared memory sorts), K sorted in shared memory
        c("row5000", (3, 5000), 1, 50),
        c("row5000-first_axis-smallest-ties", (5000, 3), 0, 300, largest=0, data="ties"),
        c("row5000-middle_axis-nan", (2, 5000, 3), 1, 64, data="nan"),
        c("row5000-bfloat16-smallest-nan", (2, 5000), 1, 1000, BF16, largest=0, data="nan"),
        c("row5000-int64-ties", (2, 5000), 1, 2048, I64, data="ties"),
        c("row8400-float16", (1, 8400), 1, 300, F16),
        c("row100000", (1, 100000), 1, 100),
        c("row100000-ties-smallest", (2, 100000), 1, 10, largest=0, data="ties"),
        # K longer than shared memory holds: sorted in a global scratch
        c("row5000-k_is_the_row", (2, 5000), 1, 5000, data="nan"),
        c("row5000-float64-k2049", (3, 5000), 1, 2049, F64, largest=0),
        c("row9000-ties-k8193", (1, 9000), 1, 8193, data="ties"),
        c("row100000-float16-k_is_the_row", (1, 100000), 1, 100000, F16, data="nan"),
        c("many_rows-select", (64, 5000), 1, 10),
        # attributes and outputs
        c("opset1-k_attribute", (3, 37), 1, 4, opset=1),
        c("opset10-no_largest", (3, 37), -1, 4, opset=10),
        c("unsorted", (3, 37), 1, 4, sorted=0),
        c("indices_only", (3, 5000), 1, 7, outputs=("", "indices")),
        c("values_only", (3, 37), 0, 2, outputs=("values", "")),
    ]


CASES = cases()
# Cases the block emulator takes seconds over (thousands of blocks, or a sort of 2**17 in
# global scratch): the GPU test runs them.
EMULATOR_SKIPS = {"many_rows", "many_rows-select", "row100000-float16-k_is_the_row"}


def case(case_id: str) -> TopKCase:
    return next(c for c in CASES if c.id == case_id)


# ---------------------------------------------------------------- lowering, inputs, reference

def context(c: TopKCase, *, x: TensorForm | None = None, known: bool = True,
            sm_count: int = SM_COUNT) -> LowerContext:
    """What the builder shows the lowering of ``c``'s node: K known unless ``known`` is False."""
    consts = [None] + ([np.array([c.k], np.int64) if known else None] if c.opset >= 10 else [])
    inputs = [x or TensorForm(c.dtype, c.shape)] + ([TensorForm(I64, (1,))] if c.opset >= 10 else [])
    outputs = [TensorForm(c.dtype, c.out_shape) if c.outputs[0] else None,
               TensorForm(I64, c.out_shape) if c.outputs[1] else None]
    return LowerContext(c.node, inputs, outputs, consts, c.opset, "sm_86", sm_count)


def lowered(c: TopKCase, **kw) -> NodeProgram:
    (program,) = lower_topk(context(c, **kw))
    return program


def random_inputs(c: TopKCase) -> list[np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(c.id.encode()))
    storage = numpy_dtype(c.dtype)
    if c.dtype == BOOL:
        x = rng.random(c.shape) < 0.5
    elif c.data == "ties":
        x = rng.integers(0 if c.dtype in (U8, U64) else -3, 4, c.shape).astype(storage)
    elif c.dtype.is_float:
        x = rng.standard_normal(c.shape).astype(storage)
        if c.data == "nan":
            flat = x.reshape(-1)
            salt = np.array([np.nan, -np.nan, -0.0, 0.0, np.inf, -np.inf], np.float32).astype(storage)
            flat[rng.integers(0, flat.size, max(1, flat.size // 8))] = rng.choice(salt, max(1, flat.size // 8))
    else:
        info = np.iinfo(storage)
        x = rng.integers(info.min, info.max, c.shape, dtype=storage, endpoint=True)
    return c.operands(x)


def reference(c: TopKCase, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    values, indices = find_kernel("TopK")(c.node, c.opset, None).run(*arrays)
    return values, indices


def emulate(program: NodeProgram, arrays: list[np.ndarray], reverse: bool = False) -> list[np.ndarray | None]:
    """``program``'s launches in the block emulator (``reverse``: a block's threads run last to
    first between barriers), each pointer the node input, output or scratch its Ref names
    (outputs poisoned with 0xFF bytes, so an element never written shows), the dim arguments
    after them; the outputs (None where omitted)."""
    outputs = [None if f is None else np.full(int(f.nbytes), 0xFF, np.uint8) for f in program.outputs]
    scratch = {name: np.zeros(nbytes, np.uint8) for name, nbytes in program.scratch.items()}
    inputs = [np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8).copy() for a in arrays]
    for step in program.steps:
        assert isinstance(step, Launch), step
        pointers = [inputs[r.key] if r.role is BufferRole.IN else outputs[r.key] if r.role is BufferRole.OUT
                    else scratch[r.key] for r in step.args]
        block_emulator.emulate(program.kernels[step.kernel], step.kernel, step.grid[0], step.block[0], pointers,
                               step.dims, reverse=reverse)
    return [None if out is None else out.view(numpy_dtype(f.dtype)).reshape(tuple(int(d) for d in f.shape))
            for out, f in zip(outputs, program.outputs)]


def assert_matches_reference(got: list[np.ndarray | None], want: tuple[np.ndarray, np.ndarray], what: str) -> None:
    """Values bit for bit (NaN payloads and -0.0 too), indices exactly."""
    for name, g, w in zip(("values", "indices"), got, want):
        if g is None:
            continue
        assert (g.shape, g.dtype) == (w.shape, w.dtype), f"{what} {name}: {g.dtype}{g.shape}, the reference " \
                                                         f"{w.dtype}{w.shape}"
        if g.tobytes() != np.ascontiguousarray(w).tobytes():
            first = int(np.argmax(g.reshape(-1).view(f"u{g.itemsize}") != w.reshape(-1).view(f"u{g.itemsize}")))
            raise AssertionError(f"{what} {name} differ from the reference, first at flat {first}: "
                                 f"{g.reshape(-1)[first]} vs {w.reshape(-1)[first]}")


def kernel_source(program: NodeProgram) -> str:
    (source,) = program.kernels.values()
    return source


# ---------------------------------------------------------------- every case, exactly

def test_topk_is_a_gpu_lowering():
    assert find_lowering("", "TopK") is lower_topk


needs_compiler = pytest.mark.skipif(block_emulator.COMPILER is None, reason="no host C++ compiler for the emulator")


@needs_compiler
@pytest.mark.parametrize("c", [c for c in CASES if c.id not in EMULATOR_SKIPS], ids=lambda c: c.id)
def test_the_kernel_matches_the_reference_in_the_block_emulator(c: TopKCase):
    arrays, program = random_inputs(c), lowered(c)
    for reverse in (False, True):  # a barrier missing between a write and a read shows in one order
        assert_matches_reference(emulate(program, arrays, reverse), reference(c, arrays), f"{c.id}, reverse={reverse}")


@needs_compiler
def test_blocks_fewer_than_the_rows_walk_them_and_reuse_their_scratch_slice():
    c = TopKCase("slices", (3, 3000), 1, SHARED_SORT[8] + 1, F64, data="ties")
    program = lowered(c, sm_count=1)  # two slices: the second block also takes the third row
    (launch,) = program.steps
    assert launch.grid[0] == 2 and program.scratch == {KEYS: 2 * 4096 * 8, INDEX: 2 * 4096 * 4}
    arrays = random_inputs(c)
    assert_matches_reference(emulate(program, arrays), reference(c, arrays), c.id)


def test_every_kernel_compiles_with_nvrtc_and_each_kind_for_every_supported_arch():
    """Every kernel of the catalogue and the generic cases for sm_86; one of each path (sort,
    select sorting in shared memory, select sorting in global scratch) and key width for
    every supported arch."""
    kernels, kinds = {}, {}
    for program in [lowered(c) for c in CASES] + generic_programs():
        kernels.update(program.kernels)
        kind = (program.label, bool(program.scratch), "unsigned long long* __restrict__ out0" in kernel_source(program))
        kinds.setdefault(kind, program.kernels)
    cubins = compile_many(kernels.items(), "sm_86")
    assert set(cubins) == set(kernels) and all(c.startswith(b"\x7fELF") for c in cubins.values())
    assert len(kinds) == 6
    archs = [arch for arch, _, _ in compile_for_every_arch({n: s for k in kinds.values() for n, s in k.items()})]
    assert {"sm_75", "sm_90", "sm_120"} <= set(archs)


# ---------------------------------------------------------------- which path, what it launches

def path_of(shape: tuple[int, ...], k: int, dtype: DType = F32) -> str:
    return lowered(TopKCase("p", shape, -1, k, dtype)).label


def test_rows_that_fit_shared_memory_are_sorted_there_and_longer_ones_radix_selected():
    assert path_of((8, 37), 5) == SORT
    assert path_of((2, SHARED_SORT[4]), 5) == SORT
    assert path_of((2, SHARED_SORT[4] + 1), 5) == SELECT
    assert path_of((1, 8400), 300) == SELECT
    assert path_of((1, 100000), 100) == SELECT
    # 64-bit keys take twice the shared memory a pair
    assert path_of((2, SHARED_SORT[8]), 5, I64) == SORT
    assert path_of((2, SHARED_SORT[8] + 1), 5, F64) == SELECT
    assert path_of((2, SHARED_SORT[8] + 1), 5, I32) == SORT


def test_a_row_is_one_block_and_the_block_fits_the_row():
    (short,) = lowered(TopKCase("s", (7, 5, 37), 2, 3)).steps
    assert short.grid == (35, 1, 1) and short.block == (32, 1, 1)  # 37 padded to 64: 32 pairs
    (sort,) = lowered(TopKCase("l", (7, 4096), 1, 3)).steps
    assert sort.grid == (7, 1, 1) and sort.block == (512, 1, 1)
    (select,) = lowered(TopKCase("x", (7, 9000), 1, 3)).steps
    assert select.grid == (7, 1, 1) and select.block == (1024, 1, 1)


def test_only_k_longer_than_shared_memory_holds_takes_a_global_scratch():
    assert lowered(TopKCase("s", (4, 9000), 1, SHARED_SORT[4])).scratch == {}
    program = lowered(TopKCase("g", (4, 9000), 1, SHARED_SORT[4] + 1))
    assert program.scratch == {KEYS: 4 * 8192 * 4, INDEX: 4 * 8192 * 4}  # a slice per row: 4 rows < 2 per SM
    (launch,) = program.steps
    assert [(r.role, r.key) for r in launch.args] == [(BufferRole.IN, 0), (BufferRole.OUT, 0), (BufferRole.OUT, 1),
                                                       (BufferRole.SCRATCH, KEYS), (BufferRole.SCRATCH, INDEX)]
    many = lowered(TopKCase("m", (1000, 9000), 1, 5000))
    assert many.steps[0].grid == (2 * SM_COUNT, 1, 1)  # two slices per SM, the blocks walking the rows
    huge = topk_kernel(TopK((1000, 2**24), 1, 2**24 - 1, F64), SM_COUNT)  # a slice of 2**24 pairs of 12 bytes
    assert huge.launch.grid == (1, 1, 1) and dict(huge.scratch) == {KEYS: 2**24 * 8, INDEX: 2**24 * 4}
    assert 2 * 2**24 * 12 > SCRATCH_MAX  # so one block walks every row


def test_an_omitted_output_is_not_written_and_k0_launches_nothing():
    indices = lowered(case("indices_only"))
    assert indices.outputs == [None, TensorForm(I64, (3, 7))]
    assert [(r.role, r.key) for r in indices.steps[0].args] == [(BufferRole.IN, 0), (BufferRole.OUT, 1)]
    assert "out0" not in kernel_source(indices)
    values = lowered(case("values_only"))
    assert values.outputs == [TensorForm(F32, (2, 37)), None]
    assert "out1" not in kernel_source(values)
    assert lowered(case("k0")).steps == []


def test_a_non_trailing_axis_is_read_at_its_stride_not_transposed():
    program = lowered(case("row5000-middle_axis-nan"))
    (launch,) = program.steps
    assert launch.grid == (6, 1, 1)  # a block for each of the 2 x 3 rows
    assert "row % 3u" in kernel_source(program) and "* 3u" in kernel_source(program)


# ---------------------------------------------------------------- what it refuses, and why

def refusal(c: TopKCase, **kw) -> str:
    with pytest.raises(Unsupported) as info:
        lower_topk(context(c, **kw))
    message = str(info.value)
    assert LABEL in message, message
    return message


def test_k_not_known_when_the_plan_is_made_is_a_value_the_plan_needs():
    """(the runtime then plans per value of the input K comes from: parameter_inputs.py)"""
    with pytest.raises(NeedsValue, match=f"{LABEL}: K must be known when the plan is made") as info:
        lower_topk(context(TopKCase("k", (3, 37), 1, 4), known=False))
    assert info.value.index == 1


def test_what_the_kernels_cannot_take_is_refused_with_the_reason():
    assert "K=38 is outside [0, 37]" in refusal(TopKCase("big", (3, 37), 1, 38))
    assert "K=-1 is outside" in refusal(TopKCase("negative", (3, 37), 1, -1))
    assert "axis 2 is out of range for rank 2" in refusal(TopKCase("axis", (3, 37), 2, 1))
    assert "logical layout" in refusal(TopKCase("nhwc", (1, 3, 4, 4), 1, 2), x=TensorForm(F32, (1, 3, 4, 4), NHWC))
    assert "complex64" in refusal(TopKCase("complex", (3, 37), 1, 4, DType.COMPLEX64))
    assert "rows of 2147483648 elements" in refusal(TopKCase("long", (2**31,), 0, 1))
    assert f"bytes in global scratch (at most {SCRATCH_MAX})" in refusal(TopKCase("scratch", (2**25,), 0, 2**25, F64))
    ctx = context(TopKCase("shape", (3, 37), 1, 4))
    ctx.outputs[0] = TensorForm(F32, (3, 5))
    with pytest.raises(Unsupported, match=rf"{LABEL}: K=4 gives shape \[3, 4\], the graph says \[3, 5\]"):
        lower_topk(ctx)


def test_an_axis_that_may_be_shorter_than_k_over_the_profile_is_refused():
    n = dim(5000, "rtxd_i0_1", 100, 9000)
    expected = f"{LABEL}: K=300 is outside \\[0, 100\\] \\(the axis may be as short as 100\\)"
    with pytest.raises(Unsupported, match=expected):
        with dim_bindings({"rtxd_i0_1": 5000}):
            lower_topk(context(TopKCase("d", (2, 5000), 1, 300), x=TensorForm(F32, (2, n))))


# ---------------------------------------------------------------- generic plans

def generic_program(c: TopKCase, varying: dict[int, tuple[int, int]]) -> NodeProgram:
    """``lower_topk`` as a generic plan shows it the node: the input's axes in ``varying``
    (axis -> bounds) are dim arguments bound to their sizes in ``c``."""
    dims, bindings = list(c.shape), {}
    for axis, (lo, hi) in varying.items():
        name = f"rtxd_i0_{axis}"
        bindings[name] = c.shape[axis]
        dims[axis] = dim(c.shape[axis], name, lo, hi)
    with dim_bindings(bindings):
        (program,) = lower_topk(context(c, x=TensorForm(c.dtype, tuple(dims))))
    return program


GENERIC = [  # (case, varying axes, shapes over the profile)
    (TopKCase("generic-sort", (2, 37), 1, 4, data="ties"), {0: (1, 8), 1: (4, 1000)}, [(1, 4), (8, 1000), (3, 37)]),
    (TopKCase("generic-select", (2, 5000), 1, 300, F16), {0: (1, 4), 1: (300, 9000)}, [(1, 300), (4, 9000), (2, 5001)]),
    (TopKCase("generic-first_axis", (40, 3, 2), 0, 5, largest=0), {0: (5, 64), 2: (1, 4)}, [(5, 3, 1), (64, 3, 4)]),
]


def generic_programs() -> list[NodeProgram]:
    return [generic_program(replace(c, shape=shape), varying) for c, varying, shapes in GENERIC for shape in shapes]


@pytest.mark.parametrize("c, varying, shapes", GENERIC, ids=[g[0].id for g in GENERIC])
def test_a_generic_plan_has_one_source_over_the_profile(c: TopKCase, varying, shapes):
    programs = [generic_program(replace(c, shape=shape), varying) for shape in shapes]
    assert len({kernel_source(p) for p in programs}) == 1, "the source depends on the dims' values"
    assert len({p.steps[0].dims for p in programs}) == len(shapes)  # the sizes travel as dim arguments


@needs_compiler
@pytest.mark.parametrize("c, varying, shapes", GENERIC[::2], ids=[g[0].id for g in GENERIC[::2]])
def test_a_generic_kernel_matches_the_reference_at_every_shape_of_its_profile(c: TopKCase, varying, shapes):
    for shape in shapes:
        at = replace(c, shape=shape)
        arrays = random_inputs(at)
        assert_matches_reference(emulate(generic_program(at, varying), arrays), reference(at, arrays),
                                 f"{c.id} at {shape}")


# ---------------------------------------------------------------- whole models

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def detector_head_model():
    """A detector's score filter: the 300 best of 8400 anchors' scores (K = min(300, the
    anchors), computed from the input's shape), their boxes gathered by the indices."""
    nodes = [
        helper.make_node("Shape", ["scores"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["anchors"], name="anchors"),
        helper.make_node("Min", ["anchors", "cap"], ["k"], name="k"),
        helper.make_node("TopK", ["scores", "k"], ["best", "which"], axis=1, name="topk"),
        helper.make_node("Gather", ["boxes", "which"], ["picked"], axis=1, name="pick"),
    ]
    consts = {"one": np.array([1], np.int64), "cap": np.array([300], np.int64)}
    return make_model(nodes, [("scores", FLOAT, [1, 8400]), ("boxes", FLOAT, [1, 8400, 4])],
                      [("best", FLOAT, [1, 300]), ("picked", FLOAT, None)], consts)


def test_a_detector_head_with_topk_plans_every_node_on_the_gpu():
    report = plan_coverage(compile_onnx(detector_head_model().SerializeToString()),
                           {"scores": (1, 8400), "boxes": (1, 8400, 4)}, "sm_86")
    assert report.host_nodes == []
    assert [s.kind for s in report.segments] == ["gpu"]
    assert "TopK node 'topk'" in report.segments[0].nodes


def test_topk_models_of_every_opset_and_output_plan_on_the_gpu():
    for opset, attrs, inputs in ((1, {"k": 3}, ["x"]), (10, {}, ["x", "k"]), (11, {"largest": 0}, ["x", "k"])):
        node = helper.make_node("TopK", inputs, ["v", "i"], axis=0, name="topk", **attrs)
        model = make_model([node], [("x", FLOAT, [40, 7])], [("v", FLOAT, [3, 7]), ("i", INT64, [3, 7])],
                           {"k": np.array([3], np.int64)} if "k" in inputs else {}, opset=opset)
        compiled = compile_onnx(model.SerializeToString())
        report = plan_coverage(compiled, {"x": (40, 7)}, "sm_86")
        assert report.host_nodes == [] and report.gpu_nodes == 1, opset
        plan = build_plan(compiled, {"x": (40, 7)}, arch="sm_86", sm_count=SM_COUNT)
        assert [s.candidates[0].label for s in plan.steps if s.node is not None] == [SORT]
