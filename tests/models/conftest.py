"""Session-scoped fixtures for the model tests: each model is exported to ONNX once, and
compiled to .rtxir once, into a temporary directory shared by every test that uses it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("torch", reason="the model tests export torch models (pip install rtxrt[test])")
pytest.importorskip("onnxruntime", reason="the model tests compare with onnxruntime (pip install rtxrt[test])")

from rtxrt.aot import AotResult  # noqa: E402

from . import zoo  # noqa: E402  (imports torch)


@dataclass
class Build:
    """A zoo model compiled by ``rtxrt aot`` (build_rtxir): the file and the in-memory result
    (optimized IR and report)."""

    path: Path
    result: AotResult


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo_export(zoo_dir) -> Callable[[str], zoo.ExportedModel]:
    """``zoo_export(name)``: the zoo model ``name`` exported with seeded random weights, once per
    test session whichever tests ask for it."""
    cache: dict[str, zoo.ExportedModel] = {}

    def get(name: str) -> zoo.ExportedModel:
        if name not in cache:
            if name in zoo.TEXT_MODELS:
                pytest.importorskip("transformers")
            cache[name] = zoo.export(name, zoo_dir / f"{name}.onnx")
        return cache[name]

    return get


@pytest.fixture(scope="session")
def zoo_build(zoo_export, zoo_dir) -> Callable[[str], Build]:
    """``zoo_build(name)``: ``zoo_export(name)`` compiled into a .rtxir file with the default
    options, once per test session."""
    from rtxrt.aot import build_rtxir

    cache: dict[str, Build] = {}

    def get(name: str) -> Build:
        if name not in cache:
            path = zoo_dir / f"{name}.rtxir"
            cache[name] = Build(path, build_rtxir(zoo_export(name).onnx_path, path))
        return cache[name]

    return get


@pytest.fixture(scope="session", params=zoo.MODEL_NAMES)
def exported(request, zoo_export) -> zoo.ExportedModel:
    """One model of the zoo, exported with seeded random weights (once per test session)."""
    return zoo_export(request.param)


@pytest.fixture(scope="session")
def rtxir_path(exported, zoo_build) -> Path:
    """``exported`` compiled by the AOT stage into a .rtxir file (once per test session)."""
    return zoo_build(exported.name).path
