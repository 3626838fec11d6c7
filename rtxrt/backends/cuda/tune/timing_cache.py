"""Tactic choices kept across models, as TensorRT keeps a timing cache.

A step's problem is all that timing its candidates sees (autotune.timing_key: the forms of its
inputs and outputs, each candidate's launches, cuBLAS calls, scratch and constant shapes).
Kernels are named by the hash of their source and shape-agnostic ones take their sizes as
arguments (ops/lowering.py), so the same GEMM in two models is the same problem, and on the
same GPU, driver and NVRTC the same candidate wins. The choices live in one runtime-cache entry
per GPU (its checksums, atomic writes and locks): the autotuner looks a problem up before
timing it, and a model tuned later times only the problems no model timed before.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ..cache.key import CacheKey, DeviceLike
from ..cache.runtime_cache import CacheError, RuntimeCache

CACHE_NAME = "timing cache"  # the key's model: none
BLOB = "choices.json"


def problem_digest(key: tuple) -> str:
    """A stable name for a timing key (its repr: forms, launches and sizes are plain values)."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


class TimingCache:
    """The choices made on one GPU (name, compute capability, driver, NVRTC), by problem digest."""

    def __init__(self, cache: RuntimeCache, device: DeviceLike):
        self.cache = cache
        self.key = CacheKey(CACHE_NAME, device.name, tuple(device.compute_capability), device.driver_version,
                            device.nvrtc_version)

    def read(self) -> dict[str, str]:
        """Problem digest -> the label of the candidate that won; empty where nothing was kept
        or what was kept cannot be read (then tuning times everything, as without a cache)."""
        try:
            kept = self.cache.entry(self.key).get_json(BLOB)
        except (CacheError, ValueError):
            return {}
        return {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else {}

    def add(self, choices: Mapping[str, str]) -> None:
        """Keep ``choices`` beside what other processes kept meanwhile (not where the entry
        stays locked past the cache's timeout: a JIT never fails for its timing cache)."""
        if not choices:
            return
        try:
            with self.cache.lock(self.key):
                merged = self.read() | dict(choices)
                entry = self.cache.entry(self.key)
                entry.put_json(BLOB, merged)
                entry.complete()
        except CacheError:
            return
