"""Reference kernels for Cast, CastLike and BitCast, and ``cast_to``: ONNX's conversion rules
between any two element types, which the quantization kernels share."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ....ir.dtypes import DType
from ..kernel import OpRun

_FLOAT8 = frozenset({DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ})


def cast_to(x: np.ndarray, to: DType, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """Convert ``x`` to element type ``to`` as ONNX's Cast does.

    ``saturate`` clamps out-of-range values (and infinities) of float8 targets to the largest
    finite value instead of making them NaN/Inf; ``round_mode`` ("up", "down", "nearest")
    and ``saturate`` steer float8e8m0 targets. Strings are object arrays of Python ``str``.
    """
    if x.dtype.kind in "OUS":
        return _from_strings(x, to, saturate, round_mode)
    if to == DType.STRING:
        return _to_strings(_widen(x))
    if to == DType.FLOAT8E8M0:
        return _to_e8m0(x, saturate, round_mode)
    if to in _FLOAT8 and saturate:
        limit = float(ml_dtypes.finfo(to.numpy).max)
        x = np.clip(_as_float(x), -limit, limit)
    if _is_narrow(x.dtype) and _is_narrow(to.numpy):
        x = _widen(x)  # ml_dtypes converts between few pairs of its own types directly
    with np.errstate(invalid="ignore", over="ignore"):  # out-of-range float -> int is undefined
        return np.asarray(x).astype(to.numpy)


def _is_narrow(dtype: np.dtype) -> bool:
    """An ml_dtypes type (bfloat16, float8, float4, int4, int2, ...) rather than a numpy one."""
    return dtype.type.__module__.startswith("ml_dtypes")


def _widen(x: np.ndarray) -> np.ndarray:
    """The same values in a numpy type that holds them exactly."""
    if not _is_narrow(x.dtype):
        return x
    return x.astype(np.int64 if DType.from_numpy(x.dtype).is_integer else np.float32)


def _as_float(x: np.ndarray) -> np.ndarray:
    """The same values in a numpy float type (float64 for integers)."""
    if x.dtype.kind == "f" and not _is_narrow(x.dtype):
        return x
    return x.astype(np.float32 if DType.from_numpy(x.dtype).is_float else np.float64)


def _to_strings(x: np.ndarray) -> np.ndarray:
    text = x.astype(np.str_).astype(object)
    if x.dtype.kind == "f":  # ONNX's literals for the special values
        text[np.isnan(x)] = "NaN"
        text[np.isposinf(x)] = "INF"
        text[np.isneginf(x)] = "-INF"
    return text


def _from_strings(x: np.ndarray, to: DType, saturate: bool, round_mode: str) -> np.ndarray:
    if to == DType.STRING:
        return x.astype(object)
    text = x.astype(np.str_)
    if np.dtype(to.numpy).kind in "iu" and not _is_narrow(to.numpy):
        try:  # exact for integers beyond float64's 53 bits
            return text.astype(to.numpy)
        except (ValueError, OverflowError):
            pass  # "1e3", "2.5", ...: through float
    # numpy parses "NaN", "INF", "+INF", "-INF" in any case and scientific notation.
    numbers = text.astype(np.float64)
    if to == DType.BOOL:
        return np.asarray(numbers != 0)
    return cast_to(numbers, to, saturate, round_mode)


def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8e8m0 keeps only a float32's exponent; the mantissa decides the rounding."""
    bits = np.asarray(_as_float(x), dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    mantissa = bits & 0x7FFFFF
    special = exponent == 0xFF
    if round_mode == "up":
        up = mantissa != 0
    elif round_mode == "nearest":  # guard bit set and anything below it or a nonzero exponent
        up = ((mantissa & 0x400000) != 0) & (((mantissa & 0x3FFFFF) != 0) | (exponent > 0))
    elif round_mode == "down":
        up = np.zeros(exponent.shape, bool)
    else:
        raise ValueError(f"unknown round_mode {round_mode!r}; expected 'up', 'down' or 'nearest'")
    if saturate:
        up &= exponent != 0xFE  # never round past the largest value, 2**127
    code = exponent + (up & ~special)  # 0xFE rounding up becomes 0xFF, NaN
    if saturate:
        code = np.where(special & (mantissa == 0), 0xFE, code)  # infinity
    else:
        code = np.where((bits & 0x7FFFFFFF) == 0, 0xFF, code)  # zero is below the smallest value, 2**-127
    return np.asarray(code, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu)


class Cast(OpRun):
    def run(self, x):
        return cast_to(x, DType(self.attr("to")), bool(self.attr("saturate", 1)), self.attr("round_mode", "up"))


class CastLike(OpRun):
    def run(self, x, like):
        return cast_to(x, DType.from_numpy(like.dtype), bool(self.attr("saturate", 1)), self.attr("round_mode", "up"))


class BitCast(OpRun):
    def run(self, x):
        # Sub-byte types sit one per byte in their low bits, so a view reinterprets them too.
        return x.view(DType(self.attr("to")).numpy)
