"""Fuzzing support shared by tests/format/test_fuzz_rtxir.py and tests/frontend/test_fuzz_onnx.py:
small valid seed models, structure-aware mutators for .rtxir files and ONNX models, and a
harness that runs each case in a child process with a time and a memory limit."""
from __future__ import annotations

from typing import Any

import numpy as np


def pick(rng: np.random.Generator, items: list) -> Any:
    return items[int(rng.integers(len(items)))]


def short(value: Any) -> str:
    """A value as mutation descriptions show it."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
