"""The plugin provider library: after ``rtxrt_ep.register()`` an unchanged onnxruntime
application gets onnxruntime's own sessions, with rtxrt running the nodes it claims (here on
its CPU reference backend: $RTXRT_EP_CPU_DEVICE=1, see conftest.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import rtxrt_ep
from onnxruntime.capi import onnxruntime_inference_collection as collection
from rtxrt_ep.registration import plugin_problem

from . import all_supported, cut_chain, saved

PROBLEM = plugin_problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=f"no plugin provider here: {PROBLEM}"),
              pytest.mark.usefixtures("plugin_library")]

PROVIDER = "RtxrtExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_SESSION = collection.InferenceSession  # onnxruntime's own class


def feeds(rows: int = 3, cols: int = 8) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).standard_normal((rows, cols)).astype(np.float32)}


def onnxruntime_cpu(path: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ORT_SESSION(path, providers=[CPU]).run(None, feed)


def test_an_apps_session_is_onnxruntimes_own_and_rtxrt_runs_the_model(tmp_path, partitions_on_gpu):
    path = saved(all_supported(), tmp_path)
    session = onnxruntime.InferenceSession(path, providers=[PROVIDER, CPU])
    assert type(session) is ORT_SESSION and onnxruntime.InferenceSession is ORT_SESSION  # nothing swapped
    assert session.get_providers() == [PROVIDER, CPU]
    assert PROVIDER in onnxruntime.get_available_providers()
    feed = feeds(cols=4)
    np.testing.assert_allclose(session.run(None, feed)[0], onnxruntime_cpu(path, feed)[0], rtol=1e-5, atol=1e-6)
    assert partitions_on_gpu == [False]  # one rtxrt partition ran, once (no GPU here: reference backend)


def test_a_model_with_an_op_rtxrt_lacks_is_split_between_rtxrt_and_onnxruntime(tmp_path, partitions_on_gpu):
    path = saved(cut_chain(), tmp_path)  # Relu, Mul | Gelu (com.microsoft: onnxruntime only) | Tanh, Add
    session = onnxruntime.InferenceSession(path, providers=[PROVIDER, CPU])
    feed = feeds()
    np.testing.assert_allclose(session.run(None, feed)[0], onnxruntime_cpu(path, feed)[0], rtol=1e-5, atol=1e-6)
    assert len(partitions_on_gpu) == 2  # both rtxrt regions ran in rtxrt; the Gelu between them in onnxruntime


def test_provider_options_reach_the_provider(tmp_path, partitions_on_gpu):
    path = saved(cut_chain(), tmp_path)
    session = onnxruntime.InferenceSession(path, providers=[(PROVIDER, {"min_subgraph_size": "3"}), CPU])
    session.run(None, feeds())
    assert partitions_on_gpu == []  # both regions have 2 nodes: too small, so onnxruntime ran everything
    # A bad option fails the provider; onnxruntime's Python layer then retries on the CPU, as it does for any EP.
    refused = onnxruntime.InferenceSession(path, providers=[(PROVIDER, {"no_such_option": "1"}), CPU])
    assert refused.get_providers() == [CPU]


def test_run_with_ort_values_and_model_metadata(tmp_path, partitions_on_gpu):
    model = all_supported()
    model.producer_name, model.doc_string = "rtxrt-test", "a tiny classifier"
    path = saved(model, tmp_path)
    session = onnxruntime.InferenceSession(path, providers=[PROVIDER, CPU])
    feed = feeds(rows=2, cols=4)
    outputs = session.run_with_ort_values(None, {"x": onnxruntime.OrtValue.ortvalue_from_numpy(feed["x"])})
    np.testing.assert_allclose(outputs[0].numpy(), onnxruntime_cpu(path, feed)[0], rtol=1e-5, atol=1e-6)
    assert session.get_modelmeta().producer_name == "rtxrt-test"
    assert session.get_modelmeta().description == "a tiny classifier"
    assert partitions_on_gpu == [False]


def test_profiling_writes_a_file_that_shows_rtxrts_fused_nodes(tmp_path, partitions_on_gpu):
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = onnxruntime.InferenceSession(saved(cut_chain(), tmp_path), options, providers=[PROVIDER, CPU])
    session.run(None, feeds())
    path = Path(session.end_profiling())
    assert path.is_file() and path.parent == tmp_path
    nodes = [e["args"] for e in json.loads(path.read_text()) if e.get("cat") == "Node"]
    assert {n["provider"] for n in nodes} == {PROVIDER, CPU}  # rtxrt's two fused nodes, onnxruntime's Gelu
    assert len({n["op_name"] for n in nodes if n["provider"] == PROVIDER}) == len(partitions_on_gpu) == 2


def test_device_selection_by_ep_device(tmp_path, partitions_on_gpu):
    devices = [d for d in onnxruntime.get_ep_devices() if d.ep_name == PROVIDER]
    assert [d.device.type for d in devices] == [onnxruntime.OrtHardwareDeviceType.CPU]  # $RTXRT_EP_CPU_DEVICE=1
    options = onnxruntime.SessionOptions()
    options.add_provider_for_devices(devices, {})
    path = saved(all_supported(), tmp_path)
    session = onnxruntime.InferenceSession(path, sess_options=options)
    feed = feeds(cols=4)
    np.testing.assert_allclose(session.run(None, feed)[0], onnxruntime_cpu(path, feed)[0], rtol=1e-5, atol=1e-6)
    assert len(partitions_on_gpu) == 1


def test_without_a_usable_gpu_the_provider_offers_no_device(monkeypatch, tmp_path, partitions_on_gpu):
    rtxrt_ep.unregister()
    monkeypatch.delenv("RTXRT_EP_CPU_DEVICE")
    rtxrt_ep.register()  # devices are listed when the library is registered
    if any(d.ep_name == PROVIDER for d in onnxruntime.get_ep_devices()):
        pytest.skip("this machine has a GPU rtxrt can use")
    path = saved(all_supported(), tmp_path)
    session = onnxruntime.InferenceSession(path, providers=[PROVIDER, CPU])  # onnxruntime falls back, as it says
    assert session.get_providers() == [CPU]
    session.run(None, feeds(cols=4))
    assert partitions_on_gpu == []


def test_an_app_exits_cleanly_with_sessions_still_open(tmp_path):
    """Sessions and the library outlive the interpreter's last Python code: onnxruntime's
    releases at exit must not call into a finalized interpreter."""
    path = saved(cut_chain(), tmp_path)
    script = (f"import numpy as np, onnxruntime, rtxrt_ep\nrtxrt_ep.register()\n"
              f"s = onnxruntime.InferenceSession({path!r}, providers=[{PROVIDER!r}, {CPU!r}])\n"
              f"print(s.run(None, {{'x': np.ones((2, 8), np.float32)}})[0].shape)\n")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 8)"
