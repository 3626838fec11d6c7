"""The AOT stage end to end: import, optimize, check, write .rtxir."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from ..format import RefitSource
from ..frontend.onnx_import import OnnxSource, load_onnx
from ..ir.graph import Model
from ..ir.shape_profile import METADATA_KEY, make_profile
from .options import AotOptions
from .pipeline import optimize
from .precompile import ArchReport, PrecompileOptions, check_archs, precompile
from .report import AotReport
from .weightless import source_recipe, strip_weights


@dataclass
class AotResult:
    model: Model
    report: AotReport
    # The imported model before the passes, weights left out (weightless builds only).
    source: RefitSource | None = None
    # One entry per arch compiled for (``build_rtxir(..., precompile=...)`` only).
    precompiled: list[ArchReport] = field(default_factory=list)


def aot_compile(source: OnnxSource, options: AotOptions | None = None, *,
                base_dir: str | os.PathLike | None = None) -> AotResult:
    """Import an ONNX model and run the optimization pipeline. ``base_dir``: the folder
    external data is read from (see ``load_onnx``)."""
    options = options or AotOptions()
    start = time.perf_counter()
    model = load_onnx(source, base_dir=base_dir)
    imported = time.perf_counter()
    recipe = source_recipe(model) if options.weightless else None
    if options.optimize:
        report = optimize(model, options)
    else:
        report = AotReport(nodes_before=len(model.graph.nodes))
        report.finish(model)
    report.seconds = time.perf_counter() - start
    report.import_seconds = imported - start
    report.weightless = options.weightless
    return AotResult(model, report, recipe)


def compile_onnx(source: OnnxSource, options: AotOptions | None = None, *, round_trip: bool = False,
                 base_dir: str | os.PathLike | None = None) -> Model:
    """The optimized IR of an ONNX model. With ``round_trip`` it is serialized to .rtxir bytes
    and read back, exactly as a saved file would be. ``base_dir``: as for ``load_onnx``."""
    options = options or AotOptions()
    model = aot_compile(source, options, base_dir=base_dir).model
    if round_trip:
        from ..format import read_rtxir, to_bytes

        model = read_rtxir(to_bytes(model, options=options.to_dict()))
    return model


def build_rtxir(source: OnnxSource, destination: str | os.PathLike, options: AotOptions | None = None, *,
                precompile_for: PrecompileOptions | None = None,
                profile: Mapping[str, Sequence[Sequence[int]]] | None = None,
                base_dir: str | os.PathLike | None = None) -> AotResult:
    """``rtxrt aot``: compile an ONNX model and write the .rtxir file. ``precompile_for``
    also embeds the kernels compiled for those GPU archs (``--precompile``); ``profile``
    ({input: (min, opt, max)}, ``--profile``) is kept in the file for sessions to use;
    ``base_dir``: as for ``load_onnx``."""
    from ..format import read_rtxir, to_bytes, write_rtxir

    options = options or AotOptions()
    if precompile_for is not None:  # fail before the slow part
        if options.weightless:
            raise InputError("--precompile cannot go with --weightless: refit rewrites the file without "
                             "its kernels; precompile the full build instead")
        check_archs(precompile_for.archs)
    result = aot_compile(source, options, base_dir=base_dir)
    if profile:
        result.model.metadata[METADATA_KEY] = make_profile(result.model.graph, profile).to_json()
    if options.weightless:
        write_rtxir(strip_weights(result.model), destination, options=options.to_dict(), source=result.source)
    elif precompile_for is None:
        write_rtxir(result.model, destination, options=options.to_dict())
    else:  # plan the model read back from its bytes: exactly what the runtime will plan
        stored = read_rtxir(to_bytes(result.model, options=options.to_dict()))
        cubins, result.precompiled = precompile(stored, precompile_for)
        write_rtxir(result.model, destination, options=options.to_dict(), cubins=cubins)
    return result
