"""Shared test setup: GPU tests skip on machines without an NVIDIA GPU."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.device import find_gpu


def pytest_collection_modifyitems(config, items):
    if find_gpu() is not None:
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU with CuPy on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
