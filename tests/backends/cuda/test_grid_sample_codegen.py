"""Generated GridSample kernels (rtxrt/backends/cuda/ops/grid_sample_source.py) without a GPU.

Every kernel of ``CASES`` (each mode x padding mode x align_corners x storage type, on 4-D
images, 5-D volumes, one-row and one-column images and 1-D signals, both X layouts, grids of
each float type) runs on the fake device on grids that reach well outside [-1, 1] and agrees
with the reference backend (rtxrt/backends/reference/ops/misc.py): nearest exactly, the others
within one rounding to the storage type (float32: 1e-5 of the largest magnitude); every
kernel compiles with NVRTC for sm_75 and sm_90. Then: nearest's ties, non-finite grid values,
short grids, shape-generic kernels, whole models planned without host steps, and what is not
generated (a CodegenError naming the node).

``CASES``, ``case_inputs``, ``physical`` and ``assert_matches`` are what
tests/backends/cuda/test_gpu_grid_sample.py runs on the device.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.context import LowerContext, Unsupported, WrongForm
from rtxrt.backends.cuda.ops.grid_sample import lower_grid_sample
from rtxrt.backends.cuda.ops.grid_sample_source import CUBIC_A, grid_sample_kernel
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.forms import NHWC, TensorForm
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.backends.reference.ops import misc as reference_misc
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, Storage, TensorType
from tests.fake_gpu.device import FakeDevice

from .helpers import random, storage

F32, F16, BF16, F64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64
MODES = ("nearest", "linear", "cubic")
OPSET16_NAMES = {"nearest": "nearest", "linear": "bilinear", "cubic": "bicubic"}
PADDINGS = ("zeros", "border", "reflection")
DTYPES = (F32, F16, BF16)
TOLERANCE = {F32: 1e-5, F16: 1e-3, BF16: 1e-2}  # of max |Y|: one rounding to the storage type


@dataclass(frozen=True)
class Case:
    """GridSample ``node`` on X (``x``: storage dtype, logical shape) and a grid of type
    ``grid``; X and Y stored in ``layout`` (NHWC: channels-last)."""

    id: str
    node: Node
    x: TensorType
    grid: TensorType
    layout: str = "NCHW"
    opset: int = 20

    @property
    def mode(self) -> str:
        return {"bilinear": "linear", "bicubic": "cubic"}.get(self.node.attr("mode", "linear"),
                                                             self.node.attr("mode", "linear"))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.x.shape[0], self.x.shape[1], *self.grid.shape[1:-1])

    def kernel(self) -> KernelSource:
        return grid_sample_kernel(self.node, self.x, self.grid, self.layout)


def case(mode: str, padding: str, align: int, dtype: DType, x: tuple[int, ...], out: tuple[int, ...], *,
         layout: str = "NCHW", grid_dtype: DType = F32, opset: int = 20, label: str = "") -> Case:
    name = OPSET16_NAMES[mode] if opset < 20 else mode
    node = Node("GridSample", ["x", "grid"], ["y"], {"mode": name, "padding_mode": padding, "align_corners": align},
                name=f"warp_{mode}_{padding}")
    grid = TensorType(grid_dtype, (x[0], *out, len(x) - 2))
    return Case(f"{label or name}-{padding}-ac{align}-{'x'.join(map(str, x))}-to-{'x'.join(map(str, out))}"
                f"-{layout}-{dtype.short}-grid_{grid_dtype.short}-opset{opset}",
                node, TensorType(dtype, x), grid, layout, opset)


SHAPES = [  # X, then the grid's output dims
    ((2, 3, 5, 7), (4, 6)),  # an image
    ((1, 2, 4, 3, 5), (3, 2, 4)),  # a volume (opset 20)
    ((3, 2, 1, 6), (5, 3)),  # one row: with align_corners, reflection's span is 0
    ((1, 4, 6, 1), (2, 7)),  # one column
    ((2, 3, 9), (11,)),  # a 1-D signal
]

CASES: list[Case] = [
    # every mode x padding x align_corners x storage type; the shapes rotate, 4-D ones spelled
    # both ways (bilinear/bicubic at opset 16)
    *(case(mode, padding, align, dtype, *SHAPES[i % len(SHAPES)],
           opset=16 if len(SHAPES[i % len(SHAPES)][0]) == 4 and i % 2 else 20)
      for i, (mode, padding, align, dtype) in enumerate(itertools.product(MODES, PADDINGS, (0, 1), DTYPES))),
    # X and Y channels-last (C = 5, not a power of two)
    *(case(mode, padding, i % 2, DTYPES[i % 3], (2, 5, 6, 7), (4, 9), layout="NHWC")
      for i, (mode, padding) in enumerate(itertools.product(MODES, PADDINGS))),
    # grids of other float types than X's
    case("linear", "zeros", 0, F32, (1, 3, 6, 5), (4, 4), grid_dtype=F16),
    case("cubic", "reflection", 1, BF16, (1, 2, 2, 3, 4), (2, 3, 2), grid_dtype=F64),
    case("nearest", "border", 0, F16, (2, 2, 5, 5), (3, 3), grid_dtype=BF16),
    # a flow-warp sized image (more work than one block)
    case("linear", "zeros", 0, F16, (1, 16, 32, 48), (40, 24), label="flow_warp"),
    case("cubic", "border", 1, F32, (1, 8, 17, 13), (21, 19), layout="NHWC", label="upsample"),
]


def case_inputs(c: Case) -> tuple[np.ndarray, np.ndarray]:
    """X (logical, storage type, never zero) and the grid (seeded by the case): positions
    uniform over [-1.25, 1.25], so about a fifth fall outside X; an eighth of the entries far
    out ([-6, 6]: reflections fold them several times) and some exactly -1, 0 and 1 (the
    corners and the centre). Whatever the draw, the first three output positions of batch 0
    sample before X, after it and far after it along every axis."""
    rng = np.random.default_rng(zlib.crc32(c.id.encode()))
    x = random(rng, tuple(c.x.shape), c.x.dtype)
    grid = rng.uniform(-1.25, 1.25, c.grid.shape)
    far = rng.random(grid.shape) < 0.125
    grid[far] = rng.uniform(-6.0, 6.0, int(far.sum()))
    exact = rng.random(grid.shape) < 0.06
    grid[exact] = rng.choice([-1.0, 0.0, 1.0], int(exact.sum()))
    first = grid.reshape(grid.shape[0], -1, grid.shape[-1])[0]
    first[:3] = np.array([-1.3, 1.4, 4.6])[: len(first), None]
    return x, grid.astype(storage(c.grid.dtype))


def physical(c: Case, x: np.ndarray) -> np.ndarray:
    """X as the kernel reads it (channels-last for NHWC)."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1) if c.layout == "NHWC" else x)


def logical(c: Case, y: np.ndarray) -> np.ndarray:
    return np.moveaxis(y, -1, 1) if c.layout == "NHWC" else y


def reference(c: Case, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The reference backend's Y for the stored values, in float64."""
    kernel = find_kernel("GridSample")(c.node, c.opset, None)
    return kernel.run(x.astype(np.float64), grid.astype(np.float64))


def assert_matches(c: Case, got: np.ndarray, want: np.ndarray) -> None:
    """Nearest copies X's values: exact. The others blend in float32 and round once to the
    storage type: within TOLERANCE of the largest |Y|. NaN (an unwritten output) fails."""
    got = got.astype(np.float64)
    assert got.shape == want.shape, (c.id, got.shape, want.shape)
    assert not np.isnan(got).any(), f"{c.id}: {int(np.isnan(got).sum())} outputs unwritten (NaN)"
    if c.mode == "nearest":
        np.testing.assert_array_equal(got, want, err_msg=c.id)
        return
    error = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    assert error <= TOLERANCE[c.x.dtype] * scale, f"{c.id}: max |Y - ref| = {error:.3g} of max |ref| {scale:.3g}"


def run_fake(kernel: KernelSource, x: np.ndarray, grid: np.ndarray, blocks: int | None = None) -> np.ndarray:
    """``kernel`` on the fake device (faults on any read outside X or the grid) into a
    NaN-poisoned Y; returns Y as stored."""
    device = FakeDevice(32 << 20)
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(kernel.source.encode())

    def on_device(a: np.ndarray):
        a = np.ascontiguousarray(a)
        return cupy.asarray(a.view(np.uint16) if a.itemsize == 2 else a)

    (out,) = kernel.outputs
    y = on_device(np.full(out.shape, np.nan, storage(out.dtype)))
    args = (on_device(x), on_device(grid), y, *(np.int32(d) for d in kernel.dims))
    module.get_function(kernel.name)((kernel.launch.grid() if blocks is None else blocks, 1, 1),
                                     (kernel.launch.block, 1, 1), args)
    stored = y.get()
    return stored.view(storage(out.dtype)) if stored.itemsize == 2 else stored


def node(mode: str = "linear", padding: str = "zeros", align: int = 0, name: str = "warp") -> Node:
    return Node("GridSample", ["x", "grid"], ["y"], {"mode": mode, "padding_mode": padding, "align_corners": align},
                name=name)


# ----------------------------------------------------------------------------- the catalogue

def test_the_catalogue_covers_every_mode_padding_alignment_and_storage_type():
    assert len({c.id for c in CASES}) == len(CASES)
    combos = {(c.mode, c.node.attr("padding_mode"), c.node.attr("align_corners"), c.x.dtype) for c in CASES}
    assert combos >= set(itertools.product(MODES, PADDINGS, (0, 1), DTYPES))
    for mode in MODES:
        assert {len(c.x.shape) for c in CASES if c.mode == mode} == {3, 4, 5}, mode
        assert {c.node.attr("mode") for c in CASES if c.mode == mode} == {mode, OPSET16_NAMES[mode]}, mode
        assert {c.layout for c in CASES if c.mode == mode} == {"NCHW", "NHWC"}, mode
    assert {c.grid.dtype for c in CASES} == {F32, F16, BF16, F64}
    assert any(c.node.attr("padding_mode") == "reflection" and c.node.attr("align_corners") and 1 in c.x.shape[2:]
               for c in CASES), "reflection over an axis of one pixel (span 0)"


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend_on_grids_reaching_outside_x(c: Case):
    x, grid = case_inputs(c)
    components = grid.reshape(-1, grid.shape[-1]).astype(np.float64)
    assert (components.min(axis=0) < -1).all() and (components.max(axis=0) > 3).all()  # padding matters
    kernel = c.kernel()
    assert [a.shape for a in kernel.args] == [physical(c, x).shape, grid.shape,
                                               physical(c, np.empty(c.output_shape)).shape]
    got = logical(c, run_fake(kernel, physical(c, x), grid))
    assert_matches(c, got, reference(c, x, grid))


def test_every_kernel_compiles_with_nvrtc_for_sm_75_and_sm_90():
    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    for arch in ("sm_75", "sm_90"):
        cubins = compile_many(kernels.items(), arch)
        assert set(cubins) == set(kernels)
        assert all(c.startswith(b"\x7fELF") for c in cubins.values()), arch


def test_opset_16_and_20_names_of_a_mode_give_the_same_kernel():
    x, grid = TensorType(F32, (1, 2, 5, 6)), TensorType(F32, (1, 3, 4, 2))
    for mode in MODES:
        assert (grid_sample_kernel(node(OPSET16_NAMES[mode]), x, grid).source
                == grid_sample_kernel(node(mode), x, grid).source)
    defaults = Node("GridSample", ["x", "grid"], ["y"], {}, name="warp")  # linear, zeros, align_corners 0
    assert grid_sample_kernel(defaults, x, grid).source == grid_sample_kernel(node(), x, grid).source


def test_the_kernels_use_the_reference_cubic_coefficient():
    assert CUBIC_A == reference_misc._CUBIC_A == -0.75


# ----------------------------------------------------------------------------- positions

@pytest.mark.parametrize("align, size", [(0, 8), (1, 9)])
def test_nearest_rounds_ties_to_even_as_the_reference_does(align, size):
    """Grid values that land exactly halfway between two pixels (exact in float32: the
    sizes make the steps powers of two) pick the even one, as numpy's rint."""
    if align:  # c = (g + 1) / 2 * (size - 1) = m + 0.5
        ties = (2 * np.arange(size - 1) + 1) / (size - 1) - 1
    else:  # c = ((g + 1) * size - 1) / 2 = m + 0.5
        ties = 2 * (np.arange(size - 1) + 1) / size - 1
    grid = np.stack(np.meshgrid(ties, ties[::-1]), axis=-1)[None].astype(np.float32)
    c = case("nearest", "zeros", align, F32, (1, 1, size, size), grid.shape[1:3])
    rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x = (100 * rows + columns).astype(np.float32)[None, None]  # each value tells where it is
    got = run_fake(c.kernel(), x, grid)
    np.testing.assert_array_equal(got, reference(c, x, grid))
    ties_to_even = [m + m % 2 for m in range(size - 1)]  # m + 0.5 -> the even of m and m + 1
    assert [int(v) % 100 for v in got[0, 0, 0]] == ties_to_even
    assert [int(v) // 100 for v in got[0, 0, :, 0]] == ties_to_even[::-1]


SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e30]


def special_grid(c: Case, values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """X, and a grid whose x components are ``values`` (cycled), its y components ordinary."""
    x, grid = case_inputs(c)
    grid[..., 1] = np.linspace(-0.8, 0.8, grid[..., 1].size).reshape(grid[..., 1].shape)
    grid[..., 0] = np.resize(np.array(values, np.float32), grid.shape[:-1])
    return x, grid


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [0, 1])
def test_non_finite_and_huge_grid_values_never_read_outside_x(mode, padding, align):
    """NaN, ±inf and ±1e30 positions (with ordinary ones, and paired with each other): the
    fake device faults on any load outside X or the grid."""
    c = case(mode, padding, align, F32, (1, 2, 4, 5), (5, 6))
    x, grid = special_grid(c, SPECIAL + [0.3])
    run_fake(c.kernel(), x, grid)
    grid[0, :, :, 1] = np.resize(np.array(SPECIAL[::-1], np.float32), grid.shape[1:3])
    run_fake(c.kernel(), x, grid)


@pytest.mark.parametrize("padding", PADDINGS)
def test_a_nan_position_gives_nan_as_in_the_reference_except_nearest_zeros_which_drops_it(padding):
    for mode in MODES:
        c = case(mode, padding, 0, F32, (1, 2, 4, 5), (3, 4))
        x, grid = special_grid(c, [np.nan])  # every position
        got = run_fake(c.kernel(), x, grid)
        if mode == "nearest" and padding == "zeros":  # rint(NaN) is outside X: weight 0
            assert (got == 0).all(), mode
        elif mode != "nearest":  # NaN weights
            assert np.isnan(got).all(), mode
        if padding != "reflection":  # (the reference reflects the garbage index a NaN casts to)
            with np.errstate(invalid="ignore"):
                want = reference(c, x, grid)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_positions_far_beyond_x_give_zero_or_the_edge(mode):
    """±1e30: zeros padding drops every tap (Y = 0); border padding samples the edge, as the
    reference samples the edge pixel's centre (align_corners: grid ±1). The reference itself
    is no oracle at 1e30: its int64 cast of such positions is undefined."""
    zeros, border = (case(mode, padding, 1, F32, (1, 2, 4, 5), (3, 4)) for padding in ("zeros", "border"))
    x, grid = special_grid(zeros, [1e30, -1e30])  # every position
    assert (run_fake(zeros.kernel(), x, grid) == 0).all()
    got = run_fake(border.kernel(), x, grid)
    edges = grid.copy()
    edges[..., 0] = np.sign(grid[..., 0])
    assert_matches(border, got, reference(border, x, edges))


@pytest.mark.parametrize("case_id", ["flow_warp-zeros-ac0-1x16x32x48-to-40x24-NCHW-float16-grid_float32-opset20",
                                     "upsample-border-ac1-1x8x17x13-to-21x19-NHWC-float32-grid_float32-opset20"])
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id):
    c = next(c for c in CASES if c.id == case_id)
    kernel = c.kernel()
    assert kernel.launch.grid() > 3
    x, grid = case_inputs(c)
    got = logical(c, run_fake(kernel, physical(c, x), grid, blocks=3))
    assert_matches(c, got, reference(c, x, grid))


# ----------------------------------------------------------------------------- shape-generic kernels

def generic_kernel(n: Node, shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], at: int, dtype: DType,
                   layout: str) -> KernelSource:
    """The kernel of a generic plan over ``shapes`` ((X, grid) pairs), planned at shape
    ``at``: each axis that differs between them a DimInt named for its place, as the plan
    builder names them (``rtxd_i1_2``: the grid's axis 2), ranging over 1..64."""
    values: dict[str, int] = {}
    types = []
    for k, (t, shape) in enumerate(zip((dtype, F32), shapes[at])):
        axes = []
        for axis, size in enumerate(shape):
            if len({s[k][axis] for s in shapes}) == 1:
                axes.append(size)
                continue
            values[f"rtxd_i{k}_{axis}"] = size
            axes.append(dim(size, f"rtxd_i{k}_{axis}", 1, 64))
        types.append(TensorType(t, tuple(axes)))
    with dim_bindings(values):
        return grid_sample_kernel(n, types[0], types[1], layout)


GENERIC = [  # (node, storage type, layout, (X, grid) at two shapes of one profile)
    (node("linear", "zeros", 0), F16, "NCHW", [((2, 3, 5, 7), (2, 4, 6, 2)), ((1, 3, 9, 3), (1, 7, 2, 2))]),
    (node("cubic", "reflection", 1), F32, "NCHW",
     [((1, 2, 3, 4, 5), (1, 2, 3, 2, 3)), ((2, 2, 2, 1, 6), (2, 3, 2, 4, 3))]),
    (node("nearest", "border", 0), BF16, "NHWC", [((2, 3, 6, 5), (2, 3, 4, 2)), ((1, 5, 2, 8), (1, 5, 3, 2))]),
]


@pytest.mark.parametrize("n, dtype, layout, shapes", GENERIC,
                         ids=lambda v: v.attr("mode") if isinstance(v, Node) else None)
def test_a_generic_kernel_is_one_source_right_at_every_shape(n, dtype, layout, shapes):
    kernels = [generic_kernel(n, shapes, at, dtype, layout) for at in range(len(shapes))]
    assert len({k.source for k in kernels}) == 1, "the source depends on the dims' values"
    assert len({k.name for k in kernels}) == 1
    for (x_shape, grid_shape), kernel in zip(shapes, kernels):
        assert kernel.dims, "the varying dims are kernel arguments"
        c = Case("generic", n, TensorType(dtype, x_shape), TensorType(F32, grid_shape), layout)
        x, grid = case_inputs(c)
        got = logical(c, run_fake(kernel, physical(c, x), grid))
        assert_matches(c, got, reference(c, x, grid))
    assert compile_many([(kernels[0].name, kernels[0].source)], "sm_86")


def test_a_kernel_of_fixed_shapes_takes_no_dim_arguments():
    kernel = CASES[0].kernel()
    assert kernel.dims == () and "rtxd_" not in kernel.source


# ----------------------------------------------------------------------------- the lowering and plans

def model_of(nodes: list[Node], inputs: dict[str, TensorType], outputs: list[str], opset: int = 20,
             initializers: dict[str, np.ndarray] | None = None) -> Model:
    graph = Graph(nodes, list(inputs), outputs, dict(inputs), dict(initializers or {}))
    return Model(graph, {"": opset})


def plan(model: Model, shapes: dict[str, tuple[int, ...]], **kw):
    return build_plan(model, shapes, arch="sm_86", sm_count=46, **kw)


def grid_sample_steps(p) -> list:
    return [s for s in p.steps if s.node is not None and s.node.op_type == "GridSample"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
def test_a_model_with_grid_sample_plans_without_host_steps(mode, padding):
    """The grid is a model input (data), not known when the plan is made."""
    for x, grid, opset in (((2, 3, 8, 9), (2, 5, 6, 2), 16), ((1, 2, 4, 5, 6), (1, 3, 3, 4, 3), 20)):
        name = OPSET16_NAMES[mode] if opset < 20 else mode
        n = node(name, padding, 1)
        model = model_of([n], {"x": TensorType(F32, x), "grid": TensorType(F32, grid)}, ["y"], opset)
        p = plan(model, {"x": x, "grid": grid})
        assert p.host_steps == []
        (step,) = grid_sample_steps(p)
        assert step.candidates[0].label == "grid_sample"
        (source,) = step.candidates[0].kernels.values()
        assert f"rtxrt GridSample kernel: {mode} {padding} align_corners=1" in source


def test_an_onnx_model_warping_a_convs_output_plans_on_the_gpu_at_any_precision():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from rtxrt.aot import compile_onnx
    from rtxrt.aot.options import AotOptions

    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("GridSample", ["c", "grid"], ["y"], mode="bilinear", padding_mode="border", name="warp")],
        "warp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"]),
                 helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["n", "ho", "wo", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, "ho", "wo"])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    onnx.checker.check_model(proto)
    shapes = {"x": (2, 3, 16, 16), "grid": (2, 9, 11, 2)}
    models = {precision: compile_onnx(proto, AotOptions(precision=precision)) for precision in ("fp32", "fp16")}
    for precision, model in models.items():
        p = plan(model, shapes)
        assert p.host_steps == [], precision
        (step,) = grid_sample_steps(p)
        assert step.candidates[0].label == "grid_sample"
    model = models["fp16"]  # a generic plan of it over a profile of batch and image sizes
    ranges = {"x": ((1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32)),
              "grid": ((1, 4, 4, 2), (2, 9, 11, 2), (4, 20, 20, 2))}
    dims = dim_ranges(model, sample_shapes(ranges))
    plans = [plan(model, s, dims=dims) for s in (shapes, {"x": (3, 3, 20, 24), "grid": (3, 5, 7, 2)})]
    assert all(p.host_steps == [] for p in plans)
    sources = [grid_sample_steps(p)[0].candidates[0].kernels for p in plans]
    assert sources[0] == sources[1], "a generic plan's GridSample is one kernel at every shape"


def test_a_channels_last_x_is_sampled_as_stored_without_a_conversion():
    """Where X is stored NHWC (as a layout pass marks a conv region's values), the kernel
    reads it channels-last and writes Y channels-last."""
    rng = np.random.default_rng(1)
    nodes = [Node("Conv", ["x", "w"], ["c"], {"pads": [1, 1, 1, 1]}, name="conv"),
             Node("GridSample", ["c", "grid"], ["y"], {"mode": "cubic", "padding_mode": "border"}, name="warp")]
    model = model_of(nodes, {"x": TensorType(F32, (1, 3, 8, 8)), "grid": TensorType(F32, (1, 5, 6, 2))}, ["y"],
                     initializers={"w": rng.random((4, 3, 3, 3), np.float32)})
    model.graph.storage["c"] = Storage(F32, NHWC)
    p = plan(model, {"x": (1, 3, 8, 8), "grid": (1, 5, 6, 2)})
    assert p.host_steps == []
    (step,) = grid_sample_steps(p)
    assert step.candidates[0].outputs[0].layout == NHWC
    assert not any(s.label.startswith("convert c") for s in p.steps)
    assert "NHWC" in next(iter(step.candidates[0].kernels.values())).splitlines()[0]


def context(x: TensorForm, grid: TensorForm, n: Node | None = None) -> LowerContext:
    out = TensorForm(x.dtype, (x.shape[0], x.shape[1], *grid.shape[1:-1]), x.layout)
    return LowerContext(n or node(), [x, grid], [out], [None, None], 20, "sm_86", 46)


def test_a_channels_last_grid_is_asked_for_in_the_logical_layout():
    x = TensorForm(F32, (1, 3, 8, 8), NHWC)
    grid = TensorForm(F32, (1, 5, 6, 2), NHWC)
    with pytest.raises(WrongForm, match="warp") as raised:
        lower_grid_sample(context(x, grid))
    assert raised.value.wanted == {1: TensorForm(F32, (1, 5, 6, 2))}
    (program,) = lower_grid_sample(context(x, grid.logical))
    assert program.outputs[0] == TensorForm(F32, (1, 3, 5, 6), NHWC)


@pytest.mark.parametrize("x, grid, n, message", [
    (TensorType(F64, (1, 2, 4, 4)), TensorType(F32, (1, 3, 3, 2)), node(), "not float64"),
    (TensorType(DType.INT32, (1, 2, 4, 4)), TensorType(F32, (1, 3, 3, 2)), node(), "not int32"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(DType.INT64, (1, 3, 3, 2)), node(), "float tensor"),
    (TensorType(F32, (1, 1, 2, 2, 2, 2)), TensorType(F32, (1, 1, 1, 1, 1, 4)), node(), "1 to 3 spatial axes"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (1, 3, 3, 3)), node(), "does not fit"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (1, 3, 3, 2)), node("area"), "mode 'area'"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (1, 3, 3, 2)), node(padding="wrap"), "padding_mode 'wrap'"),
    (TensorType(F32, (1, 2, 0, 4)), TensorType(F32, (1, 3, 3, 2)), node(), "empty spatial axis"),
])
def test_what_is_not_generated_is_a_codegen_error_naming_the_node(x, grid, n, message):
    with pytest.raises(CodegenError, match=message) as raised:
        grid_sample_kernel(n, x, grid)
    assert "warp" in str(raised.value)


def test_the_lowering_refuses_float64_x_so_the_node_runs_on_the_host_saying_why():
    with pytest.raises(Unsupported, match="warp.*float64"):
        lower_grid_sample(context(TensorForm(F64, (1, 2, 4, 4)), TensorForm(F32, (1, 3, 3, 2))))
    model = model_of([node()], {"x": TensorType(F64, (1, 2, 4, 4)), "grid": TensorType(F32, (1, 3, 3, 2))}, ["y"])
    p = plan(model, {"x": (1, 2, 4, 4), "grid": (1, 3, 3, 2)})
    (step,) = p.host_steps
    assert "warp" in step.why_host and "float64" in step.why_host


def test_channels_last_is_for_4d_x_only():
    with pytest.raises(CodegenError, match="warp.*NHWC for 4-D"):
        grid_sample_kernel(node(), TensorType(F32, (1, 2, 3, 4, 4)), TensorType(F32, (1, 2, 2, 2, 3)), "NHWC")
