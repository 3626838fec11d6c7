"""Helpers shared by the tests/backends/cuda modules: compiling kernel catalogues for every supported
arch, and the host-side arrays of the GPU tests."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np

from rtxrt.ir.dtypes import DType
from rtxrt.backends.cuda.device import SUPPORTED_ARCHS
from rtxrt.backends.cuda.compile.nvrtc import compile_cubin, compile_many


def compile_for_every_arch(kernels: Mapping[str, str], min_size: int = 0) -> list[tuple[str, int, float]]:
    """Compiles ``kernels`` (name -> source) for each supported arch and checks that every one
    gives a cubin (an ELF image of more than ``min_size`` bytes); returns (arch, cubins, seconds)."""
    report = []
    for arch in SUPPORTED_ARCHS:
        started = time.perf_counter()
        cubins = compile_many(kernels.items(), arch)
        report.append((arch, len(cubins), time.perf_counter() - started))
        assert set(cubins) == set(kernels)
        assert all(c.startswith(b"\x7fELF") and len(c) > min_size for c in cubins.values())
    return report


def compile_jobs(jobs: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], bytes]:
    """Compiles each (name, arch) -> source job on a thread pool."""
    with ThreadPoolExecutor(max(2, min(32, os.cpu_count() or 1))) as pool:
        futures = {key: pool.submit(compile_cubin, source, key[0], key[1]) for key, source in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def storage(dtype: DType) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype == DType.BFLOAT16 else np.dtype(dtype.numpy)


def random(rng: np.random.Generator, shape: tuple[int, ...], dtype: DType, scale: float = 1.0) -> np.ndarray:
    values = (rng.uniform(-1.0, 1.0, shape) * scale).astype(storage(dtype))
    values[values == 0] = storage(dtype).type(scale)  # never zeros
    return values


def to_device(array: np.ndarray):
    """CuPy has no bfloat16: 16-bit floats travel as their bits."""
    import cupy

    array = np.ascontiguousarray(array)
    return cupy.asarray(array.view(np.uint16) if array.itemsize == 2 else array)


def device_view(array: np.ndarray) -> np.ndarray:
    """CuPy has no bfloat16: move its bits as uint16 (bool is one byte on both sides)."""
    return array.view(np.uint16) if array.dtype == ml_dtypes.bfloat16 else np.ascontiguousarray(array)


def check_close(got: np.ndarray, want: np.ndarray, tol: float, what: str, output: str = "D") -> float:
    """‖got − want‖/‖want‖ < tol, and every element within tol·(|want| + rms(want)), so one
    wrong tile cannot hide in the norm; returns the relative error. Computed in float64: an
    fp16 norm overflows to inf and would let anything pass."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    norm = float(np.linalg.norm(want))
    rel = float(np.linalg.norm(got - want)) / norm if norm else float(np.linalg.norm(got))
    assert rel < tol, f"{what}: ||{output} - ref|| / ||ref|| = {rel:.3g} >= {tol}"
    rms = norm / math.sqrt(max(want.size, 1))
    bad = np.abs(got - want) > tol * (np.abs(want) + rms)
    if bad.any():
        where = tuple(int(i[0]) for i in np.nonzero(bad))
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements off, first at {where}: "
                             f"{got[where]} vs {want[where]}")
    return rel


def load_cubins(kernels: Mapping[str, str], folder, arch: str) -> dict:
    """``kernels`` (name -> source) compiled for ``arch`` and loaded: name -> cupy.RawModule
    (each cubin written to ``folder`` first, as RawModule loads from a path)."""
    import cupy

    loaded = {}
    for name, cubin in compile_many(kernels.items(), arch).items():
        path = folder / f"{name}.cubin"
        path.write_bytes(cubin)
        loaded[name] = cupy.RawModule(path=str(path))
    return loaded


class KernelLoader:
    """Generated kernels compiled for ``arch`` and loaded as they are asked for:
    ``loader.load(kernels)`` compiles those not loaded yet in one batch, ``loader(kernel)``
    returns the kernel's function (compiling it first if need be)."""

    def __init__(self, folder, arch: str):
        self.folder, self.arch = folder, arch
        self.functions: dict = {}

    def load(self, kernels) -> None:
        missing = {k.name: k.source for k in kernels if k.name not in self.functions}
        for name, module in load_cubins(missing, self.folder, self.arch).items():
            self.functions[name] = module.get_function(name)

    def __call__(self, kernel):
        self.load([kernel])
        return self.functions[kernel.name]

