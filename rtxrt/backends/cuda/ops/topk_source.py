"""The generated kernels of ONNX TopK: the K best elements along one axis of a tensor, sorted,
and their int64 indices, one CUDA block per row (a row: the axis's elements at one position of
every other axis, read at the axis's stride, so a non-trailing axis needs no transpose).

The order is the reference backend's (backends/reference/ops/sorting.py): the larger value
first (the smaller with largest=0), equal values by lower index, a NaN above +inf (so first
when largest, last when smallest; NaNs among themselves by index), -0.0 equal to +0.0, and
fp16/bf16 as the float32 values they widen to. Each element becomes an unsigned key of its
width that orders that way (floats by their bits: sign flipped, negatives inverted, every NaN
the largest key, -0.0 made +0.0; largest=0 inverts the key), so both paths order (key, index)
pairs alike: the higher key first, then the lower index. Sorted output serves sorted=0 too.

- ``topk_sort`` (rows of up to ``SHARED_SORT`` elements): the row's pairs, padded to a power
  of two with pairs that lose to every element, are bitonic-sorted in shared memory and the
  first K written.
- ``topk_select`` (longer rows): a radix select finds the K-th best pair, 8 bits a pass, each
  pass reading the row and counting, in a shared histogram, the elements still tied with the
  prefix found so far. The index takes part as the lowest bits (a lower index ranks higher),
  so the K-th pair is unique and ties are settled exactly; the passes stop once the bin found
  holds exactly the elements still wanted (with no tie at the K-th place, after the key's
  passes or earlier). The K pairs at or above it are then gathered and bitonic-sorted in
  shared memory, or, where K is more than shared memory holds, in a global scratch slice of
  each block (the stages within a chunk of ``SHARED_SORT`` pairs run a chunk at a time in
  shared memory, only the wider ones in global memory).

Values are the input's elements copied bit for bit (NaN payloads, -0.0 kept). In a generic
plan the dims may be DimInts: K is fixed, and every choice (path, padded size, index passes,
offset width) is made from the dims' bounds, so the source is the same over the profile.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import c_int, dims_text, is_dynamic, lower, same_dim, upper
from ..codegen.kernel_source import KERNEL_NAME, MAX_GRID, GridLaunch, KernelArg, KernelSource
from ..plan.program import BufferRole

SORT, SELECT = "topk_sort", "topk_select"
KEYS, INDEX = "topk_keys", "topk_index"  # the global sort's scratch buffers, by KernelArg name
SHARED_SORT = {4: 4096, 8: 2048}  # by key bytes: pairs sorted in shared memory (32 or 24 KiB)
SORT_BLOCK_MAX = 512
SELECT_BLOCK = 1024  # a long row is one block's: as many loads in flight as a block has
SCRATCH_MAX = 256 << 20  # bytes of global sort scratch, at most, over the blocks that hold a slice
_DIGIT = 8
_BITS = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}
_INF_BITS = {DType.FLOAT16: 0x7C00, DType.BFLOAT16: 0x7F80, DType.FLOAT32: 0x7F800000,
             DType.FLOAT64: 0x7FF0000000000000}
_INT32_LIMIT = 2**31


@dataclass(frozen=True)
class TopK:
    """TopK of ``k`` along ``axis`` (resolved) of a contiguous ``shape`` tensor of ``dtype``;
    ``values`` / ``indices``: whether output 0 / 1 is written."""

    shape: tuple[int, ...]
    axis: int
    k: int
    dtype: DType
    largest: bool = True
    values: bool = True
    indices: bool = True

    @property
    def n(self) -> int:
        """The row length: the axis's size."""
        return self.shape[self.axis]

    @property
    def inner(self) -> int:
        """The axis's stride, and the rows at each position of the axes before it."""
        return math.prod(self.shape[self.axis + 1:])

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:self.axis]) * self.inner

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.shape[:self.axis], self.k, *self.shape[self.axis + 1:])

    @property
    def key_bytes(self) -> int:
        return 8 if self.dtype.itemsize == 8 else 4

    def describe(self) -> str:
        return (f"TopK k={self.k} {'largest' if self.largest else 'smallest'} along axis {self.axis} of "
                f"{dims_text(self.shape)} {self.dtype.short}")


@dataclass(frozen=True)
class TopKKernel(KernelSource):
    """A TopK kernel: ``path`` is SORT or SELECT; ``scratch``: the global sort's buffers
    (KernelArg name -> bytes), none where the row's K best are sorted in shared memory."""

    launch: GridLaunch
    path: str = field(default=SORT, kw_only=True)
    scratch: tuple[tuple[str, int], ...] = field(default=(), kw_only=True)


def topk_path(p: TopK) -> str:
    """SORT where the longest row of the profile fits shared memory, else SELECT."""
    return SORT if upper(p.n) <= SHARED_SORT[p.key_bytes] else SELECT


def topk_kernel(p: TopK, sm_count: int = 1) -> TopKKernel:
    """The kernel of ``p`` (``sm_count`` bounds the blocks a global sort gives a scratch slice).
    CodegenError for what it cannot compute; K = 0 or no rows: a grid of 0 (do not launch)."""
    _check(p)
    args = [KernelArg("in0", BufferRole.IN, 0, p.dtype, p.shape)]
    if p.values:
        args.append(KernelArg("out0", BufferRole.OUT, 0, p.dtype, p.out_shape))
    if p.indices:
        args.append(KernelArg("out1", BufferRole.OUT, 1, DType.INT64, p.out_shape))
    path = topk_path(p)
    padded = _pow2(upper(p.n) if path == SORT else p.k)
    in_shared = padded <= SHARED_SORT[p.key_bytes]
    grid, block, scratch = min(p.rows, MAX_GRID), SELECT_BLOCK, ()
    if path == SORT:
        block = min(max(padded // 2, 32), SORT_BLOCK_MAX)
    elif not in_shared:
        slices = _slices(p, sm_count)
        grid = min(p.rows, slices)
        scratch = ((KEYS, slices * padded * p.key_bytes), (INDEX, slices * padded * 4))
        args += [KernelArg(KEYS, BufferRole.OUT, 2, DType.UINT64 if p.key_bytes == 8 else DType.UINT32,
                           (slices * padded,)),
                 KernelArg(INDEX, BufferRole.OUT, 3, DType.UINT32, (slices * padded,))]
    if p.k == 0:
        grid = 0
    chunk = padded if in_shared else SHARED_SORT[p.key_bytes]
    smem = chunk * (p.key_bytes + 4) + (0 if path == SORT else 4 * (256 + 4))
    source = _source(p, path, args, block, padded, in_shared)
    return TopKKernel.named("rtx_topk_", source, GridLaunch((grid, 1, 1), (block, 1, 1), smem), args,
                            path=path, scratch=scratch)


# ---------------------------------------------------------------- checks and sizes

def _check(p: TopK) -> None:
    C.check(p.dtype)
    if not 0 <= p.axis < len(p.shape):
        raise CodegenError(f"TopK: axis {p.axis} is out of range for rank {len(p.shape)}")
    if upper(p.n) >= _INT32_LIMIT:
        raise CodegenError(f"TopK: rows of {upper(p.n)} elements (the kernels index a row with 32 bits)")
    if p.k < 0 or p.k > lower(p.n):
        where = f"the axis may be as short as {lower(p.n)}" if is_dynamic(p.n) else f"the axis holds {p.n}"
        raise CodegenError(f"TopK: K={p.k} is outside [0, {lower(p.n)}] ({where})")
    if _pow2(p.k) > SHARED_SORT[p.key_bytes] and _slice_bytes(p) > SCRATCH_MAX:
        raise CodegenError(f"TopK: K={p.k} would sort {_slice_bytes(p)} bytes in global scratch (at most "
                           f"{SCRATCH_MAX})")


def _slices(p: TopK, sm_count: int) -> int:
    """How many blocks hold a global sort slice: two per SM (a SELECT_BLOCK block is half of
    one), no more than the rows or SCRATCH_MAX allow, at least one."""
    return max(1, min(upper(p.rows), 2 * sm_count, SCRATCH_MAX // _slice_bytes(p)))


def _slice_bytes(p: TopK) -> int:
    """A global sort slice: K's pairs padded to a power of two."""
    return _pow2(p.k) * (p.key_bytes + 4)


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _key_type(p: TopK) -> str:
    return _BITS[p.key_bytes]


# ---------------------------------------------------------------- the source

# Bitonic sorting into the order best first, by the block's T threads. ``rtx_topk_merge`` is
# one stage: a sweep over the pairs (i, i + half) of ``count`` (a power of two), the runs of
# ``size`` whose global position (``base`` + i) has bit ``size`` clear sorted best first, the
# others reversed; then a barrier (in global memory too: it makes a block's writes visible to
# the block). ``rtx_topk_sort`` runs every stage in place (shared memory). ``rtx_topk_sort_global``
# sorts a scratch slice longer than the shared chunk of C: the stages whose pairs lie within a
# chunk run in shared memory, a chunk at a time, only the wider ones sweep global memory.
SORT_HELPERS = r"""
template <unsigned int T, typename K>
__device__ __forceinline__ void rtx_topk_merge(K* key, unsigned int* index, unsigned int count, unsigned int base,
                                               unsigned int size, unsigned int half) {
  for (unsigned int t = threadIdx.x; t < count / 2u; t += T) {
    const unsigned int i = 2u * t - (t & (half - 1u)), j = i + half;
    const K ki = key[i], kj = key[j];
    const unsigned int ii = index[i], ij = index[j];
    const bool j_first = kj > ki || (kj == ki && ij < ii);
    if (j_first == (((base + i) & size) == 0u)) { key[i] = kj; key[j] = ki; index[i] = ij; index[j] = ii; }
  }
  __syncthreads();
}
template <unsigned int T, typename K>
__device__ __forceinline__ void rtx_topk_sort(K* key, unsigned int* index, unsigned int count) {
  for (unsigned int size = 2u; size <= count; size <<= 1)
    for (unsigned int half = size >> 1; half > 0u; half >>= 1) rtx_topk_merge<T>(key, index, count, 0u, size, half);
}
// The stages of ``size`` whose pairs lie within a chunk of C (with ``size`` C: those of every size up
// to C), a chunk at a time in shared memory.
template <unsigned int T, unsigned int C, typename K>
__device__ __forceinline__ void rtx_topk_chunks(K* key, unsigned int* index, unsigned int count, unsigned int size,
                                                K* chunk_key, unsigned int* chunk_index) {
  for (unsigned int base = 0u; base < count; base += C) {
    for (unsigned int i = threadIdx.x; i < C; i += T) {
      chunk_key[i] = key[base + i];
      chunk_index[i] = index[base + i];
    }
    __syncthreads();
    for (unsigned int s = size > C ? size : 2u; s <= (size > C ? size : C); s <<= 1)
      for (unsigned int half = (s > C ? C : s) >> 1; half > 0u; half >>= 1)
        rtx_topk_merge<T>(chunk_key, chunk_index, C, base, s, half);
    // each thread copies back what it loaded: the next chunk's load needs no barrier
    for (unsigned int i = threadIdx.x; i < C; i += T) {
      key[base + i] = chunk_key[i];
      index[base + i] = chunk_index[i];
    }
  }
  __syncthreads();
}
template <unsigned int T, unsigned int C, typename K>
__device__ __forceinline__ void rtx_topk_sort_global(K* key, unsigned int* index, unsigned int count,
                                                     K* chunk_key, unsigned int* chunk_index) {
  rtx_topk_chunks<T, C>(key, index, count, C, chunk_key, chunk_index);
  for (unsigned int size = 2u * C; size <= count; size <<= 1) {
    for (unsigned int half = size >> 1; half >= C; half >>= 1) rtx_topk_merge<T>(key, index, count, 0u, size, half);
    rtx_topk_chunks<T, C>(key, index, count, size, chunk_key, chunk_index);
  }
}
"""


def _key_function(p: TopK) -> str:
    """``rtx_topk_key``: an element's bits as its key (see the module's docstring)."""
    key, width = _key_type(p), 8 * p.dtype.itemsize
    ones, sign = (1 << width) - 1, 1 << (width - 1)
    lit = (lambda v: f"0x{v:x}ull") if p.key_bytes == 8 else (lambda v: f"0x{v:x}u")
    body = [f"{key} u = ({key})bits;"]
    if p.dtype in _INF_BITS:
        body += [f"if ((u & {lit(ones ^ sign)}) > {lit(_INF_BITS[p.dtype])}) u = {lit(ones)};  // NaN: above +inf",
                 f"else if (u == {lit(sign)}) u = {lit(sign)};  // -0.0 as +0.0",
                 f"else u = (u & {lit(sign)}) ? (~u & {lit(ones)}) : (u | {lit(sign)});"]
    elif p.dtype in C.SIGNED_INTS:
        body.append(f"u ^= {lit(sign)};")
    elif p.dtype == DType.BOOL:
        body.append("u = u != 0u;")
    if not p.largest:
        body.append(f"u ^= {lit(ones)};")
    return "\n".join([f"__device__ __forceinline__ {key} rtx_topk_key({_BITS[p.dtype.itemsize]} bits) {{",
                      *(f"  {line}" for line in body), "  return u;", "}"])


@dataclass(frozen=True)
class _Row:
    """How a block addresses its row: ``off``, the C type of offsets (``suffix``: of its
    literals); ``start``: the lines pointing ``x`` and ``o`` at the row's first element in the
    input and the outputs; ``at``: element ``j``'s offset from there (at the axis's stride)."""

    off: str
    suffix: str
    p: TopK

    def start(self) -> list[str]:
        n, inner, k = self.p.n, self.p.inner, self.p.k
        if self._unit_stride:
            return [f"const {self.elem}* x = in0 + row * {c_int(n, self.suffix)};",
                    f"const {self.off} o = row * {k}{self.suffix};"]
        return [f"const {self.off} outer = row / {c_int(inner, self.suffix)}, col = row % {c_int(inner, self.suffix)};",
                f"const {self.elem}* x = in0 + outer * {c_int(n * inner, self.suffix)} + col;",
                f"const {self.off} o = outer * {c_int(k * inner, self.suffix)} + col;"]

    def at(self, j: str) -> str:
        """The element ``j`` of the row, relative to ``x`` or ``o``."""
        return j if self._unit_stride else f"({self.off}){j} * {c_int(self.p.inner, self.suffix)}"

    @property
    def elem(self) -> str:
        return _BITS[self.p.dtype.itemsize]

    @property
    def _unit_stride(self) -> bool:
        return same_dim(self.p.inner, 1)


def _source(p: TopK, path: str, args: Sequence[KernelArg], block: int, padded: int, in_shared: bool) -> str:
    big = max(upper(math.prod(p.shape)), upper(math.prod(p.out_shape)), upper(p.rows)) >= _INT32_LIMIT
    row = _Row("unsigned long long" if big else "unsigned int", "ull" if big else "u", p)
    key = _key_type(p)
    params = [f"const {row.elem}* __restrict__ in0"]
    params += [f"{row.elem}* __restrict__ out0"] if p.values else []
    params += ["long long* __restrict__ out1"] if p.indices else []
    params += [f"{C.storage_type(a.dtype)}* __restrict__ {a.name}" for a in args if a.name in (KEYS, INDEX)]
    if path == SORT:
        shared = [f"__shared__ {key} rtx_key[{padded}];", f"__shared__ unsigned int rtx_index[{padded}];"]
        body = _sort_body(p, row, block, padded)
    else:
        shared = ["__shared__ unsigned int rtx_hist[256];",
                  "__shared__ unsigned int rtx_pick[3];  // the digit, the elements still wanted in it, its count",
                  "__shared__ unsigned int rtx_count;"]
        chunk = padded if in_shared else SHARED_SORT[p.key_bytes]  # the K best, or the global sort's chunk
        shared += [f"__shared__ {key} rtx_key[{chunk}];", f"__shared__ unsigned int rtx_index[{chunk}];"]
        body = _select_body(p, row, block, padded, in_shared)
    how = (f"a block of {block} sorts each row of {padded} in shared memory" if path == SORT else
           f"a block of {block} radix-selects each row, then sorts {padded} in "
           + ("shared memory" if in_shared else "its global scratch slice"))
    return "\n".join([
        f"// rtxrt TopK kernel: {p.describe()}: {how}",
        _key_function(p), SORT_HELPERS.strip(),
        f'extern "C" __global__ void __launch_bounds__({block}) {KERNEL_NAME}({", ".join(params)}) {{',
        *(f"  {line}" for line in shared),
        f"  for ({row.off} row = blockIdx.x; row < {c_int(p.rows, row.suffix)}; row += gridDim.x) {{",
        *(f"    {line}" for line in row.start() + body),
        "  }",
        "}",
        "",
    ])


def _write(p: TopK, row: _Row, block: int, index: str) -> list[str]:
    """Lines writing the first K pairs of ``index`` (sorted): the element and its index."""
    lines = [f"for (unsigned int j = threadIdx.x; j < {p.k}u; j += {block}u) {{",
             f"  const unsigned int s = {index}[j];"]
    if p.values:
        lines.append(f"  out0[o + {row.at('j')}] = x[{row.at('s')}];")
    if p.indices:
        lines.append(f"  out1[o + {row.at('j')}] = (long long)s;")
    return lines + ["}"]


def _sort_body(p: TopK, row: _Row, block: int, padded: int) -> list[str]:
    n = c_int(p.n, "u")
    return [
        f"for (unsigned int j = threadIdx.x; j < {padded}u; j += {block}u) {{",
        f"  const bool real = j < {n};  // the padding loses to every element",
        f"  rtx_key[j] = real ? rtx_topk_key(x[{row.at('j')}]) : 0u;",
        "  rtx_index[j] = real ? j : 0xffffffffu;",
        "}",
        "__syncthreads();",
        f"rtx_topk_sort<{block}u>(rtx_key, rtx_index, {padded}u);",
        *_write(p, row, block, "rtx_index"),
        "__syncthreads();  // the next row refills the pairs",
    ]


def _select_body(p: TopK, row: _Row, block: int, padded: int, in_shared: bool) -> list[str]:
    """The radix select (key digits, then rank digits), the gathering of the K pairs at or
    above the K-th (the masked prefix), their sort and the write."""
    key, n = _key_type(p), c_int(p.n, "u")
    key_passes = p.dtype.itemsize * 8 // _DIGIT
    rank_passes = -(-(upper(p.n) - 1).bit_length() // _DIGIT)
    rank_max = f"0x{(1 << (_DIGIT * rank_passes)) - 1:x}u"
    keys, index = ("rtx_key", "rtx_index") if in_shared else ("keys", "index")
    sort = (f"rtx_topk_sort<{block}u>(rtx_key, rtx_index, {padded}u);" if in_shared else
            f"rtx_topk_sort_global<{block}u, {SHARED_SORT[p.key_bytes]}u>(keys, index, {padded}u, rtx_key, rtx_index);")
    slice_ = [] if in_shared else [f"{key}* keys = {KEYS} + ({row.off})blockIdx.x * {padded}u;",
                                   f"unsigned int* index = {INDEX} + ({row.off})blockIdx.x * {padded}u;"]
    width = 8 * p.dtype.itemsize
    element = [f"  const {key} key = rtx_topk_key(x[{row.at('j')}]);",
               f"  const unsigned int rank = {rank_max} - j;  // a lower index ranks higher"]
    return [
        *slice_,
        f"{key} kpre = 0u, kmask = 0u;  // the K-th pair's key and rank bits found so far",
        f"unsigned int rpre = 0u, rmask = 0u, want = {p.k}u;  // want: the pairs still wanted among those tied",
        "bool done = false;",
        f"for (int pass = 0; pass < {key_passes + rank_passes} && !done; ++pass) {{",
        f"  const bool by_rank = pass >= {key_passes};",
        f"  const int shift = by_rank ? {_DIGIT} * ({key_passes + rank_passes - 1} - pass) : {width - _DIGIT} - "
        f"{_DIGIT} * pass;",
        f"  for (unsigned int b = threadIdx.x; b < 256u; b += {block}u) rtx_hist[b] = 0u;",
        "  __syncthreads();",
        f"  for (unsigned int j = threadIdx.x; j < {n}; j += {block}u) {{",
        *(f"  {line}" for line in element),
        "    if ((key & kmask) == kpre && (rank & rmask) == rpre)",
        f"      atomicAdd(&rtx_hist[(unsigned int)((by_rank ? ({key})rank : key) >> shift) & 255u], 1u);",
        "  }",
        "  __syncthreads();",
        "  // the digit holding the want-th best: suffix sums, rtx_hist[b] becoming the count at or above b",
        "  unsigned int own = 0u, at_or_above = 0u;",
        "  if (threadIdx.x < 256u) own = at_or_above = rtx_hist[threadIdx.x];",
        "  for (unsigned int step = 1u; step < 256u; step <<= 1) {",
        "    const unsigned int add = threadIdx.x + step < 256u ? rtx_hist[threadIdx.x + step] : 0u;",
        "    __syncthreads();",
        "    if (threadIdx.x < 256u) rtx_hist[threadIdx.x] = at_or_above += add;",
        "    __syncthreads();",
        "  }",
        "  if (threadIdx.x < 256u && at_or_above - own < want && want <= at_or_above) {",
        "    rtx_pick[0] = threadIdx.x; rtx_pick[1] = want - (at_or_above - own); rtx_pick[2] = own;",
        "  }",
        "  __syncthreads();",
        "  const unsigned int digit = rtx_pick[0];",
        "  want = rtx_pick[1];",
        "  done = rtx_pick[2] == want;  // every element of the digit's bin is wanted",
        "  if (by_rank) { rpre |= digit << shift; rmask |= 255u << shift; }",
        f"  else {{ kpre |= ({key})digit << shift; kmask |= ({key})255u << shift; }}",
        "}",
        "if (threadIdx.x == 0u) rtx_count = 0u;",
        "__syncthreads();",
        f"for (unsigned int j = threadIdx.x; j < {n}; j += {block}u) {{",
        *element,
        "  const bool tied = (key & kmask) == kpre;",
        "  if ((key & kmask) > kpre || (tied && (rank & rmask) >= rpre)) {",
        "    const unsigned int at = atomicAdd(&rtx_count, 1u);",
        f"    {keys}[at] = key;",
        f"    {index}[at] = j;",
        "  }",
        "}",
        f"for (unsigned int j = {p.k}u + threadIdx.x; j < {padded}u; j += {block}u) {{",
        f"  {keys}[j] = 0u;",
        f"  {index}[j] = 0xffffffffu;  // the padding loses to every element",
        "}",
        "__syncthreads();",
        sort,
        *_write(p, row, block, index),
    ]
