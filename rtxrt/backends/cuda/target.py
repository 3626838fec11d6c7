"""The model as a GPU of a given compute capability runs it: the storage types its tensor
cores and the caller's precision override allow. Used by the session on the user's GPU and
by ``rtxrt aot --precompile`` for each arch it compiles for, so both plan the same kernels."""
from __future__ import annotations

from dataclasses import replace

from ...errors import warn
from ...ir.dtypes import DType
from ...ir.graph import Model


def runtime_model(model: Model, precision: str | None, compute_capability: tuple[int, int]) -> Model:
    """"fp32" drops every narrowed storage type; bfloat16 storage becomes float16 below CC 8.0
    (no bf16 tensor cores there), with a warning."""
    storage = model.graph.storage
    if precision == "fp32":
        narrowed = {k: replace(s, dtype=model.graph.types[k].dtype) for k, s in storage.items() if k in model.graph.types}
    elif compute_capability < (8, 0) and any(s.dtype == DType.BFLOAT16 for s in storage.values()):
        warn("rtxrt: this GPU has no bfloat16 tensor cores (CC < 8.0); running bf16 values in fp16")
        narrowed = {k: replace(s, dtype=DType.FLOAT16) if s.dtype == DType.BFLOAT16 else s for k, s in storage.items()}
    else:
        return model
    return replace(model, graph=replace(model.graph, storage=narrowed))


def compute_capability(arch: str) -> tuple[int, int]:
    """"sm_86" -> (8, 6); "sm_120" -> (12, 0); "sm_90a" -> (9, 0)."""
    digits = arch[3:].rstrip("af")
    return int(digits[:-1]), int(digits[-1])
