"""Without a usable GPU the provider claims no node: one onnxruntime session runs the whole
model, as fast as onnxruntime alone, and the provider says once why. (The other provider tests
opt in to rtxrt's CPU reference backend instead, through $RTXRT_EP_CPU_DEVICE; see conftest.py.)"""
from __future__ import annotations

import logging
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail
from rtxrt_ep.ep_context import compile_ep_context
from rtxrt_ep.session import InferenceSession

import rtxrt
from rtxrt.backends.cuda import device
from rtxrt.backends.cuda.device import NoGpuError
from rtxrt.backends.cuda.device import find_gpu

from . import cut_chain, resnet_style

PROVIDER, CPU = "RtxrtExecutionProvider", "CPUExecutionProvider"
OPT_IN = "RTXRT_EP_CPU_DEVICE"  # "1": rtxrt's partitions run on its CPU reference backend


@pytest.fixture
def no_gpu(monkeypatch) -> str:
    """No usable GPU and no opt-in: this machine as it is, or a GPU machine whose device probe
    is made to find none. Returns the probe's reason."""
    monkeypatch.delenv(OPT_IN)
    if find_gpu() is not None:
        def probe(index=0):
            raise NoGpuError("GPU hidden by the test")

        monkeypatch.setattr(device, "probe", probe)
    with pytest.raises(NoGpuError) as reason:
        device.probe(0)
    return str(reason.value)


@pytest.fixture
def no_rtxrt_session(monkeypatch):
    """Any rtxrt.Session built from here on fails the test: nothing runs on the reference backend."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("an rtxrt.Session was built without a GPU")

    monkeypatch.setattr(rtxrt.Session, "__init__", refuse)


def randn(*shape: int) -> np.ndarray:
    return np.random.default_rng(5).standard_normal(shape).astype(np.float32)


def test_the_provider_claims_no_node_and_onnxruntime_runs_the_whole_model(no_gpu, no_rtxrt_session, caplog):
    model = cut_chain()  # rtxrt / onnxruntime / rtxrt with a GPU
    with caplog.at_level(logging.INFO, logger="rtxrt_ep"):
        ours = InferenceSession(model.SerializeToString(), providers=[PROVIDER, CPU])
    [part] = ours.partitions()
    assert part.kind == "onnxruntime" and len(part.nodes) == len(model.graph.node)
    assert ours.partition_summary().startswith("1 partition(s): 0 rtxrt (0 nodes), 1 onnxruntime (5 nodes)")
    assert ours.get_providers() == [CPU]  # what runs, as onnxruntime reports a provider it cannot use
    assert PROVIDER not in ours.get_provider_options()
    [record] = caplog.records  # said once, at WARNING, with the probe's reason
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"{PROVIDER}: no usable GPU ({no_gpu}); every node runs on {CPU}"
    x = randn(4, 8)
    want = ort.InferenceSession(model.SerializeToString(), providers=[CPU]).run(None, {"x": x})
    np.testing.assert_array_equal(ours.run(None, {"x": x})[0], want[0])
    assert ours.get_modelmeta().graph_name == "test"  # it is onnxruntime's session: all its API is there


def test_without_cpu_listed_onnxruntime_still_runs_it_on_the_cpu(no_gpu, no_rtxrt_session):
    """onnxruntime always has its CPU provider and falls back to it; so does the provider."""
    data = cut_chain().SerializeToString()
    ours = InferenceSession(data, providers=[PROVIDER])
    assert ours.get_providers() == [CPU]
    assert [p.kind for p in ours.partitions()] == ["onnxruntime"]
    x = randn(2, 8)
    np.testing.assert_array_equal(ours.run(None, {"x": x})[0],
                                  ort.InferenceSession(data, providers=[CPU]).run(None, {"x": x})[0])


def test_session_options_reach_onnxruntimes_session(no_gpu):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ours = InferenceSession(cut_chain().SerializeToString(), options, providers=[(PROVIDER, {"device_id": "0"}), CPU])
    assert ours.get_session_options().intra_op_num_threads == 1
    assert ours.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_it_runs_a_resnet_style_model_as_fast_as_onnxruntime(no_gpu, no_rtxrt_session):
    data = resnet_style().SerializeToString()
    # The same options for both: each session's threads would otherwise spin after its runs
    # and slow the other's on a small machine, which measures the pairing, not the provider.
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ours = InferenceSession(data, options, providers=[PROVIDER, CPU])
    theirs = ort.InferenceSession(data, options, providers=[CPU])
    feeds = {"x": randn(8, 3, 32, 32)}
    np.testing.assert_array_equal(ours.run(None, feeds)[0], theirs.run(None, feeds)[0])

    def seconds(session) -> float:
        start = time.perf_counter()
        session.run(None, feeds)
        return time.perf_counter() - start

    for _ in range(3):  # warm up both
        seconds(ours), seconds(theirs)
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(15):  # interleaved, so both see the same machine
        times["ours"].append(seconds(ours))
        times["theirs"].append(seconds(theirs))
    ratio = statistics.median(times["ours"]) / statistics.median(times["theirs"])
    print(f"ResNet-style, no GPU: provider / onnxruntime CPU = {ratio:.2f} "
          f"({statistics.median(times['ours']) * 1e3:.2f} ms / {statistics.median(times['theirs']) * 1e3:.2f} ms)")
    assert ratio < 1.2


def test_an_ep_context_model_needs_a_gpu_or_the_opt_in(no_gpu, tmp_path):
    """onnxruntime has no kernel for rtxrt's EPContext nodes, so the model cannot be left to it."""
    compile_ep_context(cut_chain(), tmp_path / "ctx.onnx")
    with pytest.raises(Fail, match=rf"no usable GPU .*EPContext nodes \['test_rtxrt_0', 'test_rtxrt_2'\].*"
                                   rf"load the original ONNX model.*{OPT_IN}=1"):
        InferenceSession(str(tmp_path / "ctx.onnx"), providers=[PROVIDER, CPU])


@pytest.mark.skipif(find_gpu() is not None, reason="with a GPU, rtxrt's partitions run on it")
@pytest.mark.filterwarnings("ignore:rtxrt.*fallback='cpu'")
def test_the_opt_in_runs_rtxrt_partitions_on_the_reference_backend(monkeypatch, partitions_on_gpu):
    monkeypatch.setenv(OPT_IN, "1")
    ours = InferenceSession(cut_chain().SerializeToString(), providers=[PROVIDER])  # CPU need not be listed
    assert [p.kind for p in ours.partitions()] == ["rtxrt", "onnxruntime", "rtxrt"]
    assert ours.get_providers() == [PROVIDER, CPU]
    ours.run(None, {"x": randn(2, 8)})
    assert partitions_on_gpu == [False, False]


def test_a_model_in_bytes_with_external_data_is_refused_not_read_from_the_current_directory(no_gpu, tmp_path,
                                                                                             monkeypatch):
    onnx.save(cut_chain(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.weights",
              size_threshold=0)
    monkeypatch.chdir(tmp_path)  # the data file is right here, where plain onnxruntime would read it
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=r"given as bytes, but tensor\(s\) \['w'\] keep their data in external file\(s\) "
                             r"\['m.weights'\].*pass the model's path"):
        InferenceSession((tmp_path / "m.onnx").read_bytes(), providers=[PROVIDER, CPU])
    from_path = InferenceSession(str(tmp_path / "m.onnx"), providers=[PROVIDER, CPU])
    theirs = ort.InferenceSession(cut_chain().SerializeToString(), providers=[CPU])
    x = randn(3, 8)
    np.testing.assert_array_equal(from_path.run(None, {"x": x})[0], theirs.run(None, {"x": x})[0])
