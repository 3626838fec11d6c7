"""IR element types in generated CUDA C++: how each is stored, held in registers, loaded,
stored, converted and written as a literal.

Header-free: fp16 and bf16 are stored as ``unsigned short`` bit patterns and held as
``float`` (always a value the narrow type can represent); the conversions are in
``PRELUDE``, written with inline PTX, so no ``<cuda_fp16.h>`` is needed. bool is stored as
one byte, as numpy stores it. The four float8 types of ONNX are stored as their one-byte code
and held as ``float`` too; their conversions are ``FLOAT8_PRELUDE``'s bit arithmetic, which a
kernel holding float8 values includes. Only kernels that opt in (``check(dtype, float8=True)``)
take float8: Cast, QuantizeLinear, DequantizeLinear and the copies that move bytes.
The sub-byte integers int4, uint4, int2 and uint2 are stored one per byte in its low bits (as
ml_dtypes stores them, so as the planner uploads them) and held as ``int``; their conversions
are ``SUB_BYTE_PRELUDE``'s. Kernels opt in with ``check(dtype, sub_byte=True)``: Cast,
QuantizeLinear, DequantizeLinear and the strided copies.
"""
from __future__ import annotations

import math

import ml_dtypes
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

# float <-> float8 by integer arithmetic on the bits, the same on every arch (PTX converts
# e4m3/e5m2 only from sm_89, and the fnuz types not at all), as ml_dtypes converts. A type has
# M mantissa bits, exponent bias B and largest finite code LARGEST (sign aside).
# float -> float8: round to nearest, ties to even. A finite value rounding past LARGEST becomes
# OVERFLOW (e5m2's infinity; NaN in the types without one), as does an infinity; NaN becomes
# NAN_CODE. The fnuz types have no -0 (their 0x80 is the NaN): a negative value rounding to zero is +0.
# float8 -> float is exact; NaN is the quiet NaN of the code's sign (the fnuz NaN is negative).
FLOAT8_PRELUDE = r"""
__device__ __forceinline__ unsigned char rtx_f2f8(float f, int m, int bias, unsigned largest,
                                                  unsigned overflow, unsigned nan_code) {
  const unsigned u = __float_as_uint(f), a = u & 0x7fffffffu, sign = (u >> 24) & 0x80u;
  const bool neg_zero = nan_code != 0x80u;
  if (a > 0x7f800000u) return (unsigned char)(sign | nan_code);
  const int e = (int)(a >> 23) - 127 + bias;  // the float8 exponent field, where the value is normal
  const int s = e > 0 ? 23 - m : 24 - m - e;  // the bits rounded off (of the mantissa with its leading 1)
  if (s > 24) return (unsigned char)(neg_zero ? sign : 0u);  // below half the smallest subnormal
  const unsigned bits = e > 0 ? a - ((unsigned)(127 - bias) << 23) : (a & 0x7fffffu) | 0x800000u;
  const unsigned code = (bits + (1u << (s - 1)) - 1u + ((bits >> s) & 1u)) >> s;  // a carry bumps the exponent
  if (code > largest) return (unsigned char)(sign | overflow);
  return (unsigned char)(code != 0u || neg_zero ? sign | code : 0u);
}
__device__ __forceinline__ float rtx_f82f(unsigned c, int m, int bias, unsigned largest,
                                          unsigned overflow, unsigned nan_code) {
  const unsigned sign = (c & 0x80u) << 24, em = c & 0x7fu;
  if (em > largest || (nan_code == 0x80u && c == 0x80u))
    return __uint_as_float(sign | (overflow != nan_code && em == overflow ? 0x7f800000u : 0x7fc00000u));
  const unsigned e = em >> m, frac = em & ((1u << m) - 1u);
  const float v = e ? __uint_as_float(((e + 127u - bias) << 23) | (frac << (23 - m)))
                    : (float)frac * __uint_as_float((unsigned)(128 - bias - m) << 23);  // frac * 2^(1-B-M)
  return sign ? -v : v;
}
__device__ __forceinline__ float rtx_sat(float x, float limit) {  // NaN keeps its bits, sign too
  const unsigned a = __float_as_uint(x) & 0x7fffffffu;  // integer compares: no float op touches a NaN
  return a > 0x7f800000u || a <= __float_as_uint(limit) ? x : copysignf(limit, x);
}
"""

# int4, uint4, int2, uint2: one per byte, in its low bits; ml_dtypes ignores the bits above when it
# reads and writes them 0, and so do load and store. rtx_intn keeps an integer's low bits,
# sign-extended for the signed types (ONNX's Cast wraps integers so); MASK and SIGN are the type's
# bits and its sign bit (0 for the unsigned types). A float converts as ml_dtypes' CastToInt has
# it: within [-2**31, 2**31 - 1] truncated toward zero, else (NaN and infinities too) 0. (float32
# cannot hold 2**31 - 1: ml_dtypes' bound is then 2**31, which converts to -2**31 on x86-64,
# whose low bits are 0 as well.)
SUB_BYTE_PRELUDE = r"""
__device__ __forceinline__ int rtx_intn(unsigned v, unsigned mask, unsigned sign) {
  return (int)((v & mask) ^ sign) - (int)sign;
}
__device__ __forceinline__ int rtx_f2intn(float f, unsigned mask, unsigned sign) {
  return rtx_intn(f >= -2147483648.0f && f < 2147483648.0f ? (unsigned)(int)f : 0u, mask, sign);
}
__device__ __forceinline__ int rtx_f2intn(double f, unsigned mask, unsigned sign) {
  return rtx_intn(f >= -2147483648.0 && f <= 2147483647.0 ? (unsigned)(int)f : 0u, mask, sign);
}
"""

# Types a generated kernel computes on (not strings, complex, float8 or sub-byte types).
KERNEL_DTYPES = frozenset({
    DType.BOOL, DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
    DType.UINT32, DType.UINT64, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64,
})
NARROW_FLOATS = frozenset({DType.FLOAT16, DType.BFLOAT16})
# The float8 types: M, B, LARGEST, OVERFLOW and NAN_CODE of FLOAT8_PRELUDE.
_FLOAT8 = {
    DType.FLOAT8E4M3FN: (3, 7, 0x7E, 0x7F, 0x7F),
    DType.FLOAT8E4M3FNUZ: (3, 8, 0x7F, 0x80, 0x80),
    DType.FLOAT8E5M2: (2, 15, 0x7B, 0x7C, 0x7E),
    DType.FLOAT8E5M2FNUZ: (2, 16, 0x7F, 0x80, 0x80),
}
FLOAT8 = frozenset(_FLOAT8)
# The sub-byte integer types: MASK and SIGN of SUB_BYTE_PRELUDE.
_SUB_BYTE = {DType.INT4: (0xF, 0x8), DType.UINT4: (0xF, 0x0), DType.INT2: (0x3, 0x2), DType.UINT2: (0x3, 0x0)}
SUB_BYTE_INTS = frozenset(_SUB_BYTE)
SIGNED_INTS = frozenset({DType.INT8, DType.INT16, DType.INT32, DType.INT64})
UNSIGNED_INTS = frozenset({DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64})

_REGISTER = {
    DType.BOOL: "bool", DType.INT8: "signed char", DType.INT16: "short", DType.INT32: "int",
    DType.INT64: "long long", DType.UINT8: "unsigned char", DType.UINT16: "unsigned short",
    DType.UINT32: "unsigned int", DType.UINT64: "unsigned long long", DType.FLOAT16: "float",
    DType.BFLOAT16: "float", DType.FLOAT32: "float", DType.FLOAT64: "double",
}
_REGISTER.update(dict.fromkeys(FLOAT8, "float"))
_REGISTER.update(dict.fromkeys(SUB_BYTE_INTS, "int"))
_STORAGE = {**_REGISTER, DType.BOOL: "unsigned char", DType.FLOAT16: "unsigned short",
            DType.BFLOAT16: "unsigned short", **dict.fromkeys(FLOAT8 | SUB_BYTE_INTS, "unsigned char")}


def check(dtype: DType, *, float8: bool = False, sub_byte: bool = False) -> DType:
    """``dtype``, where a kernel computing on it (or with ``float8`` / ``sub_byte``, also
    converting or moving float8 / sub-byte integers) is generated; else a CodegenError."""
    if dtype not in KERNEL_DTYPES and not (float8 and dtype in FLOAT8) and not (sub_byte and dtype in SUB_BYTE_INTS):
        from . import CodegenError

        raise CodegenError(f"generated kernels do not handle {dtype.short} tensors")
    return dtype


def _known(dtype: DType) -> DType:
    """``dtype``, where any generated kernel holds it."""
    return check(dtype, float8=True, sub_byte=True)


def register_type(dtype: DType) -> str:
    """The C type a value is held in while computing (float for fp16, bf16 and float8; int
    for the sub-byte integers)."""
    return _REGISTER[_known(dtype)]


def storage_type(dtype: DType) -> str:
    """The C type of one element in memory."""
    return _STORAGE[_known(dtype)]


def _float8_call(fn: str, dtype: DType, value: str) -> str:
    """A call of FLOAT8_PRELUDE's ``fn`` ("f2f8" or "f82f") for ``dtype``'s parameters."""
    m, bias, largest, overflow, nan = _FLOAT8[dtype]
    return f"rtx_{fn}({value}, {m}, {bias}, 0x{largest:02x}u, 0x{overflow:02x}u, 0x{nan:02x}u)"


def _sub_byte_call(fn: str, dtype: DType, value: str) -> str:
    """A call of SUB_BYTE_PRELUDE's ``fn`` ("intn" or "f2intn") for ``dtype``'s parameters."""
    mask, sign = _SUB_BYTE[dtype]
    return f"rtx_{fn}({value}, 0x{mask:x}u, 0x{sign:x}u)"


def _float8_limit(dtype: DType) -> float:
    """The largest finite value of float8 ``dtype``."""
    return float(ml_dtypes.finfo(dtype.numpy).max)


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
    if dtype in FLOAT8:
        return _float8_call("f82f", dtype, element)
    if dtype in SUB_BYTE_INTS:
        return _sub_byte_call("intn", dtype, element)
    return element


def store(value: str, dtype: DType) -> str:
    """The storage element for a register value of ``dtype``."""
    if dtype == DType.FLOAT16:
        return f"rtx_f2h({value})"
    if dtype == DType.BFLOAT16:
        return f"rtx_f2bf({value})"
    if dtype == DType.BOOL:
        return f"(unsigned char)({value})"
    if dtype in FLOAT8:
        return _float8_call("f2f8", dtype, value)
    if dtype in SUB_BYTE_INTS:  # a value in range: its low bits
        return f"(unsigned char)(({value}) & 0x{_SUB_BYTE[dtype][0]:x})"
    return value


def round_to(value: str, dtype: DType) -> str:
    """A float register value rounded to what ``dtype`` can hold (identity above fp16/bf16;
    float8: without saturation, past the largest value is inf or NaN)."""
    if dtype == DType.FLOAT16:
        return f"rtx_round_h({value})"
    if dtype == DType.BFLOAT16:
        return f"rtx_round_bf({value})"
    if dtype in FLOAT8:
        return load(store(value, dtype), dtype)
    return value


def to_float8(value: str, src: DType, dst: DType, saturate: bool) -> str:
    """A register value of ``src`` as the float that float8 ``dst`` rounds, not yet rounded
    (``round_to`` or ``store`` does that): with ``saturate`` (ONNX's Cast attribute) held
    within dst's finite range, so that finite values and infinities saturate, NaN stays NaN.
    Doubles and integers go through float first, as ml_dtypes converts them."""
    value = value if src == DType.FLOAT32 or src in FLOAT8 else f"(float)({value})"
    return f"rtx_sat({value}, {literal(_float8_limit(dst), DType.FLOAT32)})" if saturate else value


def convert(value: str, src: DType, dst: DType) -> str:
    """A register value of ``src`` as a register value of ``dst``, as numpy's astype does
    (and so the reference backend's Cast).

    float -> int truncates toward zero; floats go to the narrow integer types through int32
    and to uint32/uint64 through int64, as numpy does on x86-64, so -3.0 becomes 253 as
    uint8. Out-of-range values and NaN are undefined in ONNX; the GPU saturates them.
    double -> fp16 rounds once (PTX cvt), double -> bf16 through float (as ml_dtypes does).
    A float8 value converts as the float it is; to float8 saturates, as Cast does by default.
    To a sub-byte integer: the low bits, of a float's truncation to int32 (SUB_BYTE_PRELUDE).
    """
    _known(src), _known(dst)
    if src == dst:
        return value
    if dst in FLOAT8:
        return round_to(to_float8(value, src, dst, saturate=True), dst)
    if src in FLOAT8:
        return convert(value, DType.FLOAT32, dst)
    if dst in SUB_BYTE_INTS:
        if src.is_float:
            return _sub_byte_call("f2intn", dst, value)
        return _sub_byte_call("intn", dst, f"(unsigned)({value})")
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
    _known(dtype)
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
