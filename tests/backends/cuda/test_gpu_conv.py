"""Generated FusedConv plans (rtxrt/jit/codegen/conv.py) on the GPU against the reference
backend's rtxrt::FusedConv.

Each plan's kernels are compiled with NVRTC for the probed GPU's arch, loaded with CuPy and
launched in order on fresh random inputs (uniform in [-1, 1], never zeros; weights scaled by
1/sqrt(C*KH*KW) so that results are O(1)). X is given in the plan's layout (NHWC, or NCHW
for a first conv), weights packed on the host (``ConvPlan.pack_weights``), Z as NHWC; Y and
the im2col workspace are filled with NaN first, so an element no kernel wrote shows. The
reference runs in NCHW: its result is transposed to NHWC for the comparison.

Tolerances, as the relative norm ||Y - ref|| / ||ref|| and per element |Y - ref| <= tol *
(|ref| + rms(ref)): 2e-3 for fp16 (the reference rounds the conv + bias to fp16 before the
epilogue and once more after it, the kernels once: they differ by about one fp16 ulp,
9.8e-4 relative, at most), 1e-2 for bf16 (one ulp is 7.8e-3). fp32 plans (SIMT GEMM, fp32
im2col and depthwise) are compared with the reference run in float64 on the same values:
1e-5 (fp32 accumulation over K <= 576 of O(1/sqrt(K)) terms errs by about sqrt(K) * 6e-8).

``test_an_fp32_gemm_step_may_run_on_cublas`` runs the fp32 plans with their GEMM step
swapped for cuBLAS (true fp32) followed by ``epilogue_kernel``, as a runtime may.

Implicit GEMM (``IMPLICIT_CASES``, every tile shape of conv_implicit.IMPLICIT_TILES, fp16
and bf16): ResNet-like convolutions (3x3 s1/s2, 1x1 s1/s2, 7x7 s2 over 8 and 16 channels,
7x7 and 14x14 images, batch 1 and 4, relu and residuals) and odd ones, compared with the
reference run in float64 on the same values: the kernel multiplies exactly (fp16/bf16
products in fp32), accumulates in fp32 and rounds once, so the same 2e-3 (fp16, one rounding
is at most 4.9e-4 relative) and 1e-2 (bf16, 3.9e-3) hold with room. Also: X at an address
that is not 16-byte aligned (the element-wise gather), Z in place of Y, and the time of
ResNet-50's 3x3 and strided 1x1 convolutions at batch 32, im2col against implicit.
"""
from __future__ import annotations

import math
import statistics
import zlib

import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.ops.conv_source import ConvPlan, conv_gemm_tactics, conv_plan
from rtxrt.backends.cuda.ops.conv_implicit_source import IMPLICIT_TILES, ImplicitGemmTactic
from rtxrt.backends.cuda.codegen.epilogue import epilogue_kernel
from rtxrt.backends.cuda.ops.gemm_source import GemmKernel, mma_instruction
from rtxrt.backends.cuda.compile.nvrtc import compile_many

from .helpers import check_close, random, storage, to_device

pytestmark = pytest.mark.gpu

F16, BF16, F32 = DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32
TOLERANCE = {F16: 2e-3, BF16: 1e-2, F32: 1e-5}
NAN_BITS = {F16: 0x7E00, BF16: 0x7FC0}
P1 = [1, 1, 1, 1]

# (id, X NCHW, W OIHW, attrs, layout, dtype, bias): ResNet-like shapes, relu and residuals
CASES = [
    ("3x3s1p1-64x56x56-relu-resbefore", (1, 64, 56, 56), (64, 64, 3, 3),
     {"pads": P1, "activation": "relu", "residual": "before_activation"}, "NHWC", F16, True),
    ("7x7s2p3-3x224x224-nchw-relu", (1, 3, 224, 224), (64, 3, 7, 7),
     {"pads": [3, 3, 3, 3], "strides": [2, 2], "activation": "relu"}, "NCHW", F16, True),
    ("1x1s1-256x14x14-relu-resafter", (1, 256, 14, 14), (1024, 256, 1, 1),
     {"activation": "relu", "residual": "after_activation"}, "NHWC", F16, True),
    ("3x3s2p1-128x28x28-relu-resbefore", (1, 128, 28, 28), (256, 128, 3, 3),
     {"pads": P1, "strides": [2, 2], "activation": "relu", "residual": "before_activation"}, "NHWC", F16, True),
    ("1x1s2-downsample-batch2", (2, 256, 28, 28), (512, 256, 1, 1), {"strides": [2, 2]}, "NHWC", F16, True),
    ("dw3x3-32ch-relu-resafter", (1, 32, 56, 56), (32, 1, 3, 3),
     {"group": 32, "pads": P1, "activation": "relu", "residual": "after_activation"}, "NHWC", F16, True),
    ("dw3x3s2-32ch-batch2-nchw-relu", (2, 32, 57, 55), (32, 1, 3, 3),
     {"group": 32, "pads": P1, "strides": [2, 2], "activation": "relu"}, "NCHW", F16, True),
    ("3x3s1p1-batch2-64x28x28-relu-resbefore", (2, 64, 28, 28), (128, 64, 3, 3),
     {"pads": P1, "activation": "relu", "residual": "before_activation"}, "NHWC", F16, False),
    ("odd-dilated-same-silu", (2, 5, 13, 11), (7, 5, 3, 2),
     {"auto_pad": "SAME_UPPER", "dilations": [2, 1], "activation": "silu", "residual": "after_activation"},
     "NHWC", F16, True),
    ("3x3s1p1-bf16-relu-resbefore", (1, 64, 28, 28), (64, 64, 3, 3),
     {"pads": P1, "activation": "relu", "residual": "before_activation"}, "NHWC", BF16, True),
    ("dw3x3-bf16-gelu-resbefore", (1, 32, 20, 20), (32, 1, 3, 3),
     {"group": 32, "pads": P1, "activation": "gelu", "residual": "before_activation"}, "NHWC", BF16, True),
    ("3x3s1p1-64x56x56-relu-resbefore-f32", (1, 64, 56, 56), (64, 64, 3, 3),
     {"pads": P1, "activation": "relu", "residual": "before_activation"}, "NHWC", F32, True),
    ("7x7s2p3-3x224x224-nchw-relu-f32", (1, 3, 224, 224), (64, 3, 7, 7),
     {"pads": [3, 3, 3, 3], "strides": [2, 2], "activation": "relu"}, "NCHW", F32, True),
    ("1x1s1-256x14x14-relu-resafter-f32", (1, 256, 14, 14), (1024, 256, 1, 1),
     {"activation": "relu", "residual": "after_activation"}, "NHWC", F32, True),
    ("odd-dilated-same-silu-f32", (2, 5, 13, 11), (7, 5, 3, 2),
     {"auto_pad": "SAME_UPPER", "dilations": [2, 1], "activation": "silu", "residual": "after_activation"},
     "NHWC", F32, False),
    ("dw3x3s2-32ch-batch2-nchw-tanh-f32", (2, 32, 57, 55), (32, 1, 3, 3),
     {"group": 32, "pads": P1, "strides": [2, 2], "activation": "tanh", "residual": "after_activation"},
     "NCHW", F32, True),
]
FP32_GEMM_CASES = [c for c in CASES if c[5] == F32 and not c[3].get("group")]

RELU_RES = {"activation": "relu", "residual": "before_activation"}
# (id, X NCHW, W OIHW, attrs, layout, dtype, bias), each run with every implicit tile shape
IMPLICIT_CASES = [
    (f"{name}-{dtype.short}", x, w, attrs, "NHWC", dtype, bias)
    for dtype in (F16, BF16)
    for name, x, w, attrs, bias in [
        ("3x3s1p1-64x14x14-batch4-relu-resbefore", (4, 64, 14, 14), (64, 64, 3, 3), {"pads": P1, **RELU_RES}, True),
        ("3x3s1p1-256x7x7-relu-resbefore", (1, 256, 7, 7), (256, 256, 3, 3), {"pads": P1, **RELU_RES}, True),
        ("3x3s2p1-128x28x28-relu", (1, 128, 28, 28), (128, 128, 3, 3),
         {"pads": P1, "strides": [2, 2], "activation": "relu"}, True),
        ("1x1s1-256x14x14-batch4-relu-resafter", (4, 256, 14, 14), (64, 256, 1, 1),
         {"activation": "relu", "residual": "after_activation"}, True),
        ("1x1s2-256x14x14-batch4-downsample", (4, 256, 14, 14), (512, 256, 1, 1), {"strides": [2, 2]}, True),
        ("7x7s2p3-8x33x31-relu", (1, 8, 33, 31), (64, 8, 7, 7),
         {"pads": [3, 3, 3, 3], "strides": [2, 2], "activation": "relu"}, True),
        ("7x7s2p3-16x14x14-batch4", (4, 16, 14, 14), (24, 16, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}, False),
        ("dilated-asym-24x11x9-batch2-gelu-resafter", (2, 24, 11, 9), (40, 24, 3, 2),
         {"pads": [0, 1, 2, 1], "strides": [2, 1], "dilations": [2, 1], "activation": "gelu",
          "residual": "after_activation"}, True),
    ]
]




@pytest.fixture(scope="module")
def device():
    from rtxrt.backends.cuda.device import probe

    return probe()


@pytest.fixture(scope="module")
def functions(device, tmp_path_factory):
    """Every kernel of every case that runs on this GPU, compiled at once and loaded."""
    import cupy

    folder = tmp_path_factory.mktemp("conv_cubins")
    sources = {s.kernel.name: s.kernel.source for case in CASES if runs_on(device.arch, make_plan(case))
               for s in make_plan(case).steps}
    sources.update((k.name, k.source) for k in (epilogue_kernel(make_plan(c).gemm) for c in FP32_GEMM_CASES))
    loaded = {}
    for name, cubin in compile_many(sources.items(), device.arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path)).get_function(name)
    return loaded


def runs_on(arch: str, plan: ConvPlan) -> bool:
    """Whether the plan's tensor-core GEMM, if it has one, has an mma on ``arch``."""
    try:
        for step in plan.steps:
            if isinstance(step.kernel, GemmKernel):
                mma_instruction(arch, step.kernel.problem.dtype)
    except CodegenError:
        return False
    return True


def make_plan(case) -> ConvPlan:
    _, x, w, attrs, layout, dtype, bias = case
    return conv_plan(x, w, attrs, dtype, layout, bias=bias)


def reference(case, x, w, b, z_nchw, float64: bool = False) -> np.ndarray:
    """The reference FusedConv on the inputs' values: in float64 for fp32 cases (and where
    ``float64``)."""
    _, _, _, attrs, _, dtype, bias = case
    if dtype == F32 or float64:
        x, w, b, z_nchw = (None if a is None else a.astype(np.float64) for a in (x, w, b, z_nchw))
    node = Node("FusedConv", ["x", "w", "b" if bias else "", "z" if z_nchw is not None else ""], ["y"], attrs,
                domain="rtxrt")
    return find_kernel("FusedConv", "rtxrt")(node, 1, lambda *a: []).run(x, w, b, z_nchw)


def device_buffers(plan: ConvPlan, host: dict[str, np.ndarray]) -> dict:
    """The plan's buffers on the GPU: inputs from ``host``, the rest filled with NaN."""
    import cupy

    buffers = {}
    for name, (shape, dtype) in plan.buffers.items():
        if name in host:
            assert host[name].shape == shape and host[name].dtype == storage(dtype), (name, host[name].shape, shape)
            buffers[name] = to_device(host[name])
        elif dtype == F32:
            buffers[name] = cupy.full(shape, np.nan, cupy.float32)
        else:
            buffers[name] = cupy.full(shape, NAN_BITS[dtype], cupy.uint16)
    return buffers


def launch(functions, step, buffers) -> None:
    if all(step.grid):
        functions[step.kernel.name](step.grid, step.block, tuple(buffers[b] for b in step.buffers))


def execute(plan: ConvPlan, functions, host: dict[str, np.ndarray]) -> np.ndarray:
    """Allocates the plan's buffers, launches its steps in order and returns Y (NHWC)."""
    import cupy

    buffers = device_buffers(plan, host)
    for step in plan.steps:
        launch(functions, step, buffers)
    cupy.cuda.get_current_stream().synchronize()
    return buffers["Y"].get().view(storage(plan.storage_dtype))


def case_inputs(case, plan: ConvPlan):
    """Fresh inputs of ``case`` (seeded by its id): X, W (OIHW), bias, Z (NCHW), and the host
    buffers of the plan (X in its layout, W packed, Z as NHWC)."""
    case_id, x_shape, w_shape, attrs, layout, dtype, bias = case
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    x = random(rng, x_shape, dtype)
    w = random(rng, w_shape, dtype, 1 / math.sqrt(math.prod(w_shape[1:])))
    b = random(rng, (w_shape[0],), dtype) if bias else None
    out_nchw = tuple(plan.out_shape[i] for i in (0, 3, 1, 2))
    z = random(rng, out_nchw, dtype) if attrs.get("residual", "none") != "none" else None
    host = {"X": x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "W": plan.pack_weights(w)}
    if b is not None:
        host["bias"] = b
    if z is not None:
        host["Z"] = np.ascontiguousarray(z.transpose(0, 2, 3, 1))
    return (x, w, b, z), host


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_plan_matches_the_reference_fused_conv(case, device, functions):
    case_id, dtype = case[0], case[5]
    plan = make_plan(case)
    if not runs_on(device.arch, plan):
        pytest.skip(f"{dtype.short} GEMM does not run on {device.arch}")
    (x, w, b, z), host = case_inputs(case, plan)
    got = execute(plan, functions, host)
    want = reference(case, x, w, b, z).transpose(0, 2, 3, 1)
    rel = check_close(got, want, TOLERANCE[dtype], case_id, "Y")
    print(f"\n{case_id}: {plan.tactic}, steps {[s.kernel.name for s in plan.steps]}, rel err {rel:.2e}")


@pytest.mark.parametrize("case", FP32_GEMM_CASES, ids=lambda c: c[0])
def test_an_fp32_gemm_step_may_run_on_cublas(case, functions):
    """The plan's steps up to its GEMM, then cuBLAS (true fp32) writes the patch matrix times
    the packed weights into Y and ``epilogue_kernel(plan.gemm)`` finishes Y in place."""
    import cupy

    from rtxrt.backends.cuda.run.cublas import Cublas

    plan = make_plan(case)
    p = plan.gemm
    (x, w, b, z), host = case_inputs(case, plan)
    buffers = device_buffers(plan, host)
    *before, gemm_step = plan.steps
    for step in before:
        launch(functions, step, buffers)
    by_arg = dict(zip((a.name for a in gemm_step.kernel.args), gemm_step.buffers))  # A -> "workspace" or "X", ...
    epilogue = epilogue_kernel(p)
    with Cublas(cupy.cuda.get_current_stream().ptr) as blas:
        blas.gemm(buffers[by_arg["A"]].data.ptr, buffers[by_arg["B"]].data.ptr, buffers[by_arg["D"]].data.ptr,
                  p.m, p.n, p.k, dtype=F32, compute="fp32", trans_b=p.trans_b, lda=p.lda, ldb=p.ldb, ldc=p.ldd,
                  alpha=p.alpha)
        functions[epilogue.name]((epilogue.launch.grid(),), (epilogue.launch.block,),
                                 tuple(buffers[by_arg[a.name]] for a in epilogue.args))
        cupy.cuda.get_current_stream().synchronize()
    got = buffers["Y"].get()
    want = reference(case, x, w, b, z).transpose(0, 2, 3, 1)
    check_close(got, want, TOLERANCE[F32], case[0], "Y")


# ---------------------------------------------------------------- implicit GEMM

def implicit_plan(case, tiles) -> ConvPlan:
    _, x, w, attrs, layout, dtype, bias = case
    return conv_plan(x, w, attrs, dtype, layout, bias=bias, tactic=ImplicitGemmTactic(tiles))


def load_functions(kernels, arch: str, folder) -> dict:
    import cupy

    loaded = {}
    for name, cubin in compile_many(((k.name, k.source) for k in kernels), arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path)).get_function(name)
    return loaded


@pytest.fixture(scope="module")
def implicit_functions(device, tmp_path_factory):
    """Every implicit kernel of every case that runs on this GPU, compiled at once."""
    plans = [implicit_plan(c, t) for c in IMPLICIT_CASES for t in IMPLICIT_TILES]
    kernels = [s.kernel for p in plans if runs_on(device.arch, p) for s in p.steps]
    return load_functions(kernels, device.arch, tmp_path_factory.mktemp("implicit_cubins"))


@pytest.mark.parametrize("tiles", IMPLICIT_TILES, ids=lambda t: t.label)
@pytest.mark.parametrize("case", IMPLICIT_CASES, ids=lambda c: c[0])
def test_implicit_plan_matches_the_reference_in_float64(case, tiles, device, implicit_functions):
    plan = implicit_plan(case, tiles)
    if not runs_on(device.arch, plan):
        pytest.skip(f"{case[5].short} GEMM does not run on {device.arch}")
    assert plan.tactic == "implicit_gemm" and "workspace" not in plan.buffers
    (x, w, b, z), host = case_inputs(case, plan)
    got = execute(plan, implicit_functions, host)
    want = reference(case, x, w, b, z, float64=True).transpose(0, 2, 3, 1)
    check_close(got, want, TOLERANCE[case[5]], f"{case[0]} {tiles.label}", "Y")


@pytest.mark.parametrize("tiles", IMPLICIT_TILES, ids=lambda t: t.label)
def test_implicit_gathers_from_an_unaligned_x_element_by_element(tiles, device, implicit_functions):
    """X one element past a 16-byte boundary: the kernel's alignment check picks the
    element-wise gather."""
    import cupy

    case = IMPLICIT_CASES[0]
    plan = implicit_plan(case, tiles)
    (x, w, b, z), host = case_inputs(case, plan)
    buffers = device_buffers(plan, host)
    shifted = cupy.empty(buffers["X"].size + 1, cupy.uint16)
    shifted[1:] = buffers["X"].reshape(-1)
    buffers["X"] = shifted[1:]
    assert buffers["X"].data.ptr % 16
    launch(implicit_functions, plan.steps[0], buffers)
    got = buffers["Y"].get().view(storage(plan.storage_dtype))
    want = reference(case, x, w, b, z, float64=True).transpose(0, 2, 3, 1)
    check_close(got, want, TOLERANCE[case[5]], f"{case[0]} {tiles.label} unaligned X", "Y")


def test_implicit_residual_may_be_updated_in_place(device, implicit_functions):
    """Z and Y the same buffer (a runtime may reuse Z's memory for Y)."""
    case = IMPLICIT_CASES[0]
    plan = implicit_plan(case, IMPLICIT_TILES[2])
    (x, w, b, z), host = case_inputs(case, plan)
    buffers = device_buffers(plan, host)
    buffers["Y"] = buffers["Z"]
    launch(implicit_functions, plan.steps[0], buffers)
    got = buffers["Y"].get().view(storage(plan.storage_dtype))
    want = reference(case, x, w, b, z, float64=True).transpose(0, 2, 3, 1)
    check_close(got, want, TOLERANCE[case[5]], f"{case[0]} in place", "Y")


RESNET50_BATCH32 = [  # (id, X NCHW, W OIHW, attrs): the 3x3 and strided 1x1 convolutions
    ("layer1-3x3", (32, 64, 56, 56), (64, 64, 3, 3), {"pads": P1, "activation": "relu"}),
    ("layer2-3x3s2", (32, 128, 56, 56), (128, 128, 3, 3), {"pads": P1, "strides": [2, 2], "activation": "relu"}),
    ("layer2-3x3", (32, 128, 28, 28), (128, 128, 3, 3), {"pads": P1, "activation": "relu"}),
    ("layer3-3x3", (32, 256, 14, 14), (256, 256, 3, 3), {"pads": P1, "activation": "relu"}),
    ("layer4-3x3", (32, 512, 7, 7), (512, 512, 3, 3), {"pads": P1, "activation": "relu"}),
    ("layer2-downsample-1x1s2", (32, 256, 56, 56), (512, 256, 1, 1), {"strides": [2, 2]}),
]


def test_speed_of_resnet50_convolutions_im2col_against_implicit(device, tmp_path_factory):
    """Each convolution with every tactic conv_gemm_tactics knows (the autotuner times only
    im2col's own tile beside the implicit GEMM's, as this showed the implicit GEMM faster):
    the whole plan (im2col and GEMM, or the one implicit kernel), CUDA events, median of 20
    after 3 warm-ups, fp16. Prints the best of each kind; asserts only that the best plans of
    both kinds agree."""
    import cupy

    lines = []
    for case_id, x_shape, w_shape, attrs in RESNET50_BATCH32:
        case = (case_id, x_shape, w_shape, attrs, "NHWC", F16, True)
        base = make_plan(case)
        plans = [base] + [conv_plan(x_shape, w_shape, attrs, F16, bias=True, tactic=t)
                          for t in conv_gemm_tactics(base, pruned=False)]
        functions = load_functions([s.kernel for p in plans for s in p.steps], device.arch,
                                   tmp_path_factory.mktemp(case_id))
        (_, _, _, _), host = case_inputs(case, base)
        best: dict[str, tuple[float, ConvPlan, object]] = {}
        for plan in plans:
            buffers = device_buffers(plan, host)

            def run(plan=plan, buffers=buffers, functions=functions) -> None:
                for step in plan.steps:
                    launch(functions, step, buffers)

            for _ in range(3):
                run()
            times = []
            for _ in range(20):
                start, end = cupy.cuda.Event(), cupy.cuda.Event()
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(cupy.cuda.get_elapsed_time(start, end))
            ms = statistics.median(times)
            kind = "implicit" if plan.tactic == "implicit_gemm" else "im2col"
            if kind not in best or ms < best[kind][0]:
                best[kind] = (ms, plan, buffers["Y"].copy())
        (ms_i2c, p_i2c, y_i2c), (ms_imp, p_imp, y_imp) = best["im2col"], best["implicit"]
        check_close(y_imp.get().view(np.float16), y_i2c.get().view(np.float16), TOLERANCE[F16], case_id, "Y")
        flops = p_imp.gemm.flops
        lines.append(f"  {case_id:24s} im2col {ms_i2c:7.3f} ms ({p_i2c.steps[-1].kernel.tactic.label:20s})  "
                     f"implicit {ms_imp:7.3f} ms ({p_imp.steps[-1].kernel.tactic.label:20s}, "
                     f"{flops / ms_imp / 1e9:5.1f} TFLOP/s)  {ms_i2c / ms_imp:4.2f}x")
    print(f"\nResNet-50 batch 32 fp16 convolutions on {device.describe()}:\n" + "\n".join(lines))
