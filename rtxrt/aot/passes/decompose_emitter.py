"""The emitter of the decompose pass's rewrites (fresh names, shared constants, the ops whose
operands moved from attributes to inputs with the opset) and its shape-free reshapes: dims are
never baked into constants, so symbolic dims stay symbolic. Reshapes copy dims with 0 and
compute one with -1; where more dims vary than that allows, placeholder 1-dims (Unsqueeze
before, Squeeze after) keep the varying dims at their index."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Sequence

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Dim, Graph, Node, TensorType
from ...ir.ops.tensor import AXES_INPUT_SINCE
from ...ir.ops.reduce import axes_input_since
from ...ir.rewrite import NameGenerator, value_type

Shape = list[Dim]


class Emitter:
    """Makes the nodes of one rewrite (``nodes``, in order): fresh value and node names,
    constants, and the ops whose operands moved from attributes to inputs with the opset.
    Across rewrites it keeps ``squeezed``, the 3-D views Squeezes made of 4-D results (view ->
    result), ``unsqueezed``, the 4-D views of other 3-D values, and the Squeezes it made."""

    def __init__(self, graph: Graph, opset: int, outer: Mapping[str, TensorType] | None = None):
        self.graph, self.opset = graph, opset
        self.outer = outer or {}  # a body's view of the values of the graphs around it
        self.names = NameGenerator(graph)
        self.nodes: list[Node] = []
        self.prefix = ""
        self.squeezed: dict[str, str] = {}
        self.unsqueezed: dict[str, str] = {}
        self.squeezes: list[Node] = []
        self._shared: dict[tuple, str] = {}

    def type_of(self, name: str) -> TensorType | None:
        """The type of value ``name``, also where it comes from a graph around this body."""
        return value_type(self.graph, name) or self.outer.get(name)

    def start(self, node: Node) -> None:
        self.nodes, self.prefix = [], node.name or node.outputs[0]

    def constant(self, array: np.ndarray, base: str = "const", shared: bool = False) -> str:
        """A new initializer; ``shared``: one per value (axes, shapes, scalars of attributes:
        never values computed from weights, which refit replays with other weights)."""
        array = np.require(array, requirements="C")  # a scalar stays 0-D
        key = (array.dtype.str, array.shape, array.tobytes()) if shared else None
        if key in self._shared:
            return self._shared[key]
        name = self.names(f"{self.prefix}/{base}")
        self.graph.initializers[name] = array
        if key is not None:
            self._shared[key] = name
        return name

    def scalar(self, value: float, dtype: DType) -> str:
        return self.constant(np.array(value, dtype.numpy), "scalar", shared=True)

    def op(self, op_type: str, inputs: Sequence[str], attrs: dict | None = None, *,
           output: str | None = None, name: str | None = None) -> str:
        """Emit one node; its output is ``output`` or a fresh name. Returns the output."""
        out = output or self.names(f"{self.prefix}/{op_type}_out")
        node_name = name if name is not None else self.names(f"{self.prefix}/{op_type}")
        self.nodes.append(Node(op_type, list(inputs), [out], dict(attrs or {}), name=node_name))
        return out

    def _axes_op(self, op_type: str, x: str, axes: Sequence[int], since: int, attrs: dict | None = None,
                 output: str | None = None) -> str:
        attrs = dict(attrs or {})
        if self.opset >= since:
            axes_input = self.constant(np.array(axes, np.int64), "axes", shared=True)
            return self.op(op_type, [x, axes_input], attrs, output=output)
        return self.op(op_type, [x], {**attrs, "axes": list(axes)}, output=output)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self._axes_op("Unsqueeze", x, axes, AXES_INPUT_SINCE)

    def squeeze(self, x: str, axes: Sequence[int], output: str | None = None) -> str:
        out = self._axes_op("Squeeze", x, axes, AXES_INPUT_SINCE, output=output)
        self.squeezes.append(self.nodes[-1])
        return out

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        return self._axes_op(op_type, x, axes, axes_input_since(op_type), {"keepdims": keepdims})

    def reshape(self, x: str, spec: Sequence[int], output: str | None = None) -> str:
        return self.op("Reshape", [x, self.constant(np.array(spec, np.int64), "shape", shared=True)], output=output)


# --------------------------------------------------------------------------- shape-free reshapes


def _spec(out: Shape, sources: Sequence[int | None]) -> list[int] | None:
    """Reshape's shape input for ``out``, where ``sources[i]`` is the input index dim i copies
    (None: a new dim): a static dim as it is, a copy at its own index as 0, one other as -1."""
    spec = [d if isinstance(d, int) else 0 if src == i else -1 for i, (d, src) in enumerate(zip(out, sources))]
    return spec if spec.count(-1) <= 1 else None


def split_dims(e: Emitter, x: str, shape: Shape, splits: dict[int, list[Dim]]) -> tuple[str, Shape]:
    """Split dims of ``x``: ``splits[axis]`` lists the parts (at most one unknown, None)."""
    out: Shape = []
    sources: list[int | None] = []
    for i, d in enumerate(shape):
        parts = splits.get(i, [d])
        out += parts
        sources += [i] if i not in splits else [None] * len(parts)
    spec = _spec(out, sources)
    if spec is not None:
        return e.reshape(x, spec), out
    # One axis at a time, the last first: placeholder 1s after the axis move the later dims
    # to their final index, where 0 copies them.
    shape = list(shape)
    for axis in sorted(splits, reverse=True):
        parts = splits[axis]
        k = len(parts)
        if k > 1:
            x = e.unsqueeze(x, range(axis + 1, axis + k))
            shape = shape[: axis + 1] + [1] * (k - 1) + shape[axis + 1:]
        new = shape[:axis] + parts + shape[axis + k:]
        x = e.reshape(x, _spec(new, [*range(axis), *[None] * k, *range(axis + k, len(new))]))
        shape = new
    return x, out


def merge_dims(e: Emitter, x: str, shape: Shape, groups: list[list[int]], output: str) -> None:
    """Merge ``x``'s dims by ``groups`` (consecutive indices covering all) into ``output``."""
    out: Shape = []
    sources: list[int | None] = []
    for group in groups:
        dims = [shape[i] for i in group]
        out.append(dims[0] if len(group) == 1 else static_product(dims))
        sources.append(group[0] if len(group) == 1 else None)
    spec = _spec(out, sources)
    if spec is not None:
        e.reshape(x, spec, output)
        return
    # Merge in place, keeping the rank (the product at the group's first index, 1s after it)
    # so that 0 copies every other dim, one unknown product per Reshape; then squeeze the 1s.
    spec = [0] * len(shape)
    for group in reversed([g for g in groups if len(g) > 1]):
        product = static_product([shape[i] for i in group])
        if product is None and -1 in spec:
            x, spec = e.reshape(x, spec), [0] * len(shape)
        spec[group[0]] = -1 if product is None else product
        for i in group[1:]:
            spec[i] = 1
    x = e.reshape(x, spec)
    e.squeeze(x, [i for g in groups for i in g[1:]], output)


def static_product(dims: Sequence[Dim]) -> int | None:
    return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None
