"""Running a model whose GPU plan needs some inputs' values (backends/parameter_inputs.py:
axes, scales, pads given as inputs): each run reads those inputs on the host (a few numbers)
and runs a session of the model with them as constants, one per value seen, made when first
met (its engines then come from the runtime cache like any others)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..backends.parameter_inputs import with_values
from ..errors import InputError
from ..ir.graph import Model
from .split_run import to_host

MAX_LIVE_VALUES = 16  # sessions (one per parameter value) kept; the least recently run goes first


class ParameterRun:
    """``parameters``: the inputs read on the host; ``session_for(model)``: a session for the
    model with their values as constants (the caller's options)."""

    def __init__(self, model: Model, parameters: Sequence[str], session_for: Callable[[Model], Any]):
        self.model, self.parameters, self.session_for = model, list(parameters), session_for
        self.sessions: OrderedDict[tuple, Any] = OrderedDict()
        self.last: Any = None
        self._retired_compiles = 0  # by the sessions dropped from ``sessions``

    @property
    def kernels_compiled(self) -> int:
        """Kernels compiled by every session made (at load and since, background builds too)."""
        return self._retired_compiles + sum(s.kernels_compiled_total for s in self.sessions.values())

    def wait(self) -> None:
        """Block until every session's background builds have finished."""
        for session in self.sessions.values():
            session.wait()

    def run(self, wanted: Sequence[str], feeds: Mapping[str, Any]) -> list[Any]:
        values = {n: self._checked(n, feeds) for n in self.parameters}
        key = tuple((n, v.dtype.str, v.shape, v.tobytes()) for n, v in values.items())
        if key in self.sessions:
            self.sessions.move_to_end(key)
        else:
            self.sessions[key] = self.session_for(with_values(self.model, values))
            while len(self.sessions) > MAX_LIVE_VALUES:
                self._retired_compiles += self.sessions.popitem(last=False)[1].kernels_compiled_total
        self.last = session = self.sessions[key]
        return session.run(list(wanted), {n: v for n, v in feeds.items() if n not in values})

    def _checked(self, name: str, feeds: Mapping[str, Any]) -> np.ndarray:
        """Parameter ``name``'s value on the host, as the model declares it (InputError else)."""
        if name not in feeds:
            raise InputError(f"missing input {name!r}")
        value = to_host(feeds[name])
        t = self.model.graph.types[name]
        if value.dtype != t.dtype.numpy or tuple(value.shape) != tuple(t.shape):
            raise InputError(f"input {name!r}: expected {t.dtype.short}{list(t.shape)}, got "
                             f"{value.dtype}{list(value.shape)}")
        return value
