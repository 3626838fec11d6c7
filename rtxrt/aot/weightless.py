"""Weightless .rtxir files: the optimized graph without its weights, plus the replay recipe
(the imported model before the passes, without its large weights) that refit needs.
See rtxrt/aot/refit.py for why refit replays the pipeline."""
from __future__ import annotations

import copy

from ..format import RefitSource
from ..ir.graph import Model, TensorType

# Source initializers up to this size (shape tensors, scalars, small biases) stay in a
# weightless file, so that refit needs only the real weights; given weights still replace them.
KEEP_BYTES = 1024


def source_recipe(model: Model) -> RefitSource:
    """A copy of the imported model, its top-level initializers over KEEP_BYTES left out.
    Take it before the passes edit the model in place."""
    graph = model.graph
    big = {n: a for n, a in graph.initializers.items() if a.dtype != object and a.nbytes > KEEP_BYTES}
    source = copy.deepcopy(model, {id(a): a for a in big.values()})  # the big arrays are not copied
    source.graph.initializers = {n: a for n, a in source.graph.initializers.items() if n not in big}
    source.graph.stripped = {n: TensorType.of(a) for n, a in big.items()}
    return RefitSource(source, list(graph.initializers))


def strip_weights(model: Model) -> Model:
    """A copy of ``model`` whose graphs, subgraphs included, list every initializer in
    ``Graph.stripped`` instead of holding it. The arrays are not copied."""
    memo = {id(a): a for g in model.graph.graphs() for a in g.initializers.values()}
    stripped = copy.deepcopy(model, memo)
    for graph in stripped.graph.graphs():
        graph.stripped = {**graph.stripped, **{n: TensorType.of(a) for n, a in graph.initializers.items()}}
        graph.initializers = {}
    return stripped
