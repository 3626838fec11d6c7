"""``rtxrt inspect MODEL --plan ARCH``: where each node would run on that arch, planned
without a GPU, as text or JSON (keys nodes, gpu_nodes, host_nodes [{node, op, why}],
segments), for .onnx and .rtxir files; bad shapes are named."""
from __future__ import annotations

import json

import onnx
import pytest

from rtxrt.cli import main
from tests.backends.cuda.test_plan_coverage import anchor_model, nonzero_onnx


def test_the_json_report_lists_the_host_nodes_and_segments(tmp_path, capsys):
    path = tmp_path / "nonzero.onnx"
    onnx.save(nonzero_onnx(), str(path))
    assert main(["inspect", str(path), "--plan", "sm_86", "--shapes", "x:5x4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"nodes", "gpu_nodes", "host_nodes", "segments"} <= set(report)
    assert report["shapes"] == {"x": [5, 4]}
    assert [(h["node"], h["op"]) for h in report["host_nodes"]] == [("NonZero node 'where'", "NonZero")]
    assert [s["kind"] for s in report["segments"]] == ["gpu", "host", "gpu"]


def test_the_text_report_of_an_rtxir_says_everything_runs_on_the_gpu(tmp_path, capsys):
    onnx_path, rtxir = tmp_path / "anchors.onnx", tmp_path / "anchors.rtxir"
    onnx.save(anchor_model(), str(onnx_path))
    assert main(["aot", str(onnx_path), "-o", str(rtxir)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(rtxir), "--plan", "sm_120", "--shapes", "x:1x4x32x48"]) == 0
    out = capsys.readouterr().out
    assert "1 on the GPU" in out and "0 on the host" in out and "on the host:" not in out


def test_shapes_for_an_unknown_input_are_refused(tmp_path, capsys):
    path = tmp_path / "anchors.onnx"
    onnx.save(anchor_model(), str(path))
    assert main(["inspect", str(path), "--plan", "sm_86", "--shapes", "image:1x4x8x8"]) != 0
    assert "unknown input(s) ['image']" in capsys.readouterr().err


def test_an_unknown_arch_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["inspect", str(tmp_path / "m.onnx"), "--plan", "sm_99"])
