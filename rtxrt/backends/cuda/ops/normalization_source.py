"""Generated InstanceNormalization and GroupNormalization kernels over NCHW or NHWC tensors
(``layout``), stored as fp32, fp16 or bf16 and computed in fp32.

Both ops normalize each group of channels of each sample over the group's channels and
positions (InstanceNormalization: groups of one channel), then apply a scale and a bias per
channel (GroupNormalization before opset 21: per group). Two kernel shapes:

- NCHW (any rank >= 3): a group's elements are contiguous. One block per (sample, group)
  walks them; partial sums meet through warp shuffles and shared memory (reduction.HELPERS).
- NHWC (rank 4): a sample is an [H*W, C] matrix and a group a band of its columns. One block
  per (sample, tile of whole groups about ``TILE_CHANNELS`` wide): neighbouring threads read
  neighbouring channels of a pixel (coalesced) and the block's rows of threads stride down
  the pixels. Partial sums are added down the columns in shared memory (a tree over the
  rows of threads), then across each group's columns.

Blocks walk their rows grid-stride, so any grid is correct. X is read three times (sum,
squared deviations, output); the second and third reads mostly hit L2.

Semantics are the reference backend's (rtxrt/backends/reference/ops/normalization.py):
statistics in fp32, the mean first, then the mean of squared deviations (two passes: no
cancellation), 1 / sqrt(var + epsilon). InstanceNormalization applies scale and bias in fp32
and rounds once; GroupNormalization rounds the normalized value to the storage type, then
its product with the scale, then the sum with the bias, as the reference does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, is_dynamic, upper
from ..codegen.kernel_source import (
    KernelArg,
    KernelSource,
    LaunchPolicy,
    index_type,
    loop_kernel,
)
from ..codegen.template import render
from .reduction_source import HELPERS
from ..plan.program import BufferRole

NORM_OPS = ("InstanceNormalization", "GroupNormalization")
NORM_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
LAYOUTS = ("NCHW", "NHWC")
PER_CHANNEL_GROUP_PARAMS_SINCE = 21  # GroupNormalization's scale and bias: per group before
TILE_CHANNELS = 32  # NHWC: channels one block reads per pixel, in whole groups
BIG_BLOCK = 4096  # a block covering more elements than this gets 1024 threads, else 256
UNROLL = "#pragma unroll 4"  # several loads in flight per thread
_ONNX = ("", "ai.onnx")
F32 = DType.FLOAT32


@dataclass(frozen=True)
class NormProblem:
    """What a normalization kernel computes: ``groups`` groups of channels per sample of a
    logical (N, C, *spatial) tensor stored as ``dtype`` in ``layout``."""

    op: str
    dtype: DType
    layout: str
    shape: tuple[int, ...]  # logical
    groups: int
    epsilon: float
    per_group_params: bool  # scale and bias hold one value per group (else per channel)

    @property
    def samples(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def spatial(self) -> int:
        return math.prod(self.shape[2:])

    @property
    def per_group(self) -> int:
        """Channels in a group."""
        return self.channels // self.groups

    @property
    def physical_shape(self) -> tuple[int, ...]:
        return self.shape if self.layout == "NCHW" else (self.shape[0], *self.shape[2:], self.shape[1])

    @property
    def param_shape(self) -> tuple[int]:
        return (self.groups,) if self.per_group_params else (self.channels,)


def normalization_kernel(node: Node, inputs: Sequence[TensorType | None], dtype: DType, layout: str = "NCHW",
                         *, opset: int = 21) -> KernelSource:
    """The kernel computing ``node`` (InstanceNormalization or GroupNormalization) on inputs
    of these static logical types, every tensor stored as ``dtype``, X and Y in ``layout``
    (scale and bias are 1-D either way). ``opset``: the model's default-domain opset (which
    says whether GroupNormalization's scale and bias are per group or per channel). Kernel
    arguments: X, scale, bias, Y."""
    return _generate(norm_problem(node, inputs, dtype, layout, opset=opset))


def norm_problem(node: Node, inputs: Sequence[TensorType | None], dtype: DType, layout: str = "NCHW",
                 *, opset: int = 21) -> NormProblem:
    """``node`` as a NormProblem; CodegenError for what the kernels do not cover."""
    if node.domain not in _ONNX or node.op_type not in NORM_OPS:
        raise CodegenError(f"{node.label} is not InstanceNormalization or GroupNormalization")
    if dtype not in NORM_DTYPES:
        raise CodegenError(f"{node.label}: normalization kernels store float32, float16 or bfloat16, "
                           f"not {dtype.short}")
    if layout not in LAYOUTS:
        raise CodegenError(f"{node.label}: layout must be one of {LAYOUTS}, got {layout!r}")
    if len(inputs) < 3 or any(t is None or not t.is_static for t in inputs[:3]):
        raise CodegenError(f"{node.label}: normalization kernels need static X, scale and bias")
    shape = tuple(d if is_dynamic(d) else int(d) for d in inputs[0].shape)  # dims of a generic plan kept
    if len(shape) < 3 or shape[1] == 0:
        raise CodegenError(f"{node.label}: X must be (N, C, *spatial) with C > 0, got shape {list(shape)}")
    if layout == "NHWC" and len(shape) != 4:
        raise CodegenError(f"{node.label}: NHWC normalization is 4-D, got shape {list(shape)}")
    channels = shape[1]
    if is_dynamic(channels):
        raise CodegenError(f"{node.label}: normalization kernels need a fixed channel count, got {channels!r}")
    if node.op_type == "InstanceNormalization":
        groups, per_group_params = channels, False
    else:
        groups = int(node.attr("num_groups", 0))
        if groups <= 0 or channels % groups:
            raise CodegenError(f"{node.label}: num_groups {groups} does not divide {channels} channels")
        if int(node.attr("stash_type", int(F32))) != int(F32):
            raise CodegenError(f"{node.label}: stash_type {node.attr('stash_type')} (kernels stash in float32)")
        per_group_params = opset < PER_CHANNEL_GROUP_PARAMS_SINCE
    problem = NormProblem(node.op_type, dtype, layout, shape, groups, float(node.attr("epsilon", 1e-5)),
                          per_group_params)
    for name, t in zip(("scale", "bias"), inputs[1:3]):
        if tuple(int(d) for d in t.shape) != problem.param_shape:
            raise CodegenError(f"{node.label}: {name} must have shape {list(problem.param_shape)}, got {t}")
    return problem


# ---------------------------------------------------------------- source


def _generate(p: NormProblem) -> KernelSource:
    if p.layout == "NCHW":
        block = 1024 if upper(p.per_group * p.spatial) > BIG_BLOCK else 256
        blocks, source = p.samples * p.groups, _nchw_source(p, block)
    else:
        block = 1024 if upper(_groups_per_tile(p) * p.per_group * p.spatial) > BIG_BLOCK else 256
        blocks, source = p.samples * _tiles(p), _nhwc_source(p, block)
    args = (KernelArg("in0", BufferRole.IN, 0, p.dtype, p.physical_shape),
            KernelArg("scale", BufferRole.IN, 1, p.dtype, p.param_shape),
            KernelArg("bias", BufferRole.IN, 2, p.dtype, p.param_shape),
            KernelArg("out0", BufferRole.OUT, 0, p.dtype, p.physical_shape))
    return KernelSource.named("rtx_norm_", source, LaunchPolicy(blocks * block, block), args)


def _groups_per_tile(p: NormProblem) -> int:
    return max(1, min(p.groups, TILE_CHANNELS // p.per_group))


def _tiles(p: NormProblem) -> int:
    return -(-p.groups // _groups_per_tile(p))


def _affine(p: NormProblem, normalized: str, scale: str, bias: str) -> str:
    """Y from the normalized value, rounded as the reference rounds it (see the docstring)."""
    if p.op == "InstanceNormalization":
        return C.store(f"{normalized} * {scale} + {bias}", p.dtype)
    scaled = C.round_to(f"{C.round_to(f'({normalized})', p.dtype)} * {scale}", p.dtype)
    return C.store(f"{scaled} + {bias}", p.dtype)


def _params(p: NormProblem, index: str) -> list[str]:
    return [f"const float sc = {C.load(f'scale[{index}]', p.dtype)}, bi = {C.load(f'bias[{index}]', p.dtype)};"]


def _head(p: NormProblem, how: str) -> list[str]:
    shape = "[" + ", ".join(str(d) for d in p.shape) + "]"  # a dim argument as its name, not its value
    comment = (f"// rtxrt normalization kernel: {p.op} {p.layout} {shape} {p.dtype.short}, "
               f"{p.groups} groups of {p.per_group} channels, {how}")
    return [comment, C.PRELUDE.strip(), HELPERS.strip()]


def _params_decl(p: NormProblem) -> list[str]:
    stored = C.storage_type(p.dtype)
    return [f"const {stored}* __restrict__ in0", f"const {stored}* __restrict__ scale",
            f"const {stored}* __restrict__ bias", f"{stored}* __restrict__ out0"]


def _nchw_source(p: NormProblem, block: int) -> str:
    elements = p.per_group * p.spatial
    rows = p.samples * p.groups
    idx, sfx = index_type(max(upper(math.prod(p.shape)), upper(rows * block)))
    count, eps = _count(elements), C.literal(p.epsilon, F32)
    loop = f"for ({idx} e = threadIdx.x; e < {c_int(elements, sfx)}; e += {block}u)"
    x = C.load("x[e]", p.dtype)

    def reduce(var: str) -> str:
        return f"{var} = rtx_block_reduce<{block // 32}>({var}, RtxSum(), 0.0f, rtx_partial);"

    body = [
        f"const {idx} g = row % {p.groups}{sfx};",
        f"const {C.storage_type(p.dtype)}* x = in0 + row * {c_int(elements, sfx)};",
        f"{C.storage_type(p.dtype)}* y = out0 + row * {c_int(elements, sfx)};",
        "float s = 0.0f;", UNROLL, f"{loop} s += {x};", reduce("s"),
        f"const float mean = s / {count};",
        "float q = 0.0f;", UNROLL, f"{loop} {{ const float d = {x} - mean; q += d * d; }}", reduce("q"),
        f"const float inv = 1.0f / sqrtf(q / {count} + {eps});",
    ]
    store = f"y[e] = {_affine(p, f'({x} - mean) * inv', 'sc', 'bi')};"
    if p.per_group_params or p.per_group == 1:  # one scale and bias for the whole row
        body += [*_params(p, "g"), UNROLL, f"{loop} {store}"]
    else:
        body += [UNROLL, f"{loop} {{", f"  const {idx} c = g * {p.per_group}{sfx} + e / {c_int(p.spatial, sfx)};",
                 *(f"  {line}" for line in _params(p, "c")), f"  {store}", "}"]
    return loop_kernel(_head(p, f"a block of {block} per group"), _params_decl(p),
                       f"for ({idx} row = blockIdx.x; row < {c_int(rows, sfx)}; row += gridDim.x) {{", body,
                       block=block, before_loop=["  __shared__ float rtx_partial[32];"])


def _nhwc_source(p: NormProblem, block: int) -> str:
    c, spatial, cpg = p.channels, p.spatial, p.per_group
    k = _groups_per_tile(p)
    tile = k * cpg  # channels of a tile (the last one may have fewer groups)
    lanes = min(tile, block)  # threads across the channels; more channels than threads: each takes several
    rows = block // lanes  # rows of threads, striding down the pixels
    tiles = _tiles(p)
    blocks = p.samples * tiles
    idx, sfx = index_type(max(upper(math.prod(p.shape)), upper(blocks * block)))
    count, eps = _count(cpg * spatial), C.literal(p.epsilon, F32)
    tree = 1 << (rows - 1).bit_length()  # rows rounded up to a power of two
    group_sum = render(_GROUP_SUM, half=tree // 2, lanes=lanes, rows=rows, groups=k, cpg=cpg)
    x = C.load(f"x[p * {c}{sfx} + j]", p.dtype)
    param = f"(c0 + j) / {cpg}{sfx}" if p.per_group_params else "c0 + j"

    def each(statement: str, per_column: Sequence[str] = ()) -> list[str]:
        """``statement`` for each element of this thread's columns and pixels."""
        return [f"if (active) for (unsigned j = tx; j < width; j += {lanes}u) {{", *(f"  {line}" for line in per_column),
                f"  {UNROLL}", f"  for ({idx} p = ty; p < {c_int(spatial, sfx)}; p += {rows}u) {statement}", "}"]

    body = [
        f"const {idx} n = blk / {tiles}{sfx}, c0 = blk % {tiles}{sfx} * {tile}{sfx};",
        f"const unsigned width = {c}{sfx} - c0 < {tile}{sfx} ? (unsigned)({c}{sfx} - c0) : {tile}u;",
        f"const {C.storage_type(p.dtype)}* x = in0 + n * {c_int(spatial * c, sfx)} + c0;",
        f"{C.storage_type(p.dtype)}* y = out0 + n * {c_int(spatial * c, sfx)} + c0;",
        f"const unsigned tx = threadIdx.x % {lanes}u, ty = threadIdx.x / {lanes}u;",
        f"const bool active = ty < {rows}u;",
        "float s = 0.0f;",
        *each(f"s += {x};"),
        f"const float mean = rtx_group_sum(s, rtx_cols, rtx_stat) / {count};",
        "float q = 0.0f;",
        *each(f"{{ const float d = {x} - mean; q += d * d; }}"),
        f"const float inv = 1.0f / sqrtf(rtx_group_sum(q, rtx_cols, rtx_stat) / {count} + {eps});",
        *each(f"y[p * {c}{sfx} + j] = {_affine(p, f'({x} - mean) * inv', 'sc', 'bi')};", _params(p, param)),
    ]
    how = f"a block of {block} ({lanes} channels x {rows} pixels) per tile of {k} groups"
    return loop_kernel([*_head(p, how), group_sum], _params_decl(p),
                       f"for ({idx} blk = blockIdx.x; blk < {c_int(blocks, sfx)}; blk += gridDim.x) {{", body, block=block,
                       before_loop=[f"  __shared__ float rtx_cols[{block}];", f"  __shared__ float rtx_stat[{k}];"])


def _count(n: int) -> str:
    """The element count ``n`` as a float32 C operand (a conversion when ``n`` is a dim argument)."""
    return f"((float)({n}))" if is_dynamic(n) else C.literal(float(n), F32)


# The NHWC kernel's sum over each group of a tile: ``lanes`` threads across the tile's
# channels, ``rows`` rows of them down the pixels (``half``: the rows rounded up to a power
# of two, halved), ``groups`` groups of ``cpg`` channels.
_GROUP_SUM = r"""// The sum of v over the threads of each group of the tile; every thread gets its group's.
__device__ __forceinline__ float rtx_group_sum(float v, float* cols, float* stat) {
  const unsigned t = threadIdx.x;
  cols[t] = v;
  __syncthreads();
  #pragma unroll
  for (unsigned h = ${half}u; h > 0u; h >>= 1) {  // down the columns: a tree over the rows
    if (t / ${lanes}u < h && t / ${lanes}u + h < ${rows}u) cols[t] += cols[t + h * ${lanes}u];
    __syncthreads();
  }
  if (t < ${groups}u) {  // across each group's columns
    float s = 0.0f;
    for (unsigned j = t * ${cpg}u; j < (t + 1u) * ${cpg}u && j < ${lanes}u; ++j) s += cols[j];
    stat[t] = s;
  }
  __syncthreads();
  return stat[(t % ${lanes}u) / ${cpg}u];
}"""
