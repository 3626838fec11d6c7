"""On a GPU, every model the decompose pass rewrites for the GPU (standalone BatchNorm, 1-D
convolutions and pools, 3-D convolutions, DepthToSpace, SpaceToDepth, normalizations) runs with no host step and matches the reference backend on the same compiled model."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from tests.aot.test_decompose import CASES, GPU_CASES

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", GPU_CASES)
def test_a_decomposed_model_runs_on_the_gpu_and_matches_the_reference(tmp_path, name):
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor

    case = CASES[name]()
    model = compile_onnx(case.proto().SerializeToString())
    session = rtxrt.Session(model, cache_dir=tmp_path, progress=False)
    got = dict(zip(model.graph.outputs, session.run(None, case.feeds)))
    for output, want in ReferenceExecutor(model).run(case.feeds).items():
        scale = max(float(np.abs(want).max()), 1e-6)
        np.testing.assert_allclose(got[output] / scale, want / scale, rtol=0, atol=1e-4, err_msg=f"{name} {output}")
    assert session.stats["host_nodes"] == []
