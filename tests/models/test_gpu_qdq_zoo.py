"""The quantized zoo models (test_qdq_zoo.py: quantize_static's QDQ graphs) on a GPU:
rtxrt.Session runs every node there, Q/DQ included (simulated integer arithmetic, fused into
their neighbours), and its outputs match the reference backend's within the same two quanta
(5e-2 of each output's largest magnitude) that the reference is held to against onnxruntime,
at fp32 and at the file's fp16 precision."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.reference.executor import ReferenceExecutor

from .test_qdq_zoo import QDQ_ZOO, TOLERANCE, quantized

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", QDQ_ZOO)
def test_a_quantized_zoo_model_runs_wholly_on_the_gpu_and_matches_the_reference(zoo_export, tmp_path, name,
                                                                                   precision):
    import rtxrt

    sizes = QDQ_ZOO[name]
    exported = zoo_export(name)
    model = quantized(exported, tmp_path, sizes).SerializeToString()
    session = rtxrt.Session(compile_onnx(model, AotOptions(precision=precision)), cache_dir=tmp_path / "cache",
                            progress=False)
    reference = ReferenceExecutor(compile_onnx(model))
    feeds = exported.make_inputs(7, **sizes)
    want = reference.run(feeds)
    for output, got in zip(want, session.run(list(want), feeds)):
        expected = want[output].astype(np.float64)
        scale = max(float(np.max(np.abs(expected))), 1e-30)
        error = float(np.max(np.abs(np.asarray(got, np.float64) - expected)))
        assert error <= TOLERANCE * scale, f"{name} {precision} {output}: {error / scale:.2e} of its largest magnitude"
    assert session.on_gpu and session.stats["host_nodes"] == []
