"""Importing a model costs little more than its weights: ``rtxrt aot`` on 200 MB of float32
weights takes seconds and well under 2 GB, whether they are an initializer applied to a long
1-D input or a Constant node, and its summary says how long the import took."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtxrt.aot import build_rtxir
from tests.helpers import make_model

N = 50_000_000  # float32: 200 MB
# Peak RSS of a child that runs one command, read by a parent that ran nothing else.
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(result.returncode, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(result.stdout + result.stderr)
"""


def long_vector_model() -> onnx.ModelProto:
    """y = (x + w) * w with x: float32[N] and a [N] initializer w: long 1-D values in and out."""
    return make_model([helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Mul", ["s", "w"], ["y"])],
                      [("x", TensorProto.FLOAT, [N])], [("y", TensorProto.FLOAT, [N])], {"w": np.ones(N, np.float32)})


def big_constant_model() -> onnx.ModelProto:
    """y = x + w with w a [N] Constant node."""
    weights = numpy_helper.from_array(np.ones(N, np.float32))
    return make_model([helper.make_node("Constant", [], ["w"], value=weights), helper.make_node("Add", ["x", "w"], ["y"])],
                      [("x", TensorProto.FLOAT, [N])], [("y", TensorProto.FLOAT, [N])])


@pytest.mark.parametrize("build", [long_vector_model, big_constant_model])
def test_aot_of_200_mb_of_weights_takes_under_5_s_and_2_gb(tmp_path, build):
    path = tmp_path / "m.onnx"
    onnx.save(build(), path)
    command = [sys.executable, "-m", "rtxrt.cli", "aot", str(path), "-o", str(tmp_path / "m.rtxir"),
               "--report", str(tmp_path / "report.json")]
    measured = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True)
    code, seconds, peak_kib = measured.stdout.split("\n", 1)[0].split()
    assert code == "0", measured.stdout
    assert float(seconds) < 5.0, measured.stdout
    assert int(peak_kib) * 1024 < 2e9, measured.stdout
    assert "time: import" in measured.stdout
    assert json.loads((tmp_path / "report.json").read_text())["import_seconds"] > 0


def test_the_aot_report_gives_import_time_apart_from_the_passes(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", TensorProto.FLOAT, [4])],
                       [("y", TensorProto.FLOAT, [4])])
    start = time.perf_counter()
    report = build_rtxir(model, tmp_path / "m.rtxir").report
    elapsed = time.perf_counter() - start
    assert 0 < report.import_seconds < report.seconds < elapsed
    assert report.to_dict()["import_seconds"] == round(report.import_seconds, 4)
    passes = report.seconds - report.import_seconds
    assert f"time: import {report.import_seconds:.2f} s, passes {passes:.2f} s" in report.summary()
