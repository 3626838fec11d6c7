"""STFT and DFT as the GPU's convolution and GEMM: a transform of length n is a product with its
basis, cos and sin of 2πkt/n for each kept bin k and sample t, computed here once, so audio
front ends run on the GPU instead of the host.

Complex values travel as a trailing dim of 2 (real, imaginary), a trailing 1 marks a real
signal. The basis maps a signal's (sample, real/imaginary) to a spectrum's (bin, real/imaginary):
one linear map covers real and complex input, forward and inverse (e^{+iθ}, scaled 1/n), the
one-sided forward transform (bins 0 .. n/2) and the one-sided inverse (IRFFT: bins 0 .. n/2
of a Hermitian spectrum, each but DC and Nyquist counted twice, to a real signal).

- STFT (signal [B, L, 1 or 2], or [B, L] as onnxruntime takes it and torch writes it): a 2-D
  Conv over (B, C, 1, L) with stride frame_step and weights (2·bins, C, 1, frame_length), the
  window times the basis, its output channels ordered (bin, real/imaginary); then
  (B, 2·bins, 1, F) -Transpose-> (B, F, 1, 2·bins) -Reshape-> (B, F, bins, 2). The Conv's
  output width, floor((L - frame_length) / frame_step) + 1, is ONNX's frame count.
- DFT: the axis moved next to the complex dim (Transpose, unless it is there already), the
  two merged, a MatMul with the basis (samples·C, bins·parts), the result split and moved
  back. dft_length shorter than the axis slices it; a longer one needs no zeros: padding adds
  nothing to the sums, so the basis has a row per sample there is. Only an axis of unknown
  length is padded (by the whole length) and sliced, which makes it static.

float16/bfloat16 transforms are computed in float32, as the reference backend computes them
(complex64): a basis rounded to bfloat16 (8 bits) leaks about -48 dB of the strongest bin into
every other, float16 (11 bits) about -66 dB, inside the 80 dB range log-mel features keep; the
casts cost little beside the GEMM.

Left as they are: frame_step, window, frame_length, dft_length or the axis not constants; a
frame or DFT length that needs the unknown length of the signal; a basis over 64 MiB (a long
transform: the host's FFT is n log n, the GEMM n², and the file would carry the basis).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...ir.dtypes import DType
from ...ir.graph import Dim, Node, TensorType
from ...ir.rewrite import GraphIndex

if TYPE_CHECKING:
    from .decompose_emitter import Emitter

_TYPES = (DType.FLOAT32, DType.FLOAT64, DType.FLOAT16, DType.BFLOAT16)
_NARROW = (DType.FLOAT16, DType.BFLOAT16)
_MAX_BASIS_BYTES = 64 << 20  # constant folding's default limit on a tensor it creates
_AXIS_INPUT_SINCE = 20  # DFT's axis: an attribute (default 1) before, an input (default -2) since


def dft_basis(n: int, rows: int, cols: int, channels: int, inverse: bool = False,
              real_output: bool = False) -> np.ndarray:
    """The n-point DFT as a linear map, float64 [rows, channels, cols, parts]: input ``rows``
    indices (samples; bins for ``real_output``) with ``channels`` (real, imaginary) to output
    ``cols`` indices with ``parts`` (real, imaginary; only real for ``real_output``, the IRFFT)."""
    r, q = np.arange(rows)[:, None], np.arange(cols)[None, :]
    angle = 2 * np.pi * ((r * q) % n) / n  # the phase reduced exactly before it turns float
    cos, sin = np.cos(angle), np.sin(angle)
    s = 1.0 if inverse else -1.0  # e^{i s θ} = cos + i s sin
    from_real = np.stack([cos, s * sin], axis=-1)  # a · e^{isθ}: (real, imaginary) per unit a
    from_imag = np.stack([-s * sin, cos], axis=-1)  # i b · e^{isθ}
    basis = np.stack([from_real, from_imag], axis=1)[:, :channels]
    if real_output:  # Re of the Hermitian sum: bins 1 .. ceil(n/2) - 1 stand for two
        twice = (np.arange(rows) > 0) & (2 * np.arange(rows) != n)
        basis = basis[..., :1] * np.where(twice, 2.0, 1.0)[:, None, None, None]
    return basis / n if inverse else basis


# --------------------------------------------------------------------------- STFT


def stft(e: "Emitter", index: GraphIndex, node: Node) -> str | None:
    t = e.type_of(node.inputs[0])
    if t is None or t.dtype not in _TYPES or t.rank not in (2, 3):
        return None
    channels = 1 if t.rank == 2 else t.shape[2]
    sizes = _stft_sizes(index, node, t)
    if channels not in (1, 2) or sizes is None:
        return None
    step, length, window = sizes
    bins = length // 2 + 1 if int(node.attr("onesided", 1)) else length
    wide = _wide(t.dtype)
    if 2 * bins * channels * length * wide.itemsize > _MAX_BASIS_BYTES:
        return None
    basis = dft_basis(length, length, bins, channels)
    if window is not None:
        basis = basis * window.astype(np.float64)[:, None, None, None]
    weights = basis.transpose(2, 3, 1, 0).reshape(2 * bins, channels, 1, length)
    x = node.inputs[0]
    if channels == 1:  # (B, L, 1) or (B, L) -> (B, 1, 1, L): the same bytes
        x = e.reshape(x, [0, 1, 1, -1])
    else:  # (B, L, 2) -> (B, 2, 1, L)
        x = e.op("Transpose", [e.unsqueeze(x, [1])], {"perm": [0, 3, 1, 2]})
    x = _cast(e, x, t.dtype, wide)
    attrs = {"kernel_shape": [1, length], "strides": [1, step]}
    y = e.op("Conv", [x, e.constant(weights.astype(wide.numpy), "basis")], attrs, name=node.name)
    y = e.op("Transpose", [_cast(e, y, wide, t.dtype)], {"perm": [0, 3, 2, 1]})  # (B, F, 1, 2·bins)
    e.reshape(y, [0, 0, bins, 2], node.outputs[0])
    return "STFT→Conv"


def _stft_sizes(index: GraphIndex, node: Node, t: TensorType) -> tuple[int, int, np.ndarray | None] | None:
    """(frame_step, frame_length, window or None) when all are known here and consistent."""
    names = [node.inputs[i] if len(node.inputs) > i else "" for i in range(1, 4)]
    step, window, length = (index.constant(name) if name else None for name in names)
    if step is None or step.size != 1 or any(n and v is None for n, v in zip(names[1:], (window, length))):
        return None  # decided at run time
    if length is not None:
        length = int(length.reshape(-1)[0]) if length.size == 1 else None
    elif window is not None:
        length = len(window) if window.ndim == 1 else None
    else:
        length = t.shape[1]  # the whole signal, one frame
    step = int(step.reshape(-1)[0])
    if not isinstance(length, int) or length < 1 or step < 1 or (window is not None and window.shape != (length,)):
        return None
    if isinstance(t.shape[1], int) and t.shape[1] < length:
        return None  # no frame: the error is the model's, left for run time
    return step, length, window


# --------------------------------------------------------------------------- DFT


def dft(e: "Emitter", index: GraphIndex, node: Node) -> str | None:
    t = e.type_of(node.inputs[0])
    if t is None or t.dtype not in _TYPES or t.rank is None or t.rank < 2 or t.shape[-1] not in (1, 2) or 0 in t.shape:
        return None  # a static 0 would read as "copy" in the Reshapes
    rank, channels = t.rank, t.shape[-1]
    axis = _dft_axis(index, node, rank, e.opset)
    if axis is None:
        return None
    inverse, onesided = bool(node.attr("inverse", 0)), bool(node.attr("onesided", 0))
    irfft = inverse and onesided  # bins 0 .. n/2 in, n real samples out
    size = t.shape[axis]
    n = _dft_length(index, node, size, irfft)
    if n is None:
        return None
    in_length = n // 2 + 1 if irfft else n
    rows = min(size, in_length) if isinstance(size, int) else in_length
    cols = n // 2 + 1 if onesided and not inverse else n
    parts = 1 if irfft else 2
    wide = _wide(t.dtype)
    if rows * channels * cols * parts * wide.itemsize > _MAX_BASIS_BYTES:
        return None
    basis = dft_basis(n, rows, cols, channels, inverse, irfft).reshape(rows * channels, cols * parts)

    x = node.inputs[0]
    if not isinstance(size, int):  # padded by the whole length: at least in_length, whatever it is
        x = _pad_end(e, x, axis, rank, in_length)
    if not isinstance(size, int) or size > in_length:
        x = _slice_to(e, x, axis, in_length)
    perm = [i for i in range(rank - 1) if i != axis] + [axis, rank - 1]  # the axis next to (re, im)
    if axis != rank - 2:
        x = e.op("Transpose", [x], {"perm": perm})
    x = _cast(e, e.reshape(x, [0] * (rank - 2) + [rows * channels]), t.dtype, wide)
    y = _cast(e, e.op("MatMul", [x, e.constant(basis.astype(wide.numpy), "basis")], name=node.name), wide, t.dtype)
    if axis == rank - 2:
        e.reshape(y, [0] * (rank - 2) + [cols, parts], node.outputs[0])
    else:
        y = e.reshape(y, [0] * (rank - 2) + [cols, parts])
        e.op("Transpose", [y], {"perm": [int(i) for i in np.argsort(perm)]}, output=node.outputs[0])
    return "DFT→MatMul"


def _dft_axis(index: GraphIndex, node: Node, rank: int, opset: int) -> int | None:
    """The non-negative axis, None when it is computed at run time or out of ONNX's range
    [-r, -2] ∪ [0, r - 2]."""
    if opset < _AXIS_INPUT_SINCE:
        axis = int(node.attr("axis", 1))
    elif len(node.inputs) > 2 and node.inputs[2]:
        value = index.constant(node.inputs[2])
        if value is None or value.size != 1:
            return None
        axis = int(value.reshape(-1)[0])
    else:
        axis = -2
    return axis % rank if -rank <= axis <= rank - 2 and axis != -1 else None


def _dft_length(index: GraphIndex, node: Node, size: Dim, irfft: bool) -> int | None:
    """The transform's length n: dft_length, else the axis's (IRFFT: 2 · (bins - 1))."""
    name = node.inputs[1] if len(node.inputs) > 1 else ""
    if name:
        value = index.constant(name)
        n = int(value.reshape(-1)[0]) if value is not None and value.size == 1 else None
    elif isinstance(size, int):
        n = 2 * (size - 1) if irfft else size
    else:
        n = None
    return n if n is not None and n >= 1 else None


# --------------------------------------------------------------------------- shared


def _wide(dtype: DType) -> DType:
    return DType.FLOAT32 if dtype in _NARROW else dtype


def _cast(e: "Emitter", x: str, dtype: DType, to: DType) -> str:
    return x if dtype == to else e.op("Cast", [x], {"to": int(to)})


def _pad_end(e: "Emitter", x: str, axis: int, rank: int, amount: int) -> str:
    pads = [0] * (2 * rank)
    pads[rank + axis] = amount
    return e.op("Pad", [x, e.constant(np.array(pads, np.int64), "pads", shared=True)])


def _slice_to(e: "Emitter", x: str, axis: int, end: int) -> str:
    ints = [e.constant(np.array([v], np.int64), "slice", shared=True) for v in (0, end, axis)]
    return e.op("Slice", [x, *ints])
