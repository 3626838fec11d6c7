"""The AOT optimization pipeline: passes in order, each checked and timed."""
from __future__ import annotations

import importlib
import time
from typing import Callable

from ..ir.checker import check_model
from ..ir.graph import Model
from ..ir.infer import infer_types
from ..ir.rewrite import prune_types
from .options import AotOptions
from .pass_result import PassResult
from .passes.precision import check_keep_fp32
from .report import AotReport

Pass = Callable[[Model, AotOptions], PassResult]

# (module under rtxrt.aot.passes, function). Cleanup runs before fusion, to expose patterns,
# and after it, to fold the weight arithmetic fusion leaves behind.
_CLEANUP = [
    ("noop_removal", "remove_noops"),
    ("shape_folding", "fold_shape_subgraphs"),
    ("constant_folding", "fold_constants"),
    ("cse", "eliminate_common_subexpressions"),
    ("dead_code", "eliminate_dead_code"),
]
PIPELINE = _CLEANUP + [
    ("fold_batchnorm", "fold_batchnorm"),
    ("decompose", "decompose"),
    ("fuse_layernorm", "fuse_layernorm"),
    ("fuse_gelu", "fuse_gelu"),
    ("fuse_softmax", "fuse_softmax"),
    ("fuse_attention", "fuse_attention"),
    ("fuse_conv", "fuse_conv"),
    ("fuse_gemm", "fuse_gemm"),
    ("fuse_horizontal", "fuse_horizontal"),
    ("fuse_elementwise", "fuse_elementwise"),
] + _CLEANUP + [
    ("layout", "choose_layout"),
    ("precision", "annotate_precision"),
]


def load_pass(module: str, function: str) -> Pass:
    return getattr(importlib.import_module(f"{__package__}.passes.{module}"), function)


def optimize(model: Model, options: AotOptions) -> AotReport:
    """Run every pass in place; after each pass that changed something the graph is
    re-typed and re-checked, so a faulty rewrite is caught at the pass that made it."""
    check_keep_fp32(model.graph, options.keep_fp32)  # names refer to the model as imported
    report = AotReport(nodes_before=len(model.graph.nodes))
    for module, function in PIPELINE:
        run_pass = load_pass(module, function)
        start = time.perf_counter()
        result = run_pass(model, options)
        if result.changed:
            prune_types(model.graph)
            infer_types(model)
            check_model(model)
        report.record(function, time.perf_counter() - start, result)
    report.finish(model)
    return report
