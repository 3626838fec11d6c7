"""Generated RoiAlign kernels (rtxrt/backends/cuda/ops/roi_align_source.py) without a GPU.

Every kernel of ``CASES`` (each mode x coordinate_transformation_mode x sampling ratio 0 and
2 x fp32 and fp16, channels-first and channels-last X, bf16 X, fp16 and bf16 rois, opset 10's
and 16's defaults, odd ratios, spatial scales from 1 to 1/16 and 0.1, a detector-sized
feature map) runs on the fake device on boxes partly outside the image, tiny, huge, malformed
and random, over several images of the batch, and agrees with the reference backend
(rtxrt/backends/reference/ops/misc.py) within one rounding to X's type (float32: 1e-5 of the
largest |Y|); every kernel compiles with NVRTC for sm_75 and sm_90. Then: the adaptive
sample count where fp32 and float64 disagree, ONNX's own RoiAlign node tests, batch indices
outside X, a grid smaller than the work, shape-generic kernels (R, N, H and W varying),
models planned wholly on the GPU (rois from a graph input, a channels-last feature map read
as stored, a generic plan over the number of boxes), a detector head on the fake device's
engine, and what is not generated (a CodegenError naming the node).

``CASES``, ``case_inputs``, ``physical``, ``reference`` and ``assert_matches`` are what
tests/backends/cuda/test_gpu_roi_align.py runs on the device.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS
from rtxrt.backends.cuda.ops.context import LowerContext, Unsupported
from rtxrt.backends.cuda.ops.roi_align import lower_roi_align
from rtxrt.backends.cuda.ops.roi_align_source import roi_align_kernel
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.forms import NHWC, TensorForm
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, Storage, TensorType
from tests.fake_gpu.device import FakeDevice

from .helpers import random, storage

F32, F16, BF16, F64, I64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.INT64
MODES = ("avg", "max")
COORDINATES = ("half_pixel", "output_half_pixel")
TOLERANCE = {F32: 1e-5, F16: 1e-3, BF16: 1e-2}  # of max |Y|: one rounding to the storage type


@dataclass(frozen=True)
class Case:
    """RoiAlign ``node`` at ``opset`` on X (``x``: storage dtype, logical shape, stored in
    ``layout``) over ``rois`` boxes of ``rois_dtype``."""

    id: str
    node: Node
    x: TensorType
    rois: int
    rois_dtype: DType = F32
    layout: str = "NCHW"
    opset: int = 16

    @property
    def scale(self) -> float:
        return float(self.node.attr("spatial_scale", 1.0))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.rois, self.x.shape[1], self.node.attr("output_height", 1), self.node.attr("output_width", 1))

    def kernel(self) -> KernelSource:
        return roi_align_kernel(self.node, self.opset, self.x, TensorType(self.rois_dtype, (self.rois, 4)), self.layout)


def node(mode: str = "avg", coordinates: str | None = "half_pixel", ratio: int = 0, pooled: tuple[int, int] = (3, 2),
         scale: float = 1.0, name: str = "box_head") -> Node:
    attrs = {"mode": mode, "output_height": pooled[0], "output_width": pooled[1], "sampling_ratio": ratio,
             "spatial_scale": float(np.float32(scale))}  # a float attribute, as ONNX stores it
    if coordinates is not None:  # else the opset's default
        attrs["coordinate_transformation_mode"] = coordinates
    return Node("RoiAlign", ["x", "rois", "batch_indices"], ["y"], attrs, name=name)


def case(mode: str, coordinates: str | None, ratio: int, dtype: DType, x: tuple[int, ...], rois: int,
         pooled: tuple[int, int], scale: float, *, layout: str = "NCHW", rois_dtype: DType = F32, opset: int = 16,
         label: str = "") -> Case:
    n = node(mode, coordinates, ratio, pooled, scale)
    return Case(f"{label or mode}-{coordinates or 'default'}-ratio{ratio}-{'x'.join(map(str, x))}-{rois}rois"
                f"-to-{pooled[0]}x{pooled[1]}-scale{scale:g}-{layout}-{dtype.short}-rois_{rois_dtype.short}"
                f"-opset{opset}", n, TensorType(dtype, x), rois, rois_dtype, layout, opset)


SHAPES = [  # X, boxes, output size, spatial scale
    ((2, 3, 9, 11), 7, (3, 2), 0.5),
    ((3, 2, 6, 5), 9, (2, 4), 1.0),
    ((1, 4, 12, 7), 6, (1, 1), 0.25),
    ((2, 2, 5, 16), 8, (4, 3), 0.0625),
]

CASES: list[Case] = [
    # every mode x coordinate mode x adaptive / fixed ratio x fp32 / fp16; the shapes rotate
    *(case(mode, coordinates, ratio, dtype, *SHAPES[i % len(SHAPES)])
      for i, (mode, coordinates, ratio, dtype) in enumerate(itertools.product(MODES, COORDINATES, (0, 2), (F32, F16)))),
    # X channels-last (C = 5, not a power of two)
    *(case(mode, coordinates, 2 * (i % 2), (F32, F16, BF16)[i % 3], (2, 5, 7, 8), 6, (2, 3), 0.5, layout="NHWC")
      for i, (mode, coordinates) in enumerate(itertools.product(MODES, COORDINATES))),
    case("avg", "half_pixel", 0, BF16, (2, 3, 8, 6), 5, (2, 2), 0.5),
    case("max", "output_half_pixel", 2, BF16, (1, 2, 7, 9), 6, (3, 3), 1.0),
    # rois narrower than X
    case("avg", "half_pixel", 2, F32, (2, 3, 10, 10), 7, (2, 2), 0.5, rois_dtype=F16),
    case("max", "half_pixel", 0, F16, (2, 3, 10, 10), 7, (2, 2), 0.5, rois_dtype=BF16),
    # the attribute left to the opset: output_half_pixel at opset 10, half_pixel at 16
    case("avg", None, 0, F32, (2, 3, 8, 9), 6, (3, 3), 0.5, opset=10),
    case("max", None, 2, F32, (2, 3, 8, 9), 6, (3, 3), 0.5, opset=10),
    case("avg", None, 2, F16, (2, 3, 8, 9), 6, (3, 3), 0.5),
    # odd fixed ratios, a scale that is no power of two
    case("avg", "output_half_pixel", 1, F32, (1, 3, 9, 9), 6, (2, 3), 1.0),
    case("max", "half_pixel", 3, F32, (1, 3, 9, 9), 6, (2, 3), 0.1),
    case("avg", "half_pixel", 0, F32, (2, 2, 9, 9), 8, (3, 2), 0.1),
    # a Mask R-CNN sized head: 7x7 bins over a stride-16 feature map
    case("avg", "output_half_pixel", 2, F16, (2, 16, 25, 34), 20, (7, 7), 0.0625, label="box_head"),
    case("avg", "half_pixel", 0, F32, (1, 8, 25, 34), 12, (7, 7), 0.0625, layout="NHWC", label="adaptive_head"),
]


def sample_rois(rng: np.random.Generator, count: int, height: int, width: int, scale: float) -> np.ndarray:
    """[count, 4] boxes (x1, y1, x2, y2) in input coordinates (feature pixels / scale): one of
    each kind first (partly outside the image, a fifth of a pixel, three times the image,
    malformed (x2 < x1, y2 < y1), the whole image, integer corners), then random boxes of a
    fifth of a pixel to 1.5 images, centred from a fifth of the image before it to after it."""
    h, w = float(height), float(width)
    kinds = [[-0.3 * w, -0.4 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.4 * w + 0.2, 0.3 * h + 0.15],
             [-w, -h, 2 * w, 2 * h], [0.7 * w, 0.8 * h, 0.2 * w, 0.1 * h], [0.0, 0.0, w, h],
             [1.0, 2.0, w - 2, h - 1]]
    centres = rng.uniform(-0.2, 1.2, (count, 2)) * [w, h]
    sizes = np.exp(rng.uniform(np.log(0.2), np.log(1.5 * max(h, w)), (count, 2)))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    boxes[: len(kinds)] = np.array(kinds)[:count]
    return boxes / scale


def case_inputs(c: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (logical, storage type, never zero), the rois (``sample_rois``, stored as the case
    says) and batch indices (seeded by the case) naming the first and the last image and random
    ones between."""
    rng = np.random.default_rng(zlib.crc32(c.id.encode()))
    n, _, h, w = c.x.shape
    x = random(rng, tuple(c.x.shape), c.x.dtype)
    rois = sample_rois(rng, c.rois, h, w, c.scale).astype(storage(c.rois_dtype))
    batch = rng.integers(0, n, c.rois).astype(np.int64)
    batch[:2] = [0, n - 1]
    return x, rois, batch


def physical(c: Case, x: np.ndarray) -> np.ndarray:
    """X as the kernel reads it (channels-last for NHWC)."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1) if c.layout == "NHWC" else x)


def reference(c: Case, x: np.ndarray, rois: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """The reference backend's Y for the stored values, in float64."""
    kernel = find_kernel("RoiAlign")(c.node, c.opset, None)
    return kernel.run(x.astype(np.float64), rois.astype(np.float64), batch)


def assert_matches(c: Case, got: np.ndarray, want: np.ndarray) -> None:
    """Within TOLERANCE of the largest |Y| (fp32 sampling and blending, one rounding to the
    storage type); NaN (an unwritten output) fails."""
    got = got.astype(np.float64)
    assert got.shape == want.shape, (c.id, got.shape, want.shape)
    assert not np.isnan(got).any(), f"{c.id}: {int(np.isnan(got).sum())} outputs unwritten (NaN)"
    error, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    assert error <= TOLERANCE[c.x.dtype] * scale, f"{c.id}: max |Y - ref| = {error:.3g} of max |ref| {scale:.3g}"


def run_fake(kernel: KernelSource, x: np.ndarray, rois: np.ndarray, batch: np.ndarray,
             blocks: int | None = None) -> np.ndarray:
    """``kernel`` on the fake device (faults on any read outside X, the rois or the batch
    indices) into a NaN-poisoned Y; returns Y as stored."""
    device = FakeDevice(32 << 20)
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(kernel.source.encode())

    def on_device(a: np.ndarray):
        a = np.ascontiguousarray(a)
        return cupy.asarray(a.view(np.uint16) if a.itemsize == 2 else a)

    (out,) = kernel.outputs
    y = on_device(np.full(out.shape, np.nan, storage(out.dtype)))
    args = (on_device(x), on_device(rois), on_device(batch), y, *(np.int32(d) for d in kernel.dims))
    module.get_function(kernel.name)((kernel.launch.grid() if blocks is None else blocks, 1, 1),
                                     (kernel.launch.block, 1, 1), args)
    stored = y.get()
    return stored.view(storage(out.dtype)) if stored.itemsize == 2 else stored


# ----------------------------------------------------------------------------- the catalogue

def test_the_catalogue_covers_every_mode_coordinate_mode_ratio_and_type():
    assert len({c.id for c in CASES}) == len(CASES)
    combos = {(c.node.attr("mode"), c.node.attr("coordinate_transformation_mode"), c.node.attr("sampling_ratio"),
               c.x.dtype) for c in CASES}
    assert combos >= set(itertools.product(MODES, COORDINATES, (0, 2), (F32, F16)))
    for mode in MODES:
        assert {c.layout for c in CASES if c.node.attr("mode") == mode} == {"NCHW", "NHWC"}
    assert {c.x.dtype for c in CASES} == {F32, F16, BF16} and {c.rois_dtype for c in CASES} == {F32, F16, BF16}
    assert {c.opset for c in CASES if "coordinate_transformation_mode" not in c.node.attrs} == {10, 16}


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_kernel_matches_the_reference_backend_on_boxes_inside_outside_tiny_huge_and_malformed(c: Case):
    x, rois, batch = case_inputs(c)
    kernel = c.kernel()
    assert [a.shape for a in kernel.args] == [physical(c, x).shape, rois.shape, batch.shape, c.output_shape]
    want = reference(c, x, rois, batch)
    assert_matches(c, run_fake(kernel, physical(c, x), rois, batch), want)
    assert (want[:2] != 0).any(axis=(1, 2, 3)).all(), "the first and the last image are sampled"


def test_every_kernel_compiles_with_nvrtc_for_sm_75_and_sm_90():
    kernels = {k.name: k.source for k in (c.kernel() for c in CASES)}
    for arch in ("sm_75", "sm_90"):
        cubins = compile_many(kernels.items(), arch)
        assert set(cubins) == set(kernels)
        assert all(c.startswith(b"\x7fELF") for c in cubins.values()), arch


# ----------------------------------------------------------------------------- semantics

TIE_ROIS = np.array([[0.0, 0.0, 60.0, 60.0], [10.0, 0.0, 70.0, 40.0], [0.0, 20.0, 30.0, 50.0]], np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_an_adaptive_count_at_an_integer_is_the_reference_float64_count(mode):
    """At spatial_scale 0.1 a box 60 wide is 6.0000000894 feature pixels: ceil(size / 2) is 4
    in float64 (the reference) and 3 in fp32 (where 60 * 0.1f rounds to 6). The kernel counts 4."""
    c = case(mode, "output_half_pixel", 0, F32, (1, 2, 8, 8), len(TIE_ROIS), (2, 2), 0.1)
    x, _, _ = case_inputs(c)
    rois, batch = TIE_ROIS, np.zeros(len(TIE_ROIS), np.int64)
    assert np.float32(60) * np.float32(0.1) == 6  # fp32 alone would count 3 samples
    want = reference(c, x, rois, batch)
    counted = {ratio: reference(case(mode, "output_half_pixel", ratio, F32, (1, 2, 8, 8), 3, (2, 2), 0.1), x, rois,
                                batch) for ratio in (3, 4)}
    np.testing.assert_array_equal(want[0], counted[4][0])
    assert np.abs(want[0] - counted[3][0]).max() > 1e-3
    assert_matches(c, run_fake(c.kernel(), x, rois, batch), want)


def onnx_node_cases() -> list[tuple[Node, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """ONNX's own RoiAlign node tests (aligned true and false, max mode): the node (named for
    the test), X, rois, batch indices and the expected Y."""
    from tests.conformance.onnx_suite import _cases

    def array(value) -> np.ndarray:
        return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value

    cases = []
    for t in _cases("node"):
        if not t.name.startswith("test_roialign"):
            continue
        proto = t.model.graph.node[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        (inputs, (want,)), = t.data_sets
        n = Node("RoiAlign", list(proto.input), list(proto.output), attrs, name=t.name)
        cases.append((n, *(array(a) for a in inputs), array(want)))
    return cases


def test_onnx_node_tests_of_roi_align_pass_on_the_fake_device():
    """Their expected Y, to the 4 decimals most of them are written with."""
    cases = onnx_node_cases()
    assert {n.name for n, *_ in cases} == {"test_roialign_aligned_false", "test_roialign_aligned_true",
                                           "test_roialign_mode_max"}
    for n, x, rois, batch, want in cases:
        kernel = roi_align_kernel(n, 16, TensorType(F32, x.shape), TensorType(F32, rois.shape))
        np.testing.assert_allclose(run_fake(kernel, x, rois, batch), want, atol=1e-4, err_msg=n.name)


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_index_outside_x_gives_zeros(mode):
    """The reference refuses such a box (numpy's IndexError); the kernel reads nothing for it."""
    c = case(mode, "half_pixel", 0, F32, (2, 3, 6, 7), 4, (2, 2), 1.0)
    x, rois, _ = case_inputs(c)
    batch = np.array([0, 2, -1, 1], np.int64)
    got = run_fake(c.kernel(), x, rois, batch)
    assert (got[1:3] == 0).all()
    keep = [0, 3]
    assert_matches(c, got[keep], reference(c, x, rois[keep], batch[keep]))


def test_a_nan_box_samples_nothing_and_reads_inside_x():
    c = case("avg", "half_pixel", 0, F32, (1, 2, 6, 7), 3, (2, 2), 1.0)
    x, rois, batch = case_inputs(c)
    rois[1] = [np.nan, 1.0, np.inf, 3.0]
    rois[2] = [-np.inf, -1e30, 1e30, np.inf]
    got = run_fake(c.kernel(), x, rois, batch)
    assert (got[1:] == 0).all()
    assert_matches(c, got[:1], reference(c, x, rois[:1], batch[:1]))


@pytest.mark.parametrize("case_id", [c.id for c in CASES if c.id.startswith(("box_head", "adaptive_head"))])
def test_a_grid_smaller_than_the_work_loops_over_all_of_it(case_id):
    c = next(c for c in CASES if c.id == case_id)
    kernel = c.kernel()
    assert kernel.launch.grid() > 3
    x, rois, batch = case_inputs(c)
    assert_matches(c, run_fake(kernel, physical(c, x), rois, batch, blocks=3), reference(c, x, rois, batch))


# ----------------------------------------------------------------------------- shape-generic kernels

def generic_kernel(n: Node, shapes: list[tuple[tuple[int, ...], int]], at: int, dtype: DType,
                   layout: str) -> KernelSource:
    """The kernel of a generic plan over ``shapes`` ((X, boxes) pairs), planned at shape
    ``at``: each axis that differs between them a DimInt named for its place, as the plan
    builder names them (``rtxd_i1_0``: the rois' axis 0), ranging over 1..256."""
    values: dict[str, int] = {}
    types = []
    for k, (t, shape) in enumerate(zip((dtype, F32), (shapes[at][0], (shapes[at][1], 4)))):
        axes = []
        for axis, size in enumerate(shape):
            if len({(s[0], (s[1], 4))[k][axis] for s in shapes}) == 1:
                axes.append(size)
                continue
            values[f"rtxd_i{k}_{axis}"] = size
            axes.append(dim(size, f"rtxd_i{k}_{axis}", 1, 256))
        types.append(TensorType(t, tuple(axes)))
    with dim_bindings(values):
        return roi_align_kernel(n, 16, types[0], types[1], layout)


GENERIC = [  # (node, storage type, layout, (X, boxes) at two shapes of one profile)
    (node("avg", "output_half_pixel", 2, (7, 7), 0.25), F16, "NCHW", [((2, 4, 9, 12), 5), ((2, 4, 9, 12), 23)]),
    (node("max", "half_pixel", 0, (3, 2), 0.5), F32, "NCHW", [((1, 3, 6, 8), 4), ((3, 3, 11, 5), 9)]),
    (node("avg", "half_pixel", 0, (2, 3), 1.0), BF16, "NHWC", [((2, 5, 7, 6), 6), ((1, 5, 4, 9), 3)]),
]


@pytest.mark.parametrize("n, dtype, layout, shapes", GENERIC,
                         ids=lambda v: v.attr("mode") if isinstance(v, Node) else None)
def test_a_generic_kernel_is_one_source_right_at_every_shape(n, dtype, layout, shapes):
    kernels = [generic_kernel(n, shapes, at, dtype, layout) for at in range(len(shapes))]
    assert len({k.source for k in kernels}) == 1, "the source depends on the dims' values"
    for (x_shape, count), kernel in zip(shapes, kernels):
        assert kernel.dims, "the varying dims are kernel arguments"
        c = Case("generic", n, TensorType(dtype, x_shape), count, F32, layout)
        x, rois, batch = case_inputs(c)
        assert_matches(c, run_fake(kernel, physical(c, x), rois, batch), reference(c, x, rois, batch))
    assert compile_many([(kernels[0].name, kernels[0].source)], "sm_86")


def test_a_kernel_of_fixed_shapes_takes_no_dim_arguments():
    kernel = CASES[0].kernel()
    assert kernel.dims == () and "rtxd_" not in kernel.source


# ----------------------------------------------------------------------------- the lowering and plans

ROIS = 9


def detector_head(opset: int = 16, mode: str = "avg", rois: int | str = ROIS) -> onnx.ModelProto:
    """Conv(3->8, 3x3, stride 2) + Relu, RoiAlign 3x3 (sampling ratio 2) of the boxes (a graph
    input, as a region proposal network's output) at spatial scale 1/2, then a linear classifier."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    fc = numpy_helper.from_array((rng.standard_normal((8 * 3 * 3, 4)) * 0.2).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["features"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["features"], ["relu"]),
        helper.make_node("RoiAlign", ["relu", "boxes", "box_images"], ["pooled"], mode=mode, output_height=3,
                         output_width=3, sampling_ratio=2, spatial_scale=0.5, name="box_align"),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["scores"]),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 32, 40]),
              helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [rois, 4]),
              helper.make_tensor_value_info("box_images", TensorProto.INT64, [rois])]
    graph = helper.make_graph(nodes, "head", inputs, [helper.make_tensor_value_info("scores", TensorProto.FLOAT,
                                                                                    [rois, 4])], [w, fc])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def head_feeds(rng: np.random.Generator, rois: int = ROIS) -> dict[str, np.ndarray]:
    return {"image": rng.standard_normal((2, 3, 32, 40)).astype(np.float32),
            "boxes": sample_rois(rng, rois, 16, 20, 0.5).astype(np.float32),
            "box_images": rng.integers(0, 2, rois).astype(np.int64)}


def plan(model: Model, shapes: dict[str, tuple[int, ...]], **kw):
    return build_plan(model, shapes, arch="sm_86", sm_count=46, **kw)


def roi_align_steps(p) -> list:
    return [s for s in p.steps if s.node is not None and s.node.op_type == "RoiAlign"]


HEAD_SHAPES = {"image": (2, 3, 32, 40), "boxes": (ROIS, 4), "box_images": (ROIS,)}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("opset, mode", [(10, "avg"), (16, "max")])
def test_a_detector_head_plans_every_node_on_the_gpu(precision, opset, mode):
    model = compile_onnx(detector_head(opset, mode), AotOptions(precision=precision))
    p = plan(model, HEAD_SHAPES)
    assert p.host_steps == []
    (step,) = roi_align_steps(p)
    assert step.candidates[0].label == "roi_align"
    kernels = {name: source for c in step.candidates for name, source in c.kernels.items()}
    coordinates = "output_half_pixel" if opset == 10 else "half_pixel"
    assert all(f"rtxrt RoiAlign kernel: {mode} {coordinates}" in source for source in kernels.values())
    for arch in SUPPORTED_ARCHS:
        assert set(compile_many(kernels.items(), arch)) == set(kernels)


def test_a_generic_plan_over_the_number_of_boxes_is_one_kernel():
    """The boxes follow the proposals: R varies over the profile, the kernel takes it as an argument."""
    model = compile_onnx(detector_head(rois="r"), AotOptions(precision="fp16"))
    ranges = {"image": ((2, 3, 32, 40),) * 3, "boxes": ((1, 4), (ROIS, 4), (300, 4)),
              "box_images": ((1,), (ROIS,), (300,))}
    dims = dim_ranges(model, sample_shapes(ranges))
    plans = [plan(model, {"image": (2, 3, 32, 40), "boxes": (r, 4), "box_images": (r,)}, dims=dims)
             for r in (ROIS, 200)]
    assert all(p.host_steps == [] for p in plans)
    sources = [roi_align_steps(p)[0].candidates[0].kernels for p in plans]
    assert sources[0] == sources[1], "one kernel at every number of boxes"
    launches = [roi_align_steps(p)[0].candidates[0].steps[0] for p in plans]
    assert [launch.dims for launch in launches] == [(ROIS,), (200,)]


def model_of(nodes: list[Node], inputs: dict[str, TensorType], outputs: list[str], opset: int = 16,
             initializers: dict[str, np.ndarray] | None = None) -> Model:
    graph = Graph(nodes, list(inputs), outputs, dict(inputs), dict(initializers or {}))
    return Model(graph, {"": opset})


def test_a_channels_last_feature_map_is_read_as_stored_without_a_conversion():
    """Where X is stored NHWC (as a layout pass marks a conv region's values), the kernel reads
    it channels-last and writes Y logical."""
    rng = np.random.default_rng(1)
    align = node("max", "half_pixel", 0, (2, 2), 0.5)
    nodes = [Node("Conv", ["x", "w"], ["c"], {"pads": [1, 1, 1, 1]}, name="conv"),
             Node("RoiAlign", ["c", "rois", "batch_indices"], ["y"], align.attrs, name=align.name)]
    model = model_of(nodes, {"x": TensorType(F32, (1, 3, 8, 8)), "rois": TensorType(F32, (5, 4)),
                             "batch_indices": TensorType(I64, (5,))}, ["y"],
                     initializers={"w": rng.random((4, 3, 3, 3), np.float32)})
    model.graph.storage["c"] = Storage(F32, NHWC)
    p = plan(model, {"x": (1, 3, 8, 8), "rois": (5, 4), "batch_indices": (5,)})
    assert p.host_steps == []
    (step,) = roi_align_steps(p)
    assert step.candidates[0].outputs[0] == TensorForm(F32, (5, 4, 2, 2))
    assert not any(s.label.startswith("convert c") for s in p.steps)
    assert "NHWC" in next(iter(step.candidates[0].kernels.values())).splitlines()[0]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_detector_head_on_the_fake_device_equals_the_reference(monkeypatch, precision):
    """The whole head on the fake device (tests/fake_gpu): the conv on cuBLAS, the RoiAlign
    kernel interpreted, replayed on new boxes."""
    from tests.fake_gpu.device import LaunchRecord
    from tests.fake_gpu.engine import check_model, cublas_tactic

    device = FakeDevice().install(monkeypatch)
    rng = np.random.default_rng(2)
    runs = check_model(device, detector_head(), [head_feeds(rng), head_feeds(rng)], precision, prefer=cublas_tactic)
    launched = [r for r in runs[1].records if isinstance(r, LaunchRecord) and r.kernel.startswith("rtx_roi_align_")]
    assert len(launched) == 1 and launched[0].executed


def context(x: TensorForm, rois: TensorForm, batch: TensorForm, n: Node | None = None) -> LowerContext:
    out = TensorForm(x.dtype, (rois.shape[0], x.shape[1], 3, 2))
    return LowerContext(n or node(), [x, rois, batch], [out], [None, None, None], 16, "sm_86", 46)


@pytest.mark.parametrize("x, rois, n, message", [
    (TensorType(F64, (1, 2, 4, 4)), TensorType(F32, (3, 4)), node(), "not float64"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F64, (3, 4)), node(), "float64"),
    (TensorType(F32, (1, 2, 4, 4, 4)), TensorType(F32, (3, 4)), node(), r"X \[N, C, H, W\]"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (3, 5)), node(), r"rois \[R, 4\]"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (3, 4)), node("min"), "mode 'min'"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (3, 4)), node(coordinates="align_corners"), "'align_corners'"),
    (TensorType(F32, (1, 2, 4, 4)), TensorType(F32, (3, 4)), node(pooled=(0, 2)), "at least 1x1"),
    (TensorType(F32, (1, 2, 0, 4)), TensorType(F32, (3, 4)), node(), "no pixels"),
])
def test_what_is_not_generated_is_a_codegen_error_naming_the_node(x, rois, n, message):
    with pytest.raises(CodegenError, match=message) as raised:
        roi_align_kernel(n, 16, x, rois)
    assert "box_head" in str(raised.value)


def test_the_lowering_refuses_int32_batch_indices_so_the_node_runs_on_the_host_saying_why():
    with pytest.raises(Unsupported, match="box_head.*int64 batch_indices"):
        lower_roi_align(context(TensorForm(F32, (1, 2, 4, 4)), TensorForm(F32, (3, 4)),
                                TensorForm(DType.INT32, (3,))))
    model = model_of([node()], {"x": TensorType(F32, (1, 2, 4, 4)), "rois": TensorType(F32, (3, 4)),
                                "batch_indices": TensorType(DType.INT32, (3,))}, ["y"])
    p = plan(model, {"x": (1, 2, 4, 4), "rois": (3, 4), "batch_indices": (3,)})
    (step,) = p.host_steps
    assert "box_head" in step.why_host and "int64" in step.why_host
