"""Exceptions that rtxrt raises for bad input (each message names the thing at fault), and
how it warns."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class RtxrtError(Exception):
    """Base class of every error rtxrt raises on purpose."""


class ModelError(RtxrtError):
    """The input model is malformed or cannot be imported."""


class UnsupportedOpError(ModelError):
    """The model uses operators rtxrt does not implement.

    ``unsupported`` lists every offending (domain, op_type, node name) at once.
    """

    def __init__(self, unsupported: list[tuple[str, str, str]]):
        self.unsupported = unsupported
        lines = [
            f"{(domain + '::') if domain else ''}{op} (node {name!r})"
            for domain, op, name in unsupported
        ]
        ops = sorted({(d + "::" if d else "") + o for d, o, _ in unsupported})
        super().__init__(
            f"unsupported operator(s) {', '.join(ops)} used by {len(unsupported)} node(s): "
            + "; ".join(lines)
        )


class GraphError(RtxrtError):
    """The IR graph is ill-formed (found by the checker or by shape inference)."""


class FormatError(RtxrtError):
    """A .rtxir file is damaged, truncated, foreign or of an incompatible version."""


class InputError(RtxrtError):
    """Inputs given to a session do not match the model (name, dtype or shape)."""


class ExecutionError(RtxrtError):
    """A node failed while running; the message names the node."""


def warn(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Warn at the app's line: the first caller outside rtxrt (a warning that points into
    rtxrt's own source says nothing to the app's author)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
