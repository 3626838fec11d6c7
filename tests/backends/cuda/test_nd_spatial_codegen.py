"""ConvTranspose and pooling over 1, 2 and 3 spatial axes, and MaxPool's Indices, without a GPU.

- ``POOL_CASES`` (MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool over 1-D, 2-D and
  3-D inputs; ceil_mode, count_include_pad, dilations, auto_pad; Indices in both storage
  orders and both layouts; fp32, fp16, bf16) compiles with NVRTC for every supported arch,
  declares the buffers the reference computes, and, run by the fake device's interpreter,
  gives the reference backend's results. tests/backends/cuda/test_gpu_spatial.py runs the same
  catalogue on the GPU.
- The ConvTranspose catalogue (tests/backends/cuda/test_spatial_codegen.py CASES, now 1-D to 3-D)
  runs on the fake device against the reference too.
- Models a user brings (a 3-D UNet's ConvTranspose, a video classifier's 3-D MaxPool and
  AveragePool, a SegNet-style MaxPool with Indices, after channels-last convs or not) plan
  with every node on the GPU for sm_86, and run whole on the fake device as the reference.
- In a generic plan a 3-D kernel's batch and spatial dims are kernel arguments: one source
  for every shape of the profile.

Tolerances against the reference run on the stored values widened to float64 (the GPU test's):
MaxPool's Y and every Index exact (the kernel copies the value the reference picks, the first
of equal ones; inputs on a 1/4 grid make ties common); averages and ConvTranspose within
1e-5 (fp32 sums), 1e-3 (fp16) and 1e-2 (bf16: one rounding at the store).
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.conv_transpose_source import conv_transpose_kernel
from rtxrt.backends.cuda.ops.pool_source import pool_kernel
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.cuda.plan.forms import NHWC
from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from tests.fake_gpu import FakeDevice
from tests.fake_gpu.engine import check_model, cublas_tactic
from tests.fake_gpu.kernels import run_kernel
from tests.helpers import make_model

from .helpers import check_close, compile_for_every_arch, storage
from .test_spatial_codegen import CASES as SPATIAL_CASES

F32, F16, BF16, I64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.INT64
TOLERANCE = {F32: 1e-5, F16: 1e-3, BF16: 1e-2}
FLOAT = TensorProto.FLOAT


@dataclass(frozen=True)
class PoolCase:
    """``op`` on a logical (N, C, *spatial) ``shape`` stored as ``dtype`` in ``layout``;
    ``indices``: MaxPool writes its Indices too."""

    id: str
    op: str
    shape: tuple[int, ...]
    dtype: DType
    layout: str = "NCHW"
    attrs: Mapping[str, Any] = field(default_factory=dict)
    indices: bool = False

    @property
    def node(self) -> Node:
        return Node(self.op, ["x"], ["y", "indices"] if self.indices else ["y"], dict(self.attrs), name=self.id)

    def physical(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape if self.layout == "NCHW" else (shape[0], *shape[2:], shape[1])

    def kernel(self) -> KernelSource:
        return pool_kernel(self.op, self.physical(self.shape), self.dtype, self.attrs, self.layout, self.indices)


def pool(op: str, label: str, shape: tuple[int, ...], dtype: DType, layout: str = "NCHW", *, indices: bool = False,
         **attrs) -> PoolCase:
    suffix = "-indices" if indices else ""
    return PoolCase(f"{op}-{label}-{'x'.join(map(str, shape))}-{layout}-{dtype.short}{suffix}", op, shape, dtype,
                    layout, attrs, indices)


C3D_POOL = {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}
R3D_STEM = {"kernel_shape": [3, 3, 3], "strides": [1, 2, 2], "pads": [1, 1, 1, 1, 1, 1]}
POOL_CASES: list[PoolCase] = [
    # 1-D (the AOT pass makes a model's 1-D pools 2-D; the generator takes them as they are)
    pool("MaxPool", "k3s2p1", (2, 5, 11), F32, kernel_shape=[3], strides=[2], pads=[1, 1]),
    pool("AveragePool", "k3s2_ceil_incl", (2, 5, 10), F16, kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1,
         count_include_pad=1),
    pool("MaxPool", "k2s2", (1, 3, 9), BF16, "NHWC", kernel_shape=[2], strides=[2], indices=True, storage_order=1),
    # 2-D with Indices (SegNet's k2s2, then pads, dilations, ceil_mode), both storage orders and layouts
    pool("MaxPool", "k2s2", (2, 6, 8, 10), F32, kernel_shape=[2, 2], strides=[2, 2], indices=True),
    pool("MaxPool", "k2s2_col_major", (2, 6, 8, 10), F32, kernel_shape=[2, 2], strides=[2, 2], indices=True,
         storage_order=1),
    pool("MaxPool", "k3s2p1_dil_ceil", (1, 5, 9, 11), F16, "NHWC", kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 0], dilations=[1, 2], ceil_mode=1, indices=True),
    pool("MaxPool", "k3s2_col_major", (2, 33, 7, 9), BF16, "NHWC", kernel_shape=[3, 2], strides=[2, 2],
         indices=True, storage_order=1),
    pool("MaxPool", "same_upper", (1, 4, 7, 6), F32, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER",
         indices=True),
    pool("AveragePool", "k3s2_dil_incl_ceil", (2, 6, 9, 11), F16, "NHWC", kernel_shape=[3, 3], strides=[2, 2],
         dilations=[2, 1], pads=[1, 1, 0, 1], ceil_mode=1, count_include_pad=1),
    # 3-D: a video classifier's pools (C3D k2s2, R3D's stem), then each attribute
    pool("MaxPool", "c3d_k2s2", (1, 8, 4, 8, 8), F32, **C3D_POOL),
    pool("MaxPool", "r3d_stem", (2, 4, 5, 9, 9), F16, **R3D_STEM),
    pool("MaxPool", "k3_dil_ceil", (1, 3, 7, 8, 9), BF16, kernel_shape=[3, 2, 3], strides=[2, 2, 3],
         dilations=[2, 1, 1], pads=[1, 0, 1, 0, 1, 1], ceil_mode=1),
    pool("MaxPool", "c3d_k2s2", (1, 8, 4, 8, 8), F32, indices=True, **C3D_POOL),
    pool("MaxPool", "r3d_stem_col_major", (2, 4, 5, 9, 9), F32, indices=True, storage_order=1, **R3D_STEM),
    pool("MaxPool", "k3_dil_ceil", (1, 3, 7, 8, 9), F16, kernel_shape=[3, 2, 3], strides=[2, 2, 3],
         dilations=[2, 1, 1], pads=[1, 0, 1, 0, 1, 1], ceil_mode=1, indices=True),
    pool("MaxPool", "k2s2_channels_last", (2, 5, 4, 6, 6), F32, "NHWC", indices=True, storage_order=1, **C3D_POOL),
    pool("AveragePool", "c3d_k2s2", (1, 8, 4, 8, 8), F32, **C3D_POOL),
    pool("AveragePool", "k3s2p1_incl_ceil", (2, 4, 5, 9, 8), F32, kernel_shape=[3, 3, 3], strides=[2, 2, 2],
         pads=[1, 1, 1, 1, 1, 0], ceil_mode=1, count_include_pad=1),
    pool("AveragePool", "k3s2p1_excl_ceil", (2, 4, 5, 9, 8), F16, kernel_shape=[3, 3, 3], strides=[2, 2, 2],
         pads=[1, 1, 1, 1, 1, 0], ceil_mode=1),
    pool("AveragePool", "k2_dil_incl", (1, 3, 6, 7, 8), BF16, kernel_shape=[2, 3, 2], dilations=[2, 1, 3],
         pads=[0, 1, 1, 1, 0, 1], count_include_pad=1),
    pool("AveragePool", "same_lower_s2", (1, 5, 5, 6, 7), F16, "NHWC", kernel_shape=[3, 2, 3], strides=[2, 2, 2],
         auto_pad="SAME_LOWER"),
    pool("GlobalAveragePool", "3d", (2, 6, 3, 5, 7), F32),
    pool("GlobalMaxPool", "3d", (2, 6, 3, 5, 7), F16),
    pool("GlobalAveragePool", "1d", (3, 4, 50), BF16),
]


def pool_input(case: PoolCase) -> np.ndarray:
    """X (logical, storage dtype), seeded by the case: uniform, on a 1/4 grid for MaxPool so
    that a window often holds equal maxima (the first wins, as its Index says); never all zeros."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    x = rng.uniform(-2.0, 2.0, case.shape)
    if case.op == "MaxPool":
        x = np.round(x * 4) / 4
    return x.astype(storage(case.dtype))


def pool_reference(case: PoolCase, x: np.ndarray) -> list[np.ndarray]:
    """The reference backend's outputs (logical) on the stored values widened to float64."""
    result = find_kernel(case.op)(case.node, 21, None).run(x.astype(np.float64))
    return list(result) if isinstance(result, tuple) else [result]


def pool_stored(case: PoolCase, x: np.ndarray) -> np.ndarray:
    """X as the kernel reads it."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1) if case.layout == "NHWC" else x)


def pool_logical(case: PoolCase, outputs: list[np.ndarray]) -> list[np.ndarray]:
    return [np.moveaxis(y, -1, 1) if case.layout == "NHWC" else y for y in outputs]


def compare_pool(case: PoolCase, got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert [g.shape for g in got] == [w.shape for w in want], case.id
    y, want_y = got[0].astype(np.float64), want[0]
    if case.op in ("MaxPool", "GlobalMaxPool"):
        np.testing.assert_array_equal(y, want_y, err_msg=f"{case.id} Y")
    else:
        check_close(y, want_y, TOLERANCE[case.dtype], case.id, "Y")
    if case.indices:
        assert got[1].dtype == np.int64
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{case.id} Indices")


def test_the_pool_catalogue_covers_ranks_ops_layouts_and_storage_orders():
    assert len({c.id for c in POOL_CASES}) == len(POOL_CASES)
    for op in ("MaxPool", "AveragePool"):
        assert {len(c.shape) - 2 for c in POOL_CASES if c.op == op} == {1, 2, 3}, op
        assert {c.dtype for c in POOL_CASES if c.op == op} == {F32, F16, BF16}, op
    with_indices = [c for c in POOL_CASES if c.indices]
    orders = {(len(c.shape) - 2, c.attrs.get("storage_order", 0)) for c in with_indices}
    assert orders >= {(2, 0), (2, 1), (3, 0), (3, 1)}
    assert {(len(c.shape) - 2, c.layout) for c in with_indices} >= {(2, "NCHW"), (2, "NHWC"), (3, "NCHW")}


def test_every_pool_and_conv_transpose_kernel_compiles_for_every_supported_arch():
    kernels = {k.name: k.source for k in (c.kernel() for c in POOL_CASES)}
    kernels |= {k.name: k.source for k in (c.kernel() for c in SPATIAL_CASES if c.op == "ConvTranspose")}
    report = [f"{arch}: {s:.1f} s" for arch, _, s in compile_for_every_arch(kernels, 512)]
    print(f"\n{len(kernels)} kernels; " + "; ".join(report))


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: c.id)
def test_pool_buffers_are_the_physical_shapes_the_reference_computes(case: PoolCase):
    kernel = case.kernel()
    want = pool_reference(case, pool_input(case))
    assert [(a.role, a.index, a.dtype) for a in kernel.args] == [
        (BufferRole.IN, 0, case.dtype), (BufferRole.OUT, 0, case.dtype), *([(BufferRole.OUT, 1, I64)] * case.indices)]
    assert kernel.inputs[0].shape == case.physical(case.shape)
    assert [a.shape for a in kernel.outputs] == [case.physical(w.shape) for w in want]


@pytest.fixture
def device(monkeypatch):
    return FakeDevice().install(monkeypatch)


@pytest.mark.parametrize("case", [c for c in POOL_CASES if not c.op.startswith("Global")], ids=lambda c: c.id)
def test_pool_kernel_on_the_fake_device_matches_the_reference(case: PoolCase, device):
    """(Global pools reduce by warp shuffles, which the interpreter does not model.)"""
    x = pool_input(case)
    got = run_kernel(device, case.kernel(), [pool_stored(case, x)])
    compare_pool(case, pool_logical(case, got), pool_reference(case, x))


CONV_TRANSPOSE_CASES = [c for c in SPATIAL_CASES if c.op == "ConvTranspose"]


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=lambda c: c.id)
def test_conv_transpose_kernel_on_the_fake_device_matches_the_reference(case, device):
    from .test_gpu_spatial import compare, host_inputs, logical, physical_inputs, reference

    kernel = case.kernel()
    arrays = host_inputs(case)
    (got,) = run_kernel(device, kernel, physical_inputs(case, kernel, arrays))
    compare(case, logical(case, got), reference(case, arrays))


def test_a_grid_smaller_than_the_work_loops_over_all_of_it(device):
    case = next(c for c in POOL_CASES if c.id.startswith("MaxPool-r3d_stem_col_major"))
    x = pool_input(case)
    got = run_kernel(device, case.kernel(), [pool_stored(case, x)], grid=3)
    compare_pool(case, pool_logical(case, got), pool_reference(case, x))


def test_an_index_counts_over_the_logical_input_in_the_storage_order():
    """x[0, 1] of a 1x2x3x4 input holds its maximum 9 at row 1, column 2 (one 3x4 window):
    channel 1 starts at 12, so row-major that is 12 + 1 * 4 + 2 = 18 and column-major
    12 + 2 * 3 + 1 = 19, wherever the kernel keeps X (channels-last too)."""
    x = np.zeros((1, 2, 3, 4), np.float32)
    x[0, 1, 1, 2] = 9
    for order, want in ((0, 18), (1, 19)):
        for layout in ("NCHW", "NHWC"):
            case = pool("MaxPool", "hand", x.shape, F32, layout, kernel_shape=[3, 4], indices=True,
                        storage_order=order)
            got = pool_logical(case, run_kernel(FakeDevice(), case.kernel(), [pool_stored(case, x)]))
            assert got[1].reshape(-1).tolist() == [0, want], (order, layout)  # channel 0: its first tap


@pytest.mark.parametrize("make, message", [
    (lambda: pool_kernel("AveragePool", (1, 2, 4, 4), F32, {"kernel_shape": [2, 2]}, indices=True), "only MaxPool"),
    (lambda: pool_kernel("MaxPool", (1, 2, 4, 4, 4), F32, {"kernel_shape": [2, 2]}), "kernel has 2 axes"),
    (lambda: conv_transpose_kernel(Node("ConvTranspose", ["x", "w"], ["y"], name="up"),
                                   [TensorType(F32, (1, 4, 3, 3, 3)), TensorType(F32, (4, 2, 2, 2))], F32),
     "same rank"),
])
def test_what_cannot_be_generated_is_a_clear_codegen_error(make, message):
    with pytest.raises(CodegenError, match=message):
        make()


# ---------------------------------------------------------------- models, planned and run


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def unet3d_up() -> Any:
    """A 3-D UNet's decoder step: ConvTranspose k2 s2 with bias, then a grouped, padded one
    with output_padding and dilations, and a Relu."""
    rng = _rng(5)
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["u1"], strides=[2, 2, 2], name="up"),
             helper.make_node("ConvTranspose", ["u1", "w2", "b2"], ["u2"], group=2, strides=[1, 2, 2],
                              pads=[1, 0, 1, 1, 1, 0], output_padding=[0, 1, 0], dilations=[2, 1, 1], name="up2"),
             helper.make_node("Relu", ["u2"], ["y"], name="relu")]
    weights = {"w1": rng.standard_normal((4, 6, 2, 2, 2)).astype(np.float32) / 5,
               "b1": rng.standard_normal(6).astype(np.float32),
               "w2": rng.standard_normal((6, 2, 3, 2, 3)).astype(np.float32) / 5,
               "b2": rng.standard_normal(4).astype(np.float32)}
    return make_model(nodes, [("x", FLOAT, [1, 4, 2, 3, 3])], [("y", FLOAT, None)], weights)


def video_pools() -> Any:
    """A video classifier's pooling: R3D's stem MaxPool, a C3D k2s2 MaxPool (ceil) and an
    AveragePool counting its pads (its head's GlobalAveragePool reduces by warp shuffles,
    which the fake device does not run)."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p1"], name="stem", **R3D_STEM),
             helper.make_node("MaxPool", ["p1"], ["p2"], ceil_mode=1, name="c3d", **C3D_POOL),
             helper.make_node("AveragePool", ["p2"], ["y"], kernel_shape=[2, 3, 3], pads=[0, 1, 1, 1, 1, 1],
                              count_include_pad=1, name="avg")]
    return make_model(nodes, [("x", FLOAT, [1, 3, 5, 9, 11])], [("y", FLOAT, None)])


def segnet_pool(convs: int = 0, rank: int = 2, storage_order: int = 0) -> Any:
    """MaxPool k2s2 with Indices (what a SegNet's MaxUnpool reads) after ``convs`` 3x3
    convs with Relu (enough of them, and the layout pass keeps the convs channels-last)."""
    rng = _rng(6)
    nodes, weights, value = [], {}, "x"
    for k in range(convs):
        weights[f"w{k}"] = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 6
        nodes += [helper.make_node("Conv", [value, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1], name=f"conv{k}"),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        value = f"r{k}"
    nodes.append(helper.make_node("MaxPool", [value], ["y", "indices"], kernel_shape=[2] * rank, strides=[2] * rank,
                                  storage_order=storage_order, name="pool"))
    shape = [2, 8, 6, 8] if rank == 2 else [1, 8, 4, 6, 8]
    return make_model(nodes, [("x", FLOAT, shape)], [("y", FLOAT, None), ("indices", TensorProto.INT64, None)],
                      weights)


MODELS = {
    "unet3d_up": (unet3d_up, (1, 4, 2, 3, 3)),
    "video_pools": (video_pools, (1, 3, 5, 9, 11)),
    "segnet_pool_2d": (lambda: segnet_pool(), (2, 8, 6, 8)),
    "segnet_pool_3d_col_major": (lambda: segnet_pool(rank=3, storage_order=1), (1, 8, 4, 6, 8)),
    "segnet_pool_after_nhwc_convs": (lambda: segnet_pool(convs=3), (2, 8, 6, 8)),
}


def feeds(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """Inputs on a 1/8 grid: equal maxima in a window, so the Indices show which one won."""
    return {"x": (np.round(_rng(seed).standard_normal(shape) * 8) / 8).astype(np.float32)}


@pytest.mark.parametrize("name", MODELS)
def test_the_model_plans_with_every_node_on_the_gpu(name):
    make, shape = MODELS[name]
    report = plan_coverage(compile_onnx(make().SerializeToString()), {"x": shape}, "sm_86")
    assert report.host_nodes == [], report.host_nodes
    assert [s.kind for s in report.segments] == ["gpu"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_the_model_runs_on_the_fake_device_as_the_reference(name, precision, device):
    make, shape = MODELS[name]
    inputs = [feeds(shape, 0), feeds(shape, 1)]
    runs = check_model(device, make(), inputs, precision, prefer=cublas_tactic)
    steps = runs[0].engine.plan.steps
    assert not any(s.why_host for s in steps), [s.label for s in steps if s.why_host]
    for run, given in zip(runs, inputs):
        if "indices" in run.outputs:  # (check_model compares them only within a tolerance)
            check_indices(make(), given, run.outputs["indices"], TOLERANCE_BY_PRECISION[precision])


TOLERANCE_BY_PRECISION = {"fp32": 1e-5, "fp16": 1e-2}


def check_indices(proto: Any, inputs: Mapping[str, np.ndarray], got: np.ndarray, tol: float) -> None:
    """A model's MaxPool Indices are the reference's where the pool reads the model's input
    (on a 1/8 grid, which fp16 holds exactly); after convs, whose rounding may reorder
    near-equal values, each Index points at a value of the pool's input within ``tol`` (of
    the largest magnitude) of the reference's maximum."""
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.frontend.onnx_import import load_onnx

    (source,) = [n.input[0] for n in proto.graph.node if n.op_type == "MaxPool"]
    if source in {i.name for i in proto.graph.input}:
        want = ReferenceExecutor(load_onnx(proto)).run(dict(inputs))
        np.testing.assert_array_equal(got, want["indices"])
        return
    proto.graph.output.append(helper.make_tensor_value_info(source, FLOAT, None))
    want = ReferenceExecutor(load_onnx(proto)).run(dict(inputs))
    assert got.shape == want["indices"].shape and got.dtype == np.int64
    picked = want[source].reshape(-1)[got]
    scale = max(1.0, float(np.abs(want["y"]).max()))
    np.testing.assert_allclose(picked, want["y"], rtol=tol, atol=tol * scale)


def test_a_max_pool_after_channels_last_convs_writes_its_indices_channels_last():
    """The convs' region is NHWC, so the pool reads X channels-last and writes Y and Indices
    so; the plan converts the Indices back to the logical layout for the graph output."""
    from tests.fake_gpu.engine import plan_model
    from tests.fake_gpu.models import compiled

    plan = plan_model(compiled(segnet_pool(convs=3)), {"x": (2, 8, 6, 8)})
    (pool_step,) = [s for s in plan.steps if s.node is not None and s.node.op_type == "MaxPool"]
    assert [plan.forms[v].layout for v in pool_step.outputs] == [NHWC, NHWC]
    assert plan.forms[plan.results["indices"]].layout == ""


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_conv_transpose_of_weights_computed_at_run_time_reads_them_as_they_are(precision, device):
    """W and B given as model inputs (ONNX's node tests feed them so): no packing at plan
    time, the kernel reads W in ONNX's (C, OC/group, *kernel) layout."""
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=2, strides=[2, 1, 2],
                              pads=[0, 1, 1, 1, 0, 0], output_padding=[1, 0, 0], name="up")]
    proto = make_model(nodes, [("x", FLOAT, [1, 4, 2, 3, 3]), ("w", FLOAT, [4, 3, 2, 3, 2]), ("b", FLOAT, [6])],
                       [("y", FLOAT, None)])
    rng = _rng(7)
    given = [{"x": rng.standard_normal((1, 4, 2, 3, 3)).astype(np.float32),
              "w": rng.standard_normal((4, 3, 2, 3, 2)).astype(np.float32) / 4,
              "b": rng.standard_normal(6).astype(np.float32)} for _ in range(2)]
    runs = check_model(device, proto, given, precision)
    (program,) = [p for p, s in zip(runs[0].engine.final.programs, runs[0].engine.plan.steps)
                  if s.node is not None and s.node.op_type == "ConvTranspose"]
    assert program.label == "conv_transpose" and not program.consts


# ---------------------------------------------------------------- generic plans


def volume(n: int, d: int, h: int, w: int) -> tuple[tuple[int, ...], dict[str, int]]:
    """An N, D, H, W that vary over a profile (input 0, axes 0, 2, 3, 4), and their bindings."""
    names = {"rtxd_i0_0": n, "rtxd_i0_2": d, "rtxd_i0_3": h, "rtxd_i0_4": w}
    return (dim(n, "rtxd_i0_0", 1, 4), dim(d, "rtxd_i0_2", 8, 32), dim(h, "rtxd_i0_3", 32, 128),
            dim(w, "rtxd_i0_4", 32, 128)), names


VOLUMES = [(1, 16, 64, 64), (3, 8, 96, 40), (4, 32, 128, 128)]


@pytest.mark.parametrize("make", [
    lambda n, d, h, w: pool_kernel("MaxPool", (n, 8, d, h, w), F16, C3D_POOL, indices=True),
    lambda n, d, h, w: pool_kernel("AveragePool", (n, 8, d, h, w), F32,
                                   {"kernel_shape": [3, 3, 3], "pads": [1] * 6, "count_include_pad": 1}),
    lambda n, d, h, w: conv_transpose_kernel(
        Node("ConvTranspose", ["x", "w", "b"], ["y"], {"strides": [2, 2, 2]}, name="up"),
        [TensorType(F16, (n, 8, d, h, w)), TensorType(F16, (8, 4, 2, 2, 2)), TensorType(F16, (4,))], F16,
        weight_layout="NHWC"),
], ids=["MaxPool-indices", "AveragePool", "ConvTranspose"])
def test_a_3d_kernel_has_one_source_for_every_shape(make):
    kernels = []
    for shape in VOLUMES:
        dims, names = volume(*shape)
        with dim_bindings(names):
            kernels.append(make(*dims))
            assert kernels[-1].dims == tuple(names[k] for k in sorted(names))
        n, d, h, w = shape
        assert kernels[-1].outputs[0].shape[0] == n and kernels[-1].launch.elements == np.prod(
            kernels[-1].outputs[0].shape)
    assert len({k.source for k in kernels}) == 1
    assert all(re.search(rf"int {name}\b", kernels[0].source) for name in names)
    compile_for_every_arch({kernels[0].name: kernels[0].source})
