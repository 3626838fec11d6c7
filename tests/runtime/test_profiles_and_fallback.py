"""Shape profiles are checked against the model, and a Session without a usable GPU either
says so (the default) or, with fallback="cpu", warns and runs the reference backend."""
from __future__ import annotations

import argparse

import sys

import numpy as np
import onnx
import pytest

import rtxrt
from rtxrt.aot import build_rtxir
from rtxrt.cli.arguments import profile
from rtxrt.ir.shape_profile import make_profile
from rtxrt.backends.cuda.device import NoGpuError
from rtxrt.backends.cuda.device import find_gpu
from tests.helpers import add_relu_model

no_gpu = pytest.mark.skipif(find_gpu() is not None, reason="checks the behaviour without a GPU")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("profiles") / "add_relu.rtxir"
    build_rtxir(add_relu_model(), path)  # x: [batch, 4]
    return path


def graph(path):
    return rtxrt.Session(path, fallback="cpu").model.graph


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_profile_gives_opt_shapes_and_bounds(model_path):
    profile = make_profile(graph(model_path), {"x": [(1, 4), (8, 4), (32, 4)]})
    assert profile.opt_shapes == {"x": (8, 4)}
    profile.check({"x": (1, 4)})
    profile.check({"x": (32, 4)})
    with pytest.raises(rtxrt.InputError, match=r"input 'x': shape \[33, 4\] is outside the session's profile"):
        profile.check({"x": (33, 4)})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad, message", [
    ({"y": [(1, 4)] * 3}, "unknown input"),
    ({}, "symbolic dims"),
    ({"x": [(1, 4), (8, 4)]}, "three shapes"),
    ({"x": [(1, 4), (8, 5), (9, 4)]}, "does not fit"),
    ({"x": [(1, 4, 1), (8, 4, 1), (9, 4, 1)]}, "does not fit"),
    ({"x": [(8, 4), (1, 4), (9, 4)]}, "min <= opt <= max"),
])
def test_a_bad_profile_is_refused_naming_the_input(model_path, bad, message):
    with pytest.raises(rtxrt.InputError, match=message):
        make_profile(graph(model_path), bad)


def test_bad_session_options_are_refused(model_path):
    with pytest.raises(ValueError, match="specialization"):
        rtxrt.Session(model_path, fallback="cpu", specialization="never")
    with pytest.raises(ValueError, match="fallback"):
        rtxrt.Session(model_path, fallback="gpu")
    with pytest.raises(ValueError, match="precision"):
        rtxrt.Session(model_path, fallback="cpu", precision="int3")


@no_gpu
def test_without_a_gpu_a_session_says_so_unless_cpu_fallback_is_allowed(model_path):
    with pytest.raises(NoGpuError, match="driver|GPU|CuPy"):
        rtxrt.Session(model_path)
    with pytest.warns(RuntimeWarning, match="running the CPU reference backend"):
        session = rtxrt.Session(model_path, fallback="cpu")
    assert not session.on_gpu and session.backend == "reference (CPU)" and session.fallback_reason
    (y,) = session.run(None, {"x": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(y, np.maximum(np.ones((2, 4)) + [-1, 0, 1, 2], 0))


@no_gpu
def test_is_cached_is_false_without_a_gpu(model_path, tmp_path):
    assert rtxrt.is_cached(model_path, cache_dir=tmp_path) is False


def test_profiles_parse_from_the_command_line_form():
    assert profile("ids:1x8:1x128:8x512,mask:1x8:1x128:8x512") == {
        "ids": [(1, 8), (1, 128), (8, 512)], "mask": [(1, 8), (1, 128), (8, 512)]}
    for bad in ("ids:1x8:1x128", "ids:1xA:1:2", ":1:2:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME:MIN:OPT:MAX"):
            profile(bad)


def test_a_malformed_profile_is_a_command_line_error(tmp_path, capsys):
    import onnx

    from rtxrt.cli import main

    onnx.save(add_relu_model(), str(tmp_path / "m.onnx"))
    with pytest.raises(SystemExit) as exit_:
        main(["aot", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.rtxir"), "--profile", "x:1x4:2x4"])
    assert exit_.value.code == 2 and "expected NAME:MIN:OPT:MAX" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_profile_given_at_aot_is_kept_in_the_file_for_sessions(tmp_path):
    from rtxrt.cli import main
    from rtxrt.format import read_rtxir
    from rtxrt.ir.shape_profile import stored_profile

    onnx_path = tmp_path / "m.onnx"
    onnx.save(add_relu_model(), str(onnx_path))
    assert main(["aot", str(onnx_path), "-o", str(tmp_path / "m.rtxir"), "--profile", "x:1x4:8x4:32x4"]) == 0
    profile = stored_profile(read_rtxir(tmp_path / "m.rtxir"))
    assert profile is not None and profile.ranges == {"x": ((1, 4), (8, 4), (32, 4))}
    assert rtxrt.Session(tmp_path / "m.rtxir", fallback="cpu").shape_profile == profile
    assert main(["aot", str(onnx_path), "-o", str(tmp_path / "bad.rtxir"), "--profile", "x:1x4:8x4:2x4"]) == 1


def test_without_cupy_a_session_names_the_missing_package(model_path, monkeypatch):
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupy_backends"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now fails as if not installed
    with pytest.raises(NoGpuError, match="CuPy is not installed"):
        rtxrt.Session(model_path)
    with pytest.warns(RuntimeWarning, match="CuPy is not installed"):
        session = rtxrt.Session(model_path, fallback="cpu")
    (y,) = session.run(None, {"x": np.zeros((1, 4), np.float32)})
    np.testing.assert_array_equal(y, [[0, 0, 1, 2]])
