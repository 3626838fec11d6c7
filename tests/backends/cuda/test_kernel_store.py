"""Kernels compiled by one precompiling build are not compiled again by the next
(cache/kernel_store.py): they come from the runtime cache, byte for byte."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.cache.kernel_store import compile_cached, store_key
from rtxrt.backends.cuda.cache.runtime_cache import CacheWarning, RuntimeCache
from rtxrt.backends.cuda.compile.nvrtc import compiled_count

KERNELS = {f"rtx_store_{i}": f'extern "C" __global__ void rtx_store_{i}(float* y) {{ y[threadIdx.x] = {i}.0f; }}'
           for i in range(3)}


def test_a_second_build_compiles_nothing_and_gets_the_same_cubins(tmp_path):
    first, compiled = compile_cached(KERNELS, "sm_86", RuntimeCache(tmp_path))
    assert compiled == 3 and set(first) == set(KERNELS)
    before = compiled_count()
    again, compiled = compile_cached(KERNELS, "sm_86", RuntimeCache(tmp_path))  # a new process's view
    assert compiled == 0 and compiled_count() == before and again == first


def test_only_new_kernels_or_other_archs_compile(tmp_path):
    cache = RuntimeCache(tmp_path)
    compile_cached(dict(list(KERNELS.items())[:2]), "sm_86", cache)
    assert compile_cached(KERNELS, "sm_86", cache)[1] == 1
    assert compile_cached(KERNELS, "sm_89", cache)[1] == 3
    assert {e.key for e in cache.entries()} == {store_key("sm_86"), store_key("sm_89")}


def test_a_damaged_store_is_rebuilt(tmp_path):
    cache = RuntimeCache(tmp_path)
    compile_cached(KERNELS, "sm_86", cache)
    for blob in (cache.entry(store_key("sm_86")).path / "blobs").iterdir():
        blob.write_bytes(b"garbage")
    with pytest.warns(CacheWarning, match="corrupt"):
        cubins, compiled = compile_cached(KERNELS, "sm_86", RuntimeCache(tmp_path))
    assert compiled == 3 and all(c.startswith(b"\x7fELF") for c in cubins.values())
    assert compile_cached(KERNELS, "sm_86", RuntimeCache(tmp_path))[1] == 0
