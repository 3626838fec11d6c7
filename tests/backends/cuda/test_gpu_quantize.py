"""QuantizeLinear and DequantizeLinear on the GPU agree with the reference backend, and
quantized (QDQ) models run whole on the GPU.

Kernels: every node of tests/backends/cuda/test_quantize_codegen.py ``specs`` (each output
type, fp16/bf16 and int32 inputs, per axis, blocked), compiled with NVRTC for the probed
GPU's arch, launched on random inputs (seeded per case; float inputs salted with rounding
ties, values past every range, infinities and NaN) into outputs poisoned with 0xFF bytes,
compared with the reference backend's kernel. Bit-exact: the division, the product and the
roundings are IEEE (no FMA contraction), so nothing is left to tolerance.

Models (tests/backends/qdq_models.py): built into .rtxir at fp32 and fp16 and run by
rtxrt.Session: no node runs on the host; the grid model gives onnxruntime's bits, the
model quantize_static wrote stays within a few output quanta of onnxruntime (convolutions
sum in another order, so a value on a rounding edge may land one step apart)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from tests.backends.cuda.helpers import device_view, load_cubins
from tests.backends.cuda.test_quantize_codegen import host, reference, specs

pytestmark = pytest.mark.gpu

EDGES = (2.5, -2.5, 0.5, -0.5, 1.5, 1e9, -1e9, np.inf, -np.inf, np.nan, 0.0, -0.0)


@pytest.fixture(scope="module")
def arch() -> str:
    from rtxrt.backends.cuda.device import probe

    return probe().arch


@pytest.fixture(scope="module")
def modules(arch, tmp_path_factory):
    kernels = {k.name: k.source for k in (elementwise_kernel(*spec) for spec in specs().values())}
    return load_cubins(kernels, tmp_path_factory.mktemp("cubins"), arch)


@pytest.mark.parametrize("case", list(specs()))
def test_kernel_gives_the_reference_bits(case, modules):
    import cupy

    node, types = specs()[case]
    kernel = elementwise_kernel(node, types)
    arrays = inputs(case, node, types)
    args = [cupy.asarray(device_view(a)) for a in arrays]
    (out_arg,) = kernel.outputs
    out_dtype = host(out_arg.dtype)
    nbytes = int(np.prod(out_arg.shape)) * out_dtype.itemsize
    out = cupy.full(nbytes, 0xFF, cupy.uint8)  # poisoned: an element never written shows
    function = modules[kernel.name].get_function(kernel.name)
    function((kernel.launch.grid(),), (kernel.launch.block,), (*args, out))
    cupy.cuda.get_current_stream().synchronize()
    got = out.get().view(out_dtype).reshape(out_arg.shape)
    want = reference(node, arrays)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want, err_msg=case)


def inputs(case: str, node, types) -> list[np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    arrays = []
    for k, t in enumerate(types):
        dtype = host(t.dtype)
        if t.dtype.is_float and k == 0:  # x: a wide range, then the edge values
            a = rng.uniform(-3000, 3000, t.shape).astype(dtype)
            flat = a.reshape(-1)
            with np.errstate(over="ignore"):  # 1e9 is inf in fp16
                flat[:len(EDGES)] = np.asarray(EDGES, np.float64).astype(dtype)
        elif t.dtype.is_float or k == 1:  # the scale: positive
            a = rng.uniform(0.05, 8, t.shape).astype(dtype)
        elif k == 0 and node.op_type == "QuantizeLinear":  # int32 x: in range and past it
            a = rng.integers(-5000, 5000, t.shape).astype(dtype)
        else:
            info = np.iinfo(t.dtype.numpy)
            a = rng.integers(info.min, int(info.max) + 1, t.shape, dtype=np.int64).astype(dtype)
        arrays.append(a)
    return arrays


# ---------------------------------------------------------------- whole models

def session_for(tmp_path, proto, precision: str):
    import rtxrt
    from rtxrt.aot import build_rtxir
    from rtxrt.aot.options import AotOptions

    path = tmp_path / f"qdq-{precision}.rtxir"
    build_rtxir(proto, path, AotOptions(precision=precision))
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False)
    assert session.on_gpu and session.backend.startswith("cuda")
    return session


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_grid_qdq_model_runs_whole_on_the_gpu_and_gives_onnxruntimes_bits(tmp_path, precision):
    from tests.backends.qdq_models import grid_conv, grid_feeds, onnxruntime_outputs

    session = session_for(tmp_path, grid_conv(), precision)
    for seed in range(3):
        feeds = grid_feeds(seed)
        (got,) = session.run(None, feeds)
        assert session.stats["host_nodes"] == []
        np.testing.assert_array_equal(got, onnxruntime_outputs(grid_conv(), feeds)["y"])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_quantize_static_model_runs_whole_on_the_gpu(tmp_path, precision):
    pytest.importorskip("onnxruntime.quantization")
    from tests.backends.qdq_models import cnn_feeds, onnxruntime_outputs, quantize_static_model

    proto = quantize_static_model(tmp_path)
    session = session_for(tmp_path, proto, precision)
    for seed in range(3):
        feeds = cnn_feeds(seed)
        (got,) = session.run(None, feeds)
        assert session.stats["host_nodes"] == []
        want = onnxruntime_outputs(proto, feeds)["y"]
        np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())
