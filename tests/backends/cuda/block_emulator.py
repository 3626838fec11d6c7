"""Runs a generated block kernel (shared memory, ``__syncthreads``, shared atomics) on the CPU,
where the fake device's interpreter (tests/fake_gpu/cuda_c.py) stops: the kernel's source is
compiled by the host C++ compiler beside a shim in which each thread of a block is a fiber
(ucontext), ``__shared__`` a static (the blocks of a launch run one after another, so they
take turns with it) and ``__syncthreads`` a switch back to the block's scheduler.

The scheduler runs each thread in turn up to its next barrier, then the next thread: threads
interleave only at barriers, in thread order (or, with ``reverse``, the other way round), so a
run is deterministic, and where a barrier is missing between a write and another thread's read,
one of the two orders runs the read first. A barrier that some threads of the block reach and
others never do (they returned) raises DivergentBarrier. Each launch runs in a forked child
over shared copies of the buffers, so a kernel that writes out of bounds fails its test
(EmulatorCrash) rather than the test process.

It checks a kernel's logic (indexing, barriers between threads handing data to each other,
atomics, the loops' bounds) where no GPU is. It has no warps and no memory model beyond the
barriers, so a GPU test confirms what it shows. Kernels using warp intrinsics, inline PTX or
CUDA headers do not compile here (CompileError).
"""
from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

COMPILER = shutil.which("g++") if hasattr(os, "fork") else None

SHIM = r"""
#include <ucontext.h>
#include <vector>
struct rtx_dim3 { unsigned int x, y, z; };
static rtx_dim3 threadIdx, blockIdx, blockDim, gridDim;
static ucontext_t rtx_scheduler;
static std::vector<ucontext_t> rtx_fibers;
static inline void __syncthreads() { swapcontext(&rtx_fibers[threadIdx.x], &rtx_scheduler); }
template <typename T> static inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
"""

# rtx_emulate returns 0, or 2 where a barrier is reached by some threads of a block only.
LAUNCHER = r"""
static void** rtx_p;
static const long long* rtx_d;
static std::vector<char> rtx_finished;
static void rtx_thread() {
  __KERNEL__(__ARGS__);
  rtx_finished[threadIdx.x] = 1;
}
extern "C" int rtx_emulate(void** p, const long long* d, unsigned int grid, unsigned int block, int reverse) {
  const size_t stack = 1 << 16;
  std::vector<char> stacks(stack * block);
  rtx_p = p;
  rtx_d = d;
  gridDim = {grid, 1u, 1u};
  blockDim = {block, 1u, 1u};
  rtx_fibers.assign(block, ucontext_t());
  for (unsigned int b = 0; b < grid; ++b) {
    blockIdx = {b, 0u, 0u};
    rtx_finished.assign(block, 0);
    for (unsigned int t = 0; t < block; ++t) {
      getcontext(&rtx_fibers[t]);
      rtx_fibers[t].uc_stack.ss_sp = &stacks[stack * t];
      rtx_fibers[t].uc_stack.ss_size = stack;
      rtx_fibers[t].uc_link = &rtx_scheduler;
      makecontext(&rtx_fibers[t], rtx_thread, 0);
    }
    for (unsigned int running = block; running > 0;) {  // one round: every thread up to its next barrier
      for (unsigned int i = 0; i < block; ++i) {
        const unsigned int t = reverse ? block - 1 - i : i;
        if (rtx_finished[t]) continue;
        threadIdx = {t, 0u, 0u};
        swapcontext(&rtx_scheduler, &rtx_fibers[t]);
      }
      unsigned int left = 0;
      for (unsigned int t = 0; t < block; ++t) left += !rtx_finished[t];
      if (left != 0 && left != running) return 2;  // some returned, the others wait at a barrier
      running = left;
    }
  }
  return 0;
}
"""


class CompileError(AssertionError):
    """The host compiler rejected the kernel (or the shim does not cover what it uses)."""


class DivergentBarrier(AssertionError):
    """Some threads of a block wait at a barrier that others never reach: a hang or worse on a GPU."""


class EmulatorCrash(AssertionError):
    """The kernel crashed the emulator: most likely an access out of bounds."""


def emulate(source: str, name: str, grid: int, block: int, pointers: Sequence[np.ndarray],
            dims: Sequence[int] = (), *, reverse: bool = False) -> None:
    """Launch kernel ``name`` of ``source`` on ``grid`` blocks of ``block`` threads, its pointer
    parameters the (contiguous, writable) ``pointers`` in order, then its int ``dims``;
    ``reverse``: run a block's threads last to first between barriers."""
    if grid == 0:
        return
    library = _library(source, name)
    for array in pointers:
        assert array.flags.c_contiguous and array.flags.writeable, "pointers must be contiguous, writable arrays"
    shared = [_shared_copy(a) for a in pointers]
    addresses = (ctypes.c_void_p * max(len(shared), 1))(*(a.ctypes.data for a in shared))
    values = (ctypes.c_longlong * max(len(dims), 1))(*(int(d) for d in dims))
    child = os.fork()
    if child == 0:
        os._exit(library.rtx_emulate(addresses, values, ctypes.c_uint(grid), ctypes.c_uint(block), int(reverse)))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        raise EmulatorCrash(f"{name} crashed the emulator (signal {os.WTERMSIG(status)}): an access out of bounds?")
    if os.WEXITSTATUS(status) == 2:
        raise DivergentBarrier(f"{name}: some threads of a block reach a barrier that others never do")
    for array, copy in zip(pointers, shared):
        array[...] = copy


def _shared_copy(array: np.ndarray) -> np.ndarray:
    """``array`` copied into memory a forked child shares with this process."""
    memory = mmap.mmap(-1, max(array.nbytes, 1))
    copy = np.frombuffer(memory, np.uint8)[:array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


@lru_cache(maxsize=None)
def _library(source: str, name: str) -> ctypes.CDLL:
    if COMPILER is None:
        raise CompileError("no host C++ compiler (g++)")
    folder = Path(_folder().name)
    stem = folder / hashlib.sha256(source.encode()).hexdigest()[:20]
    text = SHIM + source + LAUNCHER.replace("__KERNEL__", name).replace("__ARGS__", _arguments(source, name))
    stem.with_suffix(".cpp").write_text(text)
    done = subprocess.run([COMPILER, "-std=c++20", "-O2", "-shared", "-fPIC", "-w",
                           str(stem.with_suffix(".cpp")), "-o", str(stem.with_suffix(".so"))],
                          capture_output=True, text=True)
    if done.returncode:
        raise CompileError(f"{name} does not compile for the host:\n{done.stderr[-3000:]}")
    library = ctypes.CDLL(str(stem.with_suffix(".so")))
    library.rtx_emulate.restype = ctypes.c_int
    return library


@lru_cache(maxsize=None)
def _folder() -> tempfile.TemporaryDirectory:
    """Where compiled kernels go: kept for the process's life, then removed."""
    return tempfile.TemporaryDirectory(prefix="rtxrt-block-emulator-")


def _arguments(source: str, name: str) -> str:
    """The kernel's parameters as the launcher passes them: pointers from ``rtx_p``, ints from ``rtx_d``."""
    match = re.search(rf"\b{name}\(([^)]*)\)", source)
    if match is None:
        raise CompileError(f"no kernel {name} in the source")
    arguments, pointer, scalar = [], 0, 0
    for param in (s.strip() for s in match.group(1).split(",") if s.strip()):
        ctype = param.rsplit(None, 1)[0].replace("__restrict__", "").strip()
        if "*" in ctype:
            arguments.append(f"({ctype})rtx_p[{pointer}]")
            pointer += 1
        else:
            arguments.append(f"({ctype})rtx_d[{scalar}]")
            scalar += 1
    return ", ".join(arguments)
