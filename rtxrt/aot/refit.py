"""Weightless .rtxir files and refit.

The AOT passes transform weights (BatchNorm folded into convolutions, Q/K/V weights
concatenated, constants folded, layouts changed), so the weights of a built file are not the
weights of the source model. A weightless file therefore keeps a *replay recipe*: the imported
model as it was before the passes, with its large initializers left out (``Graph.stripped``),
beside the optimized graph with every initializer left out. ``refit`` attaches the given
weights to that source model, re-runs the same deterministic pipeline with the options recorded
in the file, checks that the result has exactly the optimized graph the file describes (nodes,
attributes, initializer names and types: ``graph_digest``), and writes it. The weights come out
exactly as a full build would have written them, whatever the passes do to them: a full build
from an ONNX model with those weights gives a byte-identical file.

Recording each pass's weight arithmetic as recipe nodes instead would need every pass's
cooperation and could drift from what the passes really do; replaying needs neither.

The price of exactness: when a rewrite depends on weight *values* (equal tensors merged, a
constant that decides whether a pattern matches), weights that differ from the build's may
yield another graph; refit then refuses, and the model must be rebuilt with ``rtxrt aot``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..version import __version__
from ..errors import FormatError, ModelError, RtxrtError, warn
from ..format import RefitSource, graph_digest, read_refit_recipe, write_rtxir
from ..frontend.onnx_import import load_onnx
from ..ir.checker import check_model
from ..ir.graph import Graph, Model, Node, TensorType
from .options import AotOptions
from .pipeline import optimize
from .weightless import strip_weights

# How many problems one refit error lists before it says how many more there are.
MAX_LISTED = 8

Weights = Union[str, os.PathLike, Mapping[str, np.ndarray]]
RtxirSource = Union[str, os.PathLike, bytes]


def refit(model: RtxirSource, weights: Weights, output: str | os.PathLike | None = None, *,
          allow_unused: bool = False) -> Model:
    """Attach ``weights`` to a weightless .rtxir and return the full model (written to
    ``output`` if given, byte-identical to a full build from the same weights).

    ``weights``: the original .onnx, a .safetensors file keyed by the original initializer
    names, or a mapping name -> array. Every weight the file left out must be given, with the
    recorded shape and dtype; weights the model does not have are an error unless
    ``allow_unused``, which only warns.
    """
    label = "<bytes>" if isinstance(model, (bytes, bytearray, memoryview)) else os.fspath(model)
    recipe = read_refit_recipe(model)
    if recipe.source is None:
        raise ModelError(f"{label}: not a weightless file (its weights are in it already); refit "
                         "takes a file written by `rtxrt aot --weightless`")
    options = _stored_options(recipe.options, label, recipe.rtxrt_version)
    full = _attach(recipe.source, load_weights(weights), label, allow_unused)
    if options.optimize:
        optimize(full, options)
    if (graph_digest(strip_weights(full).graph) != graph_digest(recipe.model.graph)
            or full.opsets != recipe.model.opsets):
        raise ModelError(f"{label}: the weights do not reproduce the file's optimized graph "
                         f"({_first_difference(recipe.model.graph, full.graph)}; "
                         f"{_likely_cause(recipe.rtxrt_version)}); rebuild it with `rtxrt aot` from "
                         "an ONNX model that holds these weights")
    if output is not None:
        write_rtxir(full, output, options=options.to_dict())
    return full


def load_weights(weights: Weights) -> dict[str, np.ndarray]:
    """Name -> array from an .onnx (its initializers, as rtxrt imports them), a .safetensors
    file or a mapping."""
    if isinstance(weights, Mapping):
        bad = [name for name, array in weights.items() if not isinstance(array, np.ndarray)]
        if bad:
            raise ModelError(f"weight {bad[0]!r} is a {type(weights[bad[0]]).__name__}, not a numpy array")
        return dict(weights)
    path = Path(weights)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return dict(load_onnx(path).graph.initializers)
    if suffix != ".safetensors":
        raise ModelError(f"{path}: weights must be an .onnx or a .safetensors file")
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ModelError("reading .safetensors needs the safetensors package "
                         "(pip install 'rtxrt[refit]')") from None
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own SafetensorError, and others for bad dtypes
        raise ModelError(f"{path}: not a valid safetensors file ({exc})") from None


def _attach(recipe: RefitSource, weights: dict[str, np.ndarray], label: str, allow_unused: bool) -> Model:
    """The source model with ``weights`` in place, after checking names, dtypes and shapes."""
    model, graph = recipe.model, recipe.model.graph
    problems = []
    for name in recipe.initializer_order:
        expected = graph.stripped.get(name) or TensorType.of(graph.initializers[name])
        if name not in weights:
            if name in graph.stripped:
                problems.append(f"missing weight {name!r} ({expected})")
            continue
        array = weights[name]
        try:
            got = TensorType.of(array)
        except TypeError:
            problems.append(f"weight {name!r} has an unsupported dtype {array.dtype}, expected {expected.dtype.short}")
            continue
        if got.dtype != expected.dtype:
            problems.append(f"weight {name!r} has dtype {got.dtype.short}, expected {expected.dtype.short}")
        elif got.shape != expected.shape:
            problems.append(f"weight {name!r} has shape {list(got.shape)}, expected {list(expected.shape)}")
    unused = [name for name in weights if name not in graph.stripped and name not in graph.initializers]
    if unused and allow_unused:
        warn(f"{label}: ignoring {len(unused)} weight(s) the model does not have: {_listing(unused)}", UserWarning)
    elif unused:
        problems += [f"unexpected weight {name!r} (the model has no initializer of that name)" for name in unused]
    if problems:
        raise ModelError(f"{label}: the weights do not fit: {_listing(problems, quote=False)}")
    graph.initializers = {n: weights[n] if n in weights else graph.initializers[n] for n in recipe.initializer_order}
    graph.stripped = {}
    try:  # the recipe passed the reader's checks; make sure it is a well-formed graph too
        check_model(model)
    except RtxrtError as exc:
        raise FormatError(f"{label}: the refit recipe is damaged ({exc})") from None
    return model


def _stored_options(stored: dict[str, Any], label: str, built_by: str) -> AotOptions:
    """The build's AotOptions, for a full build (weightless off); each must be what the
    current AotOptions expects, or the replay would not be the build's pipeline."""
    expected = AotOptions().to_dict()
    mismatched = sorted(stored.keys() ^ expected.keys())
    if mismatched:
        key = mismatched[0]
        raise FormatError(f"{label}: the refit recipe's AOT options {'lack' if key in expected else 'have an unknown'} "
                          f"option {key!r} (built by rtxrt {built_by}, this is rtxrt {__version__}); "
                          "rebuild it with `rtxrt aot`")
    for key, default in expected.items():
        value = stored[key]
        if type(value) is not type(default) or (isinstance(value, list) and not all(type(v) is str for v in value)):
            raise FormatError(f"{label}: the refit recipe's AOT option {key!r} is invalid: {value!r:.80}")
    try:
        options = AotOptions(**{**stored, "keep_fp32": tuple(stored["keep_fp32"])})
    except ValueError as exc:
        raise FormatError(f"{label}: the refit recipe's AOT options are invalid ({exc})") from None
    return replace(options, weightless=False)


def _first_difference(stored: Graph, rebuilt: Graph) -> str:
    for i, (a, b) in enumerate(zip(stored.nodes, rebuilt.nodes)):
        if _node_summary(a) != _node_summary(b):
            return f"node {i} ({a.label}) differs"
    if len(stored.nodes) != len(rebuilt.nodes):
        return f"{len(stored.nodes)} nodes in the file, {len(rebuilt.nodes)} after refit"
    return "same nodes, but attributes, types or initializers differ"


def _node_summary(node: Node) -> tuple:
    """What tells two nodes apart in a message; tensor and graph attributes are left out."""
    plain = {k: v for k, v in node.attrs.items() if isinstance(v, (int, float, str))
             or (isinstance(v, list) and all(isinstance(i, (int, float, str)) for i in v))}
    return node.op_type, node.domain, node.inputs, node.outputs, plain


def _likely_cause(built_by: str) -> str:
    if built_by != __version__:
        return f"the file was built by rtxrt {built_by}, this is rtxrt {__version__}"
    return "some rewrites depend on weight values, e.g. equal tensors are merged, or the recipe is damaged"


def _listing(items: list[str], quote: bool = True) -> str:
    shown = [repr(i) if quote else i for i in items[:MAX_LISTED]]
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return "; ".join(shown) + more
