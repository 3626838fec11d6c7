"""NVRTC: CUDA C++ source -> cubin for one arch, through CuPy's NVRTC binding. Needs no GPU.

Generated code is header-free (NVRTC from the pip wheels lacks most CUDA headers), so only
NVRTC's built-in declarations (math functions, intrinsics) and inline PTX are available.

Finding libnvrtc: CuPy 14 locates the ``nvidia-cuda-nvrtc-cu12`` wheel itself (through
``cuda.pathfinder``). Where that fails, or with CuPy 13, which only dlopens the soname, we
load the wheel's library with ctypes first (RTLD_GLOBAL), so that CuPy's dlopen and
pathfinder's already-loaded check find it.
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from ....errors import RtxrtError

NVRTC_HINT = "pip install nvidia-cuda-nvrtc-cu12 (with rtxrt[cuda12])"
# Exactness first: no fused multiply-add contraction, IEEE division and square root, no
# flush-to-zero (NVRTC's defaults once --fmad is off), so results match the reference backend.
EXACT_OPTIONS = ("--fmad=false",)
FAST_OPTIONS = ("--use_fast_math",)

_ARCH = re.compile(r"sm_\d{2,3}[af]?")
_module: Any = None
_compiled = 0  # kernels compiled by this process: a warm start must add none
_count_lock = threading.Lock()


def compiled_count() -> int:
    """How many compile_cubin calls this process has made (tests count warm starts by it)."""
    return _compiled


class NvrtcNotFoundError(RtxrtError):
    """CuPy's NVRTC binding or the NVRTC library itself cannot be loaded."""


class KernelCompileError(RtxrtError):
    """NVRTC rejected a kernel; ``log`` is NVRTC's compiler output."""

    def __init__(self, kernel: str, arch: str, log: str):
        self.kernel, self.arch, self.log = kernel, arch, log
        super().__init__(f"NVRTC could not compile kernel {kernel!r} for {arch}:\n{log.strip()}")


def compile_cubin(source: str, name: str, arch: str, options: Sequence[str] = (), *,
                  fast_math: bool = False) -> bytes:
    """Compile ``source`` (which defines ``extern "C"`` kernels) for ``arch`` ("sm_86").

    ``name`` names the program in errors and logs. ``options`` are extra NVRTC flags;
    ``fast_math`` trades the exact defaults for ``--use_fast_math``."""
    if not _ARCH.fullmatch(arch):
        raise ValueError(f"arch must look like 'sm_86', got {arch!r}")
    nvrtc = _nvrtc()
    flags = [f"-arch={arch}", "--std=c++17", "-default-device",
             *(FAST_OPTIONS if fast_math else EXACT_OPTIONS), *options]
    program = nvrtc.createProgram(source, f"{name}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(program, flags)
        except nvrtc.NVRTCError as exc:
            raise KernelCompileError(name, arch, _log(nvrtc, program) or str(exc)) from None
        cubin = bytes(nvrtc.getCUBIN(program))
    finally:
        nvrtc.destroyProgram(program)
    if not cubin.startswith(b"\x7fELF"):
        raise KernelCompileError(name, arch, "NVRTC returned no cubin")
    global _compiled
    with _count_lock:
        _compiled += 1
    return cubin


def compile_many(kernels: Iterable[tuple[str, str]], arch: str, *, max_workers: int | None = None,
                 fast_math: bool = False, progress: Callable[[int, int], None] | None = None) -> dict[str, bytes]:
    """Compile (name, source) pairs in parallel (NVRTC releases the GIL); the same name twice
    is compiled once, so callers name kernels by a hash of their source. ``progress(done,
    total)`` is called as each kernel finishes."""
    unique: dict[str, str] = {}
    for name, source in kernels:
        if unique.setdefault(name, source) != source:
            raise ValueError(f"two different sources named {name!r}")
    workers = max_workers or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(compile_cubin, source, name, arch, fast_math=fast_math): name
                   for name, source in unique.items()}
        results = {}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress:
                progress(done, len(futures))
        return results


def nvrtc_version() -> tuple[int, int]:
    """NVRTC's (major, minor) version, e.g. (12, 9)."""
    return tuple(_nvrtc().getVersion())  # type: ignore[return-value]


def supported_archs() -> tuple[int, ...]:
    """The sm_XY targets this NVRTC compiles for, as integers (75, 80, ...)."""
    nvrtc = _nvrtc()
    if hasattr(nvrtc, "getSupportedArchs"):
        return tuple(int(a) for a in nvrtc.getSupportedArchs())
    return (75, 80, 86, 89, 90)  # NVRTC 11.x without the query: what CUDA 11.8 knew


def _log(nvrtc: Any, program: Any) -> str:
    try:
        log = nvrtc.getProgramLog(program)
    except Exception:  # the log is a courtesy; the error itself is reported regardless
        return ""
    return log.decode(errors="replace") if isinstance(log, bytes) else str(log)


def _nvrtc() -> Any:
    global _module
    if _module is None:
        _preload_wheel_library()
        try:
            from cupy_backends.cuda.libs import nvrtc
        except ImportError as exc:
            raise NvrtcNotFoundError(f"CuPy's NVRTC binding is missing ({exc}): pip install 'rtxrt[cuda12]'") from exc
        try:
            nvrtc.getVersion()
        except Exception as exc:  # CuPy stubs report a library it could not load only when called
            raise NvrtcNotFoundError(f"libnvrtc does not load ({exc}): {NVRTC_HINT}") from exc
        _module = nvrtc
    return _module


def _preload_wheel_library() -> None:
    """Load libnvrtc from the nvidia-cuda-nvrtc wheel unless pathfinder finds one itself."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvrtc")
        return
    except Exception:  # no pathfinder (CuPy 13) or it found nothing: look for the wheel
        pass
    pattern = "nvrtc64_*.dll" if sys.platform == "win32" else "libnvrtc.so*"
    subdir = "bin" if sys.platform == "win32" else "lib"
    for root in sys.path:
        found = sorted(glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", subdir, pattern)))
        libraries = [f for f in found if "builtins" not in os.path.basename(f) and ".alt." not in f]
        if libraries:
            try:
                ctypes.CDLL(libraries[0], mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            except OSError:
                continue
            return
