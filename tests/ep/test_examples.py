"""examples/ort_app.py: a plain onnxruntime script that runs on rtxrt after the two-line opt-in
(here on the CPU reference backend) and checks itself against onnxruntime CPU."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
from rtxrt_ep import unregister


ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "ort_app.py"


def test_ort_app_runs_on_rtxrt_and_matches_onnxruntime():
    done = subprocess.run([sys.executable, str(APP)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("available providers: [") and "'RtxrtExecutionProvider'" in lines[0]
    assert lines[1] == "session providers:   ['RtxrtExecutionProvider', 'CPUExecutionProvider']"
    assert "probs: float32[3, 4] matches onnxruntime CPU" in lines
    assert "top_labels: int64[3, 2] matches onnxruntime CPU" in lines
    assert lines[-1] == "OK"


def test_ort_app_has_no_rtxrt_code_beyond_the_opt_in():
    body = ast.parse(APP.read_text()).body[1:]  # after the docstring
    assert [ast.unparse(statement) for statement in body[:2]] == ["import rtxrt_ep", "rtxrt_ep.register()"]
    names = [getattr(n, "id", None) or getattr(n, "attr", None) or getattr(n, "name", "")
             for statement in body[2:] for n in ast.walk(statement)
             if isinstance(n, (ast.Name, ast.Attribute, ast.alias))]
    assert not [name for name in names if "rtxrt" in name.lower()]


@pytest.fixture
def app(monkeypatch):
    spec = importlib.util.spec_from_file_location("ort_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the opt-in: register()
    yield module
    unregister()


def test_ort_app_exits_nonzero_on_a_mismatch(app, monkeypatch, capsys):
    monkeypatch.setattr(app, "ATOL", -1.0)  # nothing is within a negative tolerance
    monkeypatch.setattr(app, "RTOL", 0.0)
    with pytest.warns(RuntimeWarning):  # no GPU here: rtxrt's parts run on the reference backend
        assert app.main([]) == 1
    out = capsys.readouterr().out
    assert "probs: float32[3, 4] DIFFERS FROM onnxruntime CPU" in out
    assert out.splitlines()[-1] == "MISMATCH"
    assert "RtxrtExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.gpu
def test_ort_app_runs_its_rtxrt_partitions_on_the_gpu_and_matches_onnxruntime(app, capsys, partitions_on_gpu):
    assert app.main([]) == 0
    out = capsys.readouterr().out
    assert "probs: float32[3, 4] matches onnxruntime CPU" in out
    assert "top_labels: int64[3, 2] matches onnxruntime CPU" in out
    assert partitions_on_gpu and all(partitions_on_gpu), partitions_on_gpu  # every rtxrt partition ran on the GPU, none on the reference backend
