"""The AOT stage end to end: import, optimize, check, write .rtxir."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..format import RefitSource
from ..frontend.onnx_import import OnnxSource, load_onnx
from ..ir.graph import Model
from .options import AotOptions
from .pipeline import optimize
from .report import AotReport
from .weightless import source_recipe, strip_weights


@dataclass
class AotResult:
    model: Model
    report: AotReport
    # The imported model before the passes, weights left out (weightless builds only).
    source: RefitSource | None = None


def aot_compile(source: OnnxSource, options: AotOptions | None = None) -> AotResult:
    """Import an ONNX model and run the optimization pipeline."""
    options = options or AotOptions()
    start = time.perf_counter()
    model = load_onnx(source)
    recipe = source_recipe(model) if options.weightless else None
    if options.optimize:
        report = optimize(model, options)
    else:
        report = AotReport(nodes_before=len(model.graph.nodes))
        report.finish(model)
    report.seconds = time.perf_counter() - start
    report.weightless = options.weightless
    return AotResult(model, report, recipe)


def compile_onnx(source: OnnxSource, options: AotOptions | None = None, *, round_trip: bool = False) -> Model:
    """The optimized IR of an ONNX model. With ``round_trip`` it is serialized to .rtxir bytes
    and read back, exactly as a saved file would be."""
    options = options or AotOptions()
    model = aot_compile(source, options).model
    if round_trip:
        from ..format import read_rtxir, to_bytes

        model = read_rtxir(to_bytes(model, options=options.to_dict()))
    return model


def build_rtxir(source: OnnxSource, destination: str | os.PathLike, options: AotOptions | None = None) -> AotResult:
    """``rtxrt aot``: compile an ONNX model and write the .rtxir file."""
    from ..format import write_rtxir

    options = options or AotOptions()
    result = aot_compile(source, options)
    if options.weightless:
        write_rtxir(strip_weights(result.model), destination, options=options.to_dict(), source=result.source)
    else:
        write_rtxir(result.model, destination, options=options.to_dict())
    return result
