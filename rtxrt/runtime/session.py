"""``rtxrt.Session``: load a .rtxir (or .onnx) model and run it by input name."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..backends.reference.executor import ReferenceExecutor
from ..ir.graph import Dim, Model

ModelSource = Union[str, os.PathLike, bytes, Model]


@dataclass(frozen=True)
class IOInfo:
    """Name, element type and shape (ints, symbols or None) of a model input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None


class Session:
    """Runs a model. This build runs the numpy reference backend on the CPU."""

    def __init__(self, source: ModelSource):
        self.model = load_model(source)
        self.backend = "reference (CPU)"
        self._executor = ReferenceExecutor(self.model)

    @property
    def inputs(self) -> list[IOInfo]:
        g = self.model.graph
        return [self._info(n) for n in g.inputs if n not in g.initializers]

    @property
    def outputs(self) -> list[IOInfo]:
        return [self._info(n) for n in self.model.graph.outputs]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        results = self._executor.run(feeds, output_names)
        return [results[n] for n in (output_names or self.model.graph.outputs)]

    def _info(self, name: str) -> IOInfo:
        t = self.model.graph.types.get(name)
        return IOInfo(name, t.dtype.short if t else "unknown", t.shape if t else None)


def load_model(source: ModelSource) -> Model:
    """A Model from a .rtxir path or bytes, or an .onnx path (compiled on the fly)."""
    if isinstance(source, Model):
        return source
    from ..format import read_rtxir
    from ..format.layout import MAGIC

    if isinstance(source, (bytes, bytearray, memoryview)):
        if bytes(source[: len(MAGIC)]) == MAGIC:
            return read_rtxir(bytes(source))
        from ..aot import compile_onnx

        return compile_onnx(bytes(source))
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        from ..aot import compile_onnx

        return compile_onnx(path)
    return read_rtxir(path)
