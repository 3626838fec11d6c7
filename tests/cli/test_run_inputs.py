"""``rtxrt run`` inputs: ``--inputs`` takes an .npz (one array per input name) or, for a
one-input model, an .npy; anything else is named as not a valid file, and pickles are never
loaded. Random inputs are made in each input's own type and refused, before any is made, when
they do not fit in memory."""
from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtxrt.cli import main
from rtxrt.cli import inputs as cli_inputs
from rtxrt.cli.inputs import random_inputs
from rtxrt.runtime import IOInfo
from tests.helpers import add_relu_model, make_model


@pytest.fixture
def relu_onnx(tmp_path):
    """y = relu(x + bias), x: float32[batch, 4]."""
    onnx.save(add_relu_model(), str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


@pytest.fixture
def two_inputs_onnx(tmp_path):
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       [("a", TensorProto.FLOAT, [2]), ("b", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])])
    onnx.save(model, str(tmp_path / "two.onnx"))
    return tmp_path / "two.onnx"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtxrt run: error:") and "\n" not in err, err
    return err


def test_an_npy_file_feeds_a_one_input_model(relu_onnx, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((3, 4), 2.0, np.float32))
    assert main(["run", str(relu_onnx), "--inputs", str(tmp_path / "x.npy"), "--save", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as out:
        np.testing.assert_array_equal(out["y"], np.tile(np.float32([1, 2, 3, 4]), (3, 1)))


def test_an_npy_file_for_a_model_of_several_inputs_asks_for_an_npz(two_inputs_onnx, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros(2, np.float32))
    assert main(["run", str(two_inputs_onnx), "--inputs", str(tmp_path / "x.npy")]) == 1
    err = error_line(capsys)
    assert "x.npy" in err and "2 inputs" in err and ".npz" in err


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"PK\x03\x04 a broken zip", b"\x93NUMPY\x01\x00 broken"],
                         ids=["text", "empty", "zip", "npy"])
def test_a_file_that_is_not_npz_or_npy_is_named_as_such(relu_onnx, tmp_path, content, capsys):
    path = tmp_path / "in.npz"
    path.write_bytes(content)
    assert main(["run", str(relu_onnx), "--inputs", str(path)]) == 1
    err = error_line(capsys)
    assert f"{path}: not a valid .npz or .npy file" in err
    assert "allow_pickle" not in err and "pickle.load" not in err


class _Tripwire:
    """Unpickling it writes a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_pickled_objects_are_never_loaded(relu_onnx, tmp_path, suffix, capsys):
    marker = tmp_path / "unpickled"
    objects = np.array([_Tripwire(marker)], dtype=object)
    path = tmp_path / f"evil{suffix}"
    if suffix == ".npy":
        np.save(path, objects, allow_pickle=True)
    else:
        np.savez(path, x=objects)
    assert pickle.loads(pickle.dumps(_Tripwire(tmp_path / "check"))) is None and (tmp_path / "check").exists()
    assert main(["run", str(relu_onnx), "--inputs", str(path)]) == 1
    assert "not a valid .npz or .npy file" in error_line(capsys)
    assert not marker.exists()


def test_a_missing_inputs_file_is_named(relu_onnx, tmp_path, capsys):
    assert main(["run", str(relu_onnx), "--inputs", str(tmp_path / "nope.npz")]) == 1
    assert str(tmp_path / "nope.npz") in error_line(capsys)


# --- random inputs ---------------------------------------------------------------------------

def test_random_inputs_too_large_for_any_machine_are_refused_before_allocating(relu_onnx, capsys):
    assert main(["run", str(relu_onnx), "--dim", f"batch={10**15}"]) == 1
    err = error_line(capsys)
    assert "input 'x'" in err and f"[{10**15}, 4]" in err and f"{16 * 10**15} bytes" in err


def test_random_inputs_are_checked_against_the_memory_free_now(relu_onnx, monkeypatch, capsys):
    monkeypatch.setattr(cli_inputs, "available_memory", lambda: 100_000)
    assert main(["run", str(relu_onnx), "--dim", "batch=6000"]) == 0  # 96,000 bytes: fits
    capsys.readouterr()
    assert main(["run", str(relu_onnx), "--dim", "batch=7000"]) == 1  # 112,000 bytes: does not
    err = error_line(capsys)
    assert "input 'x'" in err and "[7000, 4]" in err and "112000 bytes" in err and "100000 bytes" in err


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64", "int8", "int64", "bool"])
def test_random_inputs_have_the_inputs_type(dtype):
    (value,) = random_inputs([IOInfo("x", dtype, ["n", 3])], {"n": 2}, seed=0).values()
    assert value.shape == (2, 3) and value.dtype.name == dtype


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "bool"])
def test_random_inputs_take_no_more_memory_than_themselves(dtype):
    """No float64 (or other wider) temporary: a 1 GiB input must not need 3 GiB to be made."""
    tracemalloc.start()
    try:
        (value,) = random_inputs([IOInfo("x", dtype, [1 << 20])], {}, seed=0).values()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * value.nbytes + 64 * 1024


def test_summarizing_a_large_array_needs_no_float64_copy_of_it():
    """`rtxrt run` prints each input's and output's statistics: a 64 MiB float32 array must
    not need a 128 MiB float64 copy (or two) to be described."""
    from rtxrt.display import summarize_array

    array = np.random.default_rng(0).standard_normal(1 << 24, dtype=np.float32)
    tracemalloc.start()
    try:
        line = summarize_array(array)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < array.nbytes  # a float64 copy alone is twice that
    values = array.astype(np.float64)
    assert line == (f"float32[{1 << 24}] min {values.min():.6g} max {values.max():.6g} "
                    f"mean {values.mean():.6g} std {values.std():.6g}")
