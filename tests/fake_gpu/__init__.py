"""A fake GPU for CPU CI: the CUDA backend's plumbing and generated code, checked without a GPU.

- ``device.FakeDevice``: a stand-in ``cupy`` (installed into ``sys.modules`` for one test by
  ``FakeDevice().install(monkeypatch)``) over one host buffer whose real addresses are the
  device pointers: allocations, checked memcpys, streams, CUDA graph capture and replay,
  modules whose "cubin" is the kernel's CUDA source, and launches recorded (kernel, grid,
  block, every pointer with the allocation and offset it points into) and, where the kernel
  is simple enough, executed.
- ``cuda_c``: the interpreter executing those kernels (grid-stride loops: elementwise, the GEMM
  epilogue, casts and transposes, im2col, depthwise conv) vectorized over the loop index,
  with C's types and conversions; tiled kernels raise NotInterpretable.
- ``memory.FakeMemory``: bounds, alignment, uninitialized-read and race checks.
- ``cublas.FakeCublas``: rtxrt's cuBLAS wrapper, validated as the real one, computed by numpy.
- ``engine``: the real Engine on the fake device; checks against the reference backend, of
  plan order, and of every pointer's binding (``KernelCatalog`` records the KernelArgs).
- ``kernels``: one kernel on the fake device; the elementwise catalogue check.
- ``models``: small ONNX models built in code. ``plants``: the planted bugs the checks catch.

The tests are tests/backends/cuda/test_fake_*.py. None needs a GPU; none is marked ``gpu``.
"""
from .cuda_c import CompileError, DeviceFault, NotInterpretable
from .cublas import FakeCublas
from .device import FakeDevice

__all__ = ["CompileError", "DeviceFault", "FakeCublas", "FakeDevice", "NotInterpretable"]
