"""Grouped convolutions (1 < group, not depthwise: rtxrt/backends/cuda/ops/conv_grouped_source.py)
on the CUDA backend, without a GPU.

What must hold:

- every grouped Conv / rtxrt::FusedConv plans on the GPU (no host step), NCHW (a first conv)
  and NHWC input, fp32, fp16 and bf16, groups 2 to 32 with 1 to 64 channels a group, kernels
  1x1 and 3x3 (and 2x3), strides 1 and 2, dilation 2, symmetric, asymmetric and SAME pads,
  with bias, activation and residual fused;
- its plans: a group-major im2col and one GEMM batched over the groups (the strides of A, B,
  D, Z and the bias per group in ``GemmProblem``), a direct 1x1 GEMM reading X, or the direct
  kernel (the default for narrow groups), each offered to the autotuner with cuBLAS;
- those strides, applied in numpy to the patch matrix and the packed weights, give the
  reference Conv (the tiled GEMM kernels cannot run on the fake device, so this is what pins
  the layout they compute in);
- every new kernel compiles with NVRTC for sm_75 and sm_90 (bf16 tensor-core GEMMs only on
  sm_80 and newer);
- generic kernels: the same sources at every batch and image size of a profile;
- whole models (a grouped conv between 1x1 convs, a grouped 1x1, a channel multiplier, two
  ResNeXt blocks exported from torch) run on the fake device (im2col, cuBLAS emulated, the
  epilogue; or the direct kernel) and match the reference backend, every pointer pointing at
  its buffer for every tactic (the tiled GEMMs recorded, not run), and a generic plan of the
  ResNeXt blocks has one set of kernels for every shape; a tactic tuned at one shape is
  lowered first at another;
- grouped ConvTranspose (a direct gather, any group) runs on the GPU too;
- group-1 and depthwise convolutions keep their kernels, byte for byte (``UNCHANGED``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import dim_bindings
from rtxrt.backends.cuda.codegen.epilogue import epilogue_kernel
from rtxrt.backends.cuda.ops.conv_grouped_source import (
    GROUPED_DIRECT,
    gemm_tactic,
    grouped_tactics,
    prefers_direct,
    scatter_epilogue_kernel,
)
from rtxrt.backends.cuda.ops.conv_implicit_source import ImplicitGemmTactic
from rtxrt.backends.cuda.ops.conv_source import ConvPlan, conv_gemm_tactics, conv_plan
from rtxrt.backends.cuda.ops.gemm_simt_source import SimtGemmKernel, SimtTactic
from rtxrt.backends.cuda.ops.gemm_source import GemmKernel, GemmProblem, GemmTactic
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node
from tests.fake_gpu.device import FakeDevice, GemmRecord, LaunchRecord
from tests.fake_gpu.engine import check_model, conv_buffer
from tests.fake_gpu.models import compiled
from tests.helpers import make_model

from .helpers import compile_jobs
from .test_conv_codegen import CASES as GROUP_1_CASES
from .test_conv_codegen import IMPLICIT_CASES, patch_matrix
from .test_fake_bindings import bind_every_tactic
from .test_generic_conv import assert_generic, at_every_shape, compiles, dims_of

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
F = TensorProto.FLOAT
P1 = [1, 1, 1, 1]


@dataclass(frozen=True)
class Case:
    """One grouped convolution: X (logical NCHW) stored in ``layout``, weights OIHW."""

    id: str
    x: tuple[int, int, int, int]
    w: tuple[int, int, int, int]
    attrs: dict[str, Any] = field(hash=False)
    layout: str = "NHWC"
    dtype: DType = F16
    bias: bool = True

    def plan(self, tactic=None) -> ConvPlan:
        return conv_plan(self.x, self.w, self.attrs, self.dtype, self.layout, bias=self.bias, tactic=tactic)


CASES = [
    Case("resnext-g32-cg4-3x3-relu", (2, 128, 14, 14), (128, 4, 3, 3), {"group": 32, "pads": P1, "activation": "relu"}),
    Case("g8-cg16-3x3s2-resbefore", (1, 128, 15, 13), (128, 16, 3, 3),
         {"group": 8, "pads": P1, "strides": [2, 2], "activation": "relu", "residual": "before_activation"}),
    Case("g2-cg64-1x1-resafter", (2, 128, 7, 7), (256, 64, 1, 1),
         {"group": 2, "activation": "relu", "residual": "after_activation"}),
    Case("g4-cg1-multiplier-dilated-nchw-f32", (1, 4, 11, 10), (16, 1, 3, 3),
         {"group": 4, "pads": [2, 2, 2, 2], "dilations": [2, 2], "activation": "silu"}, "NCHW", F32),
    Case("g2-cg3-asym-nchw-nobias", (2, 6, 9, 10), (8, 3, 2, 3), {"group": 2, "pads": [0, 1, 2, 1], "strides": [2, 1]},
         "NCHW", F16, bias=False),
    Case("g4-cg32-3x3-gelu-resbefore-f32", (1, 128, 8, 8), (128, 32, 3, 3),
         {"group": 4, "pads": P1, "activation": "gelu", "residual": "before_activation"}, "NHWC", F32),
    Case("g8-cg8-1x1s2-bf16", (2, 64, 9, 9), (128, 8, 1, 1),
         {"group": 8, "strides": [2, 2], "activation": "leaky_relu", "activation_params": [0.1]}, "NHWC", BF16),
    Case("g16-cg2-same-upper-clip", (1, 32, 13, 11), (32, 2, 3, 3),
         {"group": 16, "auto_pad": "SAME_UPPER", "activation": "clip", "activation_params": [-0.5, 0.75]}),
    Case("g4-cg16-3x3-nchw-f32-resafter", (2, 64, 10, 10), (128, 16, 3, 3),
         {"group": 4, "pads": P1, "residual": "after_activation"}, "NCHW", F32),
    Case("g2-cg24-3x3s2-dil2-bf16-nchw", (1, 48, 17, 15), (64, 24, 3, 3),
         {"group": 2, "pads": [2, 2, 2, 2], "strides": [2, 2], "dilations": [2, 2], "activation": "relu"}, "NCHW",
         BF16),
]


def every_plan(case: Case) -> list[ConvPlan]:
    """The case's default plan and one plan per tactic the autotuner would time."""
    base = case.plan()
    return [base] + [case.plan(t) for t in conv_gemm_tactics(base)]


def test_the_catalogue_covers_groups_channels_kernels_layouts_types_and_tactics():
    groups = {c.attrs["group"] for c in CASES}
    assert {2, 4, 8, 32} <= groups
    assert {c.w[1] for c in CASES} >= {1, 2, 3, 4, 8, 16, 32, 64}
    assert {c.w[2] for c in CASES} >= {1, 3} and {c.layout for c in CASES} == {"NHWC", "NCHW"}
    assert {c.dtype for c in CASES} == {F16, BF16, F32}
    assert {c.attrs.get("residual", "none") for c in CASES} == {"none", "before_activation", "after_activation"}
    assert {p.tactic for c in CASES for p in every_plan(c)} == {"grouped_im2col_gemm", "grouped_gemm",
                                                                 "grouped_direct"}


# ---------------------------------------------------------------- plans

def test_a_grouped_conv_is_an_im2col_and_a_gemm_batched_over_its_groups():
    case = next(c for c in CASES if c.id.startswith("g8-cg16"))
    plan = case.plan()
    assert plan.tactic == "grouped_im2col_gemm" and plan.grouped and plan.weight_layout == "OHWI"
    im2col, gemm = plan.steps
    assert im2col.kernel.name.startswith("rtx_gim2col_") and im2col.buffers == ("X", "workspace")
    assert isinstance(gemm.kernel, GemmKernel) and gemm.buffers == ("workspace", "W", "bias", "Z", "Y")
    m, kgp = 1 * 8 * 7, 16 * 9  # output 8x7; K_g = 3*3*16 is a whole number of 16-byte rows
    assert plan.out_shape == (1, 8, 7, 128) and plan.k_padded == kgp
    assert plan.buffers == {"X": ((1, 15, 13, 128), F16), "W": ((128, kgp), F16), "workspace": ((m, 8 * kgp), F16),
                            "bias": ((128,), F16), "Z": ((1, 8, 7, 128), F16), "Y": ((1, 8, 7, 128), F16)}
    p = plan.gemm
    assert (p.batch, p.m, p.n, p.k, p.trans_b) == (8, m, 16, kgp, True)
    assert (p.lda, p.stride_a, p.ldb, p.stride_b) == (8 * kgp, kgp, kgp, 16 * kgp)  # group g: columns g*KGP..
    assert (p.ldd, p.stride_d, p.ldz, p.stride_z, p.stride_bias) == (128, 16, 128, 16, 16)  # Y as [M, G, OC/G]
    assert gemm.grid[2] == 8 and gemm.kernel.launch.grid == gemm.grid  # blockIdx.z walks the groups
    assert "bias += z * 16LL; Z += z * SZ; D += z * SD;" in gemm.kernel.source
    assert "LDD = 128" in gemm.kernel.source and "SD = 16" in gemm.kernel.source


def test_a_grouped_1x1_over_nhwc_reads_x_as_the_patch_matrix():
    plan = next(c for c in CASES if c.id.startswith("g2-cg64-1x1")).plan()
    assert plan.tactic == "grouped_gemm" and plan.workspace_bytes == 0 and "workspace" not in plan.buffers
    (step,) = plan.steps
    assert step.buffers == ("X", "W", "bias", "Z", "Y")
    p = plan.gemm
    assert (p.batch, p.m, p.n, p.k, p.lda, p.stride_a) == (2, 2 * 7 * 7, 128, 64, 128, 64)
    nchw = conv_plan((2, 128, 7, 7), (256, 64, 1, 1), {"group": 2}, F16, "NCHW")
    assert nchw.tactic == "grouped_im2col_gemm"  # channels are not innermost: the copy transposes


def test_the_direct_kernel_is_the_default_for_narrow_groups_and_reads_k_major_weights():
    plan = CASES[0].plan()  # ResNeXt's 32 groups of 4 channels
    assert plan.tactic == "grouped_direct" and plan.weight_layout == "HWIO" and plan.workspace_bytes == 0
    (step,) = plan.steps
    assert step.kernel.name.startswith("rtx_gconv_") and step.buffers == ("X", "W", "bias", "Y")
    assert plan.buffers["W"] == ((36, 128), F16) and plan.k_padded == 36
    assert step.grid[0] * step.block[0] >= 2 * 14 * 14 * 128
    w = np.arange(128 * 4 * 9, dtype=np.float32).reshape(128, 4, 3, 3)
    np.testing.assert_array_equal(plan.pack_weights(w), w.transpose(2, 3, 1, 0).reshape(36, 128))
    assert prefers_direct(ocg=8, k_g=576) and prefers_direct(ocg=64, k_g=9) and not prefers_direct(ocg=16, k_g=72)
    wide = conv_plan((1, 64, 8, 8), (64, 16, 3, 3), {"group": 4}, F16, tactic=GROUPED_DIRECT)
    assert wide.tactic == "grouped_direct" and conv_plan((1, 64, 8, 8), (64, 16, 3, 3), {"group": 4},
                                                         F16).tactic == "grouped_im2col_gemm"


def test_the_autotuner_is_offered_the_gemm_tiles_that_can_win_and_the_direct_kernel():
    for case, kind in ((CASES[1], GemmTactic), (CASES[5], SimtTactic)):  # fp16, fp32
        plan = case.plan()
        tactics = conv_gemm_tactics(plan)
        assert tactics == grouped_tactics(plan) and tactics[-1] == GROUPED_DIRECT and len(tactics) >= 2
        assert gemm_tactic(plan) in tactics  # the default plan's tiles, whatever the cost model says
        assert all(isinstance(t, kind) for t in tactics[:-1])
        assert not any(isinstance(t, ImplicitGemmTactic) for t in tactics)  # the implicit GEMM is group 1's
        assert all(case.plan(t).steps[-1].kernel.tactic == t for t in tactics[:-1])
    fp32_gemm = CASES[5].plan().steps[-1].kernel
    assert isinstance(fp32_gemm, SimtGemmKernel) and "bias += z * 32LL;" in fp32_gemm.source
    direct = CASES[0].plan()
    assert gemm_tactic(direct) in conv_gemm_tactics(direct)  # the tiles of its cuBLAS plan's im2col
    with pytest.raises(CodegenError, match="implicit-GEMM convolution handles group 1"):
        CASES[1].plan(ImplicitGemmTactic(GemmTactic(64, 64, 32, 2, 2)))


# Kernel names are hashes of their sources: these are the names they had before grouped
# convolutions (and GemmProblem.stride_bias) came, which must not move them.
UNCHANGED = {
    "3x3s1p1-relu-resbefore": ["rtx_im2col_4b43a6c9077d1a943f14", "rtx_gemm_1ca5ea61db2c33f147fd"],
    "1x1-direct-resafter": ["rtx_gemm_d2e50b49e7962ccba48a"],
    "7x7s2p3-nchw-relu-f32": ["rtx_im2col_b3428fb8349f9f5d51c1", "rtx_sgemm_a9c72e53704bb4e9dc94"],
    "dw-none-none-nhwc-float16": ["rtx_dwconv_bbe75000eb455ce8ebc8"],
    "dw-relu-before_activation-nchw-float32": ["rtx_dwconv_cc8cf763db2747803370"],
    "3x3s1p1-128x128x32_w2x2_s2-float16": ["rtx_iconv_8a83c75f3b64843d1302"],
}


def test_group_1_and_depthwise_kernels_are_unchanged():
    cases = {c.id: c for c in GROUP_1_CASES + IMPLICIT_CASES}
    for case_id, names in UNCHANGED.items():
        plan = cases[case_id].plan()
        assert [s.kernel.name for s in plan.steps] == names, case_id
        assert not plan.grouped and plan.weight_layout == "OHWI"
    assert epilogue_kernel(cases["3x3s1p1-relu-resbefore"].plan().gemm).name == "rtx_gemm_epilogue_c23c819a25b8726e9770"


def test_group_must_divide_both_channel_counts():
    with pytest.raises(CodegenError, match="expects"):
        conv_plan((1, 8, 9, 9), (8, 3, 3, 3), {"group": 2}, F16)  # 2 groups of 3 channels is not 8
    with pytest.raises(CodegenError, match="does not divide the 10 output channels"):
        conv_plan((1, 8, 9, 9), (10, 2, 3, 3), {"group": 4}, F16)


def test_gemm_problem_bias_stride_is_per_batch_and_off_by_default():
    plain = GemmProblem(64, 16, 32, batch=4, bias=True)
    assert plain.stride_bias == 0 and not plain.batch_bias and "bias +=" not in plain.batch_offsets()
    assert GemmProblem(64, 16, 32, bias=True, stride_bias=16).stride_bias == 0  # one matrix: nothing to stride
    grouped = GemmProblem(64, 16, 32, batch=4, bias=True, stride_bias=16, ldd=64, stride_d=16)
    assert grouped.batch_bias and "bias=1/16" in grouped.describe()
    with pytest.raises(CodegenError, match="one bias for every batch"):
        epilogue_kernel(grouped)  # indexes bias[col]: cuBLAS programs use scatter_epilogue_kernel
    with pytest.raises(CodegenError, match="stride_bias must not be negative"):
        GemmProblem(64, 16, 32, batch=4, bias=True, stride_bias=-1)


def test_the_cublas_epilogue_moves_the_dense_product_into_y():
    plan = CASES[1].plan()
    step = scatter_epilogue_kernel(plan)
    assert step.kernel.name.startswith("rtx_gconv_epilogue_") and step.buffers == ("product", "bias", "Z", "Y")
    source = step.kernel.source
    assert "const unsigned int g = col / 16u, o = col - g * 16u;" in source
    assert "P[((long long)g * 56 + row) * 16 + o]" in source and "bias[col]" in source and "Z[i]" in source
    assert [a.shape for a in step.kernel.args] == [(8, 56, 16), (128,), (56, 128), (56, 128)]


# ---------------------------------------------------------------- the layout contract, in numpy

def grouped_patches(x: np.ndarray, plan: ConvPlan, attrs: dict) -> np.ndarray:
    """What the grouped im2col writes, [N*OH*OW, G*KGP]: per group its patch matrix."""
    g = plan.x_shape[1] // plan.w_shape[1]
    cg = plan.w_shape[1]
    return np.concatenate([patch_matrix(x[:, i * cg:(i + 1) * cg], plan, attrs) for i in range(g)], axis=1)


def run_problem(p: GemmProblem, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None,
                d_size: int) -> np.ndarray:
    """``p`` computed in numpy on flat buffers by its strides (no activation): D per batch =
    alpha * A @ Bᵀ + bias [+ Z]; D elements no batch writes stay NaN."""
    d = np.full(d_size, np.nan)
    rows, cols, ks = np.arange(p.m)[:, None], np.arange(p.n)[None, :], np.arange(p.k)
    for i in range(p.batch):
        a_i = a[i * p.stride_a + np.arange(p.m)[:, None] * p.lda + ks[None, :]]
        b_i = b[i * p.stride_b + np.arange(p.n)[:, None] * p.ldb + ks[None, :]]
        x = p.alpha * a_i @ b_i.T
        if p.bias:
            x = x + bias[i * p.stride_bias + np.arange(p.n)]
        if p.has_z:
            x = x + z[i * p.stride_z + rows * p.ldz + cols]
        d[i * p.stride_d + rows * p.ldd + cols] = x
    return d


def reference_conv(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    conv = {k: v for k, v in attrs.items() if k not in ("activation", "residual", "activation_params")}
    return find_kernel("Conv")(Node("Conv", ["x", "w"], ["y"], conv), 1, lambda *a: []).run(x, w)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_batched_gemm_of_the_packed_weights_and_the_patches_is_the_reference_conv(case):
    rng = np.random.default_rng(5)
    x, w = rng.uniform(-1, 1, case.x), rng.uniform(-1, 1, case.w)
    bias = rng.uniform(-1, 1, case.w[0])
    ref = reference_conv(x, w, case.attrs).transpose(0, 2, 3, 1) + bias  # NHWC
    z = rng.uniform(-1, 1, ref.shape)
    attrs = {"group": case.attrs["group"], **{k: v for k, v in case.attrs.items() if k in ("pads", "strides",
                                                                                        "dilations", "auto_pad")}}
    plan = conv_plan(case.x, case.w, {**attrs, "residual": "before_activation"}, case.dtype, case.layout, bias=True,
                     tactic=gemm_tactic(case.plan()))
    a = (x.transpose(0, 2, 3, 1) if plan.tactic == "grouped_gemm" else grouped_patches(x, plan, attrs)).reshape(-1)
    d = run_problem(plan.gemm, a, plan.pack_weights(w).reshape(-1), bias, z.reshape(-1), z.size)
    np.testing.assert_allclose(d.reshape(ref.shape), ref + z, rtol=1e-10, atol=1e-10)  # every element written
    # the direct kernel's k-major weights: output channel oc sums its group's columns
    direct = case.plan(GROUPED_DIRECT)
    k_g = direct.k_padded
    patches = grouped_patches(x, conv_plan(case.x, case.w, attrs, case.dtype, "NCHW"), attrs)
    kgp = patches.shape[1] // case.attrs["group"]
    packed = direct.pack_weights(w)
    ocg = case.w[0] // case.attrs["group"]
    y = np.stack([patches[:, (oc // ocg) * kgp:(oc // ocg) * kgp + k_g] @ packed[:, oc] for oc in range(case.w[0])], 1)
    np.testing.assert_allclose(y.reshape(ref.shape), ref - bias, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- NVRTC

def test_every_new_kernel_compiles_for_sm_75_and_sm_90():
    jobs: dict[tuple[str, str], str] = {}
    for case, arch in itertools.product(CASES, ("sm_75", "sm_90")):
        for plan in every_plan(case):
            steps = list(plan.steps)
            if plan.tactic != "grouped_direct":
                steps.append(scatter_epilogue_kernel(plan))
            for step in steps:
                if isinstance(step.kernel, GemmKernel) and case.dtype == BF16 and arch == "sm_75":
                    continue  # Turing has no bf16 mma (gemm_source says so before NVRTC is asked)
                jobs.setdefault((step.kernel.name, arch), step.kernel.source)
    prefixes = {name.rsplit("_", 1)[0] for name, _ in jobs}
    assert prefixes == {"rtx_gim2col", "rtx_gconv", "rtx_gconv_epilogue", "rtx_gemm", "rtx_sgemm"}
    cubins = compile_jobs(jobs)
    assert all(c.startswith(b"\x7fELF") for c in cubins.values())
    assert {arch for _, arch in cubins} == {"sm_75", "sm_90"}


# ---------------------------------------------------------------- shape-generic sources

def grouped_kernels(layout: str, dtype: DType, attrs: dict, c: int, oc: int, group: int, tactic=None,
                    cublas: bool = False):
    def make(n: int, h: int, w: int):
        plan = conv_plan((n, c, h, w), (oc, c // group, 3, 3), {**attrs, "group": group}, dtype, layout, bias=True,
                         tactic=tactic)
        steps = list(plan.steps) + ([scatter_epilogue_kernel(plan)] if cublas else [])
        return [s.kernel for s in steps]
    return make


CONV3 = {"pads": P1, "activation": "relu", "residual": "before_activation"}
CONV3_S2 = {"pads": P1, "strides": [2, 2], "dilations": [2, 2], "activation": "silu"}


@pytest.mark.parametrize("layout, dtype, attrs, c, oc, group, tactic, cublas", [
    ("NHWC", F16, CONV3, 64, 128, 8, None, True),  # 8 channels a group: 16-byte vectors
    ("NCHW", F32, CONV3_S2, 24, 48, 4, None, True),  # 6 channels a group: taps, zero columns
    ("NHWC", F32, CONV3, 128, 128, 32, None, False),  # ResNeXt: the direct kernel
    ("NCHW", F16, CONV3_S2, 16, 32, 2, GROUPED_DIRECT, False),
    ("NHWC", F16, CONV3, 64, 64, 2, GemmTactic(64, 64, 32, 2, 2), True),
], ids=["im2col-vector-f16", "im2col-taps-nchw-f32", "direct-resnext-f32", "direct-nchw-f16", "tiles-64"])
def test_a_grouped_conv_has_one_source_for_every_shape(layout, dtype, attrs, c, oc, group, tactic, cublas):
    kernels = assert_generic(at_every_shape(grouped_kernels(layout, dtype, attrs, c, oc, group, tactic, cublas)))
    assert all("rtxd_i0_0" in k.source for k in kernels)
    compiles(kernels)


def test_a_generic_grouped_kernel_takes_the_planned_shape_as_arguments():
    per_shape = at_every_shape(grouped_kernels("NHWC", F16, CONV3, 64, 128, 8, cublas=True))
    im2col = [ks[0] for ks in per_shape]
    assert dims_of(im2col[1]) == {"rtxd_i0_0": 3, "rtxd_i0_2": 96, "rtxd_i0_3": 160}
    assert dims_of(im2col[-1]) == {"rtxd_i0_0": 1, "rtxd_i0_2": 32, "rtxd_i0_3": 32}
    assert im2col[2].launch.elements > im2col[0].launch.elements  # 4x256x256 takes more threads


# ---------------------------------------------------------------- models: plans

def grouped_model(c: int, group: int, oc: int, k: int = 3, *, first: bool = True, strides=(1, 1),
                  dilations=(1, 1), residual: bool = True, activation: str = "Relu", seed: int = 0,
                  batch: int = 2, size: tuple[int, int] = (9, 8)):
    """X [batch, c, *size] -> [a 1x1 conv, unless ``first``] -> the grouped conv with bias [+ a 1x1
    projection of its input (the residual)] -> the activation -> two 1x1 convs -> Y. The convs
    around it make the region channels-last (the layout pass), so the grouped conv reads
    NHWC, except where it is ``first`` (it then reads the model's NCHW input)."""
    rng = np.random.default_rng(seed)

    def weight(shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    pad = (k - 1) // 2 * dilations[0]
    h, w = size
    oh = (h + 2 * pad - dilations[0] * (k - 1) - 1) // strides[0] + 1
    ow = (w + 2 * pad - dilations[1] * (k - 1) - 1) // strides[1] + 1
    nodes, weights, source = [], {}, "x"
    if not first:
        nodes.append(helper.make_node("Conv", ["x", "w0"], ["x1"]))
        weights["w0"], source = weight((c, c, 1, 1)), "x1"
    nodes.append(helper.make_node("Conv", [source, "wg", "bg"], ["g"], group=group, pads=[pad] * 4,
                                  strides=list(strides), dilations=list(dilations)))
    weights["wg"], weights["bg"] = weight((oc, c // group, k, k)), rng.standard_normal(oc).astype(np.float32)
    last = "g"
    if residual:
        nodes += [helper.make_node("Conv", [source, "wp"], ["p"], strides=list(strides)),
                  helper.make_node("Add", ["g", "p"], ["s"])]
        weights["wp"], last = weight((oc, c, 1, 1)), "s"
    nodes += [helper.make_node(activation, [last], ["a"], **({"alpha": 0.2} if activation == "LeakyRelu" else {})),
              helper.make_node("Conv", ["a", "w2"], ["b"]), helper.make_node("Conv", ["b", "w3"], ["y"])]
    weights["w2"], weights["w3"] = weight((oc, oc, 1, 1)), weight((oc, oc, 1, 1))
    return make_model(nodes, [("x", F, [batch, c, h, w])], [("y", F, [batch, oc, oh, ow])], weights)


def model_feeds(proto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in proto.graph.input}


MODELS = {
    "g4-cg4-first-nchw": dict(c=16, group=4, oc=16),
    "g2-cg8-nhwc": dict(c=16, group=2, oc=32, first=False),
    "g32-cg2-nhwc-resnext": dict(c=64, group=32, oc=64, first=False, activation="LeakyRelu"),
    "g4-multiplier-s2-dil2": dict(c=4, group=4, oc=8, strides=(2, 2), dilations=(2, 2), residual=False),
    "g3-cg3-taps-s2": dict(c=9, group=3, oc=12, strides=(2, 2), first=False, activation="Sigmoid"),
    "g4-1x1-nhwc": dict(c=32, group=4, oc=64, k=1, first=False),
    "g2-cg16-nhwc-s2": dict(c=32, group=2, oc=32, strides=(2, 2), first=False),
    "g4-cg8-nhwc-dil2": dict(c=32, group=4, oc=64, dilations=(2, 2), first=False, activation="Sigmoid"),
    "g8-cg8-1x1s2-first": dict(c=64, group=8, oc=64, k=1, strides=(2, 2), residual=False),
}


def grouped_steps(plan) -> list[int]:
    return [i for i, s in enumerate(plan.steps) if s.node is not None and int(s.node.attrs.get("group", 1)) > 1]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_model_with_a_grouped_conv_plans_no_host_step(name, precision):
    proto = grouped_model(**MODELS[name])
    model = compiled(proto, precision)
    plan = build_plan(model, {k: v.shape for k, v in model_feeds(proto).items()}, arch="sm_86", sm_count=46)
    assert plan.host_steps == []
    (i,) = grouped_steps(plan)
    step = plan.steps[i]
    assert step.node.op_type == "FusedConv"
    labels = [p.label for p in step.candidates]
    assert labels[0].startswith("grouped_") and any(label.endswith(" cublas") for label in labels)
    assert any(label.startswith("grouped_direct") for label in labels)
    x_form = plan.forms[step.inputs[0]]
    assert (x_form.layout == "NHWC") != MODELS[name].get("first", True), x_form.describe()  # NCHW when first


@pytest.mark.parametrize("name", ["g2-cg8-nhwc", "g32-cg2-nhwc-resnext", "g4-1x1-nhwc"])
def test_the_tactic_tuned_at_one_shape_is_lowered_alone_at_another(name):
    """A generic engine plans each new shape with tune off and the tactic chosen at opt
    preferred: the lowering makes that one first (with cuBLAS where it is the default), not
    every candidate for the builder to sort."""
    proto = grouped_model(**MODELS[name])
    model = compiled(proto, "fp16")
    shapes = {k: v.shape for k, v in model_feeds(proto).items()}
    tuned = build_plan(model, shapes, arch="sm_86", sm_count=46)
    (i,) = grouped_steps(tuned)
    step = tuned.steps[i]
    for program in step.candidates:
        plan = build_plan(model, shapes, arch="sm_86", sm_count=46, tune=False, prefer={step.label: program.label})
        first, *rest = plan.steps[i].candidates
        assert first.label == program.label and first.kernels == program.kernels
        assert len(rest) < len(step.candidates) - 1  # not every candidate, sorted by the builder


# ---------------------------------------------------------------- models: the fake device

def prefer(tactic: str):
    """The grouped convs' ``tactic`` ("cublas" or "direct"); cuBLAS for the other convs (the
    interpreter runs no tiled GEMM)."""
    def choose(step, program) -> bool:
        if step.node is not None and int(step.node.attrs.get("group", 1)) > 1:
            return program.label.endswith(" cublas") if tactic == "cublas" else program.label.startswith(
                "grouped_direct")
        return "cublas" in program.label
    return choose


@pytest.fixture
def device(monkeypatch):
    return FakeDevice().install(monkeypatch)


@pytest.mark.parametrize("tactic", ["cublas", "direct"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_model_with_a_grouped_conv_matches_the_reference_on_the_fake_device(device, name, precision, tactic):
    proto = grouped_model(**MODELS[name])
    runs = check_model(device, proto, [model_feeds(proto, 1), model_feeds(proto, 2)], precision,
                       prefer=prefer(tactic))
    engine = runs[0].engine
    (i,) = grouped_steps(engine.plan)
    label = engine.final.programs[i].label
    assert label.endswith(" cublas") if tactic == "cublas" else label == "grouped_direct direct", label
    gemms = [r for r in runs[0].records if isinstance(r, GemmRecord) and r.options["batch"] > 1]
    assert len(gemms) == (tactic == "cublas")  # one cuBLAS call for all the groups
    assert all(r.executed for r in runs[1].records if isinstance(r, LaunchRecord))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_grouped_tactic_binds_its_buffers(monkeypatch, precision):
    """Every candidate, the tiled batched GEMMs too (recorded, not run): each pointer is the
    start of the buffer its kernel argument means, and the argument's extent fits it."""
    from tests.fake_gpu.engine import KernelCatalog

    catalog = KernelCatalog().install(monkeypatch)
    for name in ("g2-cg8-nhwc", "g4-1x1-nhwc", "g4-cg4-first-nchw"):
        proto = grouped_model(**MODELS[name])
        checked = bind_every_tactic(monkeypatch, catalog, compiled(proto, precision), model_feeds(proto), "FusedConv",
                                    conv_buffer)
        labels = " ".join(checked)
        assert "grouped_direct direct" in labels and "cublas" in labels and all(checked.values()), checked
        assert any(t in labels for t in ("grouped_im2col_gemm 64x64", "grouped_gemm 64x64", "simt_64x64")), labels


def test_the_autotuner_times_every_grouped_tactic_on_the_fake_device(monkeypatch):
    """Each candidate (its scratch, constants, cuBLAS call) runs through the tuner's plumbing;
    the fake's clock means nothing, so only that every one ran is checked."""
    from rtxrt.backends.cuda.plan.builder import finalize
    from rtxrt.backends.cuda.run.executor import load_functions
    from rtxrt.backends.cuda.tune.autotune import autotune
    from tests.fake_gpu.cublas import FakeCublas
    from tests.fake_gpu.engine import load_engine, plan_model

    device = FakeDevice(opaque="skip").install(monkeypatch)  # tiled GEMMs are recorded, not run
    proto = grouped_model(**MODELS["g2-cg8-nhwc"])
    feeds = model_feeds(proto)
    plan = plan_model(compiled(proto, "fp16"), {k: v.shape for k, v in feeds.items()})
    stream = device.cupy.cuda.Stream(non_blocking=True)
    functions = load_functions({name: source.encode() for name, source in plan.kernels.items()})
    choices = autotune(plan, functions, FakeCublas(device, stream), stream)
    (i,) = grouped_steps(plan)
    assert i in choices and len(plan.steps[i].candidates) >= 4
    launched = {r.kernel for r in device.launches if r.replay}
    assert {name for p in plan.steps[i].candidates for name in p.kernels} <= launched
    profile = load_engine(device, finalize(plan, choices)).profile(feeds)
    assert [label for label, _ in profile] == [s.label for s in plan.steps]


def test_a_grouped_conv_transpose_runs_on_the_gpu(device):
    """ConvTranspose already covers every group (a direct gather): no host step."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=4, strides=[2, 2], pads=P1,
                              output_padding=[1, 1])]
    proto = make_model(nodes, [("x", F, [2, 8, 5, 4])], [("y", F, [2, 12, 10, 8])],
                       {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(12)
                        .astype(np.float32)})
    runs = check_model(device, proto, [model_feeds(proto)], "fp32")
    assert runs[0].engine.plan.host_steps == [] and any(p.label == "conv_transpose"
                                                        for p in runs[0].engine.final.programs)


# ---------------------------------------------------------------- ResNeXt blocks from torch

def resnext_block(path, width: int, groups: int = 8, dynamic: bool = False) -> str:
    """Two ResNeXt bottlenecks (1x1 -> grouped 3x3 -> 1x1, batch norms, + the input, relu),
    exported with torch.onnx.export(dynamo=False); random batch-norm statistics. (Two, so that
    the layout pass stores the region NHWC: a lone block's grouped conv reads NCHW.)"""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(32, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, 32, 1, bias=False), nn.BatchNorm2d(32)

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = torch.relu(self.bn2(self.conv2(out)))
            return torch.relu(self.bn3(self.conv3(out)) + x)

    torch.manual_seed(0)
    block = nn.Sequential(Block(), Block()).eval()
    for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    axes = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}} if dynamic else None
    torch.onnx.export(block, torch.randn(2, 32, 8, 8), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, dynamic_axes=axes)
    return str(path)


@pytest.fixture(scope="module")
def resnext_blocks(tmp_path_factory) -> dict:
    """The blocks' ONNX files, exported before any test installs the fake cupy (which torch's
    exporter would trip on): width -> path, and "generic" (symbolic batch and image size)."""
    folder = tmp_path_factory.mktemp("resnext")
    paths = {width: resnext_block(folder / f"block{width}.onnx", width) for width in (64, 256)}
    paths["generic"] = resnext_block(folder / "generic.onnx", 64, dynamic=True)
    return paths


@pytest.mark.parametrize("width", [64, 256], ids=["8-channels-a-group", "32-channels-a-group"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resnext_blocks_from_torch_plan_and_run(resnext_blocks, device, width, precision):
    import onnx

    proto = onnx.load(resnext_blocks[width])
    model = compiled(proto, precision)
    plan = build_plan(model, {"x": (2, 32, 8, 8)}, arch="sm_86", sm_count=46)
    assert plan.host_steps == []
    steps = grouped_steps(plan)
    assert len(steps) == 2 and plan.forms[plan.steps[steps[1]].inputs[0]].layout == "NHWC"
    default = "grouped_direct" if width == 64 else "grouped_im2col_gemm"
    assert all(plan.steps[i].candidates[0].label.startswith(default) for i in steps)
    feeds = [{"x": np.random.default_rng(s).standard_normal((2, 32, 8, 8)).astype(np.float32)} for s in (1, 2)]
    for tactic in ("cublas", "direct"):
        runs = check_model(device, proto, feeds, precision, prefer=prefer(tactic))
        assert runs[0].engine.plan.host_steps == []


def test_generic_resnext_blocks_have_one_set_of_kernels_for_every_shape(resnext_blocks, monkeypatch):
    """Planned generically (batch and image size vary over a profile) at opt, min, max and an
    odd shape: the kernels are the opt plan's, the grouped conv offers the same tactics, and
    each shape runs on the fake device and matches the reference."""
    import onnx

    from rtxrt.backends.cuda.plan.builder import finalize
    from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
    from tests.fake_gpu.engine import check_matches_reference, choose, load_engine, plan_model, reference_outputs
    from tests.fake_gpu.engine import run_engine
    from tests.fake_gpu.models import original

    proto = onnx.load(resnext_blocks["generic"])
    device = FakeDevice(256 << 20).install(monkeypatch)
    ranges = {"x": ((1, 32, 8, 8), (2, 32, 12, 12), (3, 32, 16, 16))}
    model = compiled(proto, "fp32")
    dims, memo = dim_ranges(model, sample_shapes(ranges)), {}
    opt = plan_model(model, {"x": (2, 32, 12, 12)}, dims=dims, constants=memo)
    steps = grouped_steps(opt)
    labels = [[p.label for p in opt.steps[i].candidates] for i in steps]
    for shape, seed in (((1, 32, 8, 8), 1), ((3, 32, 11, 16), 2), ((3, 32, 16, 16), 3)):
        plan = plan_model(model, {"x": shape}, dims=dims, constants=memo)
        assert set(plan.kernels) <= set(opt.kernels), sorted(set(plan.kernels) - set(opt.kernels))
        assert [[p.label for p in plan.steps[i].candidates] for i in steps] == labels
        for tactic in ("cublas", "direct"):
            engine = load_engine(device, finalize(plan, choose(plan, prefer(tactic))))
            feeds = {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
            check_matches_reference(run_engine(engine, feeds), reference_outputs(original(proto), feeds), tol=1e-5,
                                    what=f"{shape} {tactic}")


def test_a_grouped_kernel_takes_a_varying_batch_as_a_dim_argument():
    """The batch (a DimInt) is named in the sources, so it needs the lowering's bindings:
    outside them planning fails, inside it plans."""
    from rtxrt.backends.cuda.codegen.dynamic import dim

    n = dim(2, "rtxd_i0_0", 1, 4)
    with pytest.raises(ValueError, match="no node being lowered binds"):
        conv_plan((n, 64, 9, 9), (64, 8, 3, 3), {"group": 8, "pads": P1}, F16)
    with dim_bindings({"rtxd_i0_0": 2}):
        assert conv_plan((n, 64, 9, 9), (64, 8, 3, 3), {"group": 8, "pads": P1}, F16).steps
