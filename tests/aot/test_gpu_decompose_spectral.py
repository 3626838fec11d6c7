"""On a GPU, every STFT and DFT the decompose pass rewrites (a strided Conv with windowed DFT
basis weights, a MatMul with the basis) runs with no host step and matches the reference
backend on the same compiled model, at both bindings of the symbolic dims; so does a log-mel
front end exported from torch. Tolerance: 1e-4 of the largest magnitude (the GPU's float32
GEMMs, its own kernels or cuBLAS, sum the products in another order)."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from tests.aot.test_decompose_spectral import CASES, GPU_CASES, SIZES, log_mel_module, torchscript_export

pytestmark = pytest.mark.gpu


def run_and_compare(tmp_path, model, feeds_list, name: str) -> None:
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor

    session = rtxrt.Session(model, cache_dir=tmp_path, progress=False)
    for feeds in feeds_list:
        got = dict(zip(model.graph.outputs, session.run(None, feeds)))
        for output, want in ReferenceExecutor(model).run(feeds).items():
            scale = max(float(np.abs(want).max()), 1e-6)
            np.testing.assert_allclose(got[output] / scale, want / scale, rtol=0, atol=1e-4, err_msg=f"{name} {output}")
    assert session.stats["host_nodes"] == []


@pytest.mark.parametrize("name", GPU_CASES)
def test_a_decomposed_transform_runs_on_the_gpu_and_matches_the_reference(tmp_path, name):
    case = CASES[name]()
    model = compile_onnx(case.proto().SerializeToString())
    run_and_compare(tmp_path, model, [case.feeds(b) for b in range(len(SIZES))], name)


def test_a_torch_log_mel_spectrogram_runs_on_the_gpu(tmp_path):
    torch, module = log_mel_module(complex_output=False)
    model = compile_onnx(torchscript_export(torch, module))
    rng = np.random.default_rng(1)
    feeds = [{"audio": rng.standard_normal(shape).astype(np.float32)} for shape in [(2, 16000), (3, 9001)]]
    run_and_compare(tmp_path, model, feeds, "log-mel")
