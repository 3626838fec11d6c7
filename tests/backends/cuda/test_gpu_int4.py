"""Sub-byte integers (int4, uint4, int2, uint2) on the GPU give the reference backend's bits:
Cast from every byte of each type to every type Cast takes, Cast to each type from probing
values of every type, QuantizeLinear to and DequantizeLinear from them
(tests/backends/cuda/test_int4_codegen.py ``specs``: per tensor, per axis, blocked), and models
run whole by rtxrt.Session: casts, a per-channel int4 QDQ path with an int4 transpose, and a
MatMul by blocked int4 weights dequantized on the GPU (the weight-only quantization of LLMs).

Kernels are compiled with NVRTC for the probed GPU's arch, launched into outputs poisoned with
0x5A bytes (an element never written, or a sub-byte element whose upper bits are not cleared,
shows) and compared bit for bit. Where a value passes through float arithmetic
((x - zero point) * scale, x / scale), a NaN is the GPU's canonical one, so NaN matches any NaN
there; the MatMul's sums are compared to a tolerance, the dequantized weights bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.ir.graph import TensorType
from tests.backends.cuda.test_float8_codegen import assert_same_bits, assert_same_values, cast_node, reference_cast
from tests.backends.cuda.test_gpu_float8 import launch
from tests.backends.cuda.test_int4_codegen import (
    CAST_EDGES,
    F32,
    FLOAT8,
    FOLD_MAX_BYTES,
    OTHERS,
    SUB_BYTE,
    cast_model,
    every_byte,
    feeds,
    inputs,
    int4_matmul,
    matmul_feeds,
    qdq_model,
    short,
    specs,
    values_of,
)
from tests.backends.cuda.test_quantize_codegen import reference

pytestmark = pytest.mark.gpu

TYPES = [*OTHERS, *FLOAT8, *SUB_BYTE]


@pytest.fixture(scope="module")
def arch() -> str:
    from rtxrt.backends.cuda.device import probe

    return probe().arch


@pytest.fixture(scope="module")
def run(arch, tmp_path_factory):
    cache, folder = {}, tmp_path_factory.mktemp("cubins")
    return lambda kernel, arrays: launch(kernel, arrays, cache, arch, folder)


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_every_byte_of_each_sub_byte_type_casts_to_every_type_with_the_reference_bits(run, dtype):
    x = every_byte(dtype)
    for other in TYPES:
        got = run(elementwise_kernel(cast_node(other), [TensorType(dtype, x.shape)]), [x])
        assert_same_bits(got, reference_cast(x, other), f"{dtype.short} -> {other.short}")


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_every_type_casts_to_each_sub_byte_type_with_the_reference_bits(run, dtype):
    for other in TYPES:
        x = values_of(other)
        got = run(elementwise_kernel(cast_node(dtype), [TensorType(other, x.shape)]), [x])
        assert_same_bits(got, reference_cast(x, dtype), f"{other.short} -> {dtype.short}")


@pytest.mark.parametrize("dtype", SUB_BYTE, ids=short)
def test_cast_of_a_float_truncates_and_wraps_on_the_gpu(run, dtype):
    got = run(elementwise_kernel(cast_node(dtype), [TensorType(F32, CAST_EDGES.shape)]), [CAST_EDGES])
    assert_same_bits(got, reference_cast(CAST_EDGES, dtype), dtype.short)


@pytest.mark.parametrize("case", list(specs()))
def test_sub_byte_quantization_kernels_give_the_reference_bits(run, case):
    node, types = specs()[case]
    arrays = inputs(case, node, types)
    assert_same_values(run(elementwise_kernel(node, types), arrays), reference(node, arrays), case)


def session(tmp_path, proto, options=None):
    import rtxrt
    from rtxrt.aot import build_rtxir

    path = tmp_path / "int4.rtxir"
    build_rtxir(proto, path, options)
    result = rtxrt.Session(path, cache_dir=tmp_path / "cache", progress=False)
    assert result.on_gpu and result.backend.startswith("cuda")
    return result


def reference_run(proto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.frontend.onnx_import import load_onnx

    return ReferenceExecutor(load_onnx(proto)).run(inputs)


@pytest.mark.parametrize("model", [cast_model, qdq_model])
def test_sub_byte_models_run_whole_on_the_gpu_with_the_reference_bits(tmp_path, model):
    proto = model()
    gpu = session(tmp_path, proto)
    names = [o.name for o in proto.graph.output]
    for seed in range(2):
        got = dict(zip(names, gpu.run(None, feeds(seed))))
        assert gpu.stats["host_nodes"] == []
        want = reference_run(proto, feeds(seed))
        for name in names:
            assert_same_values(np.asarray(got[name]), np.asarray(want[name]), name)


def test_a_matmul_by_blocked_int4_weights_runs_whole_on_the_gpu(tmp_path):
    from rtxrt.aot.options import AotOptions

    proto = int4_matmul(dequantized_out=True)
    gpu = session(tmp_path, proto, AotOptions(fold_max_bytes=FOLD_MAX_BYTES))
    for seed in range(2):
        y, wd = gpu.run(None, matmul_feeds(seed))
        assert gpu.stats["host_nodes"] == []
        want = reference_run(proto, matmul_feeds(seed))
        assert_same_bits(np.asarray(wd), want["wd"], "wd")
        np.testing.assert_allclose(np.asarray(y), want["y"], rtol=1e-4, atol=1e-3)
