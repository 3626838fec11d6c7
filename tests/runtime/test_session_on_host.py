"""A Session holds either a GPU engine or an ``OnHost`` fallback per shape, never a marker
string: shapes that run on the CPU reference backend say why (bind() and profile() name it),
and the typed JIT statistics always list the host nodes. A fake GPU context stands in for
the device, so nothing here needs one."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import rtxrt
import rtxrt.backends.cuda.jit as jit
from rtxrt.aot import build_rtxir
from rtxrt.backends.cuda.device import DeviceInfo
from rtxrt.backends.cuda.plan.builder import DataDependentShape
from rtxrt.runtime.session import OnHost
from tests.helpers import add_relu_model

PROFILE = {"x": [(1, 4), (2, 4), (4, 4)]}
WHY = "the shape of output 'y' depends on the input values"


class FakeGpu:
    """What a Session reads of a GpuContext before it builds an engine."""

    def __init__(self, device: int = 0):
        self.info = DeviceInfo(device, "Fake GPU", (8, 6), "sm_86", 46, 8 << 30, "12.8", "12.8", "12.8")
        self.device = contextlib.nullcontext()
        self.stream = None


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "add_relu.rtxir"
    build_rtxir(add_relu_model(), path)  # x: [batch, 4]
    return path


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(jit, "GpuContext", FakeGpu)

    def no_static_plan(*args, **kwargs):
        raise DataDependentShape(WHY)

    monkeypatch.setattr(jit, "specialize", no_static_plan)


def expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(x + np.array([-1.0, 0.0, 1.0, 2.0], np.float32), 0)


@pytest.mark.usefixtures("fake_gpu")
def test_shapes_no_static_plan_holds_run_on_the_host_and_say_why(model_path, tmp_path):
    with pytest.warns(RuntimeWarning, match="running this model on the CPU reference backend"):
        session = rtxrt.Session(model_path, cache_dir=tmp_path / "cache", progress=False, profile=PROFILE)
    engine = session.engine({"x": (2, 4)})
    assert isinstance(engine, OnHost) and WHY in engine.reason
    assert session.jit_stats.host_nodes == [engine.reason] and session.jit_stats.kernels_compiled == 0
    assert session.stats["host_nodes"] == [engine.reason]  # the dict view of the same stats
    with pytest.raises(rtxrt.InputError, match=r"bind\(\): .*depends on the input values"):
        session.bind({"x": (2, 4)})
    with pytest.raises(rtxrt.InputError, match=r"profile\(\): .*depends on the input values"):
        session.profile({"x": np.ones((2, 4), np.float32)})
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 4
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, expected(x))


@pytest.mark.usefixtures("fake_gpu")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_lazy_session_with_no_static_plan_falls_back_with_its_reason(model_path, tmp_path):
    session = rtxrt.Session(model_path, cache_dir=tmp_path / "cache", progress=False, profile=PROFILE,
                            specialization="lazy")  # the profile's generic engine finds no static plan
    x = np.ones((3, 4), np.float32)
    (y,) = session.run(None, {"x": x})
    assert session.stats["engine"] == "host" and not session._building  # nothing left to build
    session.wait()
    np.testing.assert_array_equal(y, expected(x))
    engine = session.engine({"x": (3, 4)})
    assert isinstance(engine, OnHost) and WHY in engine.reason
    assert session.jit_stats.host_nodes == [engine.reason]


def test_a_cpu_session_has_typed_stats_with_no_host_nodes(model_path, monkeypatch):
    def no_gpu(device: int = 0):
        raise rtxrt.RtxrtError("no GPU here")

    monkeypatch.setattr(jit, "GpuContext", no_gpu)
    with pytest.warns(RuntimeWarning, match="no GPU here"):
        session = rtxrt.Session(model_path, fallback="cpu")
    assert isinstance(session.jit_stats, jit.JitStats)
    assert session.jit_stats.host_nodes == [] and session.jit_stats.from_cache is False
    assert session.stats == session.jit_stats.as_dict() | {"engine": "", "kernels_compiled_total": 0}
    session.run(None, {"x": np.ones((2, 4), np.float32)})
    assert session.stats["engine"] == "host"
