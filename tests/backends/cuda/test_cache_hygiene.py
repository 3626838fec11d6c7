"""Cache hygiene: removing one model's entries, capping the cache by LRU, the uninstall path."""
from __future__ import annotations

import argparse
import os
import time

import pytest

from rtxrt.cli import main
from rtxrt.cli.cache_cmd import parse_size
from rtxrt.backends.cuda.cache.runtime_cache import RuntimeCache
from rtxrt.backends.cuda.cache.key import CacheKey

A, B = "ab" * 32, "cd" * 32  # two models' IR hashes


def _key(ir_hash: str, gpu: str = "NVIDIA Test GPU", cc: tuple[int, int] = (8, 6), **runtime) -> CacheKey:
    return CacheKey(ir_hash, gpu, cc, "12.8", "12.9", {"precision": "fp16"}, runtime)


def _fill(cache: RuntimeCache, key: CacheKey, size: int = 4096) -> None:
    cache.get_or_build(key, lambda entry: entry.put("kernels/k.cubin", os.urandom(size)))


def _age(cache: RuntimeCache, key: CacheKey, seconds: float) -> None:
    stamp = cache.entry(key).path / "last_used"
    then = time.time() - seconds
    os.utime(stamp, (then, then))


def _models(cache: RuntimeCache) -> list[str]:
    return sorted(info.key.ir_hash[:2] + ":" + info.key.gpu_name for info in cache.entries())


@pytest.fixture
def rtxir(tmp_path):
    """A real .rtxir and its IR hash (what `cache clear --model` matches on)."""
    from rtxrt.aot.compile import build_rtxir
    from rtxrt.format import read_header
    from rtxrt.samples import default_model

    path = tmp_path / "model.rtxir"
    build_rtxir(default_model(), path)
    return path, read_header(path).ir_hash


# --- one model's entries -----------------------------------------------------------------------

def test_remove_model_removes_every_gpu_and_option_of_that_model_only(tmp_path):
    cache = RuntimeCache(tmp_path)
    for key in (_key(A), _key(A, "other GPU", (9, 0)), _key(A, strategy="lazy"), _key(B)):
        _fill(cache, key)
    removed = cache.remove_model(A)
    assert sorted(info.key.gpu_name for info in removed) == ["NVIDIA Test GPU", "NVIDIA Test GPU", "other GPU"]
    assert _models(cache) == ["cd:NVIDIA Test GPU"] and cache.is_cached(_key(B))
    assert cache.remove_model(A) == []


def test_cache_clear_model_reads_the_ir_hash_from_the_file(tmp_path, rtxir, capsys):
    path, ir_hash = rtxir
    cache = RuntimeCache(tmp_path / "cache")
    for key in (_key(ir_hash), _key(ir_hash, "other GPU", (12, 0)), _key(B)):
        _fill(cache, key)
    assert main(["cache", "clear", "--model", str(path), "--cache-dir", str(cache.root)]) == 0
    out = capsys.readouterr().out
    assert f"removed 2 entries of model {ir_hash[:12]}, freed" in out
    assert _models(cache) == ["cd:NVIDIA Test GPU"]


def test_an_entry_being_built_is_not_removed(tmp_path):
    cache = RuntimeCache(tmp_path)
    _fill(cache, _key(A))
    _fill(cache, _key(A, "other GPU"))
    with cache.lock(_key(A)):  # another build of this key is in progress
        removed = RuntimeCache(tmp_path).remove_model(A)
        assert [info.key.gpu_name for info in removed] == ["other GPU"]
        assert RuntimeCache(tmp_path).evict(0) == []
    assert cache.is_cached(_key(A))  # intact, and removable once the build is done
    assert len(RuntimeCache(tmp_path).remove_model(A)) == 1


def test_cache_clear_model_says_how_many_being_built_were_left(tmp_path, rtxir, capsys):
    path, ir_hash = rtxir
    cache = RuntimeCache(tmp_path / "cache")
    _fill(cache, _key(ir_hash))
    with cache.lock(_key(ir_hash)):
        assert main(["cache", "clear", "--model", str(path), "--cache-dir", str(cache.root)]) == 0
    assert "removed 0 entries" in (out := capsys.readouterr().out) and "1 entry being built was left" in out
    assert cache.is_cached(_key(ir_hash))


def test_cache_clear_model_with_a_bad_file_removes_nothing(tmp_path, rtxir, capsys):
    path, ir_hash = rtxir
    cache = RuntimeCache(tmp_path / "cache")
    _fill(cache, _key(ir_hash))
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    # Every file is read before anything is removed, so a typo in the second removes nothing.
    assert main(["cache", "clear", "--model", str(path), "--model", str(not_a_model),
                 "--cache-dir", str(cache.root)]) == 1
    assert "rtxrt cache: error:" in capsys.readouterr().err
    assert cache.is_cached(_key(ir_hash))


def test_uninstalling_an_app_with_its_own_cache_dir_empties_it(tmp_path, capsys):
    app_cache = tmp_path / "MyApp" / "rtxrt-cache"
    cache = RuntimeCache(app_cache)
    _fill(cache, _key(A))
    _fill(cache, _key(B))
    assert main(["cache", "clear", "--cache-dir", str(app_cache)]) == 0
    assert RuntimeCache(app_cache).entries() == [] and RuntimeCache(app_cache).size() == 0


# --- a size cap with LRU eviction ----------------------------------------------------------------

def test_cache_prune_keeps_the_most_recently_used_within_the_cap(tmp_path, capsys):
    cache = RuntimeCache(tmp_path)
    keys = {name: _key(A, name) for name in ("old", "middle", "new")}
    for age, (name, key) in zip((300, 200, 100), keys.items()):
        _fill(cache, key, size=100_000)
        _age(cache, key, age)
    one = max(info.size for info in cache.entries())
    cap = 2 * one + 512  # room for two entries
    assert main(["cache", "prune", "--max-size", str(cap), "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 entry least recently used" in out
    assert [info.key.gpu_name for info in cache.entries()] == ["new", "middle"]
    assert cache.size() <= cap

    assert main(["cache", "prune", "--max-size", "1KiB", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert cache.entries() == []


def test_cache_prune_under_the_cap_removes_nothing(tmp_path, capsys):
    cache = RuntimeCache(tmp_path)
    _fill(cache, _key(A))
    assert main(["cache", "prune", "--max-size", "2GiB", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 0 entries" in capsys.readouterr().out and cache.is_cached(_key(A))


@pytest.mark.parametrize("text, size", [
    ("2GiB", 2 * 1024**3), ("2gib", 2 * 1024**3), ("1.5G", 3 * 1024**3 // 2), ("500MB", 500_000_000),
    ("10 MiB", 10 * 1024**2), ("1K", 1024), ("1KB", 1000), ("4096", 4096), ("3B", 3), ("0", 0),
])
def test_sizes_are_parsed_with_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "2XB", "GiB", "1iB", "two gigs"])
def test_a_bad_size_is_a_command_line_error(text, tmp_path, capsys):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)
    with pytest.raises(SystemExit) as exc:
        main(["cache", "prune", "--max-size", text, "--cache-dir", str(tmp_path)])
    assert exc.value.code == 2 and "not a size" in capsys.readouterr().err
