"""rtxrt.Session runs models by input name and rejects inputs that do not fit the model."""
from __future__ import annotations

import numpy as np
import pytest

import rtxrt
from rtxrt.aot import build_rtxir
from tests.helpers import add_relu_model


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("session") / "add_relu.rtxir"
    build_rtxir(add_relu_model(), path)
    return rtxrt.Session(path, fallback="cpu")


def test_describes_inputs_and_outputs(session):
    assert [(i.name, i.dtype, i.shape) for i in session.inputs] == [("x", "float32", ("batch", 4))]
    assert [(o.name, o.dtype, o.shape) for o in session.outputs] == [("y", "float32", ("batch", 4))]


def test_runs_with_any_batch_size(session):
    for batch in (1, 3):
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4) - 3
        (y,) = session.run(None, {"x": x})
        np.testing.assert_array_equal(y, np.maximum(x + [-1, 0, 1, 2], 0))


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({}, "missing input"),
        ({"x": np.zeros((1, 4), np.float32), "extra": np.zeros(1)}, "unknown input"),
        ({"x": np.zeros((1, 4), np.float64)}, "expected dtype float32, got float64"),
        ({"x": np.zeros((1, 5), np.float32)}, "dim 1 must be 4"),
        ({"x": np.zeros((4,), np.float32)}, "rank 1"),
    ],
)
def test_bad_inputs_get_a_clear_error(session, feeds, message):
    with pytest.raises(rtxrt.InputError, match=message):
        session.run(None, feeds)


def test_unknown_output_names_are_rejected(session):
    with pytest.raises(rtxrt.InputError, match="unknown output 'z'"):
        session.run(["z"], {"x": np.zeros((1, 4), np.float32)})


def test_a_symbolic_dim_must_have_one_size_across_inputs(tmp_path):
    from onnx import TensorProto, helper

    from tests.helpers import make_model

    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       [("a", TensorProto.FLOAT, ["n", 2]), ("b", TensorProto.FLOAT, ["n", 2])],
                       [("y", TensorProto.FLOAT, ["n", 2])])
    build_rtxir(model, tmp_path / "add.rtxir")
    session = rtxrt.Session(tmp_path / "add.rtxir", fallback="cpu")
    with pytest.raises(rtxrt.InputError, match="'n'"):
        session.run(None, {"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})


def test_the_cpu_fallback_reports_that_nothing_came_from_a_cache(session):
    session.run(None, {"x": np.zeros((2, 4), np.float32)})
    assert session.stats["from_cache"] is False and session.stats["kernels_compiled"] == 0
    assert session.stats["host_nodes"] == []


def test_an_onnx_model_given_as_bytes_reads_external_data_only_from_the_folder_named(tmp_path, monkeypatch):
    """`rtxrt.Session(open('m.onnx', 'rb').read())` in a folder holding the weights file must
    not read it: bytes have no folder. Naming one with base_dir reads it from there."""
    from tests.frontend.test_hardening import WEIGHTS, add_weights_model, externalize

    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    data = externalize(add_weights_model(), "weights.bin").SerializeToString()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(rtxrt.ModelError, match="initializer 'w'.*'weights.bin'.*base_dir"):
        rtxrt.Session(data, fallback="cpu")
    session = rtxrt.Session(data, fallback="cpu", base_dir=tmp_path)
    x = np.ones(16, np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x + WEIGHTS)
