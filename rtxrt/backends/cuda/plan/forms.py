"""How a value is held on the device: its storage type, logical shape and memory layout."""
from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ....ir.dtypes import DType
from ....ir.graph import Graph, TensorType

NHWC = "NHWC"
TO_NHWC = (0, 2, 3, 1)


@dataclass(frozen=True)
class TensorForm:
    """``shape`` is logical (as the graph's types say); ``layout`` NHWC keeps a logical
    N,C,H,W tensor channels-last in memory, so its ``physical`` shape is N,H,W,C."""

    dtype: DType
    shape: tuple[int, ...]
    layout: str = ""

    @property
    def physical(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in TO_NHWC) if self.layout == NHWC else self.shape

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def logical(self) -> TensorForm:
        return TensorForm(self.dtype, self.shape)  # (not dataclasses.replace: planning calls these often)

    def with_dtype(self, dtype: DType) -> TensorForm:
        return TensorForm(dtype, self.shape, self.layout)

    def with_shape(self, shape: tuple[int, ...]) -> TensorForm:
        return TensorForm(self.dtype, shape, self.layout)

    @property
    def type(self) -> TensorType:
        """The physical tensor type: what a kernel indexing memory sees."""
        return TensorType(self.dtype, self.physical)

    def same_bytes(self, other: TensorForm) -> bool:
        """Both forms lay out the same bytes: same dtype and shape, and either the same layout
        or a 4-D tensor whose channels or pixels number one (its conversion moves nothing)."""
        if self.dtype != other.dtype or self.shape != other.shape:
            return False
        if self.layout == other.layout:
            return True
        _, c, h, w = self.shape
        return c == 1 or h * w == 1

    def describe(self) -> str:
        layout = f" {self.layout}" if self.layout else ""
        return f"{self.dtype.short}{list(self.shape)}{layout}"


def stored_form(graph: Graph, name: str) -> TensorForm:
    """The form ``graph.storage`` gives value ``name`` (its logical type where it has none)."""
    t = graph.types[name]
    storage = graph.storage.get(name)
    shape = tuple(int(d) for d in t.shape)
    if storage is None:
        return TensorForm(t.dtype, shape)
    layout = storage.layout if storage.layout == NHWC and len(shape) == 4 else ""
    dtype = storage.dtype if t.dtype.is_float and storage.dtype.is_float else t.dtype
    return TensorForm(dtype, shape, layout)


def numpy_dtype(dtype: DType) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype == DType.BFLOAT16 else np.dtype(dtype.numpy)


def device_dtype(dtype: DType) -> np.dtype:
    """The dtype of a CuPy array holding ``dtype``: CuPy has no bfloat16, float8 or int4, so
    those travel as unsigned integers of their size (one element per byte or two)."""
    host = numpy_dtype(dtype)
    return host if host.type.__module__ == "numpy" else np.dtype(f"uint{8 * host.itemsize}")


def to_form(value: np.ndarray, form: TensorForm) -> np.ndarray:
    """A host array (logical) as ``form`` stores it: converted and, for NHWC, transposed."""
    array = np.asarray(value).astype(numpy_dtype(form.dtype), copy=False).reshape(form.shape)
    if form.layout == NHWC:
        array = array.transpose(TO_NHWC)
    return np.asarray(array, order="C")  # (ascontiguousarray would make a scalar 1-D)


def from_form(array: np.ndarray, form: TensorForm, logical: DType) -> np.ndarray:
    """Inverse of to_form: host bytes stored as ``form`` back to a logical array of ``logical``."""
    array = np.asarray(array).view(numpy_dtype(form.dtype)).reshape(form.physical)
    if form.layout == NHWC:
        array = array.transpose(0, 3, 1, 2)
    return np.asarray(array.astype(numpy_dtype(logical), copy=False), order="C")
