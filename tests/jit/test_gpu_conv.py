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
9.8e-4 relative, at most), 1e-2 for bf16 (one ulp is 7.8e-3).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node
from rtxrt.jit.codegen import CodegenError
from rtxrt.jit.codegen.conv import ConvPlan, conv_plan
from rtxrt.jit.codegen.gemm import mma_instruction
from rtxrt.jit.nvrtc import compile_many

from .helpers import check_close, random, storage, to_device

pytestmark = pytest.mark.gpu

F16, BF16 = DType.FLOAT16, DType.BFLOAT16
TOLERANCE = {F16: 2e-3, BF16: 1e-2}
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
]




@pytest.fixture(scope="module")
def device():
    from rtxrt.jit.device import probe

    return probe()


@pytest.fixture(scope="module")
def functions(device, tmp_path_factory):
    """Every kernel of every case that runs on this GPU, compiled at once and loaded."""
    import cupy

    folder = tmp_path_factory.mktemp("conv_cubins")
    sources = {s.kernel.name: s.kernel.source for case in CASES if runs_on(device.arch, case[5])
               for s in make_plan(case).steps}
    loaded = {}
    for name, cubin in compile_many(sources.items(), device.arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path)).get_function(name)
    return loaded


def runs_on(arch: str, dtype: DType) -> bool:
    try:
        mma_instruction(arch, dtype)
    except CodegenError:
        return False
    return True


def make_plan(case) -> ConvPlan:
    _, x, w, attrs, layout, dtype, bias = case
    return conv_plan(x, w, attrs, dtype, layout, bias=bias)


def reference(case, x, w, b, z_nchw) -> np.ndarray:
    _, _, _, attrs, _, _, bias = case
    node = Node("FusedConv", ["x", "w", "b" if bias else "", "z" if z_nchw is not None else ""], ["y"], attrs,
                domain="rtxrt")
    return find_kernel("FusedConv", "rtxrt")(node, 1, lambda *a: []).run(x, w, b, z_nchw)


def execute(plan: ConvPlan, functions, host: dict[str, np.ndarray]) -> np.ndarray:
    """Allocates the plan's buffers (inputs from ``host``, the rest NaN), launches its steps
    in order and returns Y (NHWC)."""
    import cupy

    nan = NAN_BITS[plan.storage_dtype]
    buffers = {}
    for name, (shape, dtype) in plan.buffers.items():
        if name in host:
            assert host[name].shape == shape, (name, host[name].shape, shape)
            buffers[name] = to_device(host[name])
        else:
            buffers[name] = cupy.full(shape, nan, cupy.uint16)
    for step in plan.steps:
        if all(step.grid):
            functions[step.kernel.name](step.grid, step.block, tuple(buffers[b] for b in step.buffers))
    cupy.cuda.get_current_stream().synchronize()
    return buffers["Y"].get().view(storage(plan.storage_dtype))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_plan_matches_the_reference_fused_conv(case, device, functions):
    case_id, x_shape, w_shape, attrs, layout, dtype, bias = case
    if not runs_on(device.arch, dtype):
        pytest.skip(f"{dtype.short} GEMM does not run on {device.arch}")
    plan = make_plan(case)
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    x = random(rng, x_shape, dtype)
    w = random(rng, w_shape, dtype, 1 / math.sqrt(math.prod(w_shape[1:])))
    b = random(rng, (w_shape[0],), dtype) if bias else None
    out_nchw = tuple(plan.out_shape[i] for i in (0, 3, 1, 2))
    z = random(rng, out_nchw, dtype) if attrs.get("residual", "none") != "none" else None
    host = {"X": x if layout == "NCHW" else x.transpose(0, 2, 3, 1), "W": plan.pack_weights(w)}
    if b is not None:
        host["bias"] = b
    if z is not None:
        host["Z"] = z.transpose(0, 2, 3, 1)
    got = execute(plan, functions, host)
    want = reference(case, x, w, b, z).transpose(0, 2, 3, 1)
    rel = check_close(got, want, TOLERANCE[dtype], case_id, "Y")
    print(f"\n{case_id}: {plan.tactic}, steps {[s.kernel.name for s in plan.steps]}, rel err {rel:.2e}")
