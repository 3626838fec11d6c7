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
