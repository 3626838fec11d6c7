"""Linear algebra: MatMul, Gemm, Einsum, Det."""
from __future__ import annotations

from ..graph import Dim, Shape, TensorType
from .infer_helpers import broadcast_shapes
from .facts import GEMM, WIDE
from .registry import VARIADIC, InferenceContext, register


def _same_dtype(ctx: InferenceContext, *indices: int) -> TensorType:
    types = [ctx.type(i) for i in indices if ctx.has_input(i)]
    if any(t.dtype != types[0].dtype for t in types):
        raise ctx.fail(f"inputs must share one element type, got {', '.join(str(t) for t in types)}")
    return types[0]


def _conflict(a: Dim, b: Dim) -> bool:
    return isinstance(a, int) and isinstance(b, int) and a != b


def matmul_shape(ctx: InferenceContext, a: Shape | None, b: Shape | None) -> Shape | None:
    """numpy.matmul's rule: 1-D operands get a dim prepended (A) or appended (B) and removed
    again; the batch dims broadcast."""
    if a is None or b is None:
        return None
    if not a or not b:
        raise ctx.fail("operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if _conflict(a2[-1], b2[-2]):
        raise ctx.fail(f"inner dims differ: {tuple(a)} @ {tuple(b)}")
    try:
        batch = broadcast_shapes([a2[:-2], b2[:-2]], "batch dims")
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    rows = (a2[-2],) if len(a) > 1 else ()
    cols = (b2[-1],) if len(b) > 1 else ()
    return (*batch, *rows, *cols)


def _infer_matmul(ctx: InferenceContext) -> list[TensorType | None]:
    dtype = _same_dtype(ctx, 0, 1).dtype
    return [TensorType(dtype, matmul_shape(ctx, ctx.type(0).shape, ctx.type(1).shape))]


def _infer_gemm(ctx: InferenceContext) -> list[TensorType | None]:
    dtype = _same_dtype(ctx, 0, 1, 2).dtype
    a, b = ctx.type(0).shape, ctx.type(1).shape
    for name, shape in (("A", a), ("B", b)):
        if shape is not None and len(shape) != 2:
            raise ctx.fail(f"{name} must be 2-D, got shape {tuple(shape)}")
    m, k_a = (None, None) if a is None else (a[::-1] if ctx.attr("transA", 0) else a)
    k_b, n = (None, None) if b is None else (b[::-1] if ctx.attr("transB", 0) else b)
    if _conflict(k_a, k_b):
        raise ctx.fail(f"inner dims differ: A gives K={k_a}, B gives K={k_b}")
    if ctx.has_input(2):
        c = ctx.type(2).shape
        # C broadcasts to (M, N) in one direction only
        if c is not None and (len(c) > 2 or any(d != 1 and _conflict(d, o) for d, o in zip(c[::-1], (n, m)))):
            raise ctx.fail(f"C of shape {tuple(c)} does not broadcast to ({m}, {n})")
    return [TensorType(dtype, (m, n))]


def _label_size(ctx: InferenceContext, label: str, a: Dim, b: Dim) -> Dim:
    """Size of a label seen with sizes ``a`` and ``b``; 1 broadcasts, as in numpy.einsum."""
    if a == 1 or b == 1:
        return b if a == 1 else a
    if _conflict(a, b):
        raise ctx.fail(f"label {label!r} has sizes {a} and {b}")
    for d in (a, b):  # the most precise of the two: a size, else a symbol, else unknown
        if isinstance(d, int):
            return d
    return a if a is not None else b


def einsum_shape(ctx: InferenceContext, equation: str, shapes: list[Shape | None]) -> Shape | None:
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ctx.fail(f"equation {equation!r} has {len(terms)} operand terms for {len(shapes)} inputs")
    if any(s is None for s in shapes):
        return None
    sizes: dict[str, Dim] = {}
    ellipses: list[Shape] = []
    for term, shape in zip(terms, shapes):
        labels = term.replace("...", ".")  # "." stands for the ellipsis dims
        extra = len(shape) - len(labels) + 1
        if ("." in labels and extra < 0) or ("." not in labels and len(labels) != len(shape)):
            raise ctx.fail(f"term {term!r} does not fit an operand of rank {len(shape)}")
        at = 0
        for label in labels:
            if label == ".":
                ellipses.append(tuple(shape[at:at + extra]))
                at += extra
                continue
            sizes[label] = _label_size(ctx, label, sizes.get(label, 1), shape[at])
            at += 1
    try:
        ellipsis = broadcast_shapes(ellipses, "ellipsis dims") if ellipses else ()
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    if not arrow:  # implicit output: labels used once, sorted, after the ellipsis dims
        once = sorted(label for label in sizes if lhs.count(label) == 1)
        rhs = ("..." if ellipses else "") + "".join(once)
    out: list[Dim] = []
    for label in rhs.replace("...", "."):
        if label == ".":
            out.extend(ellipsis)
        elif label in sizes:
            out.append(sizes[label])
        else:
            raise ctx.fail(f"output label {label!r} appears in no input term")
    return tuple(out)


def _infer_einsum(ctx: InferenceContext) -> list[TensorType | None]:
    count = len(ctx.node.inputs)
    dtype = _same_dtype(ctx, *range(count)).dtype
    equation = ctx.attr("equation")
    if not isinstance(equation, str):
        raise ctx.fail("attribute 'equation' is required")
    return [TensorType(dtype, einsum_shape(ctx, equation, [ctx.type(i).shape for i in range(count)]))]


def _infer_det(ctx: InferenceContext) -> list[TensorType | None]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if len(t.shape) < 2 or _conflict(t.shape[-1], t.shape[-2]):
        raise ctx.fail(f"input must be [..., M, M], got shape {tuple(t.shape)}")
    return [TensorType(t.dtype, t.shape[:-2])]


register("MatMul", _infer_matmul, inputs=2, facts=GEMM)
register("Gemm", _infer_gemm, inputs=(2, 3), facts=GEMM)
register("Einsum", _infer_einsum, inputs=(1, VARIADIC), facts=GEMM.but(tensor_core=False))
register("Det", _infer_det, facts=WIDE)
