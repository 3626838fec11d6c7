"""``rtxrt doctor``: is this machine ready for the GPU path, and if not, what to do about it.

``diagnose()`` runs every check and returns a ``Report``: a list of ``Check``s (a problem has
``ok=False`` and the fix to apply; ``ok=None`` is information) and the facts behind them as
plain JSON values, for support tickets. A check whose prerequisite failed (the GPU, NVRTC and
cuBLAS checks need CuPy; the GPU check needs the driver) is skipped and names it in ``needs``,
so one cause is one problem. Nothing here raises: a check that fails unexpectedly
becomes a problem naming the error. Nothing is written except one temporary file, removed at
once, to learn whether the cache directory is writable.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .display import format_bytes
from .backends.cuda.cache.runtime_cache import ENV_VAR, RuntimeCache, resolve_cache_dir

SCHEMA = 1  # bump when a key of to_json() changes meaning or disappears
LOW_DISK_BYTES = 512 * 1024**2  # below this, a large model's kernels may not fit
DRIVER_FIX = ("install or update the NVIDIA driver (https://www.nvidia.com/drivers); in a container, "
              "start it with the GPU exposed (docker run --gpus all ...)")
_CUPY = re.compile(r"cupy(-cuda\d+x|-rocm-[\d-]+)?")
# What a check needs to be worth running, as the prerequisite checks' names; and how a skipped
# check names them.
_NEEDS = {"nvrtc": ("cupy",), "gpu": ("cupy", "driver"), "cublas": ("cupy",)}
_NEED_LABELS = {"cupy": "CuPy", "driver": "a working NVIDIA driver"}


@dataclass(frozen=True)
class Check:
    """One thing checked. ``ok``: True fine, False a problem (``fix`` says what to do), None
    information only. ``needs``: the failed checks it needs; non-empty when it was skipped."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    needs: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        return bool(self.needs)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # JSON sections: python, cupy, driver, gpus, ...

    @property
    def ok(self) -> bool:
        """Everything the GPU path needs is in place (the `rtxrt doctor` exit code is 0)."""
        return not self.problems

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def gpu_available(self) -> bool:
        """At least one GPU rtxrt can use, with CuPy to drive it."""
        return bool(self.facts["cupy"]["installed"]) and any(g["supported"] for g in self.facts["gpus"])

    def without_gpu(self) -> list[str]:
        """What still works on this machine when there is no usable GPU."""
        works = ["AOT compile: rtxrt aot model.onnx -o model.rtxir (needs no GPU)",
                 "inspect: rtxrt inspect model.rtxir"]
        if self.facts["nvrtc"]["loadable"]:
            works.append("kernels compiled ahead for your users' GPUs: rtxrt aot ... --precompile sm_86,sm_89 "
                         "(NVRTC needs no GPU)")
        works.append("running models on the CPU with the numpy reference backend (slow; it warns): "
                     "rtxrt.Session('model.rtxir', fallback='cpu')")
        ort = "" if importlib.util.find_spec("onnxruntime") else " (install it: pip install 'rtxrt[ort]')"
        works.append("ONNX Runtime apps: providers=['RtxrtExecutionProvider', 'CPUExecutionProvider'] run on "
                     f"ONNX Runtime's CPU provider{ort}")
        return works

    def to_json(self) -> dict[str, Any]:
        """One object with stable keys: schema, ok, gpu_available, checks, the fact sections,
        without_gpu (empty when a GPU is usable)."""
        return {"schema": SCHEMA, "ok": self.ok, "gpu_available": self.gpu_available,
                "checks": [asdict(c) for c in self.checks], **self.facts,
                "without_gpu": [] if self.gpu_available else self.without_gpu()}


def diagnose(cache_dir: str | os.PathLike | None = None) -> Report:
    """Check Python, rtxrt, CuPy, the driver, NVRTC, the GPUs, cuBLAS and the runtime cache
    (``cache_dir``, else $RTXRT_CACHE_DIR, else the user cache directory)."""
    report = Report(facts={
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "rtxrt": {"version": __version__, "location": str(Path(__file__).parent)},
        "platform": platform.platform(),
        "cupy": {"installed": False, "package": None, "version": None, "cuda_runtime": None},
        "driver": {"present": False, "cuda_version": None},
        "nvrtc": {"loadable": False, "version": None, "archs": []},
        "gpus": [],
        "cublas": {"loadable": False, "path": None},
        "cache": {"dir": None, "source": None, "exists": False, "writable": False, "free_bytes": None,
                  "size_bytes": 0, "entries": []},
    })
    steps: list[tuple[str, Callable[[Report], list[Check]]]] = [
        ("python", _python), ("cupy", _cupy), ("driver", _driver), ("nvrtc", _nvrtc), ("gpu", _gpus),
        ("cublas", _cublas), ("cache dir", lambda r: _cache(r, cache_dir)),
    ]
    for name, step in steps:
        failed = [need for need in _NEEDS.get(name, ()) if _failed(report, need)]
        if failed:
            report.checks.append(_skipped(name, failed))
            continue
        try:
            report.checks.extend(step(report))
        except Exception as exc:  # noqa: BLE001 -- a diagnostic tool reports its own failures instead of dying
            report.checks.append(Check(name, False, f"the check itself failed: {type(exc).__name__}: {exc}",
                                       "report this, with the output of `rtxrt doctor --json`"))
    return report


def _failed(report: Report, name: str) -> bool:
    return any(c.name == name and c.ok is False for c in report.checks)


def _skipped(name: str, failed: list[str]) -> Check:
    """Check ``name`` not run: the checks ``failed`` it needs are problems already, with their fix."""
    needs = " and ".join(_NEED_LABELS[n] for n in failed)
    return Check(name, None, f"skipped: needs {needs} (see {', '.join(repr(n) for n in failed)})", needs=tuple(failed))


# --- the checks, in the order they are shown ------------------------------------------------------

def _python(report: Report) -> list[Check]:
    python, rtxrt = report.facts["python"], report.facts["rtxrt"]
    return [Check("python", True, f"{python['version']} ({python['executable']})"),
            Check("rtxrt", True, f"{rtxrt['version']} ({rtxrt['location']})")]


def _install_hint(report: Report) -> str:
    return f"pip install 'rtxrt[{'cuda13' if report.facts['cupy']['package'] == 'cupy-cuda13x' else 'cuda12'}]'"


def _cupy(report: Report) -> list[Check]:
    facts = report.facts["cupy"]
    builds = sorted({d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()
                     if _CUPY.fullmatch((d.metadata["Name"] or "").lower().replace("_", "-"))})
    facts["package"] = builds[0] if len(builds) == 1 else None
    if len(builds) > 1:
        return [Check("cupy", False, f"several CuPy builds are installed ({', '.join(builds)}); they overwrite "
                      "each other's files", f"pip uninstall -y {' '.join(builds)} && pip install 'rtxrt[cuda12]'")]
    try:
        import cupy
        from cupy.cuda import runtime

        cuda_runtime = _cuda_version(runtime.runtimeGetVersion())
    except ModuleNotFoundError:
        return [Check("cupy", False, "CuPy is not installed, so rtxrt cannot use a GPU", _install_hint(report))]
    except Exception as exc:  # noqa: BLE001 -- installed but broken: a missing CUDA library, a half-removed build
        return [Check("cupy", False, f"CuPy does not load ({exc})",
                      f"reinstall it: pip install --force-reinstall {builds[0] if builds else 'cupy-cuda12x'}")]
    facts.update(installed=True, version=cupy.__version__, cuda_runtime=cuda_runtime)
    return [Check("cupy", True, f"{facts['package'] or 'cupy'} {facts['version']}, CUDA runtime {facts['cuda_runtime']}")]


def _driver(report: Report) -> list[Check]:
    """The driver through its own library (libcuda), so it is found even without CuPy."""
    facts = report.facts["driver"]
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    errors = []
    for name in names:
        try:
            library = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
            continue
        version = ctypes.c_int(0)
        status = library.cuDriverGetVersion(ctypes.byref(version))
        if status != 0 or version.value <= 0:
            return [Check("driver", False, f"the NVIDIA driver ({name}) does not answer (CUresult {status})", DRIVER_FIX)]
        facts.update(present=True, cuda_version=_cuda_version(version.value))
        runtime = report.facts["cupy"]["cuda_runtime"]
        if runtime and _major(facts["cuda_version"]) < _major(runtime):
            return [Check("driver", False, f"the driver supports CUDA {facts['cuda_version']}, older than CuPy's "
                          f"CUDA runtime {runtime}", f"update the NVIDIA driver to one for CUDA {_major(runtime)}, "
                          f"or install the CUDA {_major(facts['cuda_version'])} build of CuPy")]
        return [Check("driver", True, f"supports CUDA {facts['cuda_version']}")]
    return [Check("driver", False, f"no NVIDIA driver found ({errors[0]})", DRIVER_FIX)]


def _nvrtc(report: Report) -> list[Check]:
    from .backends.cuda.device import MIN_COMPUTE_CAPABILITY, SUPPORTED_ARCHS
    from .backends.cuda.compile.nvrtc import (
        NVRTC_HINT,
        NvrtcNotFoundError,
        nvrtc_version,
        supported_archs,
    )

    facts = report.facts["nvrtc"]
    try:
        version, archs = nvrtc_version(), supported_archs()
    except NvrtcNotFoundError as exc:
        return [Check("nvrtc", False, f"the JIT compiler does not load: {exc}", NVRTC_HINT)]
    lowest = MIN_COMPUTE_CAPABILITY[0] * 10 + MIN_COMPUTE_CAPABILITY[1]
    targets = [f"sm_{a}" for a in archs if a >= lowest]
    facts.update(loadable=True, version=f"{version[0]}.{version[1]}", archs=targets)
    missing = [a for a in SUPPORTED_ARCHS if a not in targets]
    note = f" (not {', '.join(missing)}: a newer NVRTC knows them)" if missing else ""
    driver = report.facts["driver"]["cuda_version"]
    if driver and version[0] > _major(driver):
        return [Check("nvrtc", False, f"NVRTC {facts['version']} builds kernels for CUDA {version[0]}, but the driver "
                      f"supports CUDA {driver} only", f"update the NVIDIA driver, or {_install_hint(report)}")]
    return [Check("nvrtc", True, f"{facts['version']}, targets {' '.join(targets)}{note}")]


def _gpus(report: Report) -> list[Check]:
    from cupy.cuda import runtime  # CuPy loads: the check runs only after 'cupy' passed

    from .backends.cuda.device import UnsupportedGpuError, check_compute_capability, target_arch

    try:
        count = runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 -- CUDARuntimeError: no device, or a driver too old for CuPy
        return [Check("gpu", False, f"no GPU: the driver reports an error ({exc})", DRIVER_FIX)]
    if count < 1:
        return [Check("gpu", False, "no GPU: the driver reports 0 devices", DRIVER_FIX)]
    nvrtc_archs = [int(a[3:]) for a in report.facts["nvrtc"]["archs"]]
    checks = []
    for index in range(count):
        props = runtime.getDeviceProperties(index)
        name = props["name"].decode(errors="replace") if isinstance(props["name"], bytes) else str(props["name"])
        cc = (int(props["major"]), int(props["minor"]))
        gpu = {"index": index, "name": name, "compute_capability": list(cc), "memory_bytes": int(props["totalGlobalMem"]),
               "arch": None, "supported": False, "reason": None}
        try:
            check_compute_capability(name, cc)
            gpu["arch"] = target_arch(cc, nvrtc_archs, name) if nvrtc_archs else None
            gpu["supported"] = True
        except UnsupportedGpuError as exc:
            gpu["reason"] = str(exc)
        report.facts["gpus"].append(gpu)
    supported = [g for g in report.facts["gpus"] if g["supported"]]
    for gpu in report.facts["gpus"]:
        what = (f"{gpu['name']}, compute capability {gpu['compute_capability'][0]}.{gpu['compute_capability'][1]}, "
                f"{gpu['memory_bytes'] / 1024**3:.1f} GiB")
        if gpu["supported"]:
            checks.append(Check(f"gpu {gpu['index']}", True, f"{what}, supported{_arch(gpu)}"))
        elif supported:  # another GPU serves; this one is simply not used
            checks.append(Check(f"gpu {gpu['index']}", None, f"{what}, not usable: {gpu['reason']}",
                                f"use a supported GPU: rtxrt.Session(..., device={supported[0]['index']})"))
        else:
            fix = ("update NVRTC: pip install -U nvidia-cuda-nvrtc-cu12" if "NVRTC" in gpu["reason"] else
                   "rtxrt needs an NVIDIA GPU of compute capability 7.5 (Turing, RTX 20xx) or newer")
            checks.append(Check(f"gpu {gpu['index']}", False, f"{what}, not usable: {gpu['reason']}", fix))
    return checks


def _arch(gpu: dict[str, Any]) -> str:
    return f" (kernels compile for {gpu['arch']})" if gpu["arch"] else ""


def _cublas(report: Report) -> list[Check]:
    from .backends.cuda.run.cublas import CublasNotFoundError, load_cublas

    runtime = report.facts["cupy"]["cuda_runtime"]
    try:
        library = load_cublas(_major(runtime) if runtime else None)
    except CublasNotFoundError as exc:
        return [Check("cublas", False, f"cuBLAS does not load ({str(exc).split('. ')[0]})", _install_hint(report))]
    report.facts["cublas"].update(loadable=True, path=getattr(library, "_name", None))
    return [Check("cublas", True, f"{report.facts['cublas']['path']}")]


def _cache(report: Report, cache_dir: str | os.PathLike | None) -> list[Check]:
    facts = report.facts["cache"]
    root = resolve_cache_dir(cache_dir)
    source = "argument" if cache_dir is not None else "environment" if os.environ.get(ENV_VAR) else "default"
    facts.update(dir=str(root), source=source, exists=root.is_dir())
    origin = {"argument": "--cache-dir", "environment": f"${ENV_VAR}", "default": "the user cache directory"}
    where = f"{root} (from {origin[source]})"
    move = f"set {ENV_VAR} to a writable folder (or pass cache_dir= to rtxrt.Session)"
    checks = []
    problem = _unwritable(root)
    facts["writable"] = problem is None
    if problem:
        checks.append(Check("cache dir", False, f"{where}: {problem}; compiled kernels would be kept in memory "
                            "only, so every launch compiles again", move))
    else:
        checks.append(Check("cache dir", True, f"{where}, writable{'' if facts['exists'] else ', created on first use'}"))
    existing = _existing_ancestor(root)
    if existing is not None:
        free = shutil.disk_usage(existing).free
        facts["free_bytes"] = free
        if free < LOW_DISK_BYTES:
            checks.append(Check("disk", False, f"{format_bytes(free)} free at {existing}: a model's kernels may not fit",
                                f"free disk space there, or {move} on a disk with room"))
        else:
            checks.append(Check("disk", True, f"{format_bytes(free)} free"))
    cache = RuntimeCache(root)
    try:
        infos = cache.entries() if facts["exists"] else []
    except OSError as exc:
        checks.append(Check("cache", False, f"cannot list {root} ({exc.strerror or exc})", move))
        return checks
    for info in infos:
        key = info.key
        facts["entries"].append({
            "digest": info.digest, "model": key.ir_hash if key else None, "gpu": key.gpu_name if key else None,
            "arch": key.arch if key else None, "rtxrt_version": key.rtxrt_version if key else None,
            "size_bytes": info.size, "complete": info.complete,
            "last_used": datetime.fromtimestamp(info.last_used, timezone.utc).isoformat() if info.last_used else None,
        })
    facts["size_bytes"] = cache.size() if facts["exists"] else 0
    count = len(facts["entries"])
    checks.append(Check("cache", None, f"{count} entr{'y' if count == 1 else 'ies'}, {format_bytes(facts['size_bytes'])}"))
    return checks


def _unwritable(root: Path) -> str | None:
    """None when a file can be created where the cache writes, else why not (tries it: permission
    bits do not tell, e.g. for root or on a read-only mount)."""
    target = root / "entries" if (root / "entries").is_dir() else root
    existing = _existing_ancestor(target)
    if existing is None:
        return "no part of the path exists"
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, path = tempfile.mkstemp(dir=existing, prefix=".rtxrt-doctor-")
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or exc})"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return None


def _existing_ancestor(path: Path) -> Path | None:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return None


def _cuda_version(version: int) -> str:
    """CUDA's integer versions (12080) as "12.8"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def _major(version: str) -> int:
    return int(version.split(".")[0])


