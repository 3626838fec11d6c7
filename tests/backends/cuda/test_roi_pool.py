"""MaxRoiPool on the GPU: a detector head (a conv feature map pooled over boxes, then a
classifier) plans with every node on the GPU, its kernel compiles for every supported arch,
and on a GPU it computes what the reference backend computes, in fp32 and fp16."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rtxrt
from rtxrt.aot import compile_onnx
from rtxrt.aot.options import AotOptions
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS
from rtxrt.backends.cuda.plan.builder import build_plan
from tests.reference.test_max_roi_pool import random_rois

ROIS = 9


def detector_head(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv(3->8, 3x3) + Relu at 1/2 scale, MaxRoiPool 3x3 over stride-2 boxes, then a linear classifier."""
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    fc = numpy_helper.from_array((rng.standard_normal((8 * 3 * 3, 4)) * 0.2).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["features"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["features"], ["relu"]),
        helper.make_node("MaxRoiPool", ["relu", "boxes"], ["pooled"], pooled_shape=[3, 3], spatial_scale=0.5),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["scores"]),
    ]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 32, 40]),
                                              helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [ROIS, 5])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [ROIS, 4])], [w, fc])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"image": rng.standard_normal((2, 3, 32, 40)).astype(np.float32),
            "boxes": random_rois(rng, ROIS, batch=2, extent=40.0)}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_detector_head_plans_every_node_on_the_gpu(precision):
    model = compile_onnx(detector_head(np.random.default_rng(0)), AotOptions(precision=precision))
    plan = build_plan(model, {"image": (2, 3, 32, 40), "boxes": (ROIS, 5)}, arch="sm_86", sm_count=46)
    assert [s.label for s in plan.host_steps] == []
    roi_steps = [s for s in plan.steps if s.node is not None and s.node.op_type == "MaxRoiPool"]
    assert len(roi_steps) == 1 and roi_steps[0].candidates[0].label == "roi_pool"
    kernels = {name: source for p in roi_steps[0].candidates for name, source in p.kernels.items()}
    for arch in SUPPORTED_ARCHS:
        assert set(compile_many(kernels.items(), arch)) == set(kernels)


@pytest.mark.gpu
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_a_detector_head_on_the_gpu_equals_the_reference(tmp_path, precision, tolerance):
    from rtxrt.aot import build_rtxir
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from rtxrt.format import read_rtxir

    rng = np.random.default_rng(1)
    model = detector_head(rng)
    inputs = feeds(rng)
    build_rtxir(model, tmp_path / "head.rtxir", AotOptions(precision=precision))
    build_rtxir(model, tmp_path / "reference.rtxir", AotOptions(precision="fp32"))
    session = rtxrt.Session(tmp_path / "head.rtxir", cache_dir=tmp_path / "cache", progress=False)
    got = session.run(None, inputs)[0]
    assert session.on_gpu and session.stats["host_nodes"] == []
    want = ReferenceExecutor(read_rtxir(tmp_path / "reference.rtxir")).run(inputs)["scores"]
    assert np.linalg.norm(got - want) <= tolerance * np.linalg.norm(want)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_generated_roi_pool_kernel_matches_the_reference_on_the_fake_device(monkeypatch, precision):
    """The whole head on the fake device (tests/fake_gpu): the conv on cuBLAS, the MaxRoiPool
    kernel interpreted, on boxes that cross the image's edges and round on halves."""
    from tests.fake_gpu.device import FakeDevice, LaunchRecord
    from tests.fake_gpu.engine import check_model, cublas_tactic

    device = FakeDevice().install(monkeypatch)
    rng = np.random.default_rng(2)
    runs = check_model(device, detector_head(rng), [feeds(rng), feeds(rng)], precision, prefer=cublas_tactic)
    roi = [r for r in runs[1].records if isinstance(r, LaunchRecord) and r.kernel.startswith("rtx_roipool_")]
    assert len(roi) == 1 and roi[0].executed
