"""The conv, pooling, Resize and ConvTranspose generators in a generic plan (codegen/dynamic.py):
given shapes whose batch and image size vary over a profile (DimInts), each kernel's source is
the same at every shape of the profile (so its name and cubin are), it takes those dims as
``int`` arguments whose values are the planned shape's, and it compiles. With plain ints the
sources keep their baked constants (no dim arguments)."""
from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.conv_implicit_source import ImplicitGemmTactic
from rtxrt.backends.cuda.ops.conv_source import conv_plan, default_tactic
from rtxrt.backends.cuda.ops.conv_transpose_source import conv_transpose_kernel
from rtxrt.backends.cuda.ops.gemm_source import GemmProblem, GemmTactic
from rtxrt.backends.cuda.ops.pool_source import pool_kernel
from rtxrt.backends.cuda.ops.resize_source import resize_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType

F16, F32 = DType.FLOAT16, DType.FLOAT32
BATCH, HEIGHT, WIDTH = (1, 4), (32, 256), (32, 256)  # the profile's bounds
SHAPES = [(1, 64, 64), (3, 96, 160), (4, 256, 256), (1, 32, 32)]  # (n, h, w), the first is "opt"
CONV3 = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
CONV3_S2 = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}


def image(n: int, h: int, w: int) -> tuple[tuple[int, ...], dict[str, int]]:
    """The DimInts of an N, H, W that vary over the profile (as input 0, axes 0, 2 and 3 of a
    node, NCHW), and their bindings."""
    names = {"rtxd_i0_0": n, "rtxd_i0_2": h, "rtxd_i0_3": w}
    return (dim(n, "rtxd_i0_0", *BATCH), dim(h, "rtxd_i0_2", *HEIGHT), dim(w, "rtxd_i0_3", *WIDTH)), names


def at_every_shape(make: Callable[[int, int, int], list[KernelSource]]) -> list[list[KernelSource]]:
    """``make(n, h, w)`` (given DimInts) at each of SHAPES, lowered as the builder does."""
    result = []
    for n, h, w in SHAPES:
        (dn, dh, dw), names = image(n, h, w)
        with dim_bindings(names):
            result.append(make(dn, dh, dw))
    return result


def assert_generic(per_shape: list[list[KernelSource]]) -> list[KernelSource]:
    """Every shape gets the kernels of the first, by name and source; each takes dim arguments."""
    first = per_shape[0]
    for kernels in per_shape[1:]:
        assert [k.name for k in kernels] == [k.name for k in first]
        assert [k.source for k in kernels] == [k.source for k in first]
    for k in first:
        assert re.search(r"int rtxd_i0_\d", k.source), k.name
    return first


def dims_of(kernel: KernelSource) -> dict[str, int]:
    names = sorted(set(re.findall(r"\brtxd_[io]\d+_\d+\b", kernel.source)))
    return dict(zip(names, kernel.dims))


def compiles(kernels: list[KernelSource]) -> None:
    nvrtc = pytest.importorskip("rtxrt.backends.cuda.compile.nvrtc")
    try:
        cubins = nvrtc.compile_many([(k.name, k.source) for k in kernels], "sm_86")
    except (OSError, ImportError) as exc:  # no NVRTC library here
        pytest.skip(f"NVRTC unavailable: {exc}")
    assert set(cubins) == {k.name for k in kernels}


def conv_kernels(layout: str, dtype: DType, attrs: dict, c: int = 16, oc: int = 32, group: int = 1, tactic=None):
    def make(n: int, h: int, w: int) -> list[KernelSource]:
        plan = conv_plan((n, c, h, w), (oc, c // group, 3, 3), {**attrs, "group": group}, dtype, layout,
                         bias=True, tactic=tactic)
        return [s.kernel for s in plan.steps]
    return make


@pytest.mark.parametrize("layout, dtype, attrs", [("NHWC", F16, CONV3), ("NCHW", F32, CONV3_S2),
                                                  ("NHWC", F32, CONV3_S2)])
def test_an_im2col_conv_has_one_source_for_every_shape(layout, dtype, attrs):
    kernels = at_every_shape(conv_kernels(layout, dtype, attrs))
    im2col = [ks[0] for ks in kernels]
    assert all(k.name.startswith("rtx_im2col_") for k in im2col)
    assert_generic([[k] for k in im2col])
    # the dims the kernel takes are the last planned shape's (1, 32, 32)
    assert dims_of(im2col[-1]) == {"rtxd_i0_0": 1, "rtxd_i0_2": 32, "rtxd_i0_3": 32}
    assert dims_of(im2col[1]) == {"rtxd_i0_0": 3, "rtxd_i0_2": 96, "rtxd_i0_3": 160}
    # its grid still covers the planned shape: one thread per (row, tap or vector)
    assert im2col[2].launch.elements > im2col[0].launch.elements
    compiles([im2col[0]])


def test_the_output_size_of_a_strided_conv_is_computed_from_the_input_size():
    (n, h, w), names = image(2, 97, 64)
    with dim_bindings(names):
        plan = conv_plan((n, 16, h, w), (32, 16, 3, 3), CONV3_S2, F16, "NHWC")
    assert plan.out_shape[1:3] == (49, 32)  # floor((97 + 2 - 3) / 2) + 1, (64 + 2 - 3) // 2 + 1
    source = plan.steps[0].kernel.source
    assert "const int OH = " in source and "rtxd_i0_2" in source
    assert "constexpr int KH = 3, KW = 3;" in source  # the fixed shapes stay literals


def test_a_depthwise_conv_has_one_source_for_every_shape():
    kernels = assert_generic(at_every_shape(conv_kernels("NHWC", F16, CONV3_S2, c=32, oc=32, group=32)))
    assert kernels[0].name.startswith("rtx_dwconv_")
    assert "const long long TOTAL" in kernels[0].source
    compiles(kernels)


def test_an_implicit_gemm_conv_has_one_source_for_every_shape():
    tactic = ImplicitGemmTactic(GemmTactic(64, 64, 32, 2, 2))
    kernels = assert_generic(at_every_shape(conv_kernels("NHWC", F16, CONV3, tactic=tactic)))
    assert kernels[0].name.startswith("rtx_iconv_")
    assert "rtx_load_tiles_dims" in kernels[0].source
    compiles(kernels)


def test_specialized_conv_sources_bake_every_shape():
    plan = conv_plan((2, 16, 64, 64), (32, 16, 3, 3), CONV3, F16, "NHWC", bias=True)
    source = plan.steps[0].kernel.source
    assert "rtxd_" not in source and plan.steps[0].kernel.dims == ()
    assert "constexpr int NB = 2, C = 16, H = 64, W = 64, OC = 32;" in source
    assert "constexpr I THREADS = (int)8192 * PER_ROW;" in source


def test_the_default_conv_tactic_is_the_same_at_every_shape():
    chosen = set()
    for n, h, w in SHAPES:
        (dn, dh, dw), names = image(n, h, w)
        with dim_bindings(names):
            chosen.add(default_tactic(GemmProblem(dn * dh * dw, 64, 576, trans_b=True)))
    assert len(chosen) == 1


@pytest.mark.parametrize("op, attrs, layout", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, "NHWC"),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, "NCHW"),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}, "NHWC"),
    ("GlobalAveragePool", {}, "NCHW"),
    ("GlobalAveragePool", {}, "NHWC"),
    ("GlobalMaxPool", {}, "NHWC"),
])
def test_pooling_has_one_source_for_every_shape(op, attrs, layout):
    def make(n, h, w):
        shape = (n, 24, h, w) if layout == "NCHW" else (n, h, w, 24)
        return [pool_kernel(op, shape, F16, attrs, layout)]
    kernels = assert_generic(at_every_shape(make))
    compiles(kernels)


def test_a_max_pool_writes_the_output_size_of_the_planned_shape():
    (n, h, w), names = image(3, 96, 160)
    with dim_bindings(names):
        kernel = pool_kernel("MaxPool", (n, h, w, 8), F32, {"kernel_shape": [2, 2], "strides": [2, 2]}, "NHWC")
    assert kernel.outputs[0].shape == (3, 48, 80, 8)
    assert kernel.launch.elements == 3 * 48 * 80 * 8


def resize_node(mode: str, transform: str, nearest: str = "floor") -> Node:
    return Node("Resize", ["x", "", "scales"], ["y"],
                {"mode": mode, "coordinate_transformation_mode": transform, "nearest_mode": nearest}, name="up")


@pytest.mark.parametrize("mode, transform, nearest, layout", [
    ("nearest", "asymmetric", "floor", "NCHW"),
    ("nearest", "half_pixel", "round_prefer_floor", "NHWC"),
    ("linear", "half_pixel", "floor", "NCHW"),
    ("linear", "pytorch_half_pixel", "floor", "NHWC"),
])
def test_a_resize_by_constant_scales_computes_its_sampling_and_has_one_source(mode, transform, nearest, layout):
    node = resize_node(mode, transform, nearest)

    def make(n, h, w):
        out_h = dim(2 * int(h), "rtxd_o0_2", 2 * HEIGHT[0], 2 * HEIGHT[1])
        out_w = dim(2 * int(w), "rtxd_o0_3", 2 * WIDTH[0], 2 * WIDTH[1])
        types = [TensorType(F32, (n, 8, h, w)), TensorType(F32, (4,))]
        return [resize_kernel(node, types, (n, 8, out_h, out_w), F16, layout, scales=[1.0, 1.0, 2.0, 2.0])]

    per_shape = []
    for n, h, w in SHAPES:
        (dn, dh, dw), names = image(n, h, w)
        with dim_bindings({**names, "rtxd_o0_2": 2 * h, "rtxd_o0_3": 2 * w}):
            per_shape.append(make(dn, dh, dw))
    kernels = assert_generic(per_shape)
    assert "rtx_y0[" not in kernels[0].source  # no tables: they would follow the size
    assert "const double cy" in kernels[0].source
    compiles(kernels)


def test_a_static_resize_keeps_its_tables():
    node = resize_node("nearest", "asymmetric")
    kernel = resize_kernel(node, [TensorType(F32, (1, 8, 16, 16)), TensorType(F32, (4,))], (1, 8, 32, 32), F16,
                           scales=[1.0, 1.0, 2.0, 2.0])
    assert "__device__ const int rtx_y0[32]" in kernel.source and "rtxd_" not in kernel.source


def test_a_conv_transpose_has_one_source_for_every_shape():
    node = Node("ConvTranspose", ["x", "w", "b"], ["y"], {"kernel_shape": [2, 2], "strides": [2, 2]}, name="up")

    def make(n, h, w):
        types = [TensorType(F16, (n, 16, h, w)), TensorType(F16, (16, 8, 2, 2)), TensorType(F16, (8,))]
        return [conv_transpose_kernel(node, types, F16, "NHWC", weight_layout="NHWC")]

    kernels = assert_generic(at_every_shape(make))
    compiles(kernels)
