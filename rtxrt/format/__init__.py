"""The portable IR file format (.rtxir); see FORMAT.md in this directory."""
from __future__ import annotations

from .layout import MAJOR as FORMAT_MAJOR
from .layout import MINOR as FORMAT_MINOR
from .reader import (
    CubinIndex,
    RefitRecipe,
    RtxirInfo,
    ir_hash,
    read_cubin_index,
    read_cubins,
    read_header,
    read_refit_recipe,
    read_rtxir,
)
from .writer import Cubins, RefitSource, graph_digest, to_bytes, write_rtxir

__all__ = [
    "FORMAT_MAJOR", "FORMAT_MINOR", "CubinIndex", "Cubins", "RefitRecipe", "RefitSource", "RtxirInfo",
    "graph_digest", "ir_hash", "read_cubin_index", "read_cubins", "read_header", "read_refit_recipe",
    "read_rtxir", "to_bytes", "write_rtxir",
]
