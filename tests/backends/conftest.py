"""The CUDA backend's tests build zoo models; they share the models tests' fixtures."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.models import zoo
from tests.models.conftest import zoo_build, zoo_dir, zoo_export  # noqa: F401


@pytest.fixture(scope="session")
def exported_dynamic(zoo_dir) -> Callable[[str], str]:  # noqa: F811
    """``exported_dynamic(name)``: the path of zoo model ``name`` exported once with its sizes
    symbolic (a text model's batch and sequence, an image model's batch and image size)."""
    paths: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in paths:
            if name in zoo.TEXT_MODELS:
                pytest.importorskip("transformers")
                paths[name] = zoo.export(name, zoo_dir / f"{name}_dynamic.onnx").onnx_path
            else:
                paths[name] = zoo.export(name, zoo_dir / f"{name}_dynamic.onnx", dynamic_size=True).onnx_path
        return paths[name]
    return get
