"""Reference kernels for linear quantization and the integer / quantized matmul and conv ops.

Integer accumulations run in float64: every product of two centered 8-bit values is below
2**16, so sums stay exact (float64 holds integers up to 2**53) while numpy uses BLAS.
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ....ir.dtypes import DType
from ....ir.ops.conv import sliding_window
from ..kernel import OpRun
from .cast import cast_to


def _values(x: np.ndarray) -> np.ndarray:
    """Quantized values (any integer, float8 or float4 type) as float64, exactly."""
    return x.astype(np.float64)


def _unpacked_scale(scale: np.ndarray) -> np.ndarray:
    """Scales as a numpy float type (float8e8m0 scales are powers of two, exact in float32)."""
    return scale.astype(np.float32) if scale.dtype == ml_dtypes.float8_e8m0fnu else scale


def _per_element(param: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against ``x`` of ``shape``: per tensor
    (one value), per axis (1-D along ``axis``) or blocked (``block_size`` values of ``x``
    along ``axis`` share one)."""
    if param.size == 1:
        return param.reshape(())
    axis = axis % len(shape) if len(shape) > 1 else 0
    if not block_size:
        if param.ndim != 1 or param.shape[0] != shape[axis]:
            raise ValueError(f"per-axis scale/zero point of shape {param.shape} does not fit input {shape} on axis {axis}")
        return param.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    expected = tuple(math.ceil(d / block_size) if i == axis else d for i, d in enumerate(shape))
    if param.shape != expected:
        raise ValueError(f"blocked scale/zero point has shape {param.shape}, expected {expected} for input {shape}")
    repeated = np.repeat(param, block_size, axis=axis)
    return repeated[(slice(None),) * axis + (slice(0, shape[axis]),)]


def _quantize(q: np.ndarray, zero_point: np.ndarray | None, to: DType, saturate: bool = True) -> np.ndarray:
    """``saturate(q + zero_point)`` in type ``to``; integers round half to even first."""
    if to.is_integer:
        info = ml_dtypes.iinfo(to.numpy)
        y = np.rint(q) if zero_point is None else np.rint(q) + _values(zero_point)
        with np.errstate(invalid="ignore"):  # NaN has no integer value
            return np.asarray(np.clip(y, info.min, info.max)).astype(to.numpy)
    if zero_point is not None:
        q = q + _values(zero_point)
    return cast_to(np.asarray(q), to, saturate)


def _requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    return _quantize(acc * multiplier.astype(np.float64), zero_point, DType.from_numpy(zero_point.dtype))


class QuantizeLinear(OpRun):
    def run(self, x, scale, zero_point=None):
        axis, block_size = self.attr("axis", 1), self.attr("block_size", 0)
        scale = _per_element(_unpacked_scale(scale), x.shape, axis, block_size)
        precision = self.attr("precision", 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if precision:
                dtype = DType(precision).numpy
                q = x.astype(dtype) / scale.astype(dtype)
            else:  # the wider of the two types, as numpy promotes
                q = x / scale
        if zero_point is not None:
            to = DType.from_numpy(zero_point.dtype)
            zero_point = _per_element(zero_point, x.shape, axis, block_size)
        else:
            to = DType(self.attr("output_dtype", 0) or DType.UINT8)
        return _quantize(np.asarray(q, dtype=np.float64), zero_point, to, bool(self.attr("saturate", 1)))


class DequantizeLinear(OpRun):
    def run(self, x, scale, zero_point=None):
        axis, block_size = self.attr("axis", 1), self.attr("block_size", 0)
        values = _values(x)
        if zero_point is not None:
            values = values - _values(_per_element(zero_point, x.shape, axis, block_size))
        # Computed in float32 like ONNX's reference, then rounded to the output type.
        y = values.astype(np.float32) * _per_element(_unpacked_scale(scale), x.shape, axis, block_size)
        output_dtype = self.attr("output_dtype", 0)
        return np.asarray(y).astype(DType(output_dtype).numpy if output_dtype else scale.dtype)


class DynamicQuantizeLinear(OpRun):
    def run(self, x):
        # The range always includes 0 so that 0 quantizes exactly.
        low = np.float32(np.min(x, initial=0.0))
        high = np.float32(np.max(x, initial=0.0))
        scale = np.float32(1.0 if high == low else high - low) / np.float32(255)
        zero_point = np.rint(np.clip(np.float32(0) - low / scale, 0, 255))
        y = np.asarray(np.clip(np.rint(x / scale) + zero_point, 0, 255)).astype(np.uint8)
        return y, np.array(scale, dtype=np.float32), np.array(zero_point, dtype=np.uint8)


def _rows(param: np.ndarray, a: np.ndarray) -> np.ndarray:
    """A 1-D per-row parameter of matrix ``a`` as a column, so it broadcasts over a's rows."""
    return param.reshape(-1, 1) if param.ndim == 1 and a.ndim >= 2 else param


def _centered(x: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    return _values(x) if zero_point is None else _values(x) - _values(zero_point)


def _wrap_int32(acc: np.ndarray) -> np.ndarray:
    """Exact sums to int32, wrapping like a 32-bit accumulator would."""
    return np.asarray(acc).astype(np.int64).astype(np.int32)


class MatMulInteger(OpRun):
    def run(self, a, b, a_zero_point=None, b_zero_point=None):
        a_zp = None if a_zero_point is None else _rows(a_zero_point, a)
        acc = np.matmul(_centered(a, a_zp), _centered(b, b_zero_point))
        return _wrap_int32(acc)


class QLinearMatMul(OpRun):
    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
        acc = np.matmul(_centered(a, _rows(a_zero_point, a)), _centered(b, b_zero_point))
        multiplier = _rows(a_scale, a) * b_scale / y_scale  # in the scales' own precision
        return _requantize(acc, multiplier, y_zero_point)


class _IntegerConv(OpRun):
    def conv(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Convolution of centered float64 inputs (N, C, *spatial) and weights (M, C/group, *kernel)."""
        spatial = x.ndim - 2
        window = sliding_window(self.node.attrs, x.shape[2:], w.shape[2:])
        # Padding goes on after centering, so the border contributes zero.
        x = np.pad(x, [(0, 0), (0, 0)] + list(zip(window.pads[:spatial], window.pads[spatial:])))
        views = sliding_window_view(x, window.extents, axis=tuple(range(2, x.ndim)))
        views = views[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in window.strides)
                      + tuple(slice(None, None, d) for d in window.dilations)]
        # im2col: (group, N*out, C/group*kernel) @ (group, C/group*kernel, M/group)
        group = self.attr("group", 1)
        (n, c), m, out = x.shape[:2], w.shape[0], views.shape[2:2 + spatial]
        views = views.reshape(n, group, c // group, *out, *window.kernel)
        order = (1, 0, *range(3, 3 + spatial), 2, *range(3 + spatial, 3 + 2 * spatial))
        columns = views.transpose(order).reshape(group, n * math.prod(out), -1)
        filters = w.reshape(group, m // group, -1).transpose(0, 2, 1)
        y = np.matmul(columns, filters).reshape(group, n, *out, m // group)
        return y.transpose(1, 0, spatial + 2, *range(2, 2 + spatial)).reshape(n, m, *out)


def _per_channel(param: np.ndarray, trailing: int) -> np.ndarray:
    """A per-output-channel parameter shaped (M, 1, ..., 1) with ``trailing`` ones."""
    return param.reshape(-1, *(1,) * trailing) if param.size > 1 else param.reshape(())


class ConvInteger(_IntegerConv):
    def run(self, x, w, x_zero_point=None, w_zero_point=None):
        w_zp = None if w_zero_point is None else _per_channel(w_zero_point, w.ndim - 1)
        return _wrap_int32(self.conv(_centered(x, x_zero_point), _centered(w, w_zp)))


class QLinearConv(_IntegerConv):
    def run(self, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias=None):
        acc = self.conv(_centered(x, x_zero_point), _centered(w, _per_channel(w_zero_point, w.ndim - 1)))
        spatial = x.ndim - 2
        if bias is not None:
            acc = acc + _per_channel(bias, spatial).astype(np.float64)
        multiplier = x_scale * _per_channel(w_scale, spatial) / y_scale
        return _requantize(acc, multiplier, y_zero_point)
