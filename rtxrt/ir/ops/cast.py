"""Type conversions: Cast, CastLike and BitCast."""
from __future__ import annotations

from ..dtypes import DType
from ..graph import TensorType
from .facts import PLAIN, POINTWISE
from .registry import InferenceContext, register

# Bits per element where they differ from the numpy item size (sub-byte types take a byte there).
_SUB_BYTE_BITS = {
    DType.UINT4: 4, DType.INT4: 4, DType.FLOAT4E2M1: 4, DType.UINT2: 2, DType.INT2: 2,
}
_COMPLEX = {DType.COMPLEX64, DType.COMPLEX128}


def _element_bits(dtype: DType) -> int:
    return _SUB_BYTE_BITS.get(dtype, dtype.itemsize * 8)


def target_dtype(ctx: InferenceContext, code: int | None) -> DType:
    """The element type named by a ``to``-style attribute; an error when rtxrt lacks it."""
    if code is None:
        raise ctx.fail("attribute 'to' is required")
    try:
        return DType(code)
    except ValueError:
        raise ctx.fail(f"cannot convert to element type code {code}: not supported") from None


def _infer_cast(ctx: InferenceContext) -> list[TensorType | None]:
    source, to = ctx.type(0), target_dtype(ctx, ctx.attr("to"))
    if source.dtype in _COMPLEX or to in _COMPLEX:
        raise ctx.fail(f"Cast does not convert complex numbers ({source.dtype.short} to {to.short})")
    return [TensorType(to, source.shape)]


def _infer_cast_like(ctx: InferenceContext) -> list[TensorType | None]:
    source, like = ctx.type(0), ctx.type(1)
    if source.dtype in _COMPLEX or like.dtype in _COMPLEX:
        raise ctx.fail("CastLike does not convert complex numbers")
    return [TensorType(like.dtype, source.shape)]


def _infer_bit_cast(ctx: InferenceContext) -> list[TensorType | None]:
    source, to = ctx.type(0), target_dtype(ctx, ctx.attr("to"))
    if DType.STRING in (source.dtype, to):
        raise ctx.fail("BitCast does not take strings")
    if _element_bits(source.dtype) != _element_bits(to):
        raise ctx.fail(
            f"BitCast needs types of equal width: {source.dtype.short} has {_element_bits(source.dtype)} bits, "
            f"{to.short} has {_element_bits(to)}"
        )
    return [TensorType(to, source.shape)]


register("Cast", _infer_cast, facts=POINTWISE)
register("CastLike", _infer_cast_like, inputs=2, facts=PLAIN)
register("BitCast", _infer_bit_cast, facts=PLAIN)
