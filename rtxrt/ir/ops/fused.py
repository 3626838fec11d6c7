"""Fused convolution and matrix product with an epilogue (domain "rtxrt").

rtxrt::FusedConv(X, W, [B], [Z]): a Conv (same attributes, N-D) whose result gets the bias B,
then the activation, with the residual Z (the output's shape) added before or after it.

rtxrt::FusedMatMul(A, B, [bias], [Z]): ``alpha * A @ B'`` (numpy matmul rules, B' is B with
its last two axes swapped when ``trans_b``), plus ``bias`` along the last axis, then the
activation and residual as above.

Shared attributes: ``activation`` (a name of rtxrt.ir.activations.ACTIVATIONS, default
"none"), ``activation_params`` (floats, that table's order), ``residual`` ("none",
"before_activation": y = act(acc + z), "after_activation": y = act(acc) + z).
"""
from __future__ import annotations

from ..activations import RESIDUALS, activation_params
from ..graph import Dim, Shape, TensorType
from .signature import Attribute, LazyAttributes, onnx_signature
from .linalg import matmul_shape
from .facts import GEMM, Layout
from .registry import InferenceContext, get_schema, register

_EPILOGUE = {"activation": Attribute("string", default="none"), "activation_params": Attribute("floats", default=[]),
             "residual": Attribute("string", default="none")}


def _check_epilogue(ctx: InferenceContext, out: TensorType, bias_axis: int) -> None:
    """Validates activation, residual and the types of bias (input 2) and Z (input 3)
    against the output type ``out``; the bias is 1-D along ``bias_axis`` of the output."""
    try:
        activation_params(ctx.attr("activation", "none"), ctx.attr("activation_params", []))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    residual = ctx.attr("residual", "none")
    if residual not in RESIDUALS:
        raise ctx.fail(f"residual must be one of {', '.join(RESIDUALS)}, got {residual!r}")
    if ctx.has_input(3) != (residual != "none"):
        raise ctx.fail(f"residual {residual!r} {'needs' if residual != 'none' else 'takes no'} input Z")
    for i, name in ((2, "bias"), (3, "Z")):
        if ctx.has_input(i) and ctx.type(i).dtype != out.dtype:
            raise ctx.fail(f"{name} is {ctx.type(i).dtype.short} but the result is {out.dtype.short}")
    if ctx.has_input(2):
        bias = ctx.type(2).shape
        channels = out.shape[bias_axis] if out.shape else None
        if bias is not None and (len(bias) != 1 or _conflict(bias[0], channels)):
            raise ctx.fail(f"bias of shape {tuple(bias)} is not 1-D of {channels} values")
    if ctx.has_input(3):
        z = ctx.type(3).shape
        if z is not None and out.shape is not None and (
            len(z) != len(out.shape) or any(_conflict(a, b) for a, b in zip(z, out.shape))
        ):
            raise ctx.fail(f"Z of shape {tuple(z)} differs from the result's {tuple(out.shape)}")


def _conflict(a: Dim, b: Dim) -> bool:
    return isinstance(a, int) and isinstance(b, int) and a != b


def _infer_fused_conv(ctx: InferenceContext) -> list[TensorType | None]:
    out = get_schema("Conv").infer(ctx)[0]  # reads X, W and the Conv attributes only
    assert out is not None
    _check_epilogue(ctx, out, bias_axis=1)
    return [out]


def _transposed(shape: Shape | None) -> Shape | None:
    return None if shape is None else (*shape[:-2], shape[-1], shape[-2])


def _infer_fused_matmul(ctx: InferenceContext) -> list[TensorType | None]:
    a, b = ctx.type(0), ctx.type(1)
    if a.dtype != b.dtype:
        raise ctx.fail(f"A is {a.dtype.short} but B is {b.dtype.short}")
    b_shape = b.shape
    if ctx.attr("trans_b", 0):
        if b_shape is not None and len(b_shape) < 2:
            raise ctx.fail(f"trans_b needs B of rank >= 2, got shape {tuple(b_shape)}")
        b_shape = _transposed(b_shape)
    out = TensorType(a.dtype, matmul_shape(ctx, a.shape, b_shape))
    _check_epilogue(ctx, out, bias_axis=-1)
    return [out]


register("FusedConv", _infer_fused_conv, inputs=(2, 4), domain="rtxrt",
         attributes=LazyAttributes(lambda: {**onnx_signature("Conv", 22).attributes, **_EPILOGUE}),
         facts=GEMM.but(layout=Layout.ANCHOR, fused_from=("Conv",)))
register("FusedMatMul", _infer_fused_matmul, inputs=(2, 4), domain="rtxrt",
         attributes={"alpha": Attribute("float", default=1.0), "trans_b": Attribute("int", default=0), **_EPILOGUE},
         facts=GEMM.but(fused_from=("MatMul", "Gemm")))
