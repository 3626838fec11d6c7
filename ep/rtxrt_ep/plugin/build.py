"""Where the plugin library comes from: built by ``pip install`` (setuptools compiles
``trampoline.c`` and ``tensors.c`` as the extension ``rtxrt_ep.plugin._trampoline``), or, in a source checkout or
an editable install, compiled at first use with the platform's C compiler ($CC, else ``cc``)
into rtxrt's user cache directory. Either way it is a build output, never a file in git."""
from __future__ import annotations

import hashlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = [Path(__file__).with_name(name) for name in ("trampoline.c", "tensors.c")]  # as pyproject.toml lists them


class BuildError(RuntimeError):
    """The plugin library is not installed and could not be compiled here."""


def library_path() -> Path:
    """The plugin library: the installed one, else one compiled into the cache (BuildError
    when there is no C compiler)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        installed = SOURCES[0].with_name(f"_trampoline{suffix}")
        if installed.is_file():
            return installed
    return _cached_build()


def _cached_build() -> Path:
    import platformdirs
    from filelock import FileLock

    if sys.platform == "win32":
        raise BuildError("the rtxrt plugin library is built by 'pip install' on Windows; no library is installed")
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES)).hexdigest()
    folder = Path(platformdirs.user_cache_dir("rtxrt")) / "ep"
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    target = folder / f"librtxrt_ep-{digest[:16]}{suffix}"
    if target.is_file():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise BuildError("no C compiler (set $CC, or install cc) to build the rtxrt plugin library")
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # two processes starting at once build it once
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            built = Path(scratch) / target.name
            result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), *map(str, SOURCES)],
                                    capture_output=True, text=True)
            if result.returncode:
                raise BuildError(f"{compiler} could not build the rtxrt plugin library:\n{result.stderr.strip()}")
            os.replace(built, target)  # atomic: no process sees half a library
    return target
