"""Models nobody here tuned for, as users bring them (tests/models/wild.py: a VAD, a CRNN, a
DBNet-style text detector, a Whisper-style encoder, a GRU seq2seq, a 3-D video classifier and
U-Net, a YOLOv8-style head with and without NMS), each exported with both of torch's ONNX exporters, and the main zoo exported
with the dynamo exporter (today's default, which writes shape arithmetic its own way):

- compiled by rtxrt and run on the reference backend, each matches onnxruntime on the
  original file (fp32, 1e-4 of each output's largest magnitude);
- planned for an RTX card (sm_86, no GPU needed) at two input sizes, every node runs on the
  GPU or is computed at plan time, except the data-dependent ops a model names (NMS), and
  then only that node runs on the host.
tests/models/test_gpu_wild_models.py runs them on a GPU."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.coverage import plan_coverage
from rtxrt.backends.reference.executor import ReferenceExecutor

from . import wild, zoo

TOLERANCE = 1e-4
# Second sizes each model is planned at (besides its export sizes): batch and length/size.
OTHER_SIZES = {"vad": {"batch": 2, "samples": 1600}, "crnn": {"batch": 3, "width": 96},
               "dbnet": {"batch": 2, "size": 96}, "whisper_encoder": {"batch": 2, "frames": 64},
               "gru_seq2seq": {"batch": 3, "source": 11, "target": 4}, "yolov8": {"batch": 2, "size": 96},
               "yolov8_nms": {"size": 96}, "video3d": {"batch": 2, "frames": 5, "size": 40},
               "unet3d": {"batch": 2, "size": 24}}
# torch.export keeps an RNN's sequence length static (it cannot decompose it over a dynamic one)
OTHER_SIZES_DYNAMO = {"crnn": {"batch": 3}, "gru_seq2seq": {"batch": 3}}
DYNAMO_ZOO = ["resnet18", "mobilenetv3_small", "unet", "yolo_tiny", "bert", "gpt2"]


@pytest.fixture(scope="session")
def wild_export(tmp_path_factory):
    folder, cache = tmp_path_factory.mktemp("wild"), {}

    def get(name: str, dynamo: bool) -> wild.WildModel:
        if (name, dynamo) not in cache:
            cache[name, dynamo] = wild.export(name, folder / f"{name}{'-dynamo' if dynamo else ''}.onnx", dynamo=dynamo)
        return cache[name, dynamo]

    return get


def check_matches_onnxruntime(onnx_path: str, model, feeds: dict[str, np.ndarray]) -> None:
    want = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ReferenceExecutor(model).run(feeds)
    for name, expected in zip(model.graph.outputs, want):
        actual = np.asarray(got[name])
        assert actual.shape == expected.shape, name
        scale = max(float(np.max(np.abs(expected))), 1e-30) if expected.size else 1.0
        assert float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0)) <= TOLERANCE * scale, name


def check_runs_on_the_gpu(model, feeds: dict[str, np.ndarray], host_ops: frozenset[str]) -> None:
    report = plan_coverage(model, {n: a.shape for n, a in feeds.items()}, "sm_86")
    assert [(h.op, h.why) for h in report.host_nodes if h.op not in host_ops] == []
    assert sorted({h.op for h in report.host_nodes}) == sorted(host_ops)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", wild.WILD_MODELS)
def test_a_wild_model_matches_onnxruntime_and_runs_on_the_gpu(wild_export, name, dynamo):
    exported = wild_export(name, dynamo)
    model = compile_onnx(exported.onnx_path)
    for sizes in ({}, OTHER_SIZES_DYNAMO.get(name, OTHER_SIZES[name]) if dynamo else OTHER_SIZES[name]):
        feeds = exported.make_inputs(3, **sizes)
        check_matches_onnxruntime(exported.onnx_path, model, feeds)
        check_runs_on_the_gpu(model, feeds, exported.host_ops)


@pytest.mark.parametrize("name", DYNAMO_ZOO)
def test_a_zoo_model_exported_by_dynamo_matches_onnxruntime_and_runs_on_the_gpu(zoo_dir, name):
    exported = zoo.export(name, zoo_dir / f"{name}-dynamo.onnx", dynamo=True, dynamic_size=name not in zoo.TEXT_MODELS)
    model = compile_onnx(exported.onnx_path)
    sizes = [{}, {"batch": 3, "seq": 9}] if name in zoo.TEXT_MODELS else [{}, {"batch": 2, "size": 96}]
    for size in sizes:
        feeds = exported.make_inputs(4, **size)
        check_matches_onnxruntime(exported.onnx_path, model, feeds)
        check_runs_on_the_gpu(model, feeds, frozenset())


@pytest.mark.parametrize("name", [n for n in wild.WILD_MODELS if not wild.SPECS[n].host_ops])
def test_a_wild_model_runs_on_the_gpu_over_the_default_ranges_too(wild_export, name):
    """Without a profile a session plans one generic engine over default ranges (every
    symbolic dim up to 2048, the largest shape capped in elements, the bounds narrowed where
    the model refuses them: a U-Net's sizes must divide by its poolings): that plan, whose
    GEMMs must hold the largest shape, has every node on the GPU as well."""
    from rtxrt.backends.cuda.plan.builder import build_plan
    from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
    from rtxrt.ir.default_ranges import fitting_ranges

    model = compile_onnx(wild_export(name, False).onnx_path)
    graph = model.graph
    declared = {n: graph.types[n].shape for n in graph.inputs if n not in graph.initializers}
    shapes = {n: a.shape for n, a in wild_export(name, False).make_inputs(3).items()}
    found = fitting_ranges(declared, shapes, lambda ranges: dim_ranges(model, sample_shapes(ranges)))
    assert found is not None
    plan = build_plan(model, shapes, arch="sm_86", sm_count=46, dims=found[1])
    assert [(s.label, s.why_host) for s in plan.host_steps] == []
