"""The provider tests exercise rtxrt's partitioning on machines without a GPU too, so they opt
in to running rtxrt's partitions on its CPU reference backend ($RTXRT_EP_CPU_DEVICE=1). Without
that opt-in, a provider without a GPU claims no node (tests/ep/test_no_gpu.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def rtxrt_partitions_on_the_reference_backend(monkeypatch):
    monkeypatch.setenv("RTXRT_EP_CPU_DEVICE", "1")


@pytest.fixture
def partitions_on_gpu(monkeypatch) -> list[bool]:
    """Whether each rtxrt.Session.run call (one per rtxrt partition run) was on the GPU, in order."""
    import rtxrt

    on_gpu: list[bool] = []
    run = rtxrt.Session.run

    def recording_run(self, output_names, feeds):
        on_gpu.append(self.on_gpu)
        return run(self, output_names, feeds)

    monkeypatch.setattr(rtxrt.Session, "run", recording_run)
    return on_gpu


@pytest.fixture
def plugin_library():
    """rtxrt's plugin provider library registered with onnxruntime for one test (test modules
    that use it skip where ``rtxrt_ep.registration.plugin_problem()`` says it cannot be used)."""
    import warnings

    import rtxrt_ep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rtxrt's "no GPU: CPU reference backend"
        rtxrt_ep.register()
        yield
        rtxrt_ep.unregister()


@pytest.fixture
def forbid_aot(monkeypatch):
    """Call it after compiling: from then on any AOT compile fails, which proves a session
    read its .rtxir instead."""
    import rtxrt.aot
    import rtxrt.aot.compile

    def refuse(*args, **kwargs):
        raise AssertionError("AOT ran while loading an EP-context model")

    def forbid() -> None:
        for module in (rtxrt.aot, rtxrt.aot.compile):
            monkeypatch.setattr(module, "compile_onnx", refuse)
            monkeypatch.setattr(module, "aot_compile", refuse)

    return forbid
