"""A fake GPU behind a fake ``cupy``: what the engine, ``step_calls``, the autotuner and the
JIT use of CuPy, backed by FakeMemory and the kernel interpreter.

- memory: ``cupy.cuda.alloc`` hands out allocations of one host buffer whose real addresses
  are the device pointers; ``cupy.ndarray`` / ``empty`` / ``asarray`` live there too;
- copies: ``runtime.memcpy`` / ``memcpyAsync`` check their kind against where the pointers
  really are (host or device), and their device ranges against the allocations;
- kernels: ``function.Module().load(cubin)`` takes the kernel's CUDA source as the "cubin"
  (tests pass ``{name: source.encode()}``); ``get_function`` fails as the driver would for a
  name the source lacks; a launch is recorded (``FakeDevice.launches``: kernel, grid, block,
  every pointer argument with the allocation and offset it points into, the scalar arguments
  after them, e.g. a shape-generic kernel's dim arguments) and, when ``execute``, run by the
  interpreter (cuda_c.py). Arguments are checked against the kernel's parameter list as the
  driver reads them: one per parameter, and a scalar passed with its parameter's size (CuPy
  passes a Python int as 8 bytes: an ``int`` parameter wants ``np.int32``);
- streams and CUDA graphs: ``begin_capture`` / ``end_capture`` record the operations enqueued
  on the capturing stream instead of running them; ``graph.launch`` replays them. Work
  enqueued on another stream while one captures, or a synchronous copy or synchronize during
  capture, is a DeviceFault, as CUDA invalidates such a capture.

Every operation that runs (not one that is captured) is appended to ``FakeDevice.log`` in
order: LaunchRecord, GemmRecord (FakeCublas) or CopyRecord.

``install(monkeypatch)`` puts the fake modules into ``sys.modules`` (``cupy``, ``cupy.cuda``,
``cupy.cuda.function``, ``cupy.cuda.runtime``, ``cupy_backends.cuda.api.driver``) for one test.
"""
from __future__ import annotations

import itertools
import re
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cuda_c import DeviceFault, Machine, NotInterpretable, parse
from .memory import Allocation, FakeMemory

H2H, H2D, D2H, D2D, DEFAULT = 0, 1, 2, 3, 4  # cudaMemcpyKind
_KIND_NAMES = {H2H: "host to host", H2D: "host to device", D2H: "device to host", D2D: "device to device",
               DEFAULT: "default"}


class CUDADriverError(RuntimeError):
    """The fake ``cupy_backends.cuda.api.driver.CUDADriverError``."""


# ---------------------------------------------------------------------------- records

@dataclass
class LaunchRecord:
    seq: int
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[int, ...]  # the pointer arguments (every argument, if the kernel's parameters are unknown)
    where: tuple[tuple[Allocation | None, int], ...]  # per pointer argument: allocation and offset
    stream: int
    replay: bool  # run from a CUDA graph replay
    executed: bool = False  # the interpreter ran it
    why_not: str = ""  # why it did not
    scalars: tuple[int | float, ...] = ()  # the scalar arguments (a generic kernel's dims), in order


@dataclass
class GemmRecord:
    seq: int
    a: int
    b: int
    c: int
    m: int
    n: int
    k: int
    options: dict[str, Any]
    stream: int
    replay: bool


@dataclass
class CopyRecord:
    seq: int
    dst: int
    src: int
    nbytes: int
    kind: int
    stream: int | None  # None: the synchronous memcpy
    replay: bool


Record = LaunchRecord | GemmRecord | CopyRecord


# ---------------------------------------------------------------------------- the device

class FakeDevice:
    """``execute``: run interpretable kernels (else only record launches). ``opaque``: what a
    launch of a kernel the interpreter cannot run does, "raise" (NotInterpretable) or "skip"
    (recorded with ``executed=False``; memory is then not checked for uninitialized reads,
    as that kernel's outputs never get written). ``arch``: the ``__CUDA_ARCH__`` kernels are
    interpreted for."""

    def __init__(self, memory_bytes: int = 64 << 20, *, execute: bool = True, opaque: str = "raise",
                 arch: int = 860, sm_count: int = 46):
        if opaque not in ("raise", "skip"):
            raise ValueError("opaque must be 'raise' or 'skip'")
        self.memory = FakeMemory(memory_bytes, check_init=execute and opaque == "raise")
        self.execute, self.opaque, self.arch, self.sm_count = execute, opaque, arch, sm_count
        self.log: list[Record] = []
        self._seq = itertools.count()
        self._stream_ids = itertools.count(0x5000, 0x10)
        self.null_stream = FakeStream(self, null=True)
        self.current_stream = self.null_stream
        self.capturing: FakeStream | None = None
        self.cupy = self._make_cupy()

    # --- what ran
    @property
    def launches(self) -> list[LaunchRecord]:
        return [r for r in self.log if isinstance(r, LaunchRecord)]

    @property
    def gemms(self) -> list[GemmRecord]:
        return [r for r in self.log if isinstance(r, GemmRecord)]

    def mark(self) -> int:
        """A position in the log: ``since(mark)`` gives what ran after it."""
        return len(self.log)

    def since(self, mark: int) -> list[Record]:
        return self.log[mark:]

    # --- installing
    def modules(self) -> dict[str, types.ModuleType]:
        return dict(self._modules)

    def install(self, monkeypatch: Any) -> FakeDevice:
        """This device's ``cupy`` (and ``cupy_backends``) in ``sys.modules`` for one test."""
        for name in [n for n in sys.modules if n == "cupy" or n.startswith(("cupy.", "cupy_backends"))]:
            monkeypatch.delitem(sys.modules, name)
        for name, module in self._modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self

    # --- enqueueing
    def submit(self, stream_ptr: int | None, run: Callable[[bool], Record], what: str) -> None:
        """Run ``run`` now, or record it into the capture of its stream. ``stream_ptr`` None: a
        synchronous operation, illegal while a stream captures."""
        if self.capturing is not None:
            if stream_ptr is None:
                raise DeviceFault(f"{what}: a synchronous operation during the capture of stream "
                                  f"0x{self.capturing.ptr:x} (cudaErrorStreamCaptureUnsupported)")
            if stream_ptr != self.capturing.ptr:
                raise DeviceFault(f"{what}: enqueued on stream 0x{stream_ptr:x} while stream "
                                  f"0x{self.capturing.ptr:x} captures (the capture is invalidated)")
            self.capturing.captured.append((run, what))
            return
        run(False)  # (the operation appends its record to the log itself)

    def _record(self, record: Record) -> None:
        self.log.append(record)

    def _where(self, pointers: Sequence[int]) -> tuple[tuple[Allocation | None, int], ...]:
        return tuple(self.memory.find(p) for p in pointers)

    # --- kernels
    def launch(self, module: FakeModule, name: str, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: tuple[int, ...], stream_ptr: int, replay: bool) -> LaunchRecord:
        params = module.parameters(name)
        if params is not None and len(params) == len(args):
            pointers = tuple(a for a, p in zip(args, params) if p.pointer)
            scalars = tuple(a for a, p in zip(args, params) if not p.pointer)
        else:
            pointers, scalars = args, ()
        record = LaunchRecord(next(self._seq), name, grid, block, pointers, self._where(pointers), stream_ptr, replay,
                              scalars=scalars)
        self._record(record)  # first: a fault below still shows the launch in the log
        if not self.execute:
            record.why_not = "the device only records"
            return record
        try:
            machine = module.machine(self)
        except NotInterpretable as exc:
            machine, reason = None, str(exc)
        if machine is not None:
            try:
                machine.launch(name, grid, block, list(args))
                record.executed = True
                return record
            except NotInterpretable as exc:
                reason = str(exc)
        if self.opaque == "raise":
            raise NotInterpretable(f"{name}: {reason}")
        record.why_not = reason
        return record

    # --- copies
    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream_ptr: int | None, replay: bool) -> CopyRecord:
        dst, src, nbytes = int(dst), int(src), int(nbytes)
        on_device = (self.memory.contains(src), self.memory.contains(dst))
        expected = {H2D: (False, True), D2H: (True, False), D2D: (True, True), H2H: (False, False)}
        if kind in expected and on_device != expected[kind]:
            where = lambda d: "device" if d else "host"  # noqa: E731
            raise DeviceFault(f"memcpy of kind {_KIND_NAMES[kind]} from {where(on_device[0])} memory "
                              f"to {where(on_device[1])} memory")
        if kind not in expected and kind != DEFAULT:
            raise DeviceFault(f"memcpy of unknown kind {kind}")
        if nbytes < 0:
            raise DeviceFault(f"memcpy of {nbytes} bytes")
        if on_device[0]:
            self.memory.check_range(src, nbytes, "memcpy source", read=True)
        if on_device[1]:
            self.memory.check_range(dst, nbytes, "memcpy destination", read=False)
        record = CopyRecord(next(self._seq), dst, src, nbytes, kind, stream_ptr, replay)
        self._record(record)
        self.memory.copy(dst, src, nbytes)
        return record

    # --- the fake cupy
    def _make_cupy(self) -> types.ModuleType:
        device = self
        cupy = types.ModuleType("cupy")
        cuda = types.ModuleType("cupy.cuda")
        function = types.ModuleType("cupy.cuda.function")
        runtime = types.ModuleType("cupy.cuda.runtime")
        memory = types.ModuleType("cupy.cuda.memory")
        backends = types.ModuleType("cupy_backends")
        backends_cuda = types.ModuleType("cupy_backends.cuda")
        api = types.ModuleType("cupy_backends.cuda.api")
        driver = types.ModuleType("cupy_backends.cuda.api.driver")
        cupy.__fake_device__ = device
        cupy.cuda, cuda.function, cuda.runtime, cuda.memory = cuda, function, runtime, memory
        backends.cuda, backends_cuda.api, api.driver = backends_cuda, api, driver
        driver.CUDADriverError = CUDADriverError

        # memory
        def alloc(nbytes: int) -> MemoryPointer:
            return MemoryPointer(DeviceMemory(device, device.memory.alloc(int(nbytes))), 0)

        cuda.alloc = memory.alloc = alloc
        cuda.MemoryPointer = memory.MemoryPointer = MemoryPointer
        cuda.UnownedMemory = memory.UnownedMemory = UnownedMemory
        cuda.Memory = memory.Memory = DeviceMemory

        # kernels
        function.Module = lambda: FakeModule(device)
        function.Function = FakeFunction

        # copies
        runtime.memcpyHostToHost, runtime.memcpyHostToDevice = H2H, H2D
        runtime.memcpyDeviceToHost, runtime.memcpyDeviceToDevice, runtime.memcpyDefault = D2H, D2D, DEFAULT

        def memcpy(dst: int, src: int, size: int, kind: int) -> None:
            device.submit(None, lambda replay: device.copy(dst, src, size, kind, None, replay), "memcpy")

        def memcpyAsync(dst: int, src: int, size: int, kind: int, stream: int) -> None:  # noqa: N802
            stream = int(stream)
            device.submit(stream, lambda replay: device.copy(dst, src, size, kind, stream, replay), "memcpyAsync")

        runtime.memcpy, runtime.memcpyAsync = memcpy, memcpyAsync
        runtime.runtimeGetVersion = runtime.driverGetVersion = lambda: 12090
        runtime.getDeviceCount = lambda: 1
        runtime.deviceSynchronize = lambda: device.synchronize("deviceSynchronize")
        runtime.getDeviceProperties = lambda i=0: {
            "name": b"rtxrt fake GPU", "major": device.arch // 100, "minor": device.arch % 100 // 10,
            "multiProcessorCount": device.sm_count, "totalGlobalMem": device.memory.size,
            "sharedMemPerBlockOptin": 101376, "sharedMemPerBlock": 49152}

        # streams, events, graphs
        cuda.Stream = lambda non_blocking=False, null=False, ptds=False: FakeStream(device, non_blocking=non_blocking)
        cuda.Event = lambda block=False, disable_timing=False, interprocess=False: FakeEvent(device)
        cuda.get_current_stream = lambda device_id=None: device.current_stream
        cuda.get_elapsed_time = lambda start, end: max(end.seq - start.seq, 0) * 1e-3 + 1e-3
        cuda.Device = lambda device_id=0: FakeCudaDevice(device, device_id)
        cuda.runtime = runtime

        # arrays
        cupy.ndarray = FakeArray.new(device)
        cupy.empty = lambda shape, dtype=np.float64, order="C": cupy.ndarray(shape, dtype)

        def zeros(shape, dtype=np.float64):
            out = cupy.ndarray(shape, dtype)
            device.memory.copy(out.data.ptr, np.zeros(max(out.nbytes, 1), np.uint8).ctypes.data, out.nbytes)
            return out

        def asarray(value, dtype=None):
            if isinstance(value, FakeArray) and (dtype is None or np.dtype(dtype) == value.dtype):
                return value
            if isinstance(value, FakeArray):
                value = value.get()
            host = np.ascontiguousarray(np.asarray(value, dtype))
            out = cupy.ndarray(host.shape, host.dtype)
            runtime.memcpy(out.data.ptr, host.ctypes.data, host.nbytes, H2D)
            return out

        cupy.zeros, cupy.asarray, cupy.array = zeros, asarray, asarray
        cupy.ascontiguousarray = lambda value, dtype=None: asarray(value, dtype)
        cupy.asnumpy = lambda value, stream=None: value.get() if isinstance(value, FakeArray) else np.asarray(value)
        cupy.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None, used_bytes=lambda: 0)
        for name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                     "float32", "float64"):
            setattr(cupy, name, getattr(np, name))

        self._modules = {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.function": function,
                         "cupy.cuda.runtime": runtime, "cupy.cuda.memory": memory, "cupy_backends": backends,
                         "cupy_backends.cuda": backends_cuda, "cupy_backends.cuda.api": api,
                         "cupy_backends.cuda.api.driver": driver}
        return cupy

    def synchronize(self, what: str = "synchronize") -> None:
        if self.capturing is not None:
            raise DeviceFault(f"{what} during the capture of stream 0x{self.capturing.ptr:x}")


# ---------------------------------------------------------------------------- memory objects

class DeviceMemory:
    """An allocation as CuPy's ``Memory``: ``ptr``, ``size``."""

    def __init__(self, device: FakeDevice, allocation: Allocation):
        self.device, self.allocation = device, allocation
        self.ptr, self.size, self.device_id = allocation.ptr, allocation.size, 0


class UnownedMemory:
    def __init__(self, ptr: int, size: int, owner: Any, device_id: int | None = None):
        self.ptr, self.size, self.owner, self.device_id = int(ptr), int(size), owner, 0


class MemoryPointer:
    """CuPy's ``MemoryPointer``: ``ptr`` (``mem.ptr + offset``), ``mem``; ``mem_size`` is the
    size of the memory it points into."""

    def __init__(self, mem: Any, offset: int):
        self.mem, self.offset = mem, int(offset)
        self.ptr = mem.ptr + self.offset
        self.device_id = 0

    @property
    def mem_size(self) -> int:
        return self.mem.size

    def __add__(self, offset: int) -> MemoryPointer:
        return MemoryPointer(self.mem, self.offset + int(offset))

    def __int__(self) -> int:
        return self.ptr


class FakeArray:
    """A C-contiguous device array (CuPy's ``ndarray``, as far as the runtime uses it)."""

    device: FakeDevice

    @classmethod
    def new(cls, device: FakeDevice) -> type[FakeArray]:
        return type("ndarray", (cls,), {"device": device})

    def __init__(self, shape: Any, dtype: Any = np.float64, memptr: MemoryPointer | None = None, strides: Any = None,
                 order: str = "C"):
        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize
        if memptr is None:
            memptr = MemoryPointer(DeviceMemory(self.device, self.device.memory.alloc(max(self.nbytes, 1))), 0)
        self.data = memptr
        self.ndim = len(self.shape)

    def get(self, stream: Any = None) -> np.ndarray:
        """The values on the host (a synchronous copy: illegal during capture)."""
        self.device.synchronize("ndarray.get")
        host = np.empty(self.shape, self.dtype)
        if self.nbytes:
            self.device.copy(host.ctypes.data, self.data.ptr, self.nbytes, D2H, None, False)
        return host

    def view(self, dtype: Any) -> FakeArray:
        dtype = np.dtype(dtype)
        if dtype.itemsize != self.dtype.itemsize:
            raise ValueError("the fake ndarray views only same-size types")
        return type(self)(self.shape, dtype, self.data)

    def __repr__(self) -> str:
        return f"<fake cupy.ndarray {self.dtype}{list(self.shape)} at 0x{self.data.ptr:x}>"


# ---------------------------------------------------------------------------- kernels

_KERNEL = re.compile(r'__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)\s*\(')

# bytes of a scalar kernel parameter, by its type's words (qualifiers dropped)
_PARAM_BYTES = {"int": 4, "signed": 4, "signed int": 4, "unsigned": 4, "unsigned int": 4, "float": 4,
                "long long": 8, "long long int": 8, "signed long long": 8, "unsigned long long": 8,
                "unsigned long long int": 8, "long": 8, "long int": 8, "unsigned long": 8, "size_t": 8,
                "double": 8, "short": 2, "unsigned short": 2, "char": 1, "unsigned char": 1, "bool": 1}


@dataclass(frozen=True)
class Parameter:
    """One parameter of a ``__global__`` function: its declaration, whether it is a pointer,
    and a scalar's size in bytes (None: a type the fake does not size)."""

    text: str
    pointer: bool
    nbytes: int | None


def kernel_parameters(source: str, name: str) -> list[Parameter] | None:
    """The parameters of ``__global__`` function ``name`` in ``source`` (None: not found)."""
    for match in _KERNEL.finditer(source):
        if match.group(1) != name:
            continue
        start = match.end()
        depth, end = 1, start
        while depth and end < len(source):
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            end += 1
        text = source[start:end - 1].strip()
        if not text or text == "void":
            return []
        params = []
        for item in (p.strip() for p in text.split(",")):
            if "*" in item or "[" in item:
                params.append(Parameter(item, True, 8))
                continue
            words = [w for w in item.split()[:-1] if w not in ("const", "volatile", "__restrict__")]
            params.append(Parameter(item, False, _PARAM_BYTES.get(" ".join(words))))
        return params
    return None


class FakeModule:
    """``cupy.cuda.function.Module``: ``load(cubin)`` takes the kernel's CUDA source."""

    def __init__(self, device: FakeDevice):
        self.device = device
        self.source: str | None = None
        self._machine: Machine | None = None

    def load(self, cubin: bytes) -> None:
        if not isinstance(cubin, (bytes, bytearray)):
            raise TypeError(f"a cubin is bytes, got {type(cubin).__name__}")
        text = bytes(cubin).decode("utf-8", errors="replace")
        if not _KERNEL.search(text):
            raise CUDADriverError("CUDA_ERROR_INVALID_IMAGE: the fake device loads CUDA source text with a "
                                  "__global__ function (pass {name: source.encode()})")
        self.source = text

    def parameters(self, name: str) -> list[Parameter] | None:
        return kernel_parameters(self.source, name) if self.source is not None else None

    def get_function(self, name: str) -> FakeFunction:
        if self.source is None:
            raise CUDADriverError("CUDA_ERROR_INVALID_HANDLE: the module is not loaded")
        if name not in _KERNEL.findall(self.source):
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        return FakeFunction(self, name)

    def machine(self, device: FakeDevice) -> Machine:
        if self._machine is None:
            self._machine = Machine(parse(self.source, device.arch), device.memory)
        return self._machine


def _dim3(value: Any) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if len(dims) != 3:
        raise ValueError(f"a launch dimension has 1 to 3 components, got {value!r}")
    return dims


def _argument(arg: Any) -> int:
    if isinstance(arg, FakeArray):
        return arg.data.ptr
    if isinstance(arg, MemoryPointer):
        return arg.ptr
    if isinstance(arg, (int, np.integer)):
        return int(arg)
    raise TypeError(f"unsupported kernel argument {arg!r}")


def _argument_bytes(arg: Any) -> int | None:
    """How many bytes CuPy passes for ``arg`` (a Python int or float: 8)."""
    if isinstance(arg, (FakeArray, MemoryPointer)):
        return 8
    if isinstance(arg, (np.integer, np.floating, np.bool_)):
        return arg.dtype.itemsize
    if isinstance(arg, (int, float)):
        return 8
    return None


def check_arguments(name: str, params: Sequence[Parameter] | None, args: Sequence[Any]) -> None:
    """The driver reads each parameter from the bytes CuPy packed: one argument per parameter,
    a scalar of its parameter's size (else the ones after it are read at the wrong offsets)."""
    if params is None:
        return
    if len(args) != len(params):
        raise DeviceFault(f"{name}: launched with {len(args)} arguments, the kernel takes {len(params)}: "
                          + ", ".join(p.text for p in params))
    for k, (param, arg) in enumerate(zip(params, args)):
        if param.pointer:
            if not isinstance(arg, (FakeArray, MemoryPointer, int, np.integer)) or _argument_bytes(arg) != 8:
                raise DeviceFault(f"{name}: argument {k} ({param.text}) is a pointer, got {arg!r}")
        elif param.nbytes is not None:
            if isinstance(arg, (FakeArray, MemoryPointer)):
                raise DeviceFault(f"{name}: argument {k} ({param.text}) is a scalar, got an array {arg!r}")
            got = _argument_bytes(arg)
            if got != param.nbytes:
                raise DeviceFault(f"{name}: argument {k} ({param.text}) takes {param.nbytes} bytes, but "
                                  f"{type(arg).__name__} {arg!r} is passed as {got}")


class FakeFunction:
    """A kernel: calling it enqueues a launch on ``stream`` (default: the current stream)."""

    def __init__(self, module: FakeModule, name: str):
        self.module, self.name = module, name

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], shared_mem: int = 0, stream: Any = None,
                 enable_cooperative_groups: bool = False) -> None:
        device = self.module.device
        grid, block = _dim3(grid), _dim3(block)
        check_arguments(self.name, self.module.parameters(self.name), args)
        values = tuple(_argument(a) for a in args)
        stream = device.current_stream if stream is None else stream
        ptr = int(stream.ptr)
        device.submit(ptr, lambda replay: device.launch(self.module, self.name, grid, block, values, ptr, replay),
                      f"launch of {self.name}")


# ---------------------------------------------------------------------------- streams

class FakeStream:
    def __init__(self, device: FakeDevice, *, non_blocking: bool = False, null: bool = False):
        self.device = device
        self.ptr = 0 if null else next(device._stream_ids)
        self.non_blocking = non_blocking
        self.captured: list[tuple[Callable[[bool], Record], str]] = []
        self._previous: list[FakeStream] = []

    def synchronize(self) -> None:
        self.device.synchronize(f"stream 0x{self.ptr:x}.synchronize")

    def begin_capture(self, mode: Any = None) -> None:
        if self.device.capturing is not None:
            raise DeviceFault("begin_capture while a stream already captures")
        if self.ptr == 0:
            raise DeviceFault("the legacy null stream cannot be captured")
        self.captured = []
        self.device.capturing = self

    def end_capture(self) -> FakeGraph:
        if self.device.capturing is not self:
            raise DeviceFault("end_capture on a stream that is not capturing")
        self.device.capturing = None
        graph, self.captured = FakeGraph(self.device, self.captured), []
        return graph

    def is_capturing(self) -> bool:
        return self.device.capturing is self

    def record(self, event: FakeEvent | None = None) -> FakeEvent:
        event = event or FakeEvent(self.device)
        event.record(self)
        return event

    def wait_event(self, event: FakeEvent) -> None:
        pass

    @property
    def done(self) -> bool:
        return True

    def use(self) -> FakeStream:
        self.device.current_stream = self
        return self

    def __enter__(self) -> FakeStream:
        self._previous.append(self.device.current_stream)
        self.device.current_stream = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.device.current_stream = self._previous.pop()


@dataclass
class FakeGraph:
    """A captured CUDA graph: its operations, replayed in order by ``launch``."""

    device: FakeDevice
    operations: list[tuple[Callable[[bool], Record], str]] = field(default_factory=list)

    def launch(self, stream: Any = None) -> None:
        if self.device.capturing is not None:
            raise DeviceFault("a graph launched during a capture")
        for run, _ in self.operations:
            run(True)

    def upload(self, stream: Any = None) -> None:
        pass

    @property
    def descriptions(self) -> list[str]:
        return [what for _, what in self.operations]


class FakeEvent:
    """Time is the number of operations run: ``get_elapsed_time`` is their count / 1000."""

    def __init__(self, device: FakeDevice):
        self.device, self.seq = device, 0

    def record(self, stream: Any = None) -> None:
        self.seq = len(self.device.log)

    def synchronize(self) -> None:
        self.device.synchronize("event.synchronize")

    @property
    def done(self) -> bool:
        return True


class FakeCudaDevice:
    def __init__(self, device: FakeDevice, device_id: int = 0):
        self.device, self.id = device, int(device_id)
        self.compute_capability = str(device.arch // 10)

    def __enter__(self) -> FakeCudaDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def synchronize(self) -> None:
        self.device.synchronize("device.synchronize")

    def use(self) -> None:
        pass
