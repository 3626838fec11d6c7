"""The provider tests exercise rtxrt's partitioning on machines without a GPU too, so they opt
in to running rtxrt's partitions on its CPU reference backend ($RTXRT_EP_CPU_DEVICE=1). Without
that opt-in, a provider without a GPU claims no node (tests/ep/test_no_gpu.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def rtxrt_partitions_on_the_reference_backend(monkeypatch):
    monkeypatch.setenv("RTXRT_EP_CPU_DEVICE", "1")
