"""The AOT pipeline: import, (optimization passes land here), check, write .rtxir."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from ..frontend.onnx_import import OnnxSource, load_onnx
from ..ir.graph import Model


@dataclass(frozen=True)
class AotOptions:
    """Options recorded in the .rtxir file; they are part of its identity."""

    precision: str = "fp32"

    def to_dict(self) -> dict:
        return asdict(self)


def compile_onnx(source: OnnxSource, options: AotOptions | None = None, *, round_trip: bool = False) -> Model:
    """Import and optimize an ONNX model. With ``round_trip`` the result is serialized to
    .rtxir bytes and read back, exactly as a saved file would be."""
    options = options or AotOptions()
    model = load_onnx(source)
    if round_trip:
        from ..format import read_rtxir, to_bytes

        model = read_rtxir(to_bytes(model, options=options.to_dict()))
    return model


def build_rtxir(source: OnnxSource, destination: str | os.PathLike, options: AotOptions | None = None) -> Model:
    """``rtxrt aot``: compile an ONNX model and write the .rtxir file; returns the IR."""
    from ..format import write_rtxir

    options = options or AotOptions()
    model = compile_onnx(source, options)
    write_rtxir(model, destination, options=options.to_dict())
    return model
