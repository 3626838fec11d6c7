"""Operator schemas, one family of operators per module; each registers its operators into
``registry.SCHEMAS`` on import (the table imports every module of this package when first read)."""
from __future__ import annotations

from .facts import Layout, OpFacts, Precision
from .registry import (
    VARIADIC, InferenceContext, OpSchema, all_schemas, elementwise_ops, facts_of, function_body_ops, get_schema,
    register, view_ops,
)

__all__ = ["VARIADIC", "InferenceContext", "Layout", "OpFacts", "OpSchema", "Precision", "all_schemas", "elementwise_ops", "facts_of", "function_body_ops",
           "get_schema", "register", "view_ops"]
