"""On a GPU, the models whose control flow and constants are decided at plan time run wholly
on the GPU and match the reference backend: an anchor grid from a float Range, an If on a
shape condition (inlined), a Loop with a trip count from a shape and a Scan (unrolled), a residual in
another layout than its conv's output (converted), at several input sizes."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.aot import compile_onnx
from tests.backends.cuda.test_plan_coverage import (
    anchor_model,
    logical_residual_model,
    loop_model,
    scan_model,
    shape_if_model,
)

pytestmark = pytest.mark.gpu

MODELS = {"anchors": (anchor_model, [(1, 4, 16, 16), (2, 4, 24, 40)]),
          "shape_if": (shape_if_model, [(1, 4), (3, 4), (5, 4)]),
          "loop": (loop_model, [(1, 4), (6, 4)]),
          "scan": (scan_model, [(1, 4), (5, 4)]),
          "residual": (logical_residual_model, [(1, 4, 8, 8), (3, 4, 8, 8)])}


@pytest.mark.parametrize("name", MODELS)
def test_a_plan_time_model_runs_on_the_gpu_and_matches_the_reference(tmp_path, name):
    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor

    make, shapes = MODELS[name]
    model = compile_onnx(make().SerializeToString())
    session = rtxrt.Session(model, cache_dir=tmp_path, progress=False)
    reference = ReferenceExecutor(model)
    for shape in shapes:
        x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
        got = dict(zip(model.graph.outputs, session.run(None, {"x": x})))
        for output, want in reference.run({"x": x}).items():
            np.testing.assert_allclose(got[output], want, rtol=1e-4, atol=1e-5, err_msg=f"{name} {output} at {shape}")
        assert session.stats["host_nodes"] == [] and session.stats["engine"] in ("generic", "specialized")
