"""IR element types in generated CUDA C++: how each is stored, held in registers, loaded,
stored, converted and written as a literal.

Header-free: fp16 and bf16 are stored as ``unsigned short`` bit patterns and held as
``float`` (always a value the narrow type can represent); the conversions are in
``PRELUDE``, written with inline PTX, so no ``<cuda_fp16.h>`` is needed. bool is stored as
one byte, as numpy stores it.
"""
from __future__ import annotations

import math

import numpy as np

from ....ir.dtypes import DType

# fp16 <-> fp32 by PTX cvt (all archs); bf16 -> fp32 is a shift; fp32 -> bf16 rounds to
# nearest even by cvt.rn.bf16.f32 from sm_80 and by bit arithmetic before (sm_75 lacks it).
PRELUDE = r"""
__device__ __forceinline__ float rtx_h2f(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short rtx_f2h(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ unsigned short rtx_d2h(double d) {
  unsigned short h; asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d)); return h;
}
__device__ __forceinline__ float rtx_bf2f(unsigned short h) {
  return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ unsigned short rtx_f2bf(float f) {
#if __CUDA_ARCH__ >= 800
  unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
#else
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return (unsigned short)(u >> 16);
#endif
}
__device__ __forceinline__ float rtx_round_h(float f) { return rtx_h2f(rtx_f2h(f)); }
__device__ __forceinline__ float rtx_round_bf(float f) { return rtx_bf2f(rtx_f2bf(f)); }
"""

# Types a generated kernel handles (not strings, complex, float8 or sub-byte types).
KERNEL_DTYPES = frozenset({
    DType.BOOL, DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
    DType.UINT32, DType.UINT64, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64,
})
NARROW_FLOATS = frozenset({DType.FLOAT16, DType.BFLOAT16})
SIGNED_INTS = frozenset({DType.INT8, DType.INT16, DType.INT32, DType.INT64})
UNSIGNED_INTS = frozenset({DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64})

_REGISTER = {
    DType.BOOL: "bool", DType.INT8: "signed char", DType.INT16: "short", DType.INT32: "int",
    DType.INT64: "long long", DType.UINT8: "unsigned char", DType.UINT16: "unsigned short",
    DType.UINT32: "unsigned int", DType.UINT64: "unsigned long long", DType.FLOAT16: "float",
    DType.BFLOAT16: "float", DType.FLOAT32: "float", DType.FLOAT64: "double",
}
_STORAGE = {**_REGISTER, DType.BOOL: "unsigned char", DType.FLOAT16: "unsigned short",
            DType.BFLOAT16: "unsigned short"}


def check(dtype: DType) -> DType:
    if dtype not in KERNEL_DTYPES:
        from . import CodegenError

        raise CodegenError(f"generated kernels do not handle {dtype.short} tensors")
    return dtype


def register_type(dtype: DType) -> str:
    """The C type a value is held in while computing (float for fp16 and bf16)."""
    return _REGISTER[check(dtype)]


def storage_type(dtype: DType) -> str:
    """The C type of one element in memory."""
    return _STORAGE[check(dtype)]


def unsigned_type(dtype: DType) -> str:
    """The unsigned type integer arithmetic wraps in: signed overflow is undefined in C++, and
    narrow types promote to int anyway."""
    return "unsigned long long" if dtype.itemsize == 8 else "unsigned int"


def load(element: str, dtype: DType) -> str:
    """A register value from a storage element expression (``in0[i]``)."""
    if dtype == DType.FLOAT16:
        return f"rtx_h2f({element})"
    if dtype == DType.BFLOAT16:
        return f"rtx_bf2f({element})"
    if dtype == DType.BOOL:
        return f"({element} != 0)"
    return element


def store(value: str, dtype: DType) -> str:
    """The storage element for a register value of ``dtype``."""
    if dtype == DType.FLOAT16:
        return f"rtx_f2h({value})"
    if dtype == DType.BFLOAT16:
        return f"rtx_f2bf({value})"
    if dtype == DType.BOOL:
        return f"(unsigned char)({value})"
    return value


def round_to(value: str, dtype: DType) -> str:
    """A float register value rounded to what ``dtype`` can hold (identity above fp16/bf16)."""
    if dtype == DType.FLOAT16:
        return f"rtx_round_h({value})"
    if dtype == DType.BFLOAT16:
        return f"rtx_round_bf({value})"
    return value


def convert(value: str, src: DType, dst: DType) -> str:
    """A register value of ``src`` as a register value of ``dst``, as numpy's astype does
    (and so the reference backend's Cast).

    float -> int truncates toward zero; floats go to the narrow integer types through int32
    and to uint32/uint64 through int64, as numpy does on x86-64, so -3.0 becomes 253 as
    uint8. Out-of-range values and NaN are undefined in ONNX; the GPU saturates them.
    double -> fp16 rounds once (PTX cvt), double -> bf16 through float (as ml_dtypes does).
    """
    check(src), check(dst)
    if src == dst:
        return value
    if dst == DType.BOOL:
        return f"({value} != 0)"
    if dst == DType.FLOAT16:
        if src == DType.FLOAT64:
            return f"rtx_h2f(rtx_d2h({value}))"
        return f"rtx_round_h((float)({value}))"
    if dst == DType.BFLOAT16:
        return f"rtx_round_bf((float)({value}))"
    if dst.is_float:
        return f"({register_type(dst)})({value})"
    ctype = register_type(dst)
    if src.is_float:
        if dst.itemsize < 4:
            return f"({ctype})(int)({value})"
        if dst in UNSIGNED_INTS:
            return f"({ctype})(long long)({value})"
    return f"({ctype})({value})"


def literal(value: float | bool | np.generic, dtype: DType) -> str:
    """``value`` (already of ``dtype``) as a C expression of its register type. Floats are
    written exactly: hex literals, and bit patterns for infinities and NaN."""
    check(dtype)
    if dtype == DType.BOOL:
        return "true" if bool(value) else "false"
    if dtype.is_float:
        wide = dtype == DType.FLOAT64
        number = float(value) if wide else float(np.float32(value))
        if math.isnan(number) or math.isinf(number):
            if wide:
                bits = np.array(number, np.float64).view(np.uint64)
                return f"__longlong_as_double(0x{int(bits):016x}LL)"
            bits = np.array(number, np.float32).view(np.uint32)
            return f"__uint_as_float(0x{int(bits):08x}u)"
        text = number.hex()  # exact; C++17 reads hex floating literals
        return f"({text})" if wide else f"({text}f)"
    number = int(value)
    ctype = register_type(dtype)
    if dtype in SIGNED_INTS and number == -(1 << (8 * dtype.itemsize - 1)):
        # the most negative value has no literal: -2147483648 is -(2147483648), a wider type
        return f"(({ctype})({number + 1}LL - 1))"
    suffix = "ULL" if dtype in UNSIGNED_INTS else "LL"
    return f"(({ctype}){number}{suffix})"
