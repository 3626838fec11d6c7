"""One generated kernel on the fake device, and the elementwise check: a kernel of the
compile test's catalogue (tests/backends/cuda/test_codegen_compile.py CASES), run by the
interpreter on random inputs salted with edge values, against the reference backend (the
same reference and tolerances as the GPU test, tests/backends/cuda/test_gpu_elementwise.py)."""
from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.plan.forms import device_dtype, numpy_dtype
from rtxrt.ir.dtypes import DType

from .device import FakeDevice

FLOAT_EDGES = (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 1e-3, -7.0, 30.0, -30.0, 100.0, -100.0, 1e-40,
               65504.0, 70000.0, -70000.0, 3e38, -3e38, np.inf, -np.inf, np.nan)
# (float -> integer conversions of NaN, infinities and out-of-range values are undefined in ONNX
# and differ between numpy and the GPU: cases that turn floats into integers get no edge values)


def run_kernel(device: FakeDevice, kernel: KernelSource, arrays: Sequence[np.ndarray | None], *,
               source: str | None = None, grid: int | None = None) -> list[np.ndarray]:
    """Launch ``kernel`` (its source, or ``source``) once on ``device`` with the given input
    arrays (None: an omitted input) and return its outputs as host arrays of their types."""
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load((source if source is not None else kernel.source).encode())
    function = module.get_function(kernel.name)
    inputs = iter(cupy.asarray(np.ascontiguousarray(a).view(device_dtype(_dtype_of(a))))
                  for a in arrays if a is not None)
    args, outputs = [], []
    for arg in kernel.args:
        if arg.role is BufferRole.IN:
            args.append(next(inputs))
        else:
            outputs.append(cupy.ndarray(arg.shape, device_dtype(arg.dtype)))
            args.append(outputs[-1])
    launch = kernel.launch
    blocks = launch.grid() if grid is None else grid
    if blocks:
        function((blocks, 1, 1), (launch.block, 1, 1), tuple(args))
    return [out.get().view(numpy_dtype(arg.dtype)) for out, arg in zip(outputs, kernel.outputs)]


def _dtype_of(array: np.ndarray) -> DType:
    return DType.from_numpy(array.dtype)


def inputs_with_edges(case, *, edges: bool = True) -> list[np.ndarray | None]:
    """Random inputs for a catalogue case (its ranges, seeded by its id), the first elements
    of each float input replaced by edge values (zeros of both signs, halves, fp16's limits,
    overflow, denormals, infinities, NaN), rotated per input so that different pairs meet."""
    from tests.backends.cuda.test_gpu_elementwise import random_array

    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    ranges = list(case.ranges) + [None] * (len(case.inputs) - len(case.ranges))
    arrays = [None if t is None else random_array(rng, t, r) for t, r in zip(case.inputs, ranges)]
    if not edges or not takes_edge_values(case):
        return arrays
    for k, (t, a) in enumerate(zip(case.inputs, arrays)):
        if a is None or not t.dtype.is_float or a.size < 2:
            continue
        flat = a.reshape(-1)
        count = min(len(FLOAT_EDGES), flat.size)
        rotated = np.roll(np.asarray(FLOAT_EDGES, np.float64), 3 * k)[:count]
        with np.errstate(over="ignore"):
            flat[:count] = rotated.astype(flat.dtype)
    return arrays


def takes_edge_values(case) -> bool:
    nodes = [case.node] if not case.node.domain else list(case.node.attrs["body"].nodes)
    floats_in = any(t is not None and t.dtype.is_float for t in case.inputs)
    for node in nodes:
        if node.op_type == "Cast" and not DType(int(node.attrs["to"])).is_float and floats_in:
            return False
        if node.op_type == "Pow" and not case.inputs[0].dtype.is_float and floats_in:
            return False  # an integer base to a float power: computed in float, converted back
    return True


def check_elementwise_case(case, device_factory: Callable[[], FakeDevice], *,
                           mutate: Callable[[str], str] | None = None, edges: bool = True) -> None:
    """The case's kernel, run by the interpreter, gives the reference backend's values (to
    the GPU test's tolerances); AssertionError (or a DeviceFault) where it does not.
    ``mutate``: changes the source on its way to the device (a planted bug)."""
    from tests.backends.cuda.test_gpu_elementwise import compare, reference

    kernel = case.kernel()
    arrays = inputs_with_edges(case, edges=edges)
    source = mutate(kernel.source) if mutate else kernel.source
    got = run_kernel(device_factory(), kernel, arrays, source=source)
    with np.errstate(all="ignore"):  # edge values overflow on purpose
        want = reference(case, arrays)
    assert len(got) == len(want), (case.id, len(got), len(want))
    for arg, g, w in zip(kernel.outputs, got, want):
        assert g.shape == tuple(w.shape), (case.id, arg.name, g.shape, w.shape)
        compare(g, w, arg.dtype, f"{case.id} {arg.name}")

