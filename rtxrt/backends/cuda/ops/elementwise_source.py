"""One CUDA kernel for an elementwise ONNX op or an ``rtxrt::Elementwise`` node.

Shapes are concrete at JIT time, so they are baked in: the kernel walks the output's
elements with a grid-stride loop, and each input is read at the offset its broadcast strides
(0 along broadcast dims, computed here) give; adjacent dims that every input walks alike are
merged first, so a same-shape input is read at the loop index itself. In a generic plan the
dims that vary over the profile are kernel arguments (codegen/dynamic.py): they stay in the
iteration space even where they are 1 here, and dims are merged and compared by their
expressions (``same_dim``), so the source is the same at every shape of the profile.

Semantics are ONNX's as the reference backend computes them (rtxrt/backends/reference/ops):
each op computes fp16/bf16 in fp32 and rounds its result once to its own type, so a fused
body gives what the unfused ops give; integers wrap; integer division truncates; float
constants are written exactly. The ops that are an activation of rtxrt/ir/activations.py
print its formula (codegen/activation_c.py), as the fused epilogues do. QuantizeLinear and
DequantizeLinear are simulated arithmetic (quantize_source.py): a lone one reads per-axis and
blocked scales through views that broadcast. float8 values are held as float (ctypes_map.py);
only Cast, QuantizeLinear, DequantizeLinear, IsNaN and IsInf take or make them (as in ONNX),
and a float8 result is rounded (with the saturation Cast and QuantizeLinear ask for) where it
is read or stored. The sub-byte integers (int4, uint4, int2, uint2) are held as int, in range;
only Cast, QuantizeLinear and DequantizeLinear take or make them. Ops, attributes or dtypes outside this raise CodegenError, and the runtime
runs that node with the reference backend.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ....ir.activations import ACTIVATIONS, ONNX_ACTIVATIONS, onnx_activation
from ....ir.dtypes import DType
from ....ir.graph import Graph, Node, TensorType
from ....ir.ops import elementwise_ops
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.activation_c import activation_c
from ..codegen.device_helpers import NAN_MAX_MIN
from ..codegen.dynamic import c_int, dims_text, is_dynamic, same_dim
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    grid_stride_loop,
    index_type,
    loop_kernel,
)
from ..plan.program import BufferRole
from . import quantize_source as Q

_ONNX = ("", "ai.onnx")


def broadcast_shape(shapes: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
    """numpy's broadcast of ``shapes`` (None where they do not broadcast). Along an axis a
    fixed size wins over a dim of the same size, and a dim over a fixed 1: a dim that is 1
    here may be more elsewhere in the profile."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[int] = []
    for axis in range(rank):
        sizes = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        big = [d for d in sizes if is_dynamic(d) or d != 1]
        if not big:
            out.append(1)
            continue
        if any(d != big[0] for d in big[1:]):
            big = [d for d in big if d != 1]  # a dim that is 1 at these shapes, broadcast
            if any(d != big[0] for d in big[1:]):
                return None
        fixed = [d for d in big if not is_dynamic(d)]
        out.append(int(fixed[0]) if fixed else big[0])
    return tuple(out)


def broadcast_strides(shape: Sequence[int], space: Sequence[int]) -> list[int] | None:
    """Element strides of a contiguous ``shape`` over the iteration ``space`` (right-aligned),
    0 along the axes it is broadcast along; None where it does not broadcast. A fixed 1 is
    broadcast; a dim is walked wherever it has the output's size (at its 1s too, where its only
    index is 0), so the strides read the same at every shape of the profile. A walked dim
    strides as the output's dim (equal here; another input's dim of the same size is then the
    same expression, so same-shape operands read at the loop index)."""
    if len(shape) > len(space):
        return None
    padded = (1,) * (len(space) - len(shape)) + tuple(shape)
    strides: list[int] = [0] * len(space)
    step: int = 1
    for d in range(len(space) - 1, -1, -1):
        n = padded[d]
        if not is_dynamic(n) and n == 1:
            continue
        if n == space[d]:
            strides[d] = step
            n = space[d] if is_dynamic(n) else n
        elif n != 1:
            return None
        step = step * n
    return strides

# Device helpers the op expressions use: NaN-propagating min/max (numpy's maximum/minimum),
# numpy's logaddexp(0, x), Python's float and integer modulo, and wrapping integer power.
HELPERS = NAN_MAX_MIN + r"""__device__ __forceinline__ float rtx_softplus(float x) {
  return x == 0.0f ? 0.693147180559945309417f : x < 0.0f ? log1pf(expf(x)) : x > 0.0f ? x + log1pf(expf(-x)) : x;
}
__device__ __forceinline__ double rtx_softplus(double x) {
  return x == 0.0 ? 0.693147180559945309417 : x < 0.0 ? log1p(exp(x)) : x > 0.0 ? x + log1p(exp(-x)) : x;
}
__device__ __forceinline__ float rtx_pymod(float a, float b) {
  float m = fmodf(a, b);
  if (b == 0.0f) return m;
  if (m != 0.0f) { if ((b < 0.0f) != (m < 0.0f)) m += b; } else { m = copysignf(0.0f, b); }
  return m;
}
__device__ __forceinline__ double rtx_pymod(double a, double b) {
  double m = fmod(a, b);
  if (b == 0.0) return m;
  if (m != 0.0) { if ((b < 0.0) != (m < 0.0)) m += b; } else { m = copysign(0.0, b); }
  return m;
}
template <typename T> __device__ __forceinline__ T rtx_imod(T a, T b) {  // signed, Python's sign rule
  if (b == 0 || b == (T)-1) return 0;
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? (T)(r + b) : r;
}
template <typename T> __device__ __forceinline__ T rtx_ifmod(T a, T b) {  // signed, C's sign rule
  return (b == 0 || b == (T)-1) ? (T)0 : (T)(a % b);
}
template <typename T> __device__ __forceinline__ T rtx_idiv(T a, T b) {  // signed, truncating
  return b == 0 ? (T)0 : b == (T)-1 ? (T)(0ull - (unsigned long long)a) : (T)(a / b);
}
template <typename U> __device__ __forceinline__ U rtx_ipow(U base, unsigned long long e) {
  U r = 1;
  while (e) { if (e & 1ull) r = (U)(r * base); base = (U)(base * base); e >>= 1; }
  return r;
}
"""


def elementwise_kernel(node: Node, inputs: Sequence[TensorType | None],
                       output_dtypes: Sequence[DType] | None = None) -> KernelSource:
    """The kernel computing ``node`` (a default-domain elementwise op, or
    rtxrt::Elementwise) on inputs of these static types (None for omitted optional inputs).

    ``inputs`` give the storage types; ``output_dtypes`` the outputs' storage types (default:
    their logical types). Inside, values keep their logical types (a body's own types for its
    inputs), so fp32 logic on fp16 storage computes in fp32."""
    if node.domain == "rtxrt" and node.op_type == "Elementwise":
        body = node.attr("body")
        if not isinstance(body, Graph):
            raise CodegenError(f"{node.label} has no body graph")
    elif node.domain in _ONNX and node.op_type in elementwise_ops():
        body = _one_node_body(node)
    else:
        raise CodegenError(f"{node.label} is not an elementwise op")
    if len(inputs) != len(node.inputs) or len(body.inputs) != sum(1 for n in node.inputs if n):
        raise CodegenError(f"{node.label} has {len(node.inputs)} inputs but {len(inputs)} types were given")
    given = [t for n, t in zip(node.inputs, inputs) if n]
    if any(t is None or not t.is_static for t in given):
        raise CodegenError(f"{node.label}: elementwise kernels need static input shapes, got {given}")
    positions = [i for i, n in enumerate(node.inputs) if n]
    if node.domain in _ONNX and node.op_type in Q.QUANTIZE_OPS:  # per-axis scales read through views
        views = Q.broadcast_views(node, inputs)
        kernel = _Generator(node, body, [views[i] for i in positions], positions, output_dtypes).kernel()
        return Q.with_arg_shapes(kernel, inputs)
    return _Generator(node, body, given, positions, output_dtypes).kernel()


def _one_node_body(node: Node) -> Graph:
    """``node`` alone as a body: its inputs are x0, x1, ... (omitted ones stay omitted)."""
    names = [f"x{i}" if n else "" for i, n in enumerate(node.inputs)]
    outputs = [f"y{i}" for i in range(len(node.outputs))]
    inner = Node(node.op_type, names, outputs, dict(node.attrs), name=node.name)
    return Graph([inner], [n for n in names if n], outputs, name=node.name or node.op_type)


@dataclass(frozen=True)
class _Value:
    var: str  # a C variable (a single token, safe to repeat in an expression)
    dtype: DType  # logical type
    shape: tuple[int, ...]


class _Generator:
    def __init__(self, node: Node, body: Graph, inputs: list[TensorType], positions: list[int],
                 output_dtypes: Sequence[DType] | None):
        self.node, self.body, self.inputs, self.positions = node, body, inputs, positions
        self.output_dtypes = output_dtypes
        self.ops: list[tuple[_Value, str, bool]] = []  # (result, expression, needs rounding)
        self.values: dict[str, _Value] = {}

    def kernel(self) -> KernelSource:
        body = self.body
        for k, (name, t) in enumerate(zip(body.inputs, self.inputs)):
            logical = body.types[name].dtype if body.types.get(name) is not None else t.dtype
            self.values[name] = _Value(f"a{k}", _check(logical), tuple(t.shape))
        for name, array in body.initializers.items():
            array = np.asarray(array)
            if array.size != 1:
                raise CodegenError(f"{self.node.label}: body constant {name!r} has {array.size} elements; "
                                   "only one-element constants are inlined")
            dtype = _check(DType.from_numpy(array.dtype))
            self.values[name] = _Value(C.literal(array.reshape(-1)[0], dtype), dtype, array.shape)
        for inner in body.nodes:
            self._emit(inner)
        missing = [o for o in body.outputs if o not in self.values]
        if missing:
            raise CodegenError(f"{self.node.label}: body outputs {missing} are never computed")
        outputs = [self.values[o] for o in body.outputs]
        if any(v.shape != outputs[0].shape for v in outputs):
            raise CodegenError(f"{self.node.label}: outputs of different shapes {[v.shape for v in outputs]} in one kernel")
        shape = outputs[0].shape
        storage = list(self.output_dtypes) if self.output_dtypes is not None else [v.dtype for v in outputs]
        if len(storage) != len(outputs):
            raise CodegenError(f"{self.node.label}: {len(outputs)} outputs but {len(storage)} output dtypes")
        args = [KernelArg(f"in{k}", BufferRole.IN, p, t.dtype, tuple(t.shape))
                for k, (p, t) in enumerate(zip(self.positions, self.inputs))]
        args += [KernelArg(f"out{j}", BufferRole.OUT, j, _check(d), shape) for j, d in enumerate(storage)]
        return KernelSource.named("rtx_ew_", self._source(shape, args, outputs), LaunchPolicy(math.prod(shape)), args)

    # ---------------------------------------------------------------- ops

    def _emit(self, node: Node) -> None:
        if node.domain not in _ONNX or node.op_type not in elementwise_ops():
            raise CodegenError(f"{self.node.label}: body holds {node.label}, which is not an elementwise op")
        if len(node.outputs) != 1:
            raise CodegenError(f"{self.node.label}: body {node.label} has {len(node.outputs)} outputs")
        operands = []
        for name in node.inputs:
            if name and name not in self.values:
                raise CodegenError(f"{self.node.label}: body {node.label} reads {name!r} before it is defined")
            operands.append(self.values[name] if name else None)
        emitter = _OPS.get(node.op_type)
        if emitter is None:
            raise CodegenError(f"{self.node.label}: no generated kernel for {node.op_type}")
        op = _Op(node, operands, self.node.label)
        expr = emitter(op)
        dtype = _check(op.result)
        narrow = ({v.dtype for v in operands if v is not None} | {dtype}) & (C.FLOAT8 | C.SUB_BYTE_INTS)
        if narrow and node.op_type not in _NARROW_OPS:
            raise op.fail("on " + ", ".join(sorted(t.short for t in narrow)) + " tensors")
        shape = op.shape()
        value = _Value(f"v{len(self.ops)}", dtype, shape)
        # a float8 result is its value before rounding (to round once, where it is stored)
        self.ops.append((value, expr, node.op_type not in _EXACT or dtype in C.FLOAT8))
        self.values[node.outputs[0]] = value

    # ---------------------------------------------------------------- source

    def _source(self, shape: tuple[int, ...], args: list[KernelArg], outputs: list[_Value]) -> str:
        total = math.prod(shape)
        index, suffix = index_type(total)
        dims, strides = _collapse(shape, [self._strides(a.shape, shape) for a in args if a.role is BufferRole.IN])
        coords = [f"c{d}" for d in range(len(dims))]
        read = {n for node in self.body.nodes for n in node.inputs} | set(self.body.outputs)
        loads = []
        for k, (name, arg) in enumerate(zip(self.body.inputs, args)):
            if name not in read:  # an input no op reads is not loaded
                continue
            logical = self.values[name].dtype
            value = C.convert(C.load(f"{arg.name}[{_offset(strides[k], dims, coords, suffix)}]", arg.dtype), arg.dtype,
                              logical)
            loads.append(f"const {C.register_type(logical)} {self.values[name].var} = {value};")
        stores = [f"out{j}[i] = {C.store(_stored(v, a.dtype), a.dtype)};"
                  for j, (v, a) in enumerate(zip(outputs, [a for a in args if a.role is BufferRole.OUT]))]
        params = [f"const {C.storage_type(a.dtype)}* __restrict__ {a.name}" if a.role is BufferRole.IN
                  else f"{C.storage_type(a.dtype)}* __restrict__ {a.name}" for a in args]
        ops = sorted({n.op_type for n in self.body.nodes})
        # A result only stored to storage of its own fp16/bf16 type is rounded by the store.
        read_by_ops = {self.values[n].var for node in self.body.nodes for n in node.inputs if n}
        stored_as: dict[str, set[DType]] = {}
        for v, a in zip(outputs, args[len(self.inputs):]):
            stored_as.setdefault(v.var, set()).add(a.dtype)
        lines = []
        for value, expr, inexact in self.ops:
            if inexact and (value.var in read_by_ops or stored_as.get(value.var, {value.dtype}) != {value.dtype}):
                expr = C.round_to(expr, value.dtype)
            lines.append(f"const {C.register_type(value.dtype)} {value.var} = {expr};")
        body = [*_coordinates(dims, coords, index, suffix, strides), *loads, *lines, *stores]
        dtypes = {a.dtype for a in args} | {v.dtype for v in self.values.values()}
        head = [f"// rtxrt elementwise kernel: {', '.join(ops)} over shape {dims_text(shape)}",
                C.PRELUDE.strip(), *([C.FLOAT8_PRELUDE.strip()] if dtypes & C.FLOAT8 else []),
                *([C.SUB_BYTE_PRELUDE.strip()] if dtypes & C.SUB_BYTE_INTS else []), HELPERS.strip(),
                *([Q.HELPERS.strip()] if Q.QUANTIZE_OPS & set(ops) else [])]
        return loop_kernel(head, params, grid_stride_loop(index, suffix, total), body)

    def _strides(self, shape: tuple[int, ...], space: tuple[int, ...]) -> list[int]:
        """Element strides of a contiguous input of ``shape`` over the iteration ``space``:
        0 along broadcast dims. A one-element input (a Clip bound of shape [1]) is a scalar."""
        strides = broadcast_strides(shape, space)
        if strides is None:
            if not any(is_dynamic(d) for d in shape) and math.prod(shape) == 1:
                return [0] * len(space)
            raise CodegenError(f"{self.node.label}: an input of shape {dims_text(shape)} does not broadcast "
                               f"to the output shape {dims_text(space)}")
        return strides


def _check(dtype: DType) -> DType:
    """``dtype``, where an elementwise kernel holds it: float8 and the sub-byte integers too
    (only the ops of _NARROW_OPS take them)."""
    return C.check(dtype, float8=True, sub_byte=True)


def _stored(value: _Value, storage: DType) -> str:
    """``value`` as a register value of ``storage``; storing to fp16/bf16 rounds by itself."""
    if storage in C.NARROW_FLOATS and value.dtype in (DType.FLOAT32, *C.NARROW_FLOATS):
        return value.var
    return C.convert(value.var, value.dtype, storage)


def _collapse(shape: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims and merge neighbours that every input walks alike, so that offsets
    take as few divisions as possible."""
    keep = [d for d, n in enumerate(shape) if is_dynamic(n) or n != 1]
    dims = [shape[d] for d in keep]
    walks = [[s[d] for d in keep] for s in strides]
    d = len(dims) - 2
    while d >= 0:
        if all(same_dim(w[d], w[d + 1] * dims[d + 1]) for w in walks):
            dims[d] *= dims[d + 1]
            del dims[d + 1]
            for w in walks:
                w[d] = w[d + 1]
                del w[d + 1]
        d -= 1
    return dims, walks


def _contiguous(dims: list[int]) -> list[int]:
    strides, step = [0] * len(dims), 1
    for d in range(len(dims) - 1, -1, -1):
        strides[d], step = step, step * dims[d]
    return strides


def _offset(strides: list[int], dims: list[int], coords: list[str], suffix: str) -> str:
    if len(strides) == len(dims) and all(same_dim(s, c) for s, c in zip(strides, _contiguous(dims))):
        return "i"
    terms = [c if same_dim(s, 1) else f"{c} * {c_int(s, suffix, 'u')}"
             for c, s in zip(coords, strides) if is_dynamic(s) or s]
    return " + ".join(terms) or "0"


def _coordinates(dims: list[int], coords: list[str], index: str, suffix: str, strides: list[list[int]]) -> list[str]:
    """``c0..`` of element ``i``, innermost first, when some input needs them."""
    if all(_offset(s, dims, coords, suffix) in ("i", "0") for s in strides):
        return []
    lines = [f"{index} r = i;"]
    for d in range(len(dims) - 1, 0, -1):
        n = c_int(dims[d], suffix, "u")
        lines.append(f"const {index} {coords[d]} = r % {n}; r /= {n};")
    lines.append(f"const {index} {coords[0]} = r;")
    return lines


# -------------------------------------------------------------------- op expressions

class _Op:
    """What an op's expression is built from: its operands (C variables), its result dtype
    (``result``, set by the emitter when it is not the first operand's) and helpers."""

    def __init__(self, node: Node, operands: list[_Value | None], where: str):
        self.node, self.operands, self.where = node, operands, where
        first = next((v for v in operands if v is not None), None)
        if first is None:
            raise CodegenError(f"{where}: body {node.label} has no inputs")
        self.result = first.dtype

    @property
    def x(self) -> str:
        return self._operand(0).var

    @property
    def dtype(self) -> DType:
        return self._operand(0).dtype

    def _operand(self, i: int) -> _Value:
        v = self.operands[i] if i < len(self.operands) else None
        if v is None:
            raise CodegenError(f"{self.where}: body {self.node.label} lacks input {i}")
        return v

    def var(self, i: int) -> str:
        return self._operand(i).var

    def attr(self, key: str, default=None):
        return self.node.attrs.get(key, default)

    def fail(self, why: str) -> CodegenError:
        return CodegenError(f"{self.where}: no generated kernel for {self.node.op_type} {why}")

    def float_only(self) -> None:
        if not self.dtype.is_float:
            raise self.fail(f"on {self.dtype.short} tensors")

    def same_types(self) -> list[str]:
        values = [v for v in self.operands if v is not None]
        if len({v.dtype for v in values}) != 1:
            raise self.fail("on inputs of different types " + ", ".join(v.dtype.short for v in values))
        return [v.var for v in values]

    def lit(self, value: float) -> str:
        """A constant in the compute type of this op's float operand (float, or double)."""
        return C.literal(value, DType.FLOAT64 if self.dtype == DType.FLOAT64 else DType.FLOAT32)

    def fn(self, name: str) -> str:
        """The libm function for the compute type: expf for float, exp for double."""
        return name if self.dtype == DType.FLOAT64 else name + "f"

    def zero(self) -> str:
        return self.lit(0.0) if self.dtype.is_float else f"({C.register_type(self.dtype)})0"

    def wrap(self, a: str, op: str, b: str) -> str:
        """Integer ``a op b`` wrapping as numpy does (unsigned arithmetic, then truncation)."""
        u = C.unsigned_type(self.dtype)
        return f"({C.register_type(self.dtype)})(({u}){a} {op} ({u}){b})"

    def shape(self) -> tuple[int, ...]:
        # Clip's bounds are scalars; a scale and zero point fit x (checked by their emitter)
        values = self.operands[:1] if self.node.op_type in ("Clip", *Q.QUANTIZE_OPS) else self.operands
        shapes = [v.shape for v in values if v is not None]
        shape = broadcast_shape(shapes)
        if shape is None:
            raise CodegenError(f"{self.where}: body {self.node.label} cannot broadcast shapes {shapes}")
        if self.node.op_type == "PRelu" and shape != self._operand(0).shape:
            raise CodegenError(f"{self.where}: PRelu slope of shape {list(self._operand(1).shape)} does not "
                               f"broadcast to x of shape {list(self._operand(0).shape)}")
        return shape


Emitter = Callable[[_Op], str]
_OPS: dict[str, Emitter] = {}
# Ops whose result is always one of their inputs' values (or an integer), never needing a
# rounding to fp16/bf16.
_EXACT = frozenset({"Abs", "Neg", "Relu", "Max", "Min", "Where", "Cast", "Sign", "Floor",
                    "Ceil", "Round", "ThresholdedRelu"})
# The ops that take or make float8 or sub-byte integer values (ONNX's others take neither;
# IsNaN and IsInf take floats only).
_NARROW_OPS = frozenset({"Cast", "IsNaN", "IsInf", *Q.QUANTIZE_OPS})

_MATH = {  # float-only ops that are one libm call
    "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Floor": "floor", "Ceil": "ceil", "Round": "rint",
    "Erf": "erf", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos",
    "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh",
    "Atanh": "atanh",
}


def _register(*names: str) -> Callable[[Emitter], Emitter]:
    def add(fn: Emitter) -> Emitter:
        for name in names:
            _OPS[name] = fn
        return fn
    return add


def _math(op: _Op) -> str:
    op.float_only()
    return f"{op.fn(_MATH[op.node.op_type])}({op.x})"


for _name in _MATH:
    _OPS[_name] = _math


@_register("Abs")
def _abs(op: _Op) -> str:
    x, t = op.x, op.dtype
    if t.is_float:
        return f"{op.fn('fabs')}({x})"
    if t in C.SIGNED_INTS:
        return f"({x} < 0 ? {op.wrap('0', '-', x)} : {x})"  # abs(INT_MIN) wraps to INT_MIN
    if t in C.UNSIGNED_INTS:
        return x
    raise op.fail(f"on {t.short} tensors")


@_register("Neg")
def _neg(op: _Op) -> str:
    if op.dtype.is_float:
        return f"(-{op.x})"
    if op.dtype in C.SIGNED_INTS:
        return op.wrap("0", "-", op.x)
    raise op.fail(f"on {op.dtype.short} tensors")


@_register("Sign")
def _sign(op: _Op) -> str:
    x, t = op.x, op.dtype
    if t.is_float:  # NaN and zeros are their own sign
        return f"({x} > 0 ? {op.lit(1.0)} : {x} < 0 ? {op.lit(-1.0)} : {x})"
    if t == DType.BOOL:
        raise op.fail("on bool tensors")
    return f"({C.register_type(t)})(({x} > 0) - ({x} < 0))"


@_register("Reciprocal")
def _reciprocal(op: _Op) -> str:
    op.float_only()
    return f"({op.lit(1.0)} / {op.x})"


@_register(*ONNX_ACTIVATIONS, "Gelu")
def _activation(op: _Op) -> str:
    """An op that is a formula of rtxrt.ir.activations, computed in the op's type (Relu on
    integers too)."""
    if op.node.op_type != "Relu":
        op.float_only()
    elif op.dtype == DType.BOOL:
        raise op.fail("on bool tensors")
    try:
        activation, params = onnx_activation(op.node.op_type, op.node.attrs)
    except ValueError:  # Gelu's approximate
        raise op.fail(f"with approximate={op.attr('approximate')!r}") from None
    return activation_c(activation, op.x, op.dtype, params)


@_register("PRelu")
def _prelu(op: _Op) -> str:
    x, slope = op.same_types()
    if op.dtype == DType.BOOL:
        raise op.fail("on bool tensors")
    product = f"{x} * {slope}" if op.dtype.is_float else op.wrap(x, "*", slope)
    return f"({x} < 0 ? {product} : {x})"


@_register("Softplus")
def _softplus(op: _Op) -> str:
    op.float_only()
    return f"rtx_softplus({op.x})"


@_register("Softsign")
def _softsign(op: _Op) -> str:
    op.float_only()
    return f"({op.x} / ({op.lit(1.0)} + {op.fn('fabs')}({op.x})))"


def _elu_part(op: _Op, alpha: float) -> str:
    return f"({op.x} > 0 ? {op.x} : {op.lit(alpha)} * {op.fn('expm1')}({op.x}))"


@_register("Elu")
def _elu(op: _Op) -> str:
    op.float_only()
    return _elu_part(op, op.attr("alpha", 1.0))


@_register("Selu")
def _selu(op: _Op) -> str:
    op.float_only()
    gamma = op.attr("gamma", 1.05070102214813232421875)
    return f"({op.lit(gamma)} * {_elu_part(op, op.attr('alpha', 1.67326319217681884765625))})"


@_register("Celu")
def _celu(op: _Op) -> str:
    op.float_only()
    alpha = op.lit(op.attr("alpha", 1.0))
    zero = op.lit(0.0)
    return f"(rtx_max({op.x}, {zero}) + rtx_min({zero}, {alpha} * {op.fn('expm1')}({op.x} / {alpha})))"


@_register("ThresholdedRelu")
def _thresholded_relu(op: _Op) -> str:
    op.float_only()
    return f"({op.x} > {op.lit(op.attr('alpha', 1.0))} ? {op.x} : {op.lit(0.0)})"


@_register("Shrink")
def _shrink(op: _Op) -> str:
    op.float_only()
    lambd, bias = op.attr("lambd", 0.5), op.attr("bias", 0.0)
    x = op.x
    return (f"({x} < {op.lit(-lambd)} ? {x} + {op.lit(bias)} : "
            f"{x} > {op.lit(lambd)} ? {x} - {op.lit(bias)} : {op.lit(0.0)})")


@_register("Mish")
def _mish(op: _Op) -> str:
    op.float_only()
    return f"({op.x} * {op.fn('tanh')}(rtx_softplus({op.x})))"


@_register("Clip")
def _clip(op: _Op) -> str:
    if op.dtype == DType.BOOL:
        raise op.fail("on bool tensors")
    bounds = [op.operands[i] if i < len(op.operands) else None for i in (1, 2)]
    if any(b is not None and b.dtype != op.dtype for b in bounds):
        raise op.fail("with bounds of another type than the input")
    low, high = (b.var if b is not None else None for b in bounds)
    if len(op.operands) == 1:  # opset < 11: bounds are attributes
        low, high = (None if op.attr(k, None) is None else _attr_bound(op, op.attr(k)) for k in ("min", "max"))
    return activation_c(ACTIVATIONS["clip"], op.x, op.dtype, {"min": low, "max": high})


def _attr_bound(op: _Op, value: float) -> float:
    """A bound given as an attribute (opset < 11, floats only)."""
    if not op.dtype.is_float:
        raise op.fail(f"on {op.dtype.short} tensors with attribute bounds")
    return float(value)


@_register("Not")
def _not(op: _Op) -> str:
    if op.dtype != DType.BOOL:
        raise op.fail(f"on {op.dtype.short} tensors")
    return f"(!{op.x})"


@_register("BitwiseNot")
def _bitwise_not(op: _Op) -> str:
    if not op.dtype.is_integer:
        raise op.fail(f"on {op.dtype.short} tensors")
    return f"({C.register_type(op.dtype)})(~{op.x})"


@_register("IsNaN")
def _isnan(op: _Op) -> str:
    op.float_only()
    op.result = DType.BOOL
    return f"({op.x} != {op.x})"


@_register("IsInf")
def _isinf(op: _Op) -> str:
    op.float_only()
    op.result = DType.BOOL
    inf = C.literal(math.inf, DType.FLOAT64 if op.dtype == DType.FLOAT64 else DType.FLOAT32)
    tests = []
    if op.attr("detect_positive", 1):
        tests.append(f"{op.x} == {inf}")
    if op.attr("detect_negative", 1):
        tests.append(f"{op.x} == -{inf}")
    return f"({' || '.join(tests)})" if tests else "false"


@_register("Cast")
def _cast(op: _Op) -> str:
    to = op.attr("to", None)
    try:
        op.result = _check(DType(int(to)))
    except (TypeError, ValueError):
        raise op.fail(f"to element type {to!r}") from None
    if op.result in C.FLOAT8:  # rounded where it is read or stored
        return C.to_float8(op.x, op.dtype, op.result, bool(op.attr("saturate", 1)))
    return C.convert(op.x, op.dtype, op.result)


@_register("Add", "Sub", "Mul")
def _arithmetic(op: _Op) -> str:
    a, b = op.same_types()
    sign = {"Add": "+", "Sub": "-", "Mul": "*"}[op.node.op_type]
    if op.dtype.is_float:
        return f"({a} {sign} {b})"
    if op.dtype == DType.BOOL:
        raise op.fail("on bool tensors")
    return op.wrap(a, sign, b)


@_register("Div")
def _div(op: _Op) -> str:
    a, b = op.same_types()
    if op.dtype.is_float:
        return f"({a} / {b})"
    if op.dtype in C.SIGNED_INTS:
        return f"rtx_idiv({a}, {b})"
    if op.dtype in C.UNSIGNED_INTS:
        return f"({b} == 0 ? {op.zero()} : ({C.register_type(op.dtype)})({a} / {b}))"
    raise op.fail("on bool tensors")


@_register("Mod")
def _mod(op: _Op) -> str:
    a, b = op.same_types()
    c_rule = bool(op.attr("fmod", 0))
    if op.dtype.is_float:
        return f"{op.fn('fmod')}({a}, {b})" if c_rule else f"rtx_pymod({a}, {b})"
    if op.dtype in C.SIGNED_INTS:
        return f"rtx_ifmod({a}, {b})" if c_rule else f"rtx_imod({a}, {b})"
    if op.dtype in C.UNSIGNED_INTS:
        return f"({b} == 0 ? {op.zero()} : ({C.register_type(op.dtype)})({a} % {b}))"
    raise op.fail("on bool tensors")


def _widened(dtype: DType) -> np.dtype:
    return np.dtype(np.float32) if dtype in C.NARROW_FLOATS else dtype.numpy


@_register("Pow")
def _pow(op: _Op) -> str:
    """numpy's power in numpy's promoted type of the (widened) operands, then the base's
    type: float32 ** int32 is computed in float64, as the reference does."""
    base, exponent = op._operand(0), op._operand(1)
    if DType.BOOL in (base.dtype, exponent.dtype):
        raise op.fail("on bool tensors")
    compute = DType.from_numpy(np.result_type(_widened(base.dtype), _widened(exponent.dtype)))
    a, b = C.convert(base.var, base.dtype, compute), C.convert(exponent.var, exponent.dtype, compute)
    if compute.is_float:
        power = f"{'pow' if compute == DType.FLOAT64 else 'powf'}({a}, {b})"
        if op.result in C.NARROW_FLOATS and compute == DType.FLOAT32:
            return power  # rounded once to the result type, like every op
        return C.convert(power, compute, op.result)
    # integers: exact wrapping power; a negative exponent goes through float64 and truncates
    u = C.unsigned_type(compute)
    power = f"({C.register_type(op.result)})rtx_ipow<{u}>(({u}){base.var}, (unsigned long long){exponent.var})"
    if exponent.dtype in C.SIGNED_INTS:
        through_float = C.convert(f"pow((double){base.var}, (double){exponent.var})", DType.FLOAT64, op.result)
        return f"({exponent.var} < 0 ? {through_float} : {power})"
    return power


@_register("Max", "Min", "Sum", "Mean")
def _variadic(op: _Op) -> str:
    values = op.same_types()
    kind = op.node.op_type
    if op.dtype == DType.BOOL or (kind == "Mean" and not op.dtype.is_float):
        raise op.fail(f"on {op.dtype.short} tensors")
    expr = values[0]
    for v in values[1:]:
        if kind == "Max":
            expr = f"rtx_max({expr}, {v})"
        elif kind == "Min":
            expr = f"rtx_min({expr}, {v})"
        else:
            expr = f"({expr} + {v})" if op.dtype.is_float else op.wrap(expr, "+", v)
    if kind == "Mean":
        expr = f"({expr} / {op.lit(float(len(values)))})"
    return expr


_COMPARE = {"Equal": "==", "Less": "<", "Greater": ">", "LessOrEqual": "<=", "GreaterOrEqual": ">="}
_LOGIC = {"And": "&&", "Or": "||", "Xor": "!="}
_BITWISE = {"BitwiseAnd": "&", "BitwiseOr": "|", "BitwiseXor": "^"}


@_register(*_COMPARE)
def _compare(op: _Op) -> str:
    a, b = op.same_types()
    op.result = DType.BOOL
    return f"({a} {_COMPARE[op.node.op_type]} {b})"


@_register(*_LOGIC)
def _logic(op: _Op) -> str:
    a, b = op.same_types()
    if op.dtype != DType.BOOL:
        raise op.fail(f"on {op.dtype.short} tensors")
    return f"({a} {_LOGIC[op.node.op_type]} {b})"


@_register(*_BITWISE)
def _bitwise(op: _Op) -> str:
    a, b = op.same_types()
    if not op.dtype.is_integer:
        raise op.fail(f"on {op.dtype.short} tensors")
    return f"({C.register_type(op.dtype)})({a} {_BITWISE[op.node.op_type]} {b})"


@_register("BitShift")
def _bitshift(op: _Op) -> str:
    """A shift by a negative amount or by the bit width or more leaves the sign fill, as in
    the reference (0, or -1 for a right shift of a negative signed value)."""
    x, y = op.same_types()
    t = op.dtype
    if not t.is_integer:
        raise op.fail(f"on {t.short} tensors")
    ctype, u, bits = C.register_type(t), C.unsigned_type(t), 8 * t.itemsize
    valid = f"({y} >= 0 && {y} < {bits})" if t in C.SIGNED_INTS else f"({y} < {bits})"
    direction = op.attr("direction", "")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction == "LEFT":
        return f"({valid} ? ({ctype})(({u}){x} << {y}) : ({ctype})0)"
    if direction == "RIGHT":
        fill = f"({x} < 0 ? ({ctype})-1 : ({ctype})0)" if t in C.SIGNED_INTS else f"({ctype})0"
        return f"({valid} ? ({ctype})({x} >> {y}) : {fill})"
    raise op.fail(f"with direction={direction!r}")


@_register(*Q.QUANTIZE_OPS)
def _quantize_linear(op: _Op) -> str:
    """QuantizeLinear / DequantizeLinear (quantize_source.py), on a scale and zero point that
    are one element or broadcast to x as they should (a lone node's per-axis views)."""
    x = op._operand(0)
    params = [op._operand(1), op.operands[2] if len(op.operands) > 2 else None]
    for p in params:
        if p is not None and not Q.broadcasts(p.shape, x.shape):
            raise op.fail(f"with a per-axis or blocked scale or zero point of shape {dims_text(p.shape)} "
                          f"in a fused body (x is {dims_text(x.shape)})")
    scale, zero = ((p.var, p.dtype) if p is not None else None for p in params)
    emit = Q.quantize_expr if op.node.op_type == Q.QUANTIZE else Q.dequantize_expr
    expr, op.result = emit(op.node, (x.var, x.dtype), scale, zero)
    return expr


@_register("Where")
def _where(op: _Op) -> str:
    cond, x, y = op._operand(0), op._operand(1), op._operand(2)
    if cond.dtype != DType.BOOL or x.dtype != y.dtype:
        raise op.fail(f"on {cond.dtype.short}, {x.dtype.short}, {y.dtype.short} inputs")
    op.result = x.dtype
    return f"({cond.var} ? {x.var} : {y.var})"
