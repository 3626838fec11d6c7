"""Session-scoped fixtures for the model tests: each model is exported to ONNX once, and
compiled to .rtxir once, into a temporary directory shared by every test that uses it."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the model tests export torch models (pip install rtxrt[test])")
pytest.importorskip("onnxruntime", reason="the model tests compare with onnxruntime (pip install rtxrt[test])")

from . import zoo  # noqa: E402  (imports torch)


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session", params=zoo.MODEL_NAMES)
def exported(request, zoo_dir) -> zoo.ExportedModel:
    """One model of the zoo, exported with seeded random weights (once per test session)."""
    name = request.param
    if name == "bert":
        pytest.importorskip("transformers")
    return zoo.export(name, zoo_dir / f"{name}.onnx")


@pytest.fixture(scope="session")
def rtxir_path(exported, zoo_dir) -> Path:
    """``exported`` compiled by the AOT stage into a .rtxir file (once per test session)."""
    from rtxrt.aot import build_rtxir

    path = zoo_dir / f"{exported.name}.rtxir"
    build_rtxir(exported.onnx_path, path)
    return path
