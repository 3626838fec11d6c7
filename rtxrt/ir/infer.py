"""Type inference over a whole graph, driven by the op registry."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from .dtypes import DType
from .graph import MAX_DIM, Dim, Graph, Model, Node, TensorType
from .ops import InferenceContext, get_schema


def infer_types(model: Model, hints: Mapping[str, TensorType] | None = None, memo: dict | None = None,
                changed: set[str] | None = None) -> Model:
    """Fill ``types`` for every value of every graph in place; return the model.

    Types already present (declared by the model) are merged with the inferred ones: a
    known dim wins over a symbol, a symbol over unknown; a conflict is a GraphError.
    ``hints`` (another tool's guesses, e.g. ONNX's inference) only fill what the rules
    leave unknown and are ignored where they disagree. ``memo``: kept by a caller that infers
    the same graph again with a few more constants known; a node whose input types and
    constants are those of a pass before is not inferred again. ``changed``: infer again after
    only these values changed (constants lent since the last pass): a node of the main graph
    none of whose inputs changed, or got a new type since, keeps its types (the set grows by
    the values whose types this pass changed).
    """
    _infer_graph(model.graph, model.opset, outer={}, hints=hints or {}, memo=memo, changed=changed)
    return model


def _infer_graph(graph: Graph, opset: int, outer: dict[str, TensorType], hints: Mapping[str, TensorType],
                 memo: dict | None = None, changed: set[str] | None = None) -> None:
    scope = dict(outer)
    scope.update(graph.types)
    for name, array in graph.initializers.items():
        scope[name] = TensorType.of(array)
    constants: dict[str, np.ndarray] = dict(graph.initializers)
    for node in graph.nodes:
        if changed is not None and not any(n in changed for n in node.inputs if n) \
                and not any(True for _ in node.subgraphs()):
            _propagate_constant(node, scope, constants)  # (its types are the last pass's)
            continue
        schema = get_schema(node.op_type, node.domain)
        if schema is None:
            raise UnsupportedOpError([(node.domain, node.op_type, node.name)])
        input_types = [scope.get(n) if n else None for n in node.inputs]
        values = [constants.get(n) if n else None for n in node.inputs]
        key = None
        if memo is not None and schema.subgraph_inputs is None and not any(True for _ in node.subgraphs()):
            key = (id(node), tuple(input_types), tuple(id(v) if v is not None else None for v in values))
        inferred = memo.get(key) if key is not None else None
        if inferred is None:
            schema.check_node(node, opset)  # the rules index inputs and outputs and read attributes
            ctx = InferenceContext(node, opset, input_types, values)
            if schema.subgraph_inputs is not None:
                _type_subgraph_inputs(node, schema.subgraph_inputs(ctx))
            _infer_subgraphs(node, opset, scope, hints)
            try:
                inferred = schema.infer(ctx)
            except GraphError:
                raise
            except Exception as exc:  # a rule tripping over odd input is still the node's fault
                raise GraphError(f"{node.label}: type inference failed: {exc}") from exc
            if key is not None:
                memo[key] = (inferred, values)  # (the values kept alive: their ids are in the key)
        else:
            inferred = inferred[0]
        for name, new in zip(node.outputs, inferred):
            if not name:
                continue
            _check_dims(node, name, new)
            new = _refine(new, hints.get(name))
            merged = merge_types(scope.get(name), new, f"{node.label} output {name!r}")
            if merged is not None:
                if changed is not None and merged != graph.types.get(name):
                    changed.add(name)
                scope[name] = merged
                graph.types[name] = merged
        _propagate_constant(node, scope, constants)
    for name in graph.inputs + graph.outputs:
        if name in scope:
            graph.types[name] = scope[name]


def _check_dims(node: Node, name: str, t: TensorType | None) -> None:
    """A rule that computes a negative or huge size was given inputs or attributes that make no sense."""
    if t is not None and t.shape is not None and any(isinstance(d, int) and not 0 <= d <= MAX_DIM for d in t.shape):
        raise GraphError(f"{node.label}: output {name!r} would be {t}")


def _type_subgraph_inputs(node: Node, given: dict[str, list[TensorType | None]]) -> None:
    """Give subgraph inputs the types the node passes them; a type the subgraph declares for
    one must agree with that."""
    for key, types in given.items():
        graph = node.attrs.get(key)
        if isinstance(graph, Graph):
            for name, t in zip(graph.inputs, types):
                merged = merge_types(graph.types.get(name), t, f"{node.label} {key} input {name!r}")
                if merged is not None:
                    graph.types[name] = merged


def _infer_subgraphs(node: Node, opset: int, scope: dict[str, TensorType], hints: Mapping[str, TensorType]) -> None:
    if node.op_type != "If" or node.domain:
        for sub in node.subgraphs():
            _infer_graph(sub, opset, scope, hints)
        return
    # Only one branch of an If runs: a branch whose types do not work out for these inputs
    # (one that handles another rank, say) stays untyped unless both fail.
    errors = []
    for sub in node.subgraphs():
        try:
            _infer_graph(sub, opset, scope, hints)
        except GraphError as exc:
            errors.append(exc)
    if len(errors) == 2:
        raise errors[0]


def _refine(ours: TensorType | None, hint: TensorType | None) -> TensorType | None:
    """Fill the unknowns of ``ours`` from ``hint`` where the two are compatible."""
    if ours is None or hint is None:
        return ours or hint
    if hint.dtype != ours.dtype or hint.shape is None:
        return ours
    if ours.shape is None:
        return TensorType(ours.dtype, hint.shape)
    if len(ours.shape) != len(hint.shape):
        return ours
    return TensorType(ours.dtype, tuple(h if o is None else o for o, h in zip(ours.shape, hint.shape)))


def merge_types(old: TensorType | None, new: TensorType | None, what: str) -> TensorType | None:
    if old is None or new is None:
        return old or new
    if old == new:  # (inferring again, most types are as they were)
        return old
    if old.dtype != new.dtype:
        raise GraphError(f"{what}: declared as {old} but computes {new}")
    if old.shape is None or new.shape is None:
        return TensorType(old.dtype, old.shape if new.shape is None else new.shape)
    if len(old.shape) != len(new.shape):
        raise GraphError(f"{what}: declared as {old} but computes {new}")
    return TensorType(old.dtype, tuple(_merge_dim(a, b, what, old, new) for a, b in zip(old.shape, new.shape)))


def _merge_dim(a: Dim, b: Dim, what: str, old: TensorType, new: TensorType) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        if a != b:
            raise GraphError(f"{what}: declared as {old} but computes {new}")
        return a
    if isinstance(a, int) or isinstance(b, int):
        return a if isinstance(a, int) else b
    return a if a is not None else b


def _propagate_constant(node: Node, scope: dict[str, TensorType], constants: dict[str, np.ndarray]) -> None:
    """Record values that are known before run time and that later rules need (Shape of a
    static tensor feeding a Reshape, say)."""
    if node.op_type == "Shape" and node.domain == "" and node.outputs[0]:
        t = scope.get(node.inputs[0])
        if t is not None and t.is_static and not node.attrs:
            constants[node.outputs[0]] = np.array(t.shape, dtype=np.int64)
    elif node.op_type == "Constant" and "value" in node.attrs and isinstance(node.attrs["value"], np.ndarray):
        constants[node.outputs[0]] = node.attrs["value"]
        scope.setdefault(node.outputs[0], TensorType.of(node.attrs["value"]))


__all__ = ["infer_types", "merge_types", "DType"]
