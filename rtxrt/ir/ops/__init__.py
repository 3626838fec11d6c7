"""Operator schemas. Each module registers one family of operators on import."""
from __future__ import annotations

import importlib
import pkgutil

from .registry import VARIADIC, InferenceContext, OpSchema, all_schemas, get_schema, register

_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("registry", "infer_helpers"):
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["VARIADIC", "InferenceContext", "OpSchema", "all_schemas", "get_schema", "register"]
