"""On a GPU, a model with a data-dependent node (NonZero) runs split, never whole on the host:
the parts before and after the cut run on the GPU (their own engines, any row count), only
the cut runs on the host, and the outputs are the reference backend's."""
from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.test_data_dependent_split import nonzero_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["numpy", "cupy"])
def test_a_data_dependent_model_runs_split_with_only_the_cut_on_the_host(tmp_path, kind):
    import cupy

    import rtxrt
    from rtxrt.backends.reference.executor import ReferenceExecutor

    model = nonzero_model()
    session = rtxrt.Session(model, cache_dir=tmp_path, progress=False)
    reference = ReferenceExecutor(model)
    for rows in (1, 5, 3, 64):
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        got = session.run(None, {"x": x if kind == "numpy" else cupy.asarray(x)})
        want = reference.run({"x": x})
        for value, name in zip(got, model.graph.outputs):
            value = value if kind == "numpy" else value.get()
            np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-6, err_msg=f"{name} at {rows} rows")
        assert session.stats["engine"] == "split"
        assert session.stats["host_nodes"] == ["NonZero node 'where'"]


def test_an_if_on_a_runtime_condition_runs_the_branch_taken_on_the_gpu(tmp_path):
    import rtxrt
    from rtxrt.aot import compile_onnx
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from tests.backends.cuda.test_plan_coverage import runtime_if_model

    model = compile_onnx(runtime_if_model().SerializeToString())
    session = rtxrt.Session(model, cache_dir=tmp_path, progress=False)
    reference = ReferenceExecutor(model)
    for rows, sign in ((3, 1.0), (3, -1.0), (9, -1.0), (2, 1.0)):
        x = sign * np.abs(np.random.default_rng(rows).standard_normal((rows, 4))).astype(np.float32)
        (y,) = session.run(None, {"x": x})
        np.testing.assert_allclose(y, reference.run({"x": x})["y"], rtol=1e-6, err_msg=f"{rows} rows, sign {sign}")
        assert session.stats["engine"] == "split" and session.stats["host_nodes"] == []
