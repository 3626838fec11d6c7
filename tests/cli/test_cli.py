"""The rtxrt command line: aot, inspect, run and demo, and its answers to bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.cli import main
from rtxrt.samples import default_model
from tests.helpers import make_model


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "default.onnx"
    onnx.save(default_model(), str(path))
    return path


@pytest.fixture(scope="module")
def default_rtxir(default_onnx):
    path = default_onnx.with_suffix(".rtxir")
    assert main(["aot", str(default_onnx), "-o", str(path)]) == 0
    return path


def test_aot_writes_the_same_bytes_every_time(default_onnx, default_rtxir, tmp_path, capsys):
    again = tmp_path / "again.rtxir"
    assert main(["aot", str(default_onnx), "-o", str(again)]) == 0
    assert again.read_bytes() == default_rtxir.read_bytes()
    assert "nodes" in capsys.readouterr().out


def test_inspect_shows_io_op_counts_and_precisions(default_rtxir, capsys):
    assert main(["inspect", str(default_rtxir)]) == 0
    out = capsys.readouterr().out
    assert "image: float32[batch,3,64,64]" in out
    assert "probabilities: float32[batch,10]" in out
    assert "rtxrt::FusedConv" in out and "BatchNormalization" not in out  # folded and fused by aot
    assert "float32" in out


def test_run_matches_onnxruntime_on_the_original_model(default_onnx, default_rtxir, capsys):
    assert main(["run", str(default_rtxir), "--dim", "batch=2", "--compare-onnxruntime", "--onnx", str(default_onnx)]) == 0
    out = capsys.readouterr().out
    assert "float32[2, 10]" in out
    row = next(line for line in out.splitlines() if line.startswith("probabilities "))
    max_abs = float(row.split()[1])
    assert max_abs < 1e-5


def test_comparing_a_fused_model_needs_the_original(default_rtxir, capsys):
    assert main(["run", str(default_rtxir), "--compare-onnxruntime"]) == 1
    assert "--onnx" in capsys.readouterr().err


def test_run_reads_inputs_from_npz_and_saves_outputs(default_rtxir, tmp_path):
    images = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)
    np.savez(tmp_path / "in.npz", image=images)
    assert main(["run", str(default_rtxir), "--inputs", str(tmp_path / "in.npz"), "--save", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["probabilities"].sum(), 1.0, rtol=1e-5)


def test_demo_runs_the_bundled_model_end_to_end(capsys):
    assert main(["demo", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "OK" in out


def _damaged_copies(good: bytes, tmp_path):
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    cases = {
        "truncated": good[: len(good) // 3],
        "bitflip": bytes(flipped),
        "foreign": default_model().SerializeToString(),
        "empty": b"",
        "text": b"hello, I am not a model\n",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.rtxir"
        path.write_bytes(data)
        yield name, path


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_damaged_or_foreign_files_get_a_one_line_error_and_exit_1(default_rtxir, tmp_path, command, capsys):
    for name, path in _damaged_copies(default_rtxir.read_bytes(), tmp_path):
        assert main([command, str(path)]) == 1, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rtxrt {command}: error:") and "\n" not in err, (name, err)


def test_no_traceback_reaches_the_user(default_rtxir, tmp_path):
    damaged = tmp_path / "damaged.rtxir"
    damaged.write_bytes(default_rtxir.read_bytes()[:-100])
    result = subprocess.run([sys.executable, "-m", "rtxrt.cli", "run", str(damaged)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "damaged.rtxir" in result.stderr


def test_unsupported_ops_are_named_with_their_nodes(tmp_path, capsys):
    model = make_model(
        [helper.make_node("Relu", ["x"], ["a"], name="fine"),
         helper.make_node("MysteryOp", ["a"], ["y"], name="the_culprit", domain="com.example")],
        [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])],
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    assert main(["aot", str(path), "-o", str(tmp_path / "bad.rtxir")]) == 1
    err = capsys.readouterr().err
    assert "com.example::MysteryOp" in err and "'the_culprit'" in err
    assert not (tmp_path / "bad.rtxir").exists()


def test_missing_files_and_bad_arguments(tmp_path, capsys):
    assert main(["aot", str(tmp_path / "nope.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "nope.rtxir")]) == 1
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
