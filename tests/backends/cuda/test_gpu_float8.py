"""float8 on the GPU gives the reference backend's bits: Cast both ways for each of the four
ONNX float8 types with and without saturation, QuantizeLinear to and DequantizeLinear from
float8 (tests/backends/cuda/test_float8_codegen.py ``specs``), and float8 models run whole by
rtxrt.Session.

Kernels are compiled with NVRTC for the probed GPU's arch (the conversions are bit arithmetic:
the same source on every arch, no sm_89 cvt), launched into outputs poisoned with 0x5A bytes
(an element never written shows) and compared bit for bit. Casts from float32 move no arithmetic:
every bit, NaN's sign included. Where a value passes through float arithmetic or a cvt first
(fp16 widened to float, x / scale, (x - zero point) * scale), a NaN is the GPU's canonical one,
so NaN matches any NaN there."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.backends.cuda.plan.forms import device_dtype, numpy_dtype
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import TensorType
from tests.backends.cuda.helpers import load_cubins
from tests.backends.cuda.test_float8_codegen import (
    F16,
    F32,
    FLOAT8,
    assert_same_bits,
    assert_same_values,
    cast_model,
    cast_node,
    codes,
    feeds,
    inputs,
    pad_model,
    probes,
    qdq_model,
    reference_cast,
    short,
    source_values,
    specs,
)
from tests.backends.cuda.test_quantize_codegen import reference

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def arch() -> str:
    from rtxrt.backends.cuda.device import probe

    return probe().arch


def launch(kernel, arrays: list[np.ndarray], cache: dict, arch: str, folder) -> np.ndarray:
    """``kernel`` (compiled once per name) on ``arrays``: its one output, as a host array."""
    import cupy

    if kernel.name not in cache:
        cache.update(load_cubins({kernel.name: kernel.source}, folder, arch))
    args = [cupy.asarray(np.ascontiguousarray(a).view(device_dtype(DType.from_numpy(a.dtype)))) for a in arrays]
    (out_arg,) = kernel.outputs
    out = cupy.full(int(np.prod(out_arg.shape)) * out_arg.dtype.itemsize, 0x5A, cupy.uint8)
    cache[kernel.name].get_function(kernel.name)((kernel.launch.grid(),), (kernel.launch.block,), (*args, out))
    cupy.cuda.get_current_stream().synchronize()
    return out.get().view(numpy_dtype(out_arg.dtype)).reshape(out_arg.shape)


@pytest.fixture(scope="module")
def run(arch, tmp_path_factory):
    cache, folder = {}, tmp_path_factory.mktemp("cubins")
    return lambda kernel, arrays: launch(kernel, arrays, cache, arch, folder)


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_float_and_fp16_to_float8_give_the_reference_bits(run, dtype, saturate):
    for src, x, same in ((F32, probes(dtype), assert_same_bits), (F16, source_values(F16), assert_same_values)):
        kernel = elementwise_kernel(cast_node(dtype, saturate), [TensorType(src, x.shape)])
        same(run(kernel, [x]), reference_cast(x, dtype, saturate),  # fp16 is widened by cvt: its NaN
             f"{src.short} -> {dtype.short} saturate={saturate}")


@pytest.mark.parametrize("dtype", FLOAT8, ids=short)
def test_every_float8_code_widens_to_the_reference_bits(run, dtype):
    x = codes(dtype)
    got = run(elementwise_kernel(cast_node(F32), [TensorType(dtype, x.shape)]), [x])
    assert_same_bits(got, reference_cast(x, F32), f"{dtype.short} -> float32")
    got = run(elementwise_kernel(cast_node(F16), [TensorType(dtype, x.shape)]), [x])
    assert_same_values(got, reference_cast(x, F16), f"{dtype.short} -> float16")  # (cvt's NaN)


@pytest.mark.parametrize("case", list(specs()))
def test_float8_quantization_kernels_give_the_reference_bits(run, case):
    node, types = specs()[case]
    arrays = inputs(case, node, types)
    assert_same_values(run(elementwise_kernel(node, types), arrays), reference(node, arrays), case)


@pytest.mark.parametrize("model", [cast_model, qdq_model, pad_model])
def test_float8_models_run_whole_on_the_gpu_with_the_reference_bits(tmp_path, model):
    import rtxrt
    from rtxrt.aot import build_rtxir
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.frontend.onnx_import import load_onnx

    proto = model()
    path = tmp_path / "float8.rtxir"
    build_rtxir(proto, path)
    session = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False)
    assert session.on_gpu and session.backend.startswith("cuda")
    names = [o.name for o in proto.graph.output]
    for seed in range(2):
        got = dict(zip(names, session.run(None, feeds(seed))))
        assert session.stats["host_nodes"] == []
        want = ReferenceExecutor(load_onnx(proto)).run(feeds(seed))
        for name in names:
            assert_same_values(np.asarray(got[name]), np.asarray(want[name]), name)
