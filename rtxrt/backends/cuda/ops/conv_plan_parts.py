"""What every convolution plan is made of (conv_source.py's and conv_grouped_source.py's):
the plan and its launches, the packed weights' layout, the GEMM tactic a plan starts from,
and where an im2col column reads X."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ....ir.dtypes import DType
from ..codegen.dynamic import upper
from ..codegen.kernel_source import KernelSource
from .gemm_simt_source import SimtTactic, simt_candidate_tactics
from .gemm_source import GemmProblem, GemmTactic, candidate_tactics

ROW_ALIGN = 16  # bytes: patch-matrix rows are padded to a multiple, for the GEMM's 16-byte copies


@dataclass(frozen=True)
class ConvStep:
    """One kernel launch: ``buffers`` name, in the kernel's parameter order, the plan's
    buffers its pointer parameters take ("X", "W", "bias", "Z", "Y", "workspace")."""

    kernel: KernelSource
    buffers: tuple[str, ...]
    grid: tuple[int, int, int]
    block: tuple[int, int, int]


@dataclass(frozen=True)
class ConvPlan:
    """The launches of one FusedConv, in order, and the buffers they use.

    ``buffers``: name -> (shape, storage dtype) of every buffer: X (as stored, ``x_layout``),
    W (packed, see ``pack_weights``), bias [OC], Z and Y ([N, OH, OW, OC]) and the im2col
    ``workspace`` ([N*OH*OW, K], absent when there is no im2col step). A step with a zero in
    its grid has nothing to do and is not launched. ``weight_layout``: W packed "OHWI"
    (``[OC, k_padded]``, rows in (kh, kw, c) order) or "HWIO" (its transpose ``[K, OC]``,
    for the grouped direct kernel)."""

    tactic: str  # "im2col_gemm", "implicit_gemm", "gemm" (1x1, X is the patch matrix), "depthwise",
    # or for other groups "grouped_im2col_gemm", "grouped_gemm" (1x1) or "grouped_direct"
    x_layout: str
    storage_dtype: DType
    x_shape: tuple[int, int, int, int]  # logical NCHW
    w_shape: tuple[int, int, int, int]  # OIHW
    out_shape: tuple[int, int, int, int]  # NHWC
    k_padded: int  # columns of the packed weights (and of the patch matrix)
    steps: tuple[ConvStep, ...]
    buffers: Mapping[str, tuple[tuple[int, ...], DType]]
    gemm: GemmProblem | None
    weight_layout: str = "OHWI"

    @property
    def grouped(self) -> bool:
        """A plan of conv_grouped_source (1 < group, not depthwise)."""
        return self.tactic.startswith("grouped_")

    @property
    def workspace_bytes(self) -> int:
        if "workspace" not in self.buffers:
            return 0
        shape, dtype = self.buffers["workspace"]
        return math.prod(shape) * dtype.itemsize

    def pack_weights(self, w: np.ndarray) -> np.ndarray:
        """The OIHW weights as this plan's W buffer (host side, once at load time)."""
        if tuple(w.shape) != self.w_shape:
            raise ValueError(f"weights of shape {tuple(w.shape)}, the plan was made for {self.w_shape}")
        if self.weight_layout == "HWIO":  # k-major: adjacent output channels adjacent
            return np.ascontiguousarray(pack_conv_weights(w, self.k_padded).T)
        return pack_conv_weights(w, self.k_padded)


def pack_conv_weights(w: np.ndarray, k_padded: int | None = None) -> np.ndarray:
    """OIHW weights ``[OC, C/g, KH, KW]`` as ``[OC, KH*KW*C/g]`` in (kh, kw, c) order (OHWI,
    flattened), zero columns appended up to ``k_padded``: the patch matrix's column order."""
    oc = w.shape[0]
    packed = np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1))).reshape(oc, -1)
    k = packed.shape[1]
    if k_padded is None or k_padded == k:
        return packed
    if k_padded < k:
        raise ValueError(f"k_padded={k_padded} is less than the {k} columns of the weights")
    out = np.zeros((oc, k_padded), packed.dtype)
    out[:, :k] = packed
    return out


def gemm_candidates(problem: GemmProblem) -> tuple[GemmTactic, ...] | tuple[SimtTactic, ...]:
    """Tensor-core tactics for fp16 and bf16, SIMT ones for fp32 (tensor cores take no fp32 here)."""
    return simt_candidate_tactics(problem) if problem.dtype == DType.FLOAT32 else candidate_tactics(problem)


def default_tactic(problem: GemmProblem, min_blocks: int = 132) -> GemmTactic | SimtTactic:
    """The largest-tile candidate for ``problem``'s type that still gives ``min_blocks``
    blocks (about one wave on a big GPU); else the candidate giving the most blocks. Sizes
    that vary over a generic plan's profile count at their largest (``upper``), so that the
    choice, and with it the node's list of candidates, is the same at every shape."""
    tactics = gemm_candidates(problem)
    m, n = upper(problem.m), upper(problem.n)

    def blocks(t: GemmTactic | SimtTactic) -> int:
        return -(-m // t.bm) * -(-n // t.bn)

    for t in tactics:  # largest tiles first
        if blocks(t) >= min_blocks:
            return t
    return max(tactics, key=blocks)


GEMM_BUFFERS = {"A": "workspace", "B": "W", "bias": "bias", "Z": "Z", "D": "Y"}


def launch_step(kernel: KernelSource) -> ConvStep:
    return ConvStep(kernel, tuple(a.name for a in kernel.args), (kernel.launch.grid(), 1, 1),
                    (kernel.launch.block, 1, 1))


# Where column ``col`` of patch-matrix row ``row`` reads X: its tap (``${tap}`` finds it,
# and c for a single channel), the input pixel, and whether that pixel is inside X.
IM2COL_POSITION = r"""      ${tap}
      const int kw = tap % KW, kh = tap / KW;
      const int ow = (int)(row % OW);
      const I rest = row / OW;
      const int oh = (int)(rest % OH), n = (int)(rest / OH);
      const int ih = oh * SH - PH + kh * DH, iw = ow * SW - PW + kw * DW;
      const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;"""
