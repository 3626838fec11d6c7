"""Operator schemas. Each module registers one family of operators on import."""
from __future__ import annotations

from ...submodules import import_submodules
from .registry import VARIADIC, InferenceContext, OpSchema, all_schemas, get_schema, register


def load_all() -> None:
    import_submodules(__name__)


__all__ = ["VARIADIC", "InferenceContext", "OpSchema", "all_schemas", "get_schema", "register"]
