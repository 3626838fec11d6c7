"""FusedConv codegen (rtxrt/jit/codegen/conv.py, conv_implicit.py) without a GPU: every kernel
of every plan in ``CASES`` and ``IMPLICIT_CASES`` compiles with NVRTC for every supported
arch, plans list the right launches and buffers, the host-side weight packing matches the
patch matrix's column order (checked in numpy against the reference Conv), and what the
generator does not cover is a CodegenError.

``CASES`` covers: im2col + GEMM from NHWC and from NCHW, strided, padded, dilated, SAME
padding, the direct 1x1 GEMM, depthwise from both layouts with every activation and residual,
fp16 and bf16 (bf16 tensor-core GEMMs are refused on sm_75, which generation says) and fp32
(SIMT GEMMs, every arch). ``IMPLICIT_CASES``: the implicit GEMM with every tile shape, fp16
and bf16, ResNet-like and odd geometries, every residual, and an X of more than 2**32
elements (64-bit offsets); those kernels are also checked for register spills (ptxas)."""
from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.activations import ACTIVATIONS, RESIDUALS
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.ir.ops.conv import sliding_window
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.ops.conv_source import (
    ConvTactic,
    conv_gemm_tactics,
    conv_plan,
    default_tactic,
    pack_conv_weights,
)
from rtxrt.backends.cuda.ops.conv_implicit_source import (
    IMPLICIT_TILES,
    ImplicitConvKernel,
    ImplicitGemmTactic,
    implicit_conv_kernel,
    implicit_tactics,
)
from rtxrt.backends.cuda.ops.gemm_source import (
    CANDIDATE_TACTICS,
    GemmKernel,
    GemmTactic,
    mma_instruction,
)
from rtxrt.backends.cuda.ops.gemm_simt_source import SIMT_TACTICS, SimtGemmKernel, SimtTactic
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS

from .helpers import compile_jobs

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
DTYPES = (F16, F32, F16, BF16)  # the depthwise cases' types, by index
PARAMS = {"leaky_relu": (0.2,), "clip": (-0.5, 0.75), "hard_sigmoid": (0.25, 0.4)}


@dataclass(frozen=True)
class Case:
    id: str
    x: tuple[int, int, int, int]  # NCHW
    w: tuple[int, int, int, int]  # OIHW
    attrs: dict[str, Any] = field(hash=False)
    layout: str = "NHWC"
    dtype: DType = F16
    bias: bool = True
    tactic: ConvTactic | None = None

    def plan(self):
        return conv_plan(TensorType(self.dtype, self.x), self.w, self.attrs, self.dtype, self.layout, bias=self.bias,
                         tactic=self.tactic)


P1 = {"pads": [1, 1, 1, 1]}
CASES = [
    Case("3x3s1p1-relu-resbefore", (1, 64, 56, 56), (64, 64, 3, 3),
         {**P1, "activation": "relu", "residual": "before_activation"}),
    Case("7x7s2p3-nchw-relu", (1, 3, 224, 224), (64, 3, 7, 7),
         {"pads": [3, 3, 3, 3], "strides": [2, 2], "activation": "relu"}, "NCHW"),
    Case("1x1-direct-resafter", (1, 256, 14, 14), (1024, 256, 1, 1), {"residual": "after_activation"}),
    Case("1x1s2-im2col", (2, 64, 28, 28), (128, 64, 1, 1), {"strides": [2, 2]}, bias=False),
    Case("3x3s2-bf16", (1, 128, 28, 28), (256, 128, 3, 3), {**P1, "strides": [2, 2], "activation": "relu"},
         dtype=BF16),
    Case("odd-dilated-same", (2, 5, 13, 11), (7, 5, 3, 2),
         {"auto_pad": "SAME_UPPER", "dilations": [2, 1], "activation": "silu"}),
    Case("odd-nchw-asym", (1, 6, 9, 10), (10, 6, 2, 3), {"pads": [0, 1, 2, 1], "strides": [2, 1]}, "NCHW"),
    Case("7x7s2p3-nchw-relu-f32", (1, 3, 224, 224), (64, 3, 7, 7),
         {"pads": [3, 3, 3, 3], "strides": [2, 2], "activation": "relu"}, "NCHW", F32),
    Case("3x3s1p1-gelu-resbefore-f32", (2, 32, 28, 28), (64, 32, 3, 3),
         {**P1, "activation": "gelu", "residual": "before_activation"}, dtype=F32),
    Case("1x1-direct-resafter-f32", (1, 256, 14, 14), (1024, 256, 1, 1), {"residual": "after_activation"},
         dtype=F32),
    Case("odd-nchw-asym-f32", (1, 6, 9, 10), (10, 6, 2, 3), {"pads": [0, 1, 2, 1], "strides": [2, 1]}, "NCHW",
         F32, bias=False),
] + [
    Case(f"dw-{act}-{RESIDUALS[i % 3]}-{'nchw' if i % 2 else 'nhwc'}-{DTYPES[i % 4].short}",
         (2 if i % 3 == 0 else 1, 32, 15, 14), (32, 1, 3, 3),
         {"group": 32, "pads": [1, 1, 1, 1], "strides": [1 + i % 2] * 2, "activation": act,
          "activation_params": list(PARAMS.get(act, ())), "residual": RESIDUALS[i % 3]},
         "NCHW" if i % 2 else "NHWC", DTYPES[i % 4], bias=i % 5 != 4)
    for i, act in enumerate(ACTIVATIONS)
]


def test_the_catalogue_covers_each_tactic_and_epilogue():
    plans = [c.plan() for c in CASES]
    assert {p.tactic for p in plans} == {"im2col_gemm", "gemm", "depthwise"}
    assert {c.attrs.get("activation") for c in CASES if c.attrs.get("group")} == set(ACTIVATIONS)
    assert {(p.tactic, p.storage_dtype) for p in plans} >= {(t, F32) for t in ("im2col_gemm", "gemm", "depthwise")}
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_kernel_compiles_for_every_supported_arch():
    started = time.perf_counter()
    jobs: dict[tuple[str, str], str] = {}
    for case, arch in itertools.product(CASES, SUPPORTED_ARCHS):
        for step in case.plan().steps:
            if isinstance(step.kernel, GemmKernel) and case.dtype == BF16 and arch == "sm_75":
                with pytest.raises(CodegenError, match="bf16 GEMM needs sm_80"):
                    mma_instruction(arch, step.kernel.problem.dtype)
                continue
            jobs.setdefault((step.kernel.name, arch), step.kernel.source)
    cubins = compile_jobs(jobs)
    assert all(c.startswith(b"\x7fELF") for c in cubins.values())
    assert {arch for _, arch in cubins} == set(SUPPORTED_ARCHS)
    print(f"\n{len(CASES)} conv cases -> {len({n for n, _ in jobs})} kernels, {len(cubins)} cubins "
          f"in {time.perf_counter() - started:.1f} s")


# ---------------------------------------------------------------- plans

def test_im2col_plan_lists_its_launches_and_buffers():
    plan = CASES[0].plan()
    assert plan.tactic == "im2col_gemm" and plan.out_shape == (1, 56, 56, 64) and plan.k_padded == 576
    im2col, gemm = plan.steps
    assert im2col.buffers == ("X", "workspace") and im2col.kernel.name.startswith("rtx_im2col_")
    assert gemm.buffers == ("workspace", "W", "bias", "Z", "Y") and gemm.kernel.name.startswith("rtx_gemm_")
    assert plan.workspace_bytes == 56 * 56 * 576 * 2
    assert plan.buffers == {"X": ((1, 56, 56, 64), F16), "W": ((64, 576), F16), "workspace": ((3136, 576), F16),
                            "bias": ((64,), F16), "Z": ((1, 56, 56, 64), F16), "Y": ((1, 56, 56, 64), F16)}
    p = plan.gemm
    assert (p.m, p.n, p.k, p.trans_b, p.activation, p.residual) == (3136, 64, 576, True, "relu", "before_activation")
    assert conv_gemm_tactics(plan) and all(s.grid[0] > 0 for s in plan.steps)


def test_first_conv_pads_k_to_a_multiple_of_8_and_reads_nchw():
    plan = CASES[1].plan()
    assert plan.k_padded == 152 and plan.buffers["X"] == ((1, 3, 224, 224), F16)
    assert plan.out_shape == (1, 112, 112, 64) and plan.gemm.vector_a and plan.gemm.vector_b
    assert "Z" not in plan.buffers and plan.steps[1].buffers == ("workspace", "W", "bias", "Y")


def test_a_1x1_conv_over_nhwc_skips_im2col():
    plan = CASES[2].plan()
    assert plan.tactic == "gemm" and plan.workspace_bytes == 0 and "workspace" not in plan.buffers
    (step,) = plan.steps
    assert step.buffers == ("X", "W", "bias", "Z", "Y") and plan.k_padded == 256
    nchw = conv_plan((1, 256, 14, 14), (1024, 256, 1, 1), {}, F16, "NCHW")
    assert nchw.tactic == "im2col_gemm"  # channels are not innermost: the copy transposes


def test_depthwise_plan_is_one_direct_kernel():
    plan = conv_plan((2, 32, 15, 14), (32, 1, 3, 3), {"group": 32, "pads": [1, 1, 1, 1], "residual":
                                                      "after_activation"}, F16, bias=True)
    assert plan.tactic == "depthwise" and plan.gemm is None and plan.workspace_bytes == 0
    (step,) = plan.steps
    assert step.buffers == ("X", "W", "bias", "Z", "Y") and step.kernel.name.startswith("rtx_dwconv_")
    assert plan.buffers["W"] == ((32, 9), F16) and plan.out_shape == (2, 15, 14, 32)
    assert step.grid[0] * step.block[0] >= 2 * 15 * 14 * 32


def test_names_are_hashes_and_fp16_bf16_share_im2col():
    a, b = CASES[0].plan(), CASES[0].plan()
    assert [s.kernel.name for s in a.steps] == [s.kernel.name for s in b.steps]
    bf = conv_plan((1, 64, 56, 56), (64, 64, 3, 3), CASES[0].attrs, BF16, bias=True)
    assert bf.steps[0].kernel.name == a.steps[0].kernel.name and bf.steps[1].kernel.name != a.steps[1].kernel.name
    assert all("__RTX_KERNEL__" not in s.kernel.source and s.kernel.name in s.kernel.source for s in a.steps)


def test_fp32_plans_multiply_on_the_cuda_cores_with_4_byte_elements():
    plan = next(c for c in CASES if c.id == "7x7s2p3-nchw-relu-f32").plan()
    assert plan.tactic == "im2col_gemm" and plan.k_padded == 148  # 147 rounded up to 16-byte rows
    im2col, gemm = plan.steps
    assert "const float* __restrict__ X, float* __restrict__ workspace" in im2col.kernel.source
    assert isinstance(gemm.kernel, SimtGemmKernel) and gemm.kernel.name.startswith("rtx_sgemm_")
    assert gemm.buffers == ("workspace", "W", "bias", "Y") and gemm.grid == gemm.kernel.launch.grid
    assert plan.workspace_bytes == 112 * 112 * 148 * 4
    assert all(dtype == F32 for _, dtype in plan.buffers.values())
    assert plan.gemm.dtype == F32 and isinstance(default_tactic(plan.gemm), SimtTactic)
    tactics = conv_gemm_tactics(plan)
    assert tactics and all(isinstance(t, SimtTactic) for t in tactics)
    assert {type(t) for t in conv_gemm_tactics(CASES[0].plan())} == {GemmTactic, ImplicitGemmTactic}
    dw = next(c for c in CASES if c.dtype == F32 and c.attrs.get("group")).plan()
    assert dw.tactic == "depthwise" and "const float* __restrict__ X" in dw.steps[0].kernel.source


def test_the_tactic_picks_the_gemm_kernel():
    case = next(c for c in CASES if c.id == "3x3s1p1-gelu-resbefore-f32")
    for tactic in SIMT_TACTICS:
        plan = conv_plan(case.x, case.w, case.attrs, F32, bias=True, tactic=tactic)
        assert plan.steps[-1].kernel.tactic == tactic and plan.steps[-1].block == (tactic.threads, 1, 1)
    with pytest.raises(CodegenError, match="float16 or bfloat16 inputs, not float32"):
        conv_plan(case.x, case.w, case.attrs, F32, tactic=CANDIDATE_TACTICS[0])
    half = conv_plan(case.x, case.w, case.attrs, F16, tactic=SIMT_TACTICS[2])  # fp16 on the CUDA cores
    assert isinstance(half.steps[-1].kernel, SimtGemmKernel) and half.gemm.dtype == F16


@pytest.mark.parametrize("args, message", [
    # (other groups plan: tests/backends/cuda/test_grouped_conv.py; a group must divide both channel counts)
    (((1, 8, 9, 9), (10, 2, 3, 3), {"group": 4}), "does not divide the 10 output channels"),
    (((1, 8, 9, 9), (8, 3, 3, 3), {"group": 2}), "channels"),
    (((1, 8, 9), (8, 8, 3), {}), "2-D"),
    (((1, 8, 9, 9), (8, 8, 3, 3, 3), {}), "2-D"),
    (((1, 8, None, 9), (8, 8, 3, 3), {}), "static"),
    (((1, 8, 9, 9), (8, 7, 3, 3), {}), "channels"),
    (((1, 8, 2, 2), (8, 8, 3, 3), {}), "empty"),
    (((1, 8, 9, 9), (8, 8, 3, 3), {"strides": [0, 1]}), "strides"),
    (((1, 8, 9, 9), (8, 8, 3, 3), {"activation": "swish"}), "activation"),
    (((1, 8, 9, 9), (8, 8, 3, 3), {"kernel_shape": [2, 2]}), "kernel_shape"),
])
def test_what_is_not_covered_is_a_codegen_error(args, message):
    with pytest.raises(CodegenError, match=message):
        conv_plan(*args, F16)


def test_storage_type_and_layout_are_checked():
    with pytest.raises(CodegenError, match="float16, bfloat16 or float32 tensors, not float64"):
        conv_plan((1, 8, 9, 9), (8, 8, 3, 3), {}, DType.FLOAT64)
    with pytest.raises(CodegenError, match="layout"):
        conv_plan((1, 8, 9, 9), (8, 8, 3, 3), {}, F16, "CHWN")
    with pytest.raises(ValueError, match="plan was made"):
        CASES[0].plan().pack_weights(np.zeros((64, 64, 1, 1), np.float16))


# ---------------------------------------------------------------- the layout contract, in numpy

def patch_matrix(x_nchw: np.ndarray, plan, attrs) -> np.ndarray:
    """What the im2col kernel writes: rows (n, oh, ow), columns (kh, kw, c), zero padded."""
    n, c, h, w = x_nchw.shape
    _, oh, ow, _ = plan.out_shape
    _, _, kh, kw = plan.w_shape
    win = sliding_window(attrs, (h, w), (kh, kw))
    consts = {"SH": win.strides[0], "SW": win.strides[1], "PH": win.pads[0], "PW": win.pads[1],
              "DH": win.dilations[0], "DW": win.dilations[1]}
    cols = np.zeros((n, oh, ow, kh, kw, c), np.float64)
    for i, j in itertools.product(range(kh), range(kw)):
        for y, z in itertools.product(range(oh), range(ow)):
            ih = y * consts["SH"] - consts["PH"] + i * consts["DH"]
            iw = z * consts["SW"] - consts["PW"] + j * consts["DW"]
            if 0 <= ih < h and 0 <= iw < w:
                cols[:, y, z, i, j, :] = x_nchw[:, :, ih, iw]
    flat = cols.reshape(n * oh * ow, -1)
    return np.pad(flat, ((0, 0), (0, plan.k_padded - flat.shape[1])))


@pytest.mark.parametrize("case", [CASES[5], CASES[6], CASES[10]], ids=lambda c: c.id)
def test_packed_weights_times_the_patch_matrix_is_the_reference_conv(case):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, case.x)
    w = rng.uniform(-1, 1, case.w)
    plan = case.plan()
    y = patch_matrix(x, plan, case.attrs) @ plan.pack_weights(w).T  # [N*OH*OW, OC] = NHWC
    attrs = {k: v for k, v in case.attrs.items() if k not in ("activation", "residual", "activation_params")}
    ref = find_kernel("Conv")(Node("Conv", ["x", "w"], ["y"], attrs), 1, lambda *a: []).run(x, w)
    np.testing.assert_allclose(y.reshape(plan.out_shape).transpose(0, 3, 1, 2), ref, rtol=1e-10, atol=1e-10)


def test_pack_conv_weights_is_ohwi_flattened_and_zero_padded():
    w = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    packed = pack_conv_weights(w, 16)
    assert packed.shape == (2, 16) and not packed[:, 12:].any()
    np.testing.assert_array_equal(packed[:, :12], w.transpose(0, 2, 3, 1).reshape(2, 12))
    assert pack_conv_weights(w).shape == (2, 12)
    with pytest.raises(ValueError):
        pack_conv_weights(w, 8)


# ---------------------------------------------------------------- implicit GEMM

def implicit_cases() -> list[Case]:
    """Every tile shape on a ResNet 3x3 conv in fp16 and bf16, then odd geometries (tile
    shapes and types rotating): strides, 1x1 and 7x7 kernels, dilation, asymmetric pads, few
    channels, every residual, no bias, and an X too big for 32-bit offsets."""
    cases = [Case(f"3x3s1p1-{t.label}-{dtype.short}", (4, 64, 14, 14), (64, 64, 3, 3),
                  {**P1, "activation": "relu", "residual": "before_activation"}, dtype=dtype,
                  tactic=ImplicitGemmTactic(t))
             for t in IMPLICIT_TILES for dtype in (F16, BF16)]
    odd = [
        ("3x3s2p1", (1, 128, 28, 28), (256, 128, 3, 3), {**P1, "strides": [2, 2], "activation": "relu"}, True),
        ("1x1s2-resafter", (4, 256, 14, 14), (512, 256, 1, 1),
         {"strides": [2, 2], "activation": "relu", "residual": "after_activation"}, True),
        ("1x1s1", (1, 64, 7, 7), (256, 64, 1, 1), {"activation": "silu"}, False),
        ("7x7s2p3-c8", (1, 8, 33, 31), (16, 8, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}, True),
        ("dilated-asym-c24", (2, 24, 11, 9), (40, 24, 3, 2),
         {"pads": [0, 1, 2, 1], "strides": [2, 1], "dilations": [2, 1], "activation": "gelu",
          "residual": "after_activation"}, True),
        ("same-upper-c16", (1, 16, 13, 10), (24, 16, 4, 3), {"auto_pad": "SAME_UPPER", "activation": "leaky_relu",
                                                              "activation_params": [0.1]}, True),
        ("x-over-2g-elements", (64, 256, 512, 512), (64, 256, 3, 3), {**P1}, True),
    ]
    for i, (name, x, w, attrs, bias) in enumerate(odd):
        tiles = IMPLICIT_TILES[i % len(IMPLICIT_TILES)]
        dtype = BF16 if i % 2 else F16
        cases.append(Case(f"{name}-{tiles.label}-{dtype.short}", x, w, attrs, dtype=dtype, bias=bias,
                          tactic=ImplicitGemmTactic(tiles)))
    return cases


IMPLICIT_CASES = implicit_cases()


def test_the_implicit_catalogue_covers_every_tile_shape_type_and_residual():
    assert {c.tactic.tiles for c in IMPLICIT_CASES} == set(IMPLICIT_TILES)
    assert {c.dtype for c in IMPLICIT_CASES} == {F16, BF16}
    assert {c.attrs.get("residual", "none") for c in IMPLICIT_CASES} == set(RESIDUALS)
    assert all(c.plan().tactic == "implicit_gemm" for c in IMPLICIT_CASES)
    assert len({c.id for c in IMPLICIT_CASES}) == len(IMPLICIT_CASES)


def test_every_implicit_kernel_compiles_for_every_supported_arch():
    jobs: dict[tuple[str, str], str] = {}
    for case, arch in itertools.product(IMPLICIT_CASES, SUPPORTED_ARCHS):
        (step,) = case.plan().steps
        if case.dtype == BF16 and arch == "sm_75":
            with pytest.raises(CodegenError, match="bf16 GEMM needs sm_80"):
                implicit_conv_kernel(step.kernel.geometry, step.kernel.problem, case.tactic, arch)
            continue
        jobs.setdefault((step.kernel.name, arch), step.kernel.source)
    cubins = compile_jobs(jobs)
    assert all(c.startswith(b"\x7fELF") for c in cubins.values())
    assert {arch for _, arch in cubins} == set(SUPPORTED_ARCHS)


def ptxas_report(source: str, arch: str) -> str:
    """ptxas's resource usage (-v) for ``source`` on ``arch``, through NVRTC."""
    from rtxrt.backends.cuda.compile.nvrtc import _log, _nvrtc

    nvrtc = _nvrtc()
    program = nvrtc.createProgram(source, "kernel.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", "--std=c++17", "-default-device", "--fmad=false",
                                       "--ptxas-options=-v"])
        return _log(nvrtc, program)
    finally:
        nvrtc.destroyProgram(program)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_implicit_kernels_do_not_spill_registers(arch):
    with ThreadPoolExecutor(4) as pool:
        reports = pool.map(lambda c: ptxas_report(c.plan().steps[0].kernel.source, arch), IMPLICIT_CASES)
        for case, report in zip(IMPLICIT_CASES, reports):
            assert " 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in report, (case.id, report[-400:])


def test_implicit_plan_is_one_gemm_launch_reading_x():
    case = next(c for c in IMPLICIT_CASES if c.id.startswith("3x3s1p1-128x64"))
    plan = case.plan()
    assert plan.tactic == "implicit_gemm" and plan.workspace_bytes == 0 and "workspace" not in plan.buffers
    (step,) = plan.steps
    kernel = step.kernel
    assert isinstance(kernel, ImplicitConvKernel) and kernel.name.startswith("rtx_iconv_")
    assert step.buffers == ("X", "W", "bias", "Z", "Y")
    assert plan.buffers == {"X": ((4, 14, 14, 64), F16), "W": ((64, 576), F16), "bias": ((64,), F16),
                            "Z": ((4, 14, 14, 64), F16), "Y": ((4, 14, 14, 64), F16)}
    assert [a.shape for a in kernel.args] == [(4, 14, 14, 64), (64, 576), (64,), (4, 14, 14, 64), (4, 14, 14, 64)]
    p = plan.gemm
    assert (p.m, p.n, p.k, p.trans_b, p.activation, p.residual) == (784, 64, 576, True, "relu", "before_activation")
    assert kernel.problem == p and kernel.tactic == case.tactic.tiles and plan.k_padded == 576
    assert step.grid == (7, 1, 1) and step.block == (128, 1, 1) and kernel.launch.grid == step.grid
    im2col = conv_plan(case.x, case.w, case.attrs, F16, bias=True)  # the same weights, packed the same way
    assert im2col.tactic == "im2col_gemm" and im2col.buffers["W"] == plan.buffers["W"] and im2col.gemm == p


def test_the_implicit_kernel_is_the_gemm_with_another_a_loader():
    """Everything from the B tile's copy on (mma, epilogue, kernel) is gemm.py's text."""
    case = IMPLICIT_CASES[0]
    kernel = case.plan().steps[0].kernel
    gemm = conv_plan(case.x, case.w, case.attrs, case.dtype, bias=True, tactic=kernel.tactic).steps[-1].kernel
    marker = "#if RTX_TRANS_B  // B is [N, K]: a tile of BN rows of BK"
    tail = kernel.source[kernel.source.index(marker):].replace(kernel.name, "NAME")
    assert tail == gemm.source[gemm.source.index(marker):].replace(gemm.name, "NAME")
    assert "cp.async.cg.shared.global [%0], [%1], 16, %2;" in kernel.source
    assert "rtx_patch(m0 + r, k0 + kc, offset)" in kernel.source and "typedef unsigned XI;" in kernel.source
    huge = next(c for c in IMPLICIT_CASES if c.id.startswith("x-over-2g"))
    assert "typedef long long XI;" in huge.plan().steps[0].kernel.source


def test_implicit_tactics_are_offered_where_they_apply():
    im2col = CASES[0].plan()  # 3x3 over NHWC fp16, 64 channels
    offered = [t for t in conv_gemm_tactics(im2col) if isinstance(t, ImplicitGemmTactic)]
    assert offered == list(implicit_tactics(im2col.gemm)) and len(offered) >= 2
    assert all(conv_plan(CASES[0].x, CASES[0].w, CASES[0].attrs, F16, bias=True, tactic=t).tactic == "implicit_gemm"
               for t in offered)
    big = conv_plan((32, 128, 28, 28), (128, 128, 3, 3), P1, F16)
    assert {t.tiles for t in conv_gemm_tactics(big) if isinstance(t, ImplicitGemmTactic)} == set(IMPLICIT_TILES) - {
        GemmTactic(32, 64, 64, 1, 2)}  # the 32-row tile only for few output pixels
    small = conv_plan((1, 512, 7, 7), (512, 512, 3, 3), P1, BF16)
    assert GemmTactic(32, 64, 64, 1, 2) in {t.tiles for t in conv_gemm_tactics(small)
                                           if isinstance(t, ImplicitGemmTactic)}
    assert conv_plan(CASES[0].x, CASES[0].w, CASES[0].attrs, F16, bias=True).tactic == "im2col_gemm"  # the default
    not_offered = [
        CASES[1].plan(),  # NCHW, 3 channels
        conv_plan((1, 12, 9, 9), (8, 12, 3, 3), P1, F16),  # 12 channels: not a multiple of 8
        CASES[2].plan(),  # direct 1x1: X already is the patch matrix
        next(c for c in CASES if c.id == "3x3s1p1-gelu-resbefore-f32").plan(),  # fp32
        CASES[-1].plan(),  # depthwise
    ]
    for plan in not_offered:
        assert not any(isinstance(t, ImplicitGemmTactic) for t in conv_gemm_tactics(plan)), plan.tactic


@pytest.mark.parametrize("args, message", [
    (((1, 64, 9, 9), (64, 64, 3, 3), {}, F16, "NCHW"), "NCHW"),
    (((1, 12, 9, 9), (8, 12, 3, 3), {}, F16, "NHWC"), "12 input channels"),
    (((1, 3, 9, 9), (8, 3, 3, 3), {}, F16, "NHWC"), "C % 8 == 0"),
    (((1, 64, 9, 9), (64, 64, 3, 3), {}, F32, "NHWC"), "float16 or bfloat16"),
])
def test_the_implicit_gemm_refuses_what_it_does_not_cover(args, message):
    with pytest.raises(CodegenError, match=message):
        conv_plan(*args, tactic=implicit_tactics()[0])


def test_implicit_tactics_label_themselves():
    assert [t.label for t in implicit_tactics()][:1] == ["implicit_128x128x32_w2x2_s2"]
    assert all(t.tiles.stages == 2 for t in implicit_tactics())
