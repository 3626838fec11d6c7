"""What the AOT pass tests share: running passes as the pipeline runs them, and reading and
comparing their results."""
from __future__ import annotations

import numpy as np
import onnx

from rtxrt.aot.options import AotOptions
from rtxrt.aot.pass_result import PassResult
from rtxrt.frontend.onnx_import import load_onnx
from rtxrt.ir.checker import check_model
from rtxrt.ir.graph import Model, Node
from rtxrt.ir.infer import infer_types
from rtxrt.ir.rewrite import prune_types


def recheck(model: Model) -> None:
    """What the pipeline does after a pass that changed the graph: prune, re-type, re-check."""
    prune_types(model.graph)
    infer_types(model)
    check_model(model)


def apply(run_pass, model: Model, **options) -> PassResult:
    """Run one pass on ``model`` in place, then re-type and re-check it if it changed."""
    result = run_pass(model, AotOptions(**options))
    if result.changed:
        recheck(model)
    return result


def run_passes(proto: onnx.ModelProto, *passes) -> tuple[Model, Model, PassResult]:
    """(original, rewritten, changes): ``passes`` run as the pipeline runs them."""
    original, model, total = load_onnx(proto), load_onnx(proto), PassResult()
    for run_pass in passes:
        total.changes.update(apply(run_pass, model).changes)
    return original, model, total


def ops(model: Model) -> list[str]:
    return [n.op_type for n in model.graph.nodes]


def only(model: Model, op_type: str) -> Node:
    found = [n for n in model.graph.nodes if n.op_type == op_type]
    assert len(found) == 1, ops(model)
    return found[0]


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5, name: str = "") -> None:
    """Equal up to ``rtol``, relatively and against the largest magnitude (at least 1)."""
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())), err_msg=name)
