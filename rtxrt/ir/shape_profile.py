"""Shape profiles: the min/opt/max shapes an app promises for each input with symbolic dims
(as TensorRT's optimization profiles). Given at AOT (kept in the model's metadata) or at
Session creation; a session specializes to the opt shapes up front and refuses shapes
outside [min, max] with an error naming the input."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InputError
from .graph import Graph, Model

METADATA_KEY = "rtxrt.profile"  # Model.metadata entry holding an AOT-time profile as JSON


@dataclass(frozen=True)
class ShapeProfile:
    """``ranges[input] = (min, opt, max)`` shapes, each of the input's rank."""

    ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    @property
    def opt_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: opt for name, (_, opt, _) in self.ranges.items()}

    def to_json(self) -> str:
        return json.dumps({n: [list(s) for s in r] for n, r in sorted(self.ranges.items())}, separators=(",", ":"))

    def check(self, shapes: Mapping[str, Sequence[int]]) -> None:
        for name, (low, _, high) in self.ranges.items():
            shape = tuple(shapes[name])
            if any(not lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
                raise InputError(f"input {name!r}: shape {list(shape)} is outside the session's profile "
                                 f"{list(low)}..{list(high)}")


def make_profile(graph: Graph, profile: Mapping[str, Sequence[Sequence[int]]]) -> ShapeProfile:
    """Validate ``{input: (min, opt, max)}`` against the graph's inputs: every symbolic input
    must be given, ranks must match, static dims must equal the model's, min <= opt <= max."""
    inputs = {n: graph.types.get(n) for n in graph.inputs if n not in graph.initializers}
    unknown = sorted(set(profile) - set(inputs))
    if unknown:
        raise InputError(f"profile names unknown input(s) {unknown}; the model's inputs are {list(inputs)}")
    ranges = {}
    for name, t in inputs.items():
        dynamic = t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape)
        if name not in profile:
            if dynamic:
                dims = "of unknown rank" if t is None or t.shape is None else t.shape
                raise InputError(f"profile: input {name!r} has symbolic dims {dims}; give its min, opt and max shapes")
            continue
        shapes = [tuple(int(d) for d in s) for s in profile[name]]
        if len(shapes) != 3:
            raise InputError(f"profile: input {name!r} needs three shapes (min, opt, max), got {len(shapes)}")
        for shape in shapes:
            if t is not None and t.shape is not None and (len(shape) != len(t.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(t.shape, shape))):
                raise InputError(f"profile: input {name!r} shape {list(shape)} does not fit {t}")
        low, opt, high = shapes
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise InputError(f"profile: input {name!r} needs min <= opt <= max, got {low}, {opt}, {high}")
        ranges[name] = (low, opt, high)
    return ShapeProfile(ranges)


def stored_profile(model: Model) -> ShapeProfile | None:
    """The profile ``rtxrt aot --profile`` kept in the model, if any."""
    text = model.metadata.get(METADATA_KEY)
    if not text:
        return None
    try:
        ranges = json.loads(text)
    except ValueError:
        raise InputError(f"the model's {METADATA_KEY} metadata is not valid JSON") from None
    if not (isinstance(ranges, dict) and all(_is_shape_list(r) for r in ranges.values())):
        raise InputError(f"the model's {METADATA_KEY} metadata is not a profile: {text:.200}")
    return make_profile(model.graph, ranges)


def _is_shape_list(value) -> bool:
    """A JSON list of shapes, each a list of int dims (as ``ShapeProfile.to_json`` writes them)."""
    return isinstance(value, list) and all(
        isinstance(s, list) and all(type(d) is int for d in s) for s in value)
