"""The runtime cache: what the JIT built for one model on one GPU, kept in the user profile.

Layout under the cache directory::

    entries/<key digest>/key.json        the readable key (written first, so `ls` names even a
                                         half-written entry)
    entries/<key digest>/blobs/<sha256>  blob contents, named by their checksum
    entries/<key digest>/manifest.json   written last: version, key, {name: sha256, size}
    entries/<key digest>/last_used       its mtime is the LRU clock
    locks/<key digest>.lock              cross-process build lock (filelock); kept on purpose:
                                         deleting a lock file others wait on breaks the lock

An entry is valid only when its manifest parses, has this version and key, and every blob it
lists has that size and checksum. Every file is written atomically (temp file in the same
directory, fsync, os.replace), so a crash leaves either nothing or a manifest-less entry, which
is rebuilt. Puts are buffered until ``complete()``; a build that raises writes nothing.

A cache that cannot be written (read-only, full, no permission) keeps new entries in memory for
this process, with one warning, and still reads what is on disk (e.g. a prewarmed cache).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....errors import RtxrtError, warn
from .key import CacheKey, canonical_json

ENV_VAR = "RTXRT_CACHE_DIR"
MANIFEST_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 600.0  # seconds; a large model's cold JIT on a slow GPU stays well inside it
PLAN_BLOB = "plan.json"
TACTICS_BLOB = "tactics.json"

_DIGEST = re.compile(r"[0-9a-f]{64}")
_ABSENT = "not built yet"  # problem() of an entry with no directory: build it, no warning


def kernel_blob_name(kernel_hash: str, arch: str) -> str:
    """Blob name of a compiled kernel: one cubin per kernel source hash and arch (sm_XX)."""
    return f"kernels/{kernel_hash}.{arch}.cubin"


class CacheWarning(UserWarning):
    """The runtime cache rebuilt a damaged entry or fell back to memory; the app keeps working."""


class CacheError(RtxrtError):
    """A cache entry changed underneath a reader, or a lock could not be taken in time."""


class CacheLockTimeout(CacheError):
    pass


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The argument, else $RTXRT_CACHE_DIR, else the platform's user cache directory."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    import platformdirs

    return Path(platformdirs.user_cache_dir("rtxrt", appauthor=False))


@dataclass(frozen=True)
class EntryInfo:
    """One entry on disk, as `rtxrt cache ls` shows it. ``complete`` means a manifest is present;
    checksums are not verified here (that reads every blob)."""

    digest: str
    path: Path
    key: CacheKey | None  # None: neither manifest nor key.json is readable
    size: int
    last_used: float  # seconds since the epoch
    complete: bool


class CacheEntry:
    """A named set of blobs for one key: compiled kernels, tactic choices, the plan.

    Get it from ``RuntimeCache.entry`` or ``get_or_build``. Blobs put are visible to ``get`` at
    once and reach the disk at ``complete()``. To add blobs to a complete entry later (lazily
    specialized shapes), hold ``cache.lock(key)``, put them, and complete again.
    """

    def __init__(self, cache: RuntimeCache, key: CacheKey, path: Path | None):
        self.key = key
        self.path = path  # None: the entry lives in this process's memory only
        self._cache = cache
        self._pending: dict[str, bytes] = {}
        self._memory: dict[str, bytes] = {}  # completed blobs of an in-memory entry
        self._memory_complete = False
        self._manifest: dict[str, Any] | None = None  # parsed and checked, loaded lazily
        self._verified = False
        self._touched = False

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def stamp(self) -> tuple[int, int] | None:
        """The manifest's (modification time, size) on disk: it changes whenever a build adds
        to the entry (None: in memory, or no manifest yet)."""
        if self.in_memory:
            return None
        try:
            info = (self.path / "manifest.json").stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def names(self) -> list[str]:
        stored = self._memory if self.in_memory else (self._read_manifest()[0] or {}).get("blobs", {})
        return sorted(set(stored) | set(self._pending))

    def get(self, name: str) -> bytes | None:
        """The blob, or None when the entry has none of that name, or no longer has it (an
        entry `rtxrt cache clear` or prune removed since it was verified is a miss). Raises
        CacheError when the blob on disk is unreadable or fails its checksum (get_or_build
        verified it, so only a change on disk since then can do that)."""
        if name in self._pending:
            return self._pending[name]
        if self.in_memory:
            return self._memory.get(name)
        manifest, _ = self._read_manifest()
        record = manifest["blobs"].get(name) if manifest else None
        if record is None:
            return None
        try:
            data = (self.path / "blobs" / record["sha256"]).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"runtime cache entry {self.path}: cannot read blob {name!r}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise CacheError(f"runtime cache entry {self.path}: blob {name!r} fails its sha256 checksum")
        self.touch()
        return data

    def get_json(self, name: str) -> Any:
        data = self.get(name)
        return None if data is None else json.loads(data)

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"blob name must be a non-empty string, not {name!r}")
        self._pending[name] = bytes(data)
        self._verified = False

    def put_json(self, name: str, obj: Any) -> None:
        self.put(name, canonical_json(obj))

    def problem(self) -> str | None:
        """None when the entry is complete and every blob matches its checksum; otherwise what
        is wrong with it. Reads every blob on disk (cached until the next put)."""
        if self._pending:
            return "has blobs not yet completed"
        if self.in_memory:
            return None if self._memory_complete else _ABSENT
        if self._verified:
            return None
        manifest, problem = self._read_manifest()
        if manifest is None:
            return problem
        for name, record in manifest["blobs"].items():
            problem = _check_blob(self.path / "blobs" / record["sha256"], name, record)
            if problem:
                return problem
        self._verified = True
        return None

    def is_complete(self) -> bool:
        return self.problem() is None

    def complete(self) -> None:
        """Make the blobs put so far durable: blobs first, the manifest last. A disk that cannot
        take them moves the entry to memory (one CacheWarning per cache)."""
        if not self.in_memory and self._cache.memory_only is None:
            was_complete = self._read_manifest()[0] is not None
            try:
                self._write()
            except OSError as exc:
                self._cache._degrade(exc, f"writing entry {self.path}")
                if not was_complete:  # else the next launch would warn about a half-written entry
                    with contextlib.suppress(OSError):
                        _remove_tree(self.path)
            else:
                self._pending.clear()
                self._verified = True
                self.touch()
                return
        self._move_to_memory()
        self._memory.update(self._pending)
        self._pending.clear()
        self._memory_complete = True

    def touch(self) -> None:
        """Mark the entry used now (the LRU clock), once per entry object; best effort."""
        if self._touched or self.in_memory:
            return
        self._touched = True
        with contextlib.suppress(OSError):  # a read-only cache still serves its entries
            (self.path / "last_used").touch()

    def _write(self) -> None:
        manifest, _ = self._read_manifest()  # a complete entry keeps its blobs when extended
        blobs = dict(manifest["blobs"]) if manifest else {}
        (self.path / "blobs").mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / "key.json", canonical_json(self.key.to_json()))
        for name, data in self._pending.items():
            digest = hashlib.sha256(data).hexdigest()
            blob = self.path / "blobs" / digest
            if _check_blob(blob, name, {"sha256": digest, "size": len(data)}):  # content-addressed: dedupe
                _atomic_write(blob, data)
            blobs[name] = {"sha256": digest, "size": len(data)}
        manifest = {"version": MANIFEST_VERSION, "key": self.key.to_json(), "blobs": blobs}
        _atomic_write(self.path / "manifest.json", canonical_json(manifest))
        _fsync_dir(self.path)
        self._manifest = manifest

    def _read_manifest(self) -> tuple[dict[str, Any] | None, str]:
        """(manifest, "") when it is present and well-formed for this key, else (None, why)."""
        if self._manifest is not None:
            return self._manifest, ""
        try:
            raw = (self.path / "manifest.json").read_bytes()
        except FileNotFoundError:
            return None, _ABSENT if not self.path.exists() else "its manifest is missing (an interrupted build?)"
        except OSError as exc:
            return None, f"its manifest cannot be read ({exc.strerror or exc})"
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return None, "its manifest is not valid JSON (truncated?)"
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            version = manifest.get("version") if isinstance(manifest, dict) else None
            return None, f"its manifest version {version!r} is unknown (this rtxrt writes {MANIFEST_VERSION})"
        if manifest.get("key") != self.key.to_json():
            return None, "its manifest belongs to another key"
        blobs = manifest.get("blobs")
        if not isinstance(blobs, dict) or not all(
                isinstance(r, dict) and isinstance(r.get("sha256"), str) and _DIGEST.fullmatch(r["sha256"])
                and type(r.get("size")) is int for r in blobs.values()):
            return None, "its manifest lists malformed blobs"
        self._manifest = manifest
        return manifest, ""

    def _move_to_memory(self) -> None:
        """Carry blobs already on disk (an entry being extended) into memory, then forget the disk."""
        if self.in_memory:
            return
        manifest, _ = self._read_manifest()
        for name in (manifest or {}).get("blobs", {}):
            with contextlib.suppress(CacheError):
                self._memory.setdefault(name, self.get(name))
        self.path = None
        self._cache._memory[self.key.digest] = self


class RuntimeCache:
    """The runtime cache at ``cache_dir`` (argument > $RTXRT_CACHE_DIR > user cache dir).

    Nothing is created until the first write or lock, so listing a missing cache is harmless.
    ``memory_only`` is None, or why new entries are kept in memory.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.root = resolve_cache_dir(cache_dir)
        self.lock_timeout = lock_timeout
        self.memory_only: str | None = None
        self._memory: dict[str, CacheEntry] = {}  # digest -> entry kept in memory
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"RuntimeCache({str(self.root)!r}{', in memory' if self.memory_only else ''})"

    # --- one entry ---------------------------------------------------------------------------

    def entry(self, key: CacheKey) -> CacheEntry:
        """The entry for ``key`` as it is now (possibly absent or incomplete; see problem())."""
        return self._memory.get(key.digest) or CacheEntry(self, key, self._entry_dir(key.digest))

    def is_cached(self, key: CacheKey) -> bool:
        """Will the next load find a valid entry (True), or JIT (False)? Like TensorRT-RTX's
        getEngineValidity. Verifies checksums, so a damaged entry answers False."""
        return self.entry(key).problem() is None

    @contextlib.contextmanager
    def lock(self, key: CacheKey, timeout: float | None = None) -> Iterator[None]:
        """Exclusive across processes (and threads) for one key. CacheLockTimeout after
        ``timeout`` seconds (default: the cache's lock_timeout)."""
        timeout = self.lock_timeout if timeout is None else timeout
        if self.memory_only is None:
            from filelock import FileLock, Timeout

            path = self.root / "locks" / f"{key.digest}.lock"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                file_lock = FileLock(str(path), timeout=timeout)
                file_lock.acquire()
            except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
                raise CacheLockTimeout(self._timeout_message(key, timeout, path)) from None
            except OSError as exc:
                self._degrade(exc, f"creating lock file {path}")
            else:
                try:
                    yield
                finally:
                    file_lock.release()
                return
        # In memory nothing is shared between processes; only this process's threads need excluding.
        with self._guard:
            thread_lock = self._thread_locks.setdefault(key.digest, threading.Lock())
        if not thread_lock.acquire(timeout=timeout if timeout >= 0 else -1):
            raise CacheLockTimeout(self._timeout_message(key, timeout, None))
        try:
            yield
        finally:
            thread_lock.release()

    def get_or_build(self, key: CacheKey, build: Callable[[CacheEntry], None], *,
                     timeout: float | None = None) -> CacheEntry:
        """A complete, verified entry for ``key``, building it with ``build(entry)`` if needed.

        Of any number of processes asking at once, one builds (under the lock) and the others
        wait and then read its result. A damaged entry is reported with a CacheWarning, removed
        and rebuilt. If ``build`` raises, nothing is stored and the exception propagates.
        """
        entry = self.entry(key)
        if entry.problem() is None:  # a warm start takes no lock
            entry.touch()
            return entry
        with self.lock(key, timeout):
            entry = self.entry(key)  # another process may have built it while we waited
            problem = entry.problem()
            if problem is None:
                entry.touch()
                return entry
            if problem != _ABSENT:
                _warn(f"rtxrt runtime cache: entry {key.digest[:12]} ({key.describe()}) is corrupt or "
                      f"stale: {problem}; removing it and rebuilding")
                self._discard(entry)
                entry = self.entry(key)
            build(entry)
            entry.complete()
            return entry

    # --- the whole cache ---------------------------------------------------------------------

    def entries(self) -> list[EntryInfo]:
        """Every entry on disk, most recently used first."""
        infos = [self._info(path) for path in self._entry_dirs()]
        return sorted(infos, key=lambda info: info.last_used, reverse=True)

    def size(self) -> int:
        """Bytes the cache directory holds."""
        return _tree_size(self.root)

    def clear(self) -> int:
        """Remove every entry not being built right now; returns the bytes freed."""
        self._memory.clear()
        before = self.size()
        for path in self._entry_dirs(include_trash=True):
            self._remove_unless_busy(path)
        return max(0, before - self.size())

    def evict(self, max_bytes: int) -> list[EntryInfo]:
        """Remove least-recently-used entries until the cache holds at most ``max_bytes``
        (entries being built are skipped); returns those removed, oldest first."""
        total, removed = self.size(), []
        for info in sorted(self.entries(), key=lambda info: info.last_used):
            if total <= max_bytes:
                break
            if self._remove_unless_busy(info.path):
                total -= info.size
                removed.append(info)
        return removed

    def remove_model(self, ir_hash: str) -> list[EntryInfo]:
        """Remove every entry of the model with ``ir_hash`` (all GPUs, drivers and options),
        except those being built right now; returns those removed."""
        for digest in [d for d, e in self._memory.items() if e.key.ir_hash == ir_hash]:
            del self._memory[digest]
        return [info for info in self.entries()
                if info.key is not None and info.key.ir_hash == ir_hash and self._remove_unless_busy(info.path)]

    # --- internals ---------------------------------------------------------------------------

    def _entry_dir(self, digest: str) -> Path:
        return self.root / "entries" / digest

    def _entry_dirs(self, include_trash: bool = False) -> list[Path]:
        try:
            children = list((self.root / "entries").iterdir())
        except FileNotFoundError:
            return []
        # ".trash-" directories are removals a crash interrupted.
        return [p for p in children if p.is_dir() and (_DIGEST.fullmatch(p.name) or
                                                       (include_trash and ".trash-" in p.name))]

    def _info(self, path: Path) -> EntryInfo:
        key = None
        for name in ("manifest.json", "key.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                obj = json.loads((path / name).read_bytes())
                key = CacheKey.from_json(obj["key"] if name == "manifest.json" else obj)
                break
        last_used = 0.0
        for name in ("last_used", "manifest.json", "."):
            with contextlib.suppress(OSError):
                last_used = (path / name).stat().st_mtime
                break
        return EntryInfo(path.name, path, key, _tree_size(path), last_used, (path / "manifest.json").is_file())

    def _remove_unless_busy(self, path: Path) -> bool:
        """Remove an entry directory unless another process holds its build lock."""
        from filelock import FileLock, Timeout

        if not _DIGEST.fullmatch(path.name):
            _remove_tree(path)
            return True
        lock_path = self.root / "locks" / f"{path.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(lock_path), timeout=0):
                _remove_tree(path)
        except Timeout:
            return False
        return True

    def _discard(self, entry: CacheEntry) -> None:
        """Remove a damaged entry (the caller holds its lock); if the disk refuses, build in memory."""
        if entry.in_memory:
            self._memory.pop(entry.key.digest, None)
            return
        try:
            _remove_tree(entry.path)
        except OSError as exc:
            self._degrade(exc, f"removing damaged entry {entry.path}")

    def _degrade(self, exc: OSError, doing: str) -> None:
        if self.memory_only is not None:
            return
        why = exc.strerror or str(exc) or type(exc).__name__
        self.memory_only = f"{why} while {doing}"
        _warn(f"rtxrt runtime cache: cannot write to {self.root} ({self.memory_only}); keeping compiled "
              "kernels in memory for this process only, so the next launch compiles again. "
              f"Set {ENV_VAR} to a writable directory to keep them.")

    def _timeout_message(self, key: CacheKey, timeout: float, path: Path | None) -> str:
        where = f"the runtime cache lock {path}" if path else "the runtime cache lock"
        return (f"timed out after {timeout:g} s waiting for {where}: another rtxrt process or thread is "
                f"building {key.describe()}. Wait for it to finish, pass a longer timeout, or use "
                f"another cache directory ({ENV_VAR})")


def _warn(message: str) -> None:
    warn(message, CacheWarning)


def _check_blob(path: Path, name: str, record: dict[str, Any]) -> str | None:
    """None when the file has the recorded size and checksum, else what is wrong."""
    try:
        size = path.stat().st_size
        if size != record["size"]:
            return f"blob {name!r} is truncated or overwritten ({size} bytes, expected {record['size']})"
        if hashlib.sha256(path.read_bytes()).hexdigest() != record["sha256"]:
            return f"blob {name!r} fails its sha256 checksum"
    except FileNotFoundError:
        return f"blob {name!r} is missing"
    except OSError as exc:
        return f"blob {name!r} cannot be read ({exc.strerror or exc})"
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part, even after a crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_tree(path: Path) -> None:
    """Rename first, so the entry vanishes at once and a crash mid-delete leaves no half entry."""
    trash = path
    if ".trash-" not in path.name:
        trash = path.with_name(f"{path.name}.trash-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, trash)
        except FileNotFoundError:
            return
    shutil.rmtree(trash)


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
