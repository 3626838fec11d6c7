"""Compiled kernels kept across builds: ``rtxrt aot --precompile`` looks each kernel up here
before compiling it, so building a model again (another output, other options, a model
sharing layers) compiles only the kernels it has not compiled before.

The kernels live in the runtime cache (its checksums, atomic writes, locks, and `rtxrt cache
ls|clear|prune`), one entry per arch, NVRTC version and rtxrt version, its blobs named as the
runtime names a model's kernels: by the hash of their source. The same source, arch and NVRTC
give the same cubin, so a build from the cache is byte-identical to one that compiles.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..compile.nvrtc import compile_many, nvrtc_version
from ..target import compute_capability
from .key import CacheKey
from .runtime_cache import RuntimeCache, kernel_blob_name

STORE_NAME = "precompiled kernels"  # the key's model and GPU: no model, no GPU


def store_key(arch: str) -> CacheKey:
    """The key of ``arch``'s kernels compiled by this NVRTC and rtxrt."""
    major, minor = nvrtc_version()
    return CacheKey(STORE_NAME, STORE_NAME, compute_capability(arch), "", f"{major}.{minor}")


def compile_cached(kernels: Mapping[str, str], arch: str, cache: RuntimeCache) -> tuple[dict[str, bytes], int]:
    """Cubins of ``kernels`` (name -> source) for ``arch``: those ``cache`` holds, the others
    compiled and added to it. Returns them and how many were compiled."""
    key = store_key(arch)
    entry = cache.get_or_build(key, lambda entry: None)  # an empty entry where none (or a damaged one) was
    cubins, todo = {}, {}
    for name, source in kernels.items():
        blob = entry.get(kernel_blob_name(name, arch))
        if blob is None:
            todo[name] = source
        else:
            cubins[name] = blob
    fresh = compile_many(todo.items(), arch)
    if fresh:
        with cache.lock(key):  # another build may have added kernels since: extend what is there now
            entry = cache.entry(key)
            for name, cubin in fresh.items():
                entry.put(kernel_blob_name(name, arch), cubin)
            entry.complete()
    return cubins | fresh, len(fresh)
