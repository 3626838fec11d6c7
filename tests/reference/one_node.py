"""One-node models for the reference tests: build one, run it through the reference executor
and check its outputs against their inferred types, or infer its output types alone.

The node is named ``n``; its inputs are ``in0``, ``in1``, … and its outputs ``out0``, ``out1``, ….
Each input is a value (anything ``np.asarray`` takes), a ``TensorType`` (a graph input of that,
possibly symbolic, type; for ``build`` and ``infer`` only) or None (an omitted optional input).
A value at an index in ``consts`` (indexes or a slice of them) is an initializer, known at
compile time; any other is a graph input of the value's type. Attributes are keyword arguments.
Test modules bind their opset (and their other defaults) with ``functools.partial``."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from rtxrt.ir.infer import infer_types

SHAPE_CHECKS = ("partial", "ranked", "exact")


def build(op: str, *inputs: Any, opset: int, outputs: int = 1, consts: Collection[int] | slice = (),
          **attrs: Any) -> Model:
    """The one-node model, with its types inferred (a GraphError if inference rejects it)."""
    const = _indexes(consts, len(inputs))
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    fed = {n: x for i, (n, x) in enumerate(zip(names, inputs)) if n and i not in const}
    assert not any(isinstance(x, TensorType) for i, x in enumerate(inputs) if i in const), "a constant needs a value"
    outs = [f"out{i}" for i in range(outputs)]
    graph = Graph(
        [Node(op, names, outs, attrs, name="n")],
        list(fed),
        outs,
        types={n: x if isinstance(x, TensorType) else TensorType.of(np.asarray(x)) for n, x in fed.items()},
        initializers={n: np.asarray(inputs[i]) for i, n in enumerate(names) if n and i in const},
    )
    return infer_types(Model(graph, {"": opset}))


def infer(op: str, *inputs: Any, opset: int, outputs: int = 1, consts: Collection[int] | slice = (),
          **attrs: Any) -> TensorType | list[TensorType]:
    """The inferred output type of the node, or the list of them when it has several outputs."""
    model = build(op, *inputs, opset=opset, outputs=outputs, consts=consts, **attrs)
    types = [out_type(model, i) for i in range(outputs)]
    return types[0] if outputs == 1 else types


def run(op: str, *inputs: Any, opset: int, outputs: int = 1, consts: Collection[int] | slice = (),
        shapes: str = "partial", **attrs: Any) -> np.ndarray | list[np.ndarray]:
    """The computed output, or the list of them when the node has several outputs; each is
    checked against its inferred type as ``execute`` does."""
    model = build(op, *inputs, opset=opset, outputs=outputs, consts=consts, **attrs)
    const = _indexes(consts, len(inputs))
    fed = [np.asarray(x) for i, x in enumerate(inputs) if x is not None and i not in const]
    values = execute(model, dict(zip(model.graph.inputs, fed)), shapes=shapes)
    return values[0] if outputs == 1 else values


def execute(model: Model, feeds: dict[str, Any], shapes: str = "partial") -> list[np.ndarray]:
    """Run any model with the reference executor and check every output against its inferred
    type: it must be an ndarray of the inferred dtype, and its shape must agree with the
    inferred shape. ``shapes`` says how much of that shape inference must know:

    - ``"partial"``: the rank may be unknown and dims symbolic; the known ones must agree;
    - ``"ranked"``: as ``"partial"``, and the rank must be known;
    - ``"exact"``: every dim must be known: the inferred type is the value's type."""
    assert shapes in SHAPE_CHECKS, f"shapes must be one of {SHAPE_CHECKS}, got {shapes!r}"
    results = ReferenceExecutor(model).run(feeds)
    values = [results[o] for o in model.graph.outputs]
    for name, value in zip(model.graph.outputs, values):
        inferred = model.graph.types[name]
        assert isinstance(value, np.ndarray), (name, type(value))
        if shapes == "exact":
            assert inferred == TensorType.of(value), (name, inferred, value.dtype, value.shape)
            continue
        assert inferred.dtype == DType.from_numpy(value.dtype), (name, inferred, value.dtype)
        assert shapes != "ranked" or inferred.shape is not None, (name, inferred)
        assert inferred.shape is None or len(inferred.shape) == value.ndim, (name, inferred, value.shape)
        known = [(d, v) for d, v in zip(inferred.shape or (), value.shape) if isinstance(d, int)]
        assert all(d == v for d, v in known), (name, inferred, value.shape)
    return values


def out_type(model: Model, index: int = 0) -> TensorType:
    """The inferred type of the model's output at ``index``."""
    return model.graph.types[model.graph.outputs[index]]


def _indexes(consts: Collection[int] | slice, count: int) -> Collection[int]:
    return range(count)[consts] if isinstance(consts, slice) else consts
