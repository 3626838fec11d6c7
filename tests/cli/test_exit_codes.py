"""Exit codes of the command line: a bad command line exits 2 (argparse's own error), bad
input 1 with one line naming the thing at fault, never 3 (internal error); arguments are
checked before the slow part; a closed output pipe ends the command quietly."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import build_rtxir
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.cli import main
from rtxrt.samples import default_model
from tests.helpers import add_relu_model, make_model

CLI = [sys.executable, "-m", "rtxrt.cli"]


@pytest.fixture
def relu_rtxir(tmp_path):
    """y = relu(x + bias), x: float32[batch, 4]."""
    onnx.save(add_relu_model(), str(tmp_path / "m.onnx"))
    assert main(["aot", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.rtxir")]) == 0
    return tmp_path / "m.rtxir"


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """The default model, .onnx and its .rtxir, which holds fused ops (rtxrt::FusedConv)."""
    folder = tmp_path_factory.mktemp("fused")
    onnx.save(default_model(), str(folder / "m.onnx"))
    assert main(["aot", str(folder / "m.onnx"), "-o", str(folder / "m.rtxir")]) == 0
    return folder / "m.onnx", folder / "m.rtxir"


@pytest.fixture
def no_cupy(monkeypatch):
    """An install without CuPy: ``import cupy`` (and of any of its modules) fails."""
    for name in [n for n in sys.modules if n == "cupy" or n.startswith("cupy.")] + ["cupy"]:
        monkeypatch.setitem(sys.modules, name, None)


def usage_error(argv: list[str], capsys) -> str:
    """argparse's answer to a bad command line: exit 2, the message on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rtxrt {command}: error:") and "\n" not in err, err
    return err


# --- commands that need a GPU --------------------------------------------------------------

def test_bench_without_cupy_says_it_needs_a_gpu_and_what_is_missing(fused, no_cupy, tmp_path, capsys):
    assert main(["bench", str(fused[1]), "--cache-dir", str(tmp_path)]) == 1
    err = one_line_error(capsys, "bench")
    assert "bench needs an NVIDIA GPU" in err and "CuPy is not installed" in err
    assert "ModuleNotFoundError" not in err


@pytest.mark.parametrize("command", ["jit", "prewarm"])
def test_other_gpu_commands_without_cupy_say_what_is_missing(fused, no_cupy, tmp_path, command, capsys):
    code = main([command, str(fused[1]), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "CuPy is not installed" in err and "Traceback" not in err


# --- malformed values are command-line errors, for every command ----------------------------

@pytest.mark.parametrize("argv, flag", [
    (["run", "m.rtxir", "--dim", "batch=x"], "--dim"),
    (["run", "m.rtxir", "--dim", "=4"], "--dim"),
    (["run", "m.rtxir", "--dim", "batch"], "--dim"),
    (["jit", "m.rtxir", "--shapes", "image:4xAx64"], "--shapes"),
    (["bench", "m.rtxir", "--shapes", "image"], "--shapes"),
    (["bench", "m.rtxir", "--iterations", "0"], "--iterations"),
    (["bench", "m.rtxir", "--warmup", "-1"], "--warmup"),
    (["bench", "m.rtxir", "--device", "-1"], "--device"),
    (["demo", "--batch", "0"], "--batch"),
    (["aot", "m.onnx", "--precompile", "sm_86", "--shapes", "x:1xy"], "--shapes"),
])
def test_malformed_values_exit_2_naming_the_argument(argv, flag, capsys):
    assert f"argument {flag}" in usage_error(argv, capsys)


def test_dim_and_inputs_do_not_go_together(capsys):
    err = usage_error(["run", "m.rtxir", "--dim", "batch=2", "--inputs", "x.npz"], capsys)
    assert "not allowed with argument" in err


def test_arguments_that_need_another_one_exit_2(fused, tmp_path, capsys):
    assert main(["run", str(fused[1]), "--onnx", str(fused[0])]) == 2
    assert "--compare-onnxruntime" in one_line_error(capsys, "run")
    assert main(["aot", str(fused[0]), "-o", str(tmp_path / "m.rtxir"), "--shapes", "image:1x3x64x64"]) == 2
    assert "--precompile" in one_line_error(capsys, "aot")


# --- arguments that need the model: bad input, named ----------------------------------------

def test_a_dim_no_input_has_is_refused_with_the_models_dims(relu_rtxir, capsys):
    assert main(["run", str(relu_rtxir), "--dim", "bacth=2"]) == 1
    err = one_line_error(capsys, "run")
    assert "bacth" in err and "batch" in err


def test_a_dim_on_a_static_model_is_refused(tmp_path, capsys):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])])
    onnx.save(model, str(tmp_path / "static.onnx"))
    assert main(["run", str(tmp_path / "static.onnx"), "--dim", "batch=2"]) == 1
    assert "has none" in one_line_error(capsys, "run")


def test_a_keep_fp32_typo_is_refused_with_close_matches(fused, tmp_path, capsys):
    output = tmp_path / "m.rtxir"
    assert main(["aot", str(fused[0]), "-o", str(output), "--precision", "fp16", "--keep-fp32", "Convv"]) == 1
    err = one_line_error(capsys, "aot")
    assert "'Convv'" in err and "did you mean 'Conv'" in err
    assert not output.exists()


# --- arguments are checked before the slow part ----------------------------------------------

def test_comparing_a_fused_model_without_the_original_fails_before_running(fused, capsys):
    assert main(["run", str(fused[1]), "--compare-onnxruntime"]) == 1
    captured = capsys.readouterr()
    assert "--onnx" in captured.err
    assert "ran in" not in captured.out  # refused before running the model


def test_an_unwritable_save_path_fails_before_running(relu_rtxir, tmp_path, capsys):
    target = tmp_path / "missing" / "out.npz"
    assert main(["run", str(relu_rtxir), "--save", str(target)]) == 1
    captured = capsys.readouterr()
    assert str(target) in captured.err and "ran in" not in captured.out


# --- output paths: errors name the path the user gave ----------------------------------------

@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_aot_output_errors_name_the_users_path(fused, tmp_path, where, capsys):
    output = tmp_path / "missing" / "m.rtxir" if where == "missing folder" else tmp_path
    assert main(["aot", str(fused[0]), "-o", str(output)]) == 1
    err = one_line_error(capsys, "aot")
    assert err.endswith(str(output)) and ".tmp" not in err


def test_the_writer_names_the_destination_not_its_temporary_file(fused, tmp_path):
    for output in (tmp_path / "missing" / "m.rtxir", tmp_path):
        with pytest.raises(OSError) as info:
            build_rtxir(fused[0], output)
        assert info.value.filename == str(output)
    assert not list(tmp_path.parent.glob("*.tmp")) and not list(tmp_path.iterdir())  # no temporary file left


def test_refit_output_errors_name_the_users_path(fused, tmp_path, capsys):
    weightless = tmp_path / "weightless.rtxir"
    assert main(["aot", str(fused[0]), "-o", str(weightless), "--weightless"]) == 0
    capsys.readouterr()
    output = tmp_path / "missing" / "full.rtxir"
    assert main(["refit", str(weightless), "--weights", str(fused[0]), "-o", str(output)]) == 1
    err = one_line_error(capsys, "refit")
    assert err.endswith(str(output)) and ".tmp" not in err


# --- a closed output pipe --------------------------------------------------------------------

def test_output_piped_into_head_ends_quietly(tmp_path):
    """``rtxrt inspect m.rtxir --nodes | head -1``: no "Broken pipe" error; the exit code is a
    SIGPIPE death's (141), as the shell reports for other tools."""
    chain = [helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"], name=f"relu{i}") for i in range(3000)]
    model = make_model(chain, [("v0", TensorProto.FLOAT, [1])], [("v3000", TensorProto.FLOAT, [1])])
    onnx.save(model, str(tmp_path / "long.onnx"))
    assert main(["aot", str(tmp_path / "long.onnx"), "-o", str(tmp_path / "long.rtxir"), "--no-optimize"]) == 0
    rtxrt = subprocess.Popen([*CLI, "inspect", str(tmp_path / "long.rtxir"), "--nodes"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-1"], stdin=rtxrt.stdout, capture_output=True, text=True)
    rtxrt.stdout.close()
    err = rtxrt.stderr.read().decode()
    assert rtxrt.wait() == 141 and err == ""
    assert head.stdout.startswith(str(tmp_path / "long.rtxir"))


# --- messages are sentences, not Python exceptions -------------------------------------------

def test_a_failing_node_is_named_in_a_plain_sentence(tmp_path, capsys):
    model = make_model([helper.make_node("Gather", ["x", "i"], ["y"], name="lookup")],
                       [("x", TensorProto.FLOAT, [4]), ("i", TensorProto.INT64, [1])],
                       [("y", TensorProto.FLOAT, [1])])
    onnx.save(model, str(tmp_path / "gather.onnx"))
    np.savez(tmp_path / "in.npz", x=np.ones(4, np.float32), i=np.array([10]))
    assert main(["run", str(tmp_path / "gather.onnx"), "--inputs", str(tmp_path / "in.npz")]) == 1
    err = one_line_error(capsys, "run")
    assert "Gather node 'lookup' failed: index 10 is out of bounds" in err and "IndexError" not in err


def test_a_node_out_of_memory_says_so(tmp_path, monkeypatch, capsys):
    def run_out_of_memory(*args):
        raise MemoryError("Unable to allocate 4.00 TiB for an array with shape (1099511627776,)")

    monkeypatch.setattr(find_kernel("Relu"), "run", run_out_of_memory)
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="act")],
                       [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4])])
    onnx.save(model, str(tmp_path / "relu.onnx"))
    assert main(["run", str(tmp_path / "relu.onnx")]) == 1
    err = one_line_error(capsys, "run")
    assert "Relu node 'act' ran out of memory: Unable to allocate 4.00 TiB" in err and "MemoryError" not in err
