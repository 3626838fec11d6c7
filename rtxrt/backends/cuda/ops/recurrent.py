"""RNN, GRU and LSTM on the GPU (every ONNX opset, 7 to 22): one cuBLAS GEMM for the input
projections of all steps and directions, then an init kernel and one launch of a fused cell
kernel per time step (two for GRU without linear_before_reset), all steps of one NodeProgram
(so of the engine's CUDA graph). The kernels are recurrent_source.py's.

W, R, B and P must be known when the plan is made: they are packed once per model as the
program's constants ``W`` ([directions * G * H, I] in X's type, for the GEMM), ``R`` (float32,
k-major for the cell kernels), ``B`` (float32, zeros where the node has none) and ``P``.

Scratch: ``xw`` (float32 [rows, directions, G * H], the GEMM's result), ``h`` (two halves of
[directions, batch, H]: the state before and after a step, swapped by pointer offsets), ``c``
(LSTM's cell state), and GRU's ``z`` / ``rh`` between its two launches.
"""
from __future__ import annotations

import numpy as np

from ....ir.dtypes import DType
from ..plan.forms import TensorForm, numpy_dtype
from ..plan.program import BufferRole, Gemm, Launch, NodeProgram, Ref
from .context import LowerContext, Unsupported
from .lowering import LOWERINGS
from .matmul import cublas_compute
from .recurrent_source import (
    DIRECTIONS,
    GATES,
    STORED,
    RecurrentKernel,
    RecurrentSpec,
    bind_activations,
    cell_kernels,
    init_kernel,
)

_F32 = 4  # bytes of a float32 element of the scratch buffers
# Node input positions: X, W, R, B, sequence_lens, initial_h (then LSTM's initial_c, P).
X, W, R, B, LENS, INITIAL_H, INITIAL_C, P = range(8)


@LOWERINGS.register("RNN", "GRU", "LSTM")
def lower_recurrent(ctx: LowerContext) -> list[NodeProgram]:
    """The one program of an RNN, GRU or LSTM node (cuBLAS, then the cell kernels)."""
    spec = recurrent_spec(ctx)
    consts = _constants(ctx, spec)
    return [_program(ctx, spec, consts)]


def recurrent_spec(ctx: LowerContext) -> RecurrentSpec:
    """The node's attributes and the forms of its inputs and outputs, checked."""
    node, op = ctx.node, ctx.node.op_type
    ctx.require_logical()
    x = ctx.input(X)
    if x.dtype not in STORED or len(x.shape) != 3:
        raise Unsupported(f"{node.label}: X must be a 3-D float32, float16 or bfloat16 tensor, not {x.describe()}")
    direction = node.attr("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in DIRECTIONS:
        raise Unsupported(f"{node.label}: unknown direction {direction!r}")
    layout = int(node.attr("layout", 0))
    if layout not in (0, 1):
        raise Unsupported(f"{node.label}: layout must be 0 or 1, got {layout}")
    seq, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    r = ctx.const(R, "R (the recurrence weights)")
    dirs, gates = DIRECTIONS[direction], GATES[op]
    if r.ndim != 3 or r.shape[0] != dirs or r.shape[1] != gates * r.shape[2]:
        raise Unsupported(f"{node.label}: R of shape {r.shape} does not fit {direction} {op}")
    try:
        activations = bind_activations(op, node.attr("activations"), node.attr("activation_alpha") or [],
                                       node.attr("activation_beta") or [], dirs)
    except Unsupported as exc:
        raise Unsupported(f"{node.label}: {exc}") from None
    clip = node.attr("clip")
    return RecurrentSpec(
        op, int(r.shape[2]), direction, bool(layout), seq, batch, activations,
        clip=None if clip is None else float(clip),
        input_forget=op == "LSTM" and bool(node.attr("input_forget", 0)),
        linear_before_reset=op == "GRU" and bool(node.attr("linear_before_reset", 0)),
        peepholes=op == "LSTM" and ctx.has(P),
        lens=ctx.input(LENS).dtype if ctx.has(LENS) else None,
        initial_h=ctx.input(INITIAL_H).dtype if ctx.has(INITIAL_H) else None,
        initial_c=ctx.input(INITIAL_C).dtype if op == "LSTM" and ctx.has(INITIAL_C) else None,
        y=_output_dtype(ctx, 0), y_h=_output_dtype(ctx, 1), y_c=_output_dtype(ctx, 2) if op == "LSTM" else None)


def _output_dtype(ctx: LowerContext, i: int) -> DType | None:
    node = ctx.node
    if i >= len(node.outputs) or not node.outputs[i]:
        return None
    dtype = ctx.out_dtype(i)
    if dtype not in STORED:
        raise Unsupported(f"{node.label}: output {i} must be float32, float16 or bfloat16, not {dtype.short}")
    return dtype


def _constants(ctx: LowerContext, spec: RecurrentSpec) -> dict[str, np.ndarray]:
    """The packed weights: W for the GEMM in X's type, R k-major, B and P in float32."""
    node = ctx.node
    x = ctx.input(X)
    w = ctx.const(W, "W (the input weights)")
    dirs, gh, hidden = spec.directions, spec.gates * spec.hidden, spec.hidden
    if w.shape != (dirs, gh, x.shape[2]):
        raise Unsupported(f"{node.label}: W of shape {w.shape} does not fit X {x.describe()} and H={hidden}")
    if x.shape[2] == 0:
        raise Unsupported(f"{node.label}: X has no input features")
    dtype = numpy_dtype(x.dtype)
    if not ctx.model_constant(f"W exact in {dtype}", lambda: np.array(_exact(w, dtype))):
        # the GEMM would round the weights: the builder presents X in float32 instead
        raise Unsupported(f"{node.label}: W is not exact in {x.dtype.short}, X's type here")
    r = ctx.const(R)
    b = ctx.const(B, "B (the biases)") if ctx.has(B) else None
    if b is not None and b.shape != (dirs, 2 * gh):
        raise Unsupported(f"{node.label}: B of shape {b.shape} does not fit {dirs} x {2 * gh}")
    consts = {
        "W": ctx.model_constant(f"W {dtype}", lambda: np.ascontiguousarray(w.reshape(dirs * gh, -1).astype(dtype))),
        "R": ctx.model_constant("R", lambda: np.ascontiguousarray(
            r.astype(np.float32).reshape(dirs, spec.gates, hidden, hidden).transpose(0, 1, 3, 2))),
        "B": ctx.model_constant("B", lambda: _bias(b, dirs, gh)),
    }
    if spec.peepholes:
        p = ctx.const(P, "P (the peepholes)")
        if p.shape != (dirs, 3 * hidden):
            raise Unsupported(f"{node.label}: P of shape {p.shape} does not fit H={hidden}")
        consts["P"] = ctx.model_constant("P", lambda: np.ascontiguousarray(p.astype(np.float32)))
    return consts


def _bias(b: np.ndarray | None, dirs: int, gh: int) -> np.ndarray:
    """W's biases then R's, per direction, in float32 (zeros where the node has none)."""
    return np.zeros((dirs, 2 * gh), np.float32) if b is None else np.ascontiguousarray(b.astype(np.float32))


def _exact(w: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value of ``w`` survives a round trip through ``dtype``."""
    if w.dtype == dtype:
        return True
    with np.errstate(over="ignore"):
        back = w.astype(dtype).astype(np.float64)
    return bool(np.array_equal(back, w.astype(np.float64), equal_nan=True))


def _program(ctx: LowerContext, spec: RecurrentSpec, consts: dict[str, np.ndarray]) -> NodeProgram:
    """The GEMM, the init kernel, then every step's launches (none for an empty batch)."""
    x = ctx.input(X)
    dirs, gh = spec.directions, spec.gates * spec.hidden
    rows, steps = int(spec.seq) * int(spec.batch), int(spec.seq)  # at the planned shape (plain ints)
    state = int(spec.threads) * _F32
    scratch = {"xw": max(rows * dirs * gh * _F32, _F32), "h": max(2 * state, _F32)}
    if spec.op == "LSTM":
        scratch["c"] = max(state, _F32)
    if spec.two_launches:
        scratch["z"] = scratch["rh"] = max(state, _F32)
    init, cells = init_kernel(spec), cell_kernels(spec)
    kernels = {k.name: k.source for k in (init, *cells)}
    program = NodeProgram([], _output_forms(ctx, spec), kernels, scratch, consts, label=f"{spec.op.lower()} cublas")
    if not state:
        return program
    if rows:
        program.steps.append(Gemm(Ref.input(X), Ref.const("W"), Ref.scratch("xw"), rows, dirs * gh, int(x.shape[2]),
                                  x.dtype, DType.FLOAT32, cublas_compute(ctx.node, x.dtype), trans_b=True,
                                  lda=int(x.shape[2]), ldb=int(x.shape[2]), ldc=dirs * gh))
    program.steps.append(_launch(init, _refs(init, state, 0)))
    for step in range(steps):
        program.steps += [_launch(k, _refs(k, state, step), step) for k in cells]
    return program


def _refs(kernel: RecurrentKernel, state_bytes: int, step: int) -> tuple[Ref, ...]:
    """Each named parameter's buffer; the two halves of ``h`` take turns being the state
    before and after a step."""
    before, after = (step % 2) * state_bytes, ((step + 1) % 2) * state_bytes
    named = {
        "xw": Ref.scratch("xw"), "rt": Ref.const("R"), "bias": Ref.const("B"), "peep": Ref.const("P"),
        "lens": Ref.input(LENS), "h0": Ref.input(INITIAL_H), "c0": Ref.input(INITIAL_C),
        "h_state": Ref.scratch("h"), "h_in": Ref(BufferRole.SCRATCH, "h", before),
        "h_out": Ref(BufferRole.SCRATCH, "h", after), "c_state": Ref.scratch("c"),
        "z": Ref.scratch("z"), "rh": Ref.scratch("rh"), "y": Ref.output(0), "y_h": Ref.output(1), "y_c": Ref.output(2),
    }
    return tuple(named[p] for p in kernel.params)


def _launch(kernel: RecurrentKernel, args: tuple[Ref, ...], step: int | None = None) -> Launch:
    return Launch(kernel.name, (kernel.grid(), 1, 1), (int(kernel.kernel.launch.block), 1, 1), args, kernel.dims(step))


def _output_forms(ctx: LowerContext, spec: RecurrentSpec) -> list[TensorForm | None]:
    dtypes = (spec.y, spec.y_h, spec.y_c)
    return [TensorForm(dtypes[i], ctx.outputs[i].shape) if name and dtypes[i] is not None else None
            for i, name in enumerate(ctx.node.outputs)]
