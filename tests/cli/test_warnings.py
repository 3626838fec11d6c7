"""Warnings: NaN and inf propagate through the reference backend silently, as in onnxruntime;
the command line shows each warning rtxrt gives as one line, without Python's source lines."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper

from rtxrt.aot import aot_compile
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.cli import main
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.samples import default_model
from tests.helpers import make_model

CLI = [sys.executable, "-m", "rtxrt.cli"]


def log_sqrt_div_matmul() -> onnx.ModelProto:
    """d = sqrt(log(x)) / x (NaN for x <= 0) and p = x @ x (inf * 0 is NaN)."""
    return make_model(
        [helper.make_node("Log", ["x"], ["l"], name="log"),
         helper.make_node("Sqrt", ["l"], ["s"], name="sqrt"),
         helper.make_node("Div", ["s", "x"], ["d"], name="div"),
         helper.make_node("MatMul", ["x", "x"], ["p"], name="mm")],
        [("x", TensorProto.FLOAT, [2, 2])], [("d", TensorProto.FLOAT, [2, 2]), ("p", TensorProto.FLOAT, [2, 2])],
    )


X = np.float32([[np.inf, 0.0], [np.nan, -2.0]])


def test_nan_and_inf_propagate_without_warnings_in_the_library():
    for model in (load_onnx(log_sqrt_div_matmul()), aot_compile(log_sqrt_div_matmul()).model):  # plain and fused
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            outputs = ReferenceExecutor(model).run({"x": X})
        assert np.isnan(outputs["d"][1:]).all() and np.isnan(outputs["p"]).all()


def test_run_on_nan_inputs_prints_no_warnings(tmp_path):
    onnx.save(log_sqrt_div_matmul(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "in.npz", x=X)
    result = subprocess.run([*CLI, "run", str(tmp_path / "m.onnx"), "--inputs", str(tmp_path / "in.npz")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    assert "output p: float32[2, 2]" in result.stdout


def test_a_warning_is_one_line_naming_the_command(tmp_path):
    """refit --allow-unused warns about a weight the model does not have."""
    source = tmp_path / "m.onnx"
    onnx.save(default_model(), str(source))
    assert main(["aot", str(source), "-o", str(tmp_path / "weightless.rtxir"), "--weightless"]) == 0
    proto = default_model()
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.float32), "extra.weight"))
    onnx.save(proto, str(tmp_path / "weights.onnx"))
    result = subprocess.run([*CLI, "refit", str(tmp_path / "weightless.rtxir"), "--weights",
                             str(tmp_path / "weights.onnx"), "-o", str(tmp_path / "full.rtxir"), "--allow-unused"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"rtxrt refit: warning: {tmp_path / 'weightless.rtxir'}: ignoring 1 weight(s) the model does not have: "
        "'extra.weight'"]
