"""The runtime cache: keys, round trips, atomicity, damage, memory fallback, races, LRU, CLI."""
from __future__ import annotations

import errno
import functools
import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import platformdirs
import pytest

from rtxrt.cli import main
from rtxrt.backends.cuda.cache import runtime_cache as cache_module
from rtxrt.backends.cuda.cache.runtime_cache import (
    ENV_VAR, PLAN_BLOB, TACTICS_BLOB, CacheEntry, CacheLockTimeout, CacheWarning, RuntimeCache,
    kernel_blob_name,
)
from rtxrt.backends.cuda.cache.key import CacheKey

KEY = CacheKey("ab" * 32, "NVIDIA Test GPU", (8, 6), "12.8", "12.9", {"precision": "fp16"}, {"strategy": "lazy"})
CUBIN = bytes(range(256)) * 40  # stands in for a compiled kernel
KERNEL = kernel_blob_name("k" * 16, KEY.arch)


def _key(**changes) -> CacheKey:
    fields = {**KEY.__dict__, **changes}
    fields.pop("digest", None)  # the cached property, not a field
    return CacheKey(**fields)


def _build(entry: CacheEntry, counter: list | None = None, size: int = 0) -> None:
    if counter is not None:
        counter.append(entry.key.digest)
    entry.put(KERNEL, CUBIN + b"\0" * size)
    entry.put_json(TACTICS_BLOB, {"conv_0": "tile_128x64"})
    entry.put_json(PLAN_BLOB, {"nodes": ["conv_0"], "peak_bytes": 4096})


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- the key ---------------------------------------------------------------------------------

def test_key_digest_is_stable_and_covers_every_field():
    pinned = CacheKey("ab" * 32, "NVIDIA Test GPU", (8, 6), "12.8", "12.9", {"precision": "fp16"}, {}, "0.1.0")
    # Pinned so that a change to the canonical form (which would orphan every user's cache) is deliberate.
    assert pinned.digest == "c401af71e910e5770b4ae99f1e9bcb7608558ad2038f9bc97a4d35d5c5c043e2"
    assert _key().digest == KEY.digest and len({KEY, _key()}) == 1
    assert _key(runtime_options={"strategy": "lazy", "precision": None}).digest == KEY.digest  # None == absent
    variants = [_key(ir_hash="cd" * 32), _key(gpu_name="other"), _key(compute_capability=(8, 9)),
                _key(driver_version="13.0"), _key(nvrtc_version="13.0"), _key(aot_options={}),
                _key(runtime_options={"precision": "bf16"}), _key(rtxrt_version="9.9")]
    assert len({v.digest for v in variants} | {KEY.digest}) == len(variants) + 1
    assert CacheKey.from_json(json.loads(json.dumps(KEY.to_json()))) == KEY
    with pytest.raises(TypeError, match="JSON"):
        _key(runtime_options={"stream": object()})


def test_key_for_model_reads_the_ir_hash_and_options_from_the_file(tmp_path):
    from rtxrt.aot.compile import build_rtxir
    from rtxrt.format import ir_hash, read_header
    from rtxrt.samples import default_model

    path = tmp_path / "m.rtxir"
    build_rtxir(default_model(), path)
    gpu = SimpleNamespace(name="G", compute_capability=(9, 0), driver_version="12.8", nvrtc_version="13.0")
    key = CacheKey.for_model(path, gpu, {"precision": "fp16"})
    assert key.ir_hash == ir_hash(path) and key.aot_options == read_header(path).options and key.arch == "sm_90"
    assert key == CacheKey.for_model(path.read_bytes(), gpu, {"precision": "fp16"})


# --- round trip and atomicity ----------------------------------------------------------------

def test_round_trip_builds_once_and_a_new_process_reads_it(tmp_path):
    calls: list = []
    assert not RuntimeCache(tmp_path).is_cached(KEY)
    entry = RuntimeCache(tmp_path).get_or_build(KEY, functools.partial(_build, counter=calls))
    assert entry.get(KERNEL) == CUBIN and not entry.in_memory

    again = RuntimeCache(tmp_path)  # as a later launch would
    assert again.is_cached(KEY)
    entry = again.get_or_build(KEY, functools.partial(_build, counter=calls))
    assert len(calls) == 1
    assert entry.get(KERNEL) == CUBIN
    assert entry.get_json(TACTICS_BLOB) == {"conv_0": "tile_128x64"}
    assert entry.get_json(PLAN_BLOB)["peak_bytes"] == 4096
    assert entry.get("absent") is None
    assert sorted(entry.names()) == sorted([KERNEL, TACTICS_BLOB, PLAN_BLOB])
    # The readable key sits beside the blobs.
    assert json.loads((entry.path / "key.json").read_text())["gpu_name"] == "NVIDIA Test GPU"


def test_a_complete_entry_can_be_extended_under_the_lock(tmp_path):
    cache = RuntimeCache(tmp_path)
    cache.get_or_build(KEY, _build)
    with cache.lock(KEY):  # e.g. a lazily specialized shape compiled in the background
        entry = cache.entry(KEY)
        entry.put("kernels/extra.sm_86.cubin", b"extra")
        entry.complete()
    entry = RuntimeCache(tmp_path).entry(KEY)
    assert entry.is_complete() and entry.get("kernels/extra.sm_86.cubin") == b"extra" and entry.get(KERNEL) == CUBIN


def test_a_failing_build_stores_nothing_and_releases_the_lock(tmp_path):
    cache = RuntimeCache(tmp_path)

    def broken(entry):
        entry.put(KERNEL, CUBIN)
        raise RuntimeError("nvrtc failed")

    with pytest.raises(RuntimeError, match="nvrtc"):
        cache.get_or_build(KEY, broken)
    assert not cache.entries()
    assert cache.get_or_build(KEY, _build, timeout=1).get(KERNEL) == CUBIN


def test_a_crash_while_writing_leaves_no_partial_file_and_is_rebuilt(tmp_path, monkeypatch):
    real_replace = os.replace

    def power_cut(src, dst):
        if Path(dst).name == "manifest.json":  # blobs are written, the manifest is not
            raise RuntimeError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        RuntimeCache(tmp_path).get_or_build(KEY, _build)
    monkeypatch.setattr(os, "replace", real_replace)

    files = _files(tmp_path)
    assert not [f for f in files if f.endswith(".tmp")], files  # no temp file survives
    assert not any(f.endswith("manifest.json") for f in files)
    cache = RuntimeCache(tmp_path)
    assert not cache.is_cached(KEY)
    with pytest.warns(CacheWarning, match="manifest is missing.*rebuilding"):
        entry = cache.get_or_build(KEY, _build)
    assert entry.get(KERNEL) == CUBIN and cache.is_cached(KEY)


# --- damage ----------------------------------------------------------------------------------

def _flip_a_bit(entry: CacheEntry) -> None:
    blob = next(p for p in (entry.path / "blobs").iterdir() if p.stat().st_size == len(CUBIN))
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x04
    blob.write_bytes(bytes(data))


def _truncate(entry: CacheEntry) -> None:
    blob = next(p for p in (entry.path / "blobs").iterdir() if p.stat().st_size == len(CUBIN))
    blob.write_bytes(blob.read_bytes()[:1000])


def _delete_manifest(entry: CacheEntry) -> None:
    (entry.path / "manifest.json").unlink()


def _future_manifest(entry: CacheEntry) -> None:
    manifest = json.loads((entry.path / "manifest.json").read_text())
    (entry.path / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))


def _garbage_manifest(entry: CacheEntry) -> None:
    (entry.path / "manifest.json").write_bytes(b'{"version": 1, "bl')


@pytest.mark.parametrize("damage, message", [
    (_flip_a_bit, "fails its sha256 checksum"),
    (_truncate, "truncated"),
    (_delete_manifest, "manifest is missing"),
    (_future_manifest, "manifest version 99 is unknown"),
    (_garbage_manifest, "not valid JSON"),
])
def test_a_damaged_entry_is_detected_and_rebuilt_with_a_warning(tmp_path, damage, message):
    calls: list = []
    damage(RuntimeCache(tmp_path).get_or_build(KEY, functools.partial(_build, counter=calls)))

    cache = RuntimeCache(tmp_path)
    assert not cache.is_cached(KEY)  # the next load will JIT
    with pytest.warns(CacheWarning, match=f"{message}.*removing it and rebuilding") as caught:
        entry = cache.get_or_build(KEY, functools.partial(_build, counter=calls))
    assert caught[0].filename == __file__  # the warning points at the app's line, not into rtxrt
    assert len(calls) == 2
    assert entry.get(KERNEL) == CUBIN and RuntimeCache(tmp_path).is_cached(KEY)
    assert len(cache.entries()) == 1  # the damaged one is gone, not left beside


# --- a disk that cannot be written -----------------------------------------------------------

@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_an_unwritable_disk_degrades_to_memory_with_one_warning(tmp_path, monkeypatch, code):
    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(cache_module, "_atomic_write", refuse)
    cache = RuntimeCache(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entry = cache.get_or_build(KEY, _build)
        other = cache.get_or_build(_key(gpu_name="second GPU"), _build)  # no second warning
    assert [w.category for w in caught] == [CacheWarning]
    assert os.strerror(code) in str(caught[0].message) and "in memory" in str(caught[0].message)
    assert entry.in_memory and other.in_memory and cache.memory_only
    assert entry.get(KERNEL) == CUBIN and cache.is_cached(KEY)
    assert cache.get_or_build(KEY, lambda e: pytest.fail("rebuilt")).get(KERNEL) == CUBIN
    assert not RuntimeCache(tmp_path).is_cached(KEY)  # the next launch compiles again
    assert cache.entries() == []  # no half-written entry left to warn about next time


def test_a_lock_file_that_cannot_be_created_degrades_to_memory(tmp_path, monkeypatch):
    import filelock

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.lock_file))

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    cache = RuntimeCache(tmp_path)
    with pytest.warns(CacheWarning, match="Permission denied while creating lock file"):
        entry = cache.get_or_build(KEY, _build)
    assert entry.in_memory and entry.get(KERNEL) == CUBIN


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes through chmod 0o500; the monkeypatched tests above cover it")
def test_a_read_only_directory_degrades_to_memory_and_still_serves_what_it_holds(tmp_path):
    RuntimeCache(tmp_path).get_or_build(KEY, _build)  # prewarmed, then made read-only
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir():
            path.chmod(0o500)
    try:
        cache = RuntimeCache(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert cache.get_or_build(KEY, lambda e: pytest.fail("rebuilt")).get(KERNEL) == CUBIN
        with pytest.warns(CacheWarning, match="in memory"):
            entry = cache.get_or_build(_key(gpu_name="new GPU"), _build)
        assert entry.in_memory and entry.get(KERNEL) == CUBIN
    finally:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            if path.is_dir():
                path.chmod(0o700)


# --- locking and concurrency ------------------------------------------------------------------

def test_a_held_lock_times_out_with_a_clear_error(tmp_path):
    holder = RuntimeCache(tmp_path)
    with holder.lock(KEY), pytest.raises(CacheLockTimeout, match=r"timed out after 0.2 s .* building model ababab"):
        RuntimeCache(tmp_path).get_or_build(KEY, _build, timeout=0.2)
    assert RuntimeCache(tmp_path).get_or_build(KEY, _build, timeout=1).get(KERNEL) == CUBIN


def _slow_build(count_file: str, entry: CacheEntry) -> None:
    with open(count_file, "a") as f:  # O_APPEND: concurrent appends would each be visible
        f.write(f"{os.getpid()}\n")
    time.sleep(0.3)  # keep the others waiting on the lock, not arriving after the fact
    _build(entry)


def _race(cache_dir: str, count_file: str, barrier, results) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        barrier.wait()
        entry = RuntimeCache(cache_dir).get_or_build(KEY, functools.partial(_slow_build, count_file))
        results.put((entry.get(KERNEL), entry.get(PLAN_BLOB), entry.in_memory, [str(w.message) for w in caught]))


def test_eight_processes_on_an_empty_cache_build_once_and_all_agree(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    count_file = tmp_path / "builds.txt"
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "cache"), str(count_file), barrier, results))
             for _ in range(8)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    assert len(count_file.read_text().split()) == 1  # exactly one process compiled
    assert all(r == (CUBIN, got[0][1], False, []) for r in got)  # same data, on disk, no warnings
    cache = RuntimeCache(tmp_path / "cache")
    assert cache.entry(KEY).problem() is None and len(cache.entries()) == 1
    assert not [f for f in _files(tmp_path / "cache") if f.endswith(".tmp")]


def test_an_entry_cleared_after_it_was_verified_reads_as_a_miss(tmp_path):
    entry = RuntimeCache(tmp_path).get_or_build(KEY, _build)
    RuntimeCache(tmp_path).clear()  # `rtxrt cache clear` in another process
    assert entry.get(KERNEL) is None and entry.get_json(TACTICS_BLOB) is None
    assert RuntimeCache(tmp_path).get_or_build(KEY, _build).get(KERNEL) == CUBIN  # rebuilt, not an error


def _clear_repeatedly(root: str, seconds: float) -> None:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        RuntimeCache(root).clear()


def test_reading_while_another_process_clears_never_fails(tmp_path):
    """What a Session does on load (get_or_build, then read the tactics and every kernel)
    against `rtxrt cache clear` looping in another process: each read is a hit or a miss that
    rebuilds, never an error, and what is read is always whole."""
    root = str(tmp_path / "cache")
    clearer = multiprocessing.get_context("spawn").Process(target=_clear_repeatedly, args=(root, 4.0))
    clearer.start()
    reads = misses = 0
    try:
        while clearer.is_alive() or reads < 50:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a vanished entry is no damage to warn about
                entry = RuntimeCache(root).get_or_build(KEY, _build)
                kernel, tactics = entry.get(KERNEL), entry.get_json(TACTICS_BLOB)
            assert kernel in (CUBIN, None) and tactics in ({"conv_0": "tile_128x64"}, None)
            reads, misses = reads + 1, misses + (kernel is None)
    finally:
        clearer.join(timeout=30)
    assert clearer.exitcode == 0 and reads >= 50


# --- size management ---------------------------------------------------------------------------

def test_lru_eviction_removes_the_least_recently_used_first(tmp_path):
    cache = RuntimeCache(tmp_path)
    keys = {name: _key(gpu_name=name) for name in ("a", "b", "c")}
    for name, key in keys.items():
        cache.get_or_build(key, functools.partial(_build, size=10_000))
    now = time.time()
    for age, name in ((300, "a"), (200, "b"), (100, "c")):  # a is oldest
        stamp = cache.entry(keys[name]).path / "last_used"
        os.utime(stamp, (now - age, now - age))
    RuntimeCache(tmp_path).get_or_build(keys["a"], lambda e: pytest.fail("rebuilt"))  # a read: a is newest now

    assert [info.key.gpu_name for info in cache.entries()] == ["a", "c", "b"]  # most recent first
    one = cache.entries()[0].size
    assert cache.evict(cache.size() + 1) == []
    removed = cache.evict(2 * one + 100)
    assert [info.key.gpu_name for info in removed] == ["b"]
    removed = cache.evict(0)
    assert [info.key.gpu_name for info in removed] == ["c", "a"]
    assert cache.entries() == [] and cache.size() == 0


def test_clear_returns_the_bytes_freed(tmp_path):
    cache = RuntimeCache(tmp_path)
    cache.get_or_build(KEY, _build)
    cache.get_or_build(_key(gpu_name="b"), _build)
    size = cache.size()
    assert size > 2 * len(CUBIN) and cache.clear() == size
    assert cache.size() == 0 and not cache.is_cached(KEY)


# --- where the cache lives --------------------------------------------------------------------

def test_the_argument_beats_the_environment_which_beats_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert RuntimeCache().root == Path(platformdirs.user_cache_dir("rtxrt", appauthor=False))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert RuntimeCache().root == tmp_path / "env"
    assert RuntimeCache(tmp_path / "arg").root == tmp_path / "arg"
    RuntimeCache().get_or_build(KEY, _build)
    assert (tmp_path / "env" / "entries" / KEY.digest / "manifest.json").is_file()


def test_listing_a_missing_cache_creates_nothing(tmp_path):
    cache = RuntimeCache(tmp_path / "nowhere")
    assert cache.entries() == [] and cache.size() == 0 and not cache.is_cached(KEY)
    assert not (tmp_path / "nowhere").exists()


# --- the command line -------------------------------------------------------------------------

def test_cache_ls_size_and_clear(tmp_path, capsys):
    cache_dir = str(tmp_path)
    assert main(["cache", "ls", "--cache-dir", cache_dir]) == 0
    assert "empty" in capsys.readouterr().out

    RuntimeCache(tmp_path).get_or_build(KEY, _build)
    RuntimeCache(tmp_path).get_or_build(_key(ir_hash="cd" * 32, compute_capability=(9, 0)), _build)
    size = RuntimeCache(tmp_path).size()

    assert main(["cache", "ls", "--cache-dir", cache_dir]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out
    header, _rule, *rows = out.splitlines()[1:]
    assert header.split() == ["model", "gpu", "arch", "rtxrt", "size", "last", "used", "state"]
    assert any(r.startswith("abababababab  NVIDIA Test GPU  sm_86") for r in rows)
    assert any(r.startswith("cdcdcdcdcdcd  NVIDIA Test GPU  sm_90") for r in rows)
    assert all(r.rstrip().endswith("ok") for r in rows)

    assert main(["cache", "size", "--cache-dir", cache_dir]) == 0
    assert f"({size} bytes) in 2 entries" in capsys.readouterr().out

    assert main(["cache", "clear", "--cache-dir", cache_dir]) == 0
    assert f"freed {size / 1024:.1f} KiB ({size} bytes)" in capsys.readouterr().out
    assert RuntimeCache(tmp_path).entries() == []


def test_cache_commands_honour_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    RuntimeCache().get_or_build(KEY, _build)
    assert main(["cache", "ls"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "abababababab" in out


def test_cache_command_errors_use_the_cli_exit_codes(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["cache", "ls", "--cache-dir", str(not_a_dir)]) == 1  # bad input
    assert "Not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cache", "prune"])
    assert exc.value.code == 2  # bad command line
