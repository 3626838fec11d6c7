"""DFT, STFT, Hann/Hamming/Blackman windows and MelWeightMatrix.

Complex values travel as a trailing dimension of 2 (real, imaginary); a trailing 1 marks a
real signal.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ....ir.dtypes import DType
from ..kernel import OpRun


def _to_complex(x: np.ndarray) -> np.ndarray:
    """[..., 1] (real) or [..., 2] (real, imaginary) → complex array without the last axis, as
    precise as the input (numpy's FFT keeps complex64 in single precision, as ONNX's tests do)."""
    dtype = np.result_type(x.dtype, np.complex64)
    if x.shape[-1] == 1:
        return x[..., 0].astype(dtype)
    if x.shape[-1] == 2:
        return (x[..., 0] + 1j * x[..., 1]).astype(dtype)
    raise ValueError(f"the last dimension must be 1 (real) or 2 (complex), got shape {x.shape}")


def _from_complex(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.stack([y.real, y.imag], axis=-1).astype(dtype)


def _one_sided(y: np.ndarray, n: int, axis: int) -> np.ndarray:
    """The non-redundant half of the spectrum of a real signal: bins 0 .. n // 2."""
    return np.take(y, np.arange(n // 2 + 1), axis=axis)


class DFT(OpRun):
    def run(self, x, dft_length=None, axis=None):
        # Opset 20 moved the axis from an attribute (default 1) to an input (default -2).
        if self.opset >= 20:
            axis = -2 if axis is None else int(axis)
        else:
            axis = self.attr("axis", 1)
        rank = x.ndim
        if not (-rank <= axis <= -2 or 0 <= axis <= rank - 2):
            raise ValueError(f"axis {axis} is out of range for input rank {rank}")
        axis %= rank
        inverse, onesided = self.attr("inverse", 0), self.attr("onesided", 0)
        signal = _to_complex(x)
        if dft_length is not None:
            n = int(dft_length)
            self.check_size([*x.shape[:axis], n, *x.shape[axis + 1:]], np.complex128)
        else:
            n = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
        if inverse and onesided:  # one-sided spectrum → real signal
            return np.fft.irfft(signal, n, axis=axis)[..., None].astype(x.dtype)
        y = np.fft.ifft(signal, n, axis=axis) if inverse else np.fft.fft(signal, n, axis=axis)
        return _from_complex(_one_sided(y, n, axis) if onesided else y, x.dtype)


class STFT(OpRun):
    def run(self, signal, frame_step, window=None, frame_length=None):
        if signal.ndim == 2:  # [batch, length]: real (torch's exporter writes it; onnxruntime takes it)
            signal = signal[..., None]
        if frame_length is not None:
            length = int(frame_length)
        else:
            length = signal.shape[1] if window is None else window.shape[0]
        if window is not None and window.shape[0] != length:
            raise ValueError(f"window has {window.shape[0]} values but frame_length is {length}")
        step = int(frame_step)
        frames = 1 + (signal.shape[1] - length) // step
        starts = np.arange(frames)[:, None] * step
        framed = _to_complex(signal)[:, starts + np.arange(length)]  # [batch, frames, length]
        if window is not None:
            framed = framed * window
        y = np.fft.fft(framed, axis=-1)
        return _from_complex(_one_sided(y, length, -1) if self.attr("onesided", 1) else y, signal.dtype)


class _CosineWindow(OpRun):
    """w[n] = sum_k (-1)^k a_k cos(2 pi k n / N), N = size (periodic) or size - 1 (symmetric)."""

    coefficients: ClassVar[tuple[float, ...]]

    def run(self, size):
        size = int(size)
        self.check_size([size], np.float64)
        period = size if self.attr("periodic", 1) else size - 1
        phase = 2 * np.pi * np.arange(size) / max(period, 1)
        w = sum((-1) ** k * a * np.cos(k * phase) for k, a in enumerate(self.coefficients))
        return np.asarray(w).astype(DType(self.attr("output_datatype", 1)).numpy)


class HannWindow(_CosineWindow):
    coefficients = (0.5, 0.5)


class HammingWindow(_CosineWindow):
    coefficients = (25 / 46, 21 / 46)


class BlackmanWindow(_CosineWindow):
    coefficients = (0.42, 0.5, 0.08)


class MelWeightMatrix(OpRun):
    """Triangular filters with peak 1 between mel-spaced DFT bins, [dft_length // 2 + 1, num_mel_bins]."""

    def run(self, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz):
        mels, n, rate = int(num_mel_bins), int(dft_length), int(sample_rate)
        self.check_size([n // 2 + 1, mels], np.float64)
        low, high = (2595 * np.log10(1 + float(f) / 700) for f in (lower_edge_hertz, upper_edge_hertz))
        # mels + 2 edges stepped by (high - low) / (mels + 2), as ONNX and ONNX Runtime do
        edges_mel = low + np.arange(mels + 2) * ((high - low) / (mels + 2))
        edges_hz = 700 * (10 ** (edges_mel / 2595) - 1)
        edges = ((n + 1) * edges_hz // rate).astype(np.int64)
        left, center, right = edges[:-2], edges[1:-1], edges[2:]
        j = np.arange(n // 2 + 1)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            rising = np.where(center > left, (j - left) / (center - left), j == center)
            falling = (right - j) / (right - center)
        weights = np.where((j >= left) & (j <= center), rising, 0.0)
        weights = np.where((j >= center) & (j < right), falling, weights)
        return weights.astype(DType(self.attr("output_datatype", 1)).numpy)
