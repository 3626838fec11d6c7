"""One compiled rtxrt partition run as onnxruntime's fused node.

``Compute`` is the C function ``rtxrt_ep_compute`` (trampoline.c): it gathers every input's
data address, element type, memory device and shape into one int64 array (tensors.c) and then
makes one Python call, ``Kernel.run``. That reads the array at once, wraps each input's memory
as a numpy array (no copy), runs the session, and hands every result's address and shape to
``rtxrt_ep_write_outputs``, which creates the outputs and copies the results in: one ctypes
crossing each way per run, none per tensor. This phase takes and gives CPU tensors: the
provider registers no device memory with onnxruntime, so onnxruntime hands it host tensors,
and any other tensor is refused with an error (device memory, an allocator and a data
transfer are a later phase)."""
from __future__ import annotations

import array
import ctypes as C
import functools
import math
from typing import Any

import numpy as np
import onnx

from .capi import Api

MEMORY_CPU = 0  # OrtMemoryInfoDeviceType_CPU
FIELDS = 4  # per packed input: data, element type, device type, rank; then the dims


def bind_tensors(library: C.CDLL, api: Api) -> None:
    """Give tensors.c the onnxruntime functions it names (``rtxrt_ep_ort_functions``)."""
    names = C.c_char_p.in_dll(library, "rtxrt_ep_ort_functions").value.decode().split()
    library.rtxrt_ep_bind_ort((C.c_void_p * len(names))(*api.addresses(names)))


class Kernel:
    """A fused node: its rtxrt session, and its inputs and outputs in onnxruntime's order."""

    def __init__(self, api: Api, library: C.CDLL, session: Any, inputs: list[str], outputs: list[str],
                 output_dtypes: list[np.dtype]):
        self.api = api
        self.session = session  # rtxrt.Session
        self.inputs = inputs
        self.outputs = outputs
        self.output_dtypes = output_dtypes
        self.write_outputs = library.rtxrt_ep_write_outputs
        self.struct: C.Structure | None = None  # its OrtNodeComputeInfo, kept alive as long as the kernel

    def run(self, context: int, packed_address: int, words: int) -> None:
        packed = (C.c_int64 * words).from_address(packed_address)[:]
        feeds, at = {}, 0
        for name in self.inputs:
            data, element, device, rank = packed[at:at + FIELDS]
            at += FIELDS + rank
            feeds[name] = _input_array(name, data, element, device, packed[at - rank:at])
        results = self.session.run(self.outputs, feeds)
        held, described = [], []  # held keeps the arrays alive until C has copied them
        for result, dtype in zip(results, self.output_dtypes):
            result = np.require(_host(result), dtype, "C")  # a scalar output stays 0-D
            held.append(result)
            described += (result.ctypes.data, result.nbytes, result.ndim, *result.shape)
        outputs = array.array("q", described)
        self.api.check(self.write_outputs(context, outputs.buffer_info()[0], len(held)))


def _input_array(name: str, data: int, element: int, device: int, shape: list[int]) -> np.ndarray:
    if device != MEMORY_CPU:
        raise NotImplementedError(f"input {name!r} is in device memory (OrtMemoryInfoDeviceType {device}); this "
                                  f"RtxrtExecutionProvider takes CPU tensors only")
    dtype = _dtype(element)
    count = math.prod(shape)
    if count == 0:
        return np.empty(shape, dtype)
    return np.ndarray(shape, dtype, (C.c_char * (count * dtype.itemsize)).from_address(data))


@functools.cache
def _dtype(element: int) -> np.dtype:
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(element))
    if dtype == np.dtype(object):
        raise NotImplementedError("a string tensor reached RtxrtExecutionProvider, which rtxrt does not run")
    return dtype


def _host(value: Any) -> np.ndarray:
    if hasattr(value, "__cuda_array_interface__"):  # an rtxrt session on the GPU: back to the host for onnxruntime
        import cupy

        return cupy.asnumpy(value)
    return value
