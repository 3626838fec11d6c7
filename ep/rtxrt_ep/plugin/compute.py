"""One compiled rtxrt partition and its ``OrtNodeComputeInfo``: onnxruntime's fused node runs
an ``rtxrt.Session``.

``Compute`` is one Python call per run of the fused node: it wraps each input ``OrtValue``'s
memory as a numpy array (no copy), runs the session, and copies each result into the output
onnxruntime allocates at that shape. This phase takes and gives CPU tensors: the provider
registers no device memory with onnxruntime, so onnxruntime hands it host tensors, and any
other tensor is refused with an error (device memory, an allocator and a data transfer are
a later phase)."""
from __future__ import annotations

import ctypes as C
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .capi import Api
from .graph import Reader

MEMORY_CPU = 0  # OrtMemoryInfoDeviceType_CPU


@dataclass
class Kernel:
    """A fused node: its rtxrt session, and its inputs and outputs in onnxruntime's order."""

    name: str
    session: Any  # rtxrt.Session
    inputs: list[str]
    outputs: list[str]
    output_dtypes: list[np.dtype]


def compute(api: Api, kernel: Kernel, context: int) -> None:
    feeds = {name: _input_array(api, context, index) for index, name in enumerate(kernel.inputs)}
    results = kernel.session.run(kernel.outputs, feeds)
    for index, (result, dtype) in enumerate(zip(results, kernel.output_dtypes)):
        _write_output(api, context, index, _host(result), dtype)


def _input_array(api: Api, context: int, index: int) -> np.ndarray:
    value = C.c_void_p()
    api.check(api.KernelContext_GetInput(context, index, C.byref(value)))
    memory = C.c_void_p()
    api.check(api.GetTensorMemoryInfo(value, C.byref(memory)))
    device = C.c_int()
    api.MemoryInfoGetDeviceType(memory, C.byref(device))
    if device.value != MEMORY_CPU:
        raise NotImplementedError(f"input {index} is in device memory (OrtMemoryInfoDeviceType {device.value}); this "
                                  f"RtxrtExecutionProvider takes CPU tensors only")
    info = C.c_void_p()
    api.check(api.GetTensorTypeAndShape(value, C.byref(info)))
    try:
        elem, shape = Reader(api).tensor_type(info.value)
    finally:
        api.ReleaseTensorTypeAndShapeInfo(info)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    if dtype == np.dtype(object):
        raise NotImplementedError(f"input {index} is a string tensor, which rtxrt does not run")
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.empty(shape, dtype)
    data = C.c_void_p()
    api.check(api.GetTensorMutableData(value, C.byref(data)))
    raw = (C.c_char * (count * dtype.itemsize)).from_address(data.value)
    return np.frombuffer(raw, dtype).reshape(shape)


def _write_output(api: Api, context: int, index: int, result: np.ndarray, dtype: np.dtype) -> None:
    result = np.require(result, dtype, "C")  # a scalar output stays 0-D
    dims = (C.c_int64 * result.ndim)(*result.shape)
    value = C.c_void_p()
    api.check(api.KernelContext_GetOutput(context, index, dims, result.ndim, C.byref(value)))
    if result.size:
        data = C.c_void_p()
        api.check(api.GetTensorMutableData(value, C.byref(data)))
        C.memmove(data.value, result.ctypes.data, result.nbytes)


def _host(value: Any) -> np.ndarray:
    if hasattr(value, "__cuda_array_interface__"):  # an rtxrt session on the GPU: back to the host for onnxruntime
        import cupy

        return cupy.asnumpy(value)
    return np.asarray(value)
