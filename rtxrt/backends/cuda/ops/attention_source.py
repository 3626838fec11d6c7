"""Fused attention for the ONNX ``Attention`` node (opsets 23 to 25) as the AOT optimizer
emits it (rtxrt/aot/passes/fuse_attention.py) and as decoder exports write it: one fused
kernel per node, with a copy kernel per KV cache tensor and a kernel for the optional
``qk_matmul_output``.

    Y = softmax(softcap(Q K^T * scale) + bias) V      per (batch, query head)

Q, K and V are 3-D ([batch, seq, heads * head_size], layout "bshd") or 4-D ([batch, heads,
seq, head_size], "bhsd"); Y has Q's layout. Query head h reads key/value head
h / (q_heads / kv_heads) (GQA). softcap (when > 0) is ``softcap * tanh(x / softcap)``. The
bias is the optional ``attn_mask`` (bool: False is -inf; float: added), padded with -inf up
to kv_len, plus -inf where the causal rule, a sliding window (opset 25) or the per-batch
``nonpad_kv_seqlen`` forbid a key. Causal and windows place query i at absolute position
i + offset: offset is past_key's length (an internal cache), nonpad_kv_seqlen[b] - q_len (an
external one), else 0. A query row with no allowed key gives zeros, not NaN. These are the
reference backend's semantics (rtxrt/backends/reference/ops/attention.py).

KV cache (past_key/past_value): ``cache_kernel`` first writes present = concat(past, new)
along the sequence ([batch, kv_heads, past + new, head_size], into the node's present
output, or a scratch buffer where the node has none), and the attention kernels read K and V
from there, kv_len = past + new long. The spec makes the present outputs that concatenation,
so it is written anyway; reading it back keeps one K and one V pointer with whole rows, so the
tile loaders (16-byte cp.async copies) are the same as without a cache. ``qk_matmul_output``
(its mode: the scores raw, capped, biased or softmaxed) comes from ``scores_kernel``, one
block a query row, a debugging output kept out of the fused kernel so that nodes without it
pay nothing.

Flash-attention style: a block owns ``block_q`` queries of one (batch, head); it walks the
keys in tiles staged in shared memory, keeping a running row maximum and sum (online
softmax, fp32), so no [q_len, kv_len] matrix is ever stored. Scores stay in natural units
until the exponent, ``exp2((x - max) * log2 e)``, so that a finite mask as large as
-3.4e38 (transformers' finfo.min) cannot overflow into -inf. A block skips the key tiles none
of its queries may see: past its last query's (causal, right window) and past the batch's
valid keys, and before its first query's left window. Kernels without a cache, valid counts
or windows hold none of that (no offset or valid count; their first tile is the constant 0).

Two implementations (``AttentionTactic.mma``):

- tensor cores (fp16/bf16 storage): each warp owns 16 query rows; S = Q K^T and O += P V
  by ``mma.sync`` m16n8k16 with fp32 accumulation (two m16n8k8 on sm_75, and for bf16 on
  sm_75, which has no bf16 mma, the same product emulated with warp shuffles). Q fragments
  are loaded once with ``ldmatrix``; K and V tiles are double-buffered with ``cp.async``
  (sm_80+; plain loads on sm_75); P goes from the S accumulators into A fragments directly,
  rounded to the storage type (as the reference rounds the probabilities).
- SIMT (any storage, fp32 math): each warp owns ``rows`` query rows and a tile of 32 keys, one
  a lane; P passes through shared memory to the P V product, where each lane owns output
  columns. fp32 storage uses this one.

Shapes are baked into the source; the kernel's parameters are pointers only, except in a
generic plan (codegen/dynamic.py): there the batch, sequence and mask sizes that vary over
the profile are ``int`` parameters (the constants made of them become macros over them; the
file-scope helpers that read SQ, SKV or KV_TILES take them too), heads and head sizes stay
fixed, and the default tactic is chosen at the profile's largest grid, so that every shape
gets the same source and the same candidate order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.dtypes import DType
from ....ir.graph import Node, TensorType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.dynamic import dim_names, is_dynamic, upper
from ..codegen.kernel_source import KERNEL_NAME, GridLaunch, KernelArg, KernelSource, LaunchPolicy
from ..codegen.template import render
from ..codegen.ptx import CP_ASYNC, MMA_SM75, MMA_SM80, SHARED_AND_LDMATRIX
from ..plan.program import BufferRole

F32, F16, BF16 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16
QKV_DTYPES = (F32, F16, BF16)
MASK_DTYPES = (F32, F16, BF16)  # float masks; bool masks are DType.BOOL
LAYOUTS = ("bshd", "bhsd")
MASKS = ("none", "bool", "float")
MAX_HEAD_SIZE = 128
MAX_STATIC_SMEM = 48 * 1024
MAX_GRID_X, MAX_GRID_YZ = 2**31 - 1, 65535
TARGET_BLOCKS = 256  # about two blocks per SM of an A100/H100: fewer rows per block below it
SOFTMAX_FP32 = 1  # softmax_precision: the softmax always runs in fp32 here
SEQLEN_DTYPES = (DType.INT64, DType.INT32)  # nonpad_kv_seqlen as stored
QK_MODES = (0, 1, 2, 3)  # qk_matmul_output: the scores raw, softcapped, biased, softmaxed
MAX_WINDOW = 2**40  # a wider window bounds no key of any tensor (and keeps position sums in 64 bits)
_ONNX = ("", "ai.onnx")
_NEG_INF = "__uint_as_float(0xff800000u)"


@dataclass(frozen=True)
class AttentionProblem:
    """One Attention node with concrete shapes. ``dtype`` is the storage of Q, K, V and Y;
    ``mask_shape`` the attn_mask as stored (rank 1 to 4, right-aligned to [batch, q_heads,
    q_len, kv_len]: each dim 1 or that size, the last at most kv_len, the rest -inf).

    With ``cache`` (past_key/past_value given) K and V are read from present = concat(past,
    new), bhsd whatever Q's layout, ``kv_len`` = ``past_len`` + the new keys. ``seqlen``: the
    storage of nonpad_kv_seqlen when given. ``window``: (left, right) sliding window sizes,
    -1 unbounded. ``qk_mode``: the qk_matmul_output mode when the node writes that output."""

    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_size: int
    v_head_size: int
    dtype: DType
    layout: str
    scale: float
    causal: bool = False
    mask: str = "none"
    mask_dtype: DType | None = None
    mask_shape: tuple[int, ...] = ()
    cache: bool = False
    past_len: int = 0
    seqlen: DType | None = None
    softcap: float = 0.0
    window: tuple[int, int] = (-1, -1)
    qk_mode: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in QKV_DTYPES:
            raise CodegenError(f"attention takes float32, float16 or bfloat16 Q, K and V, not {self.dtype.short}")
        if self.layout not in LAYOUTS:
            raise CodegenError(f"attention layout must be one of {LAYOUTS}, got {self.layout!r}")
        if min(self.batch, self.q_len, self.kv_len) < 0 or min(self.q_heads, self.kv_heads) < 1:
            raise CodegenError(f"attention shapes must not be negative, and heads at least 1: {self.describe()}")
        for what, size in (("q_heads", self.q_heads), ("kv_heads", self.kv_heads), ("head_size", self.head_size),
                           ("v_head_size", self.v_head_size)):
            if is_dynamic(size):
                raise CodegenError(f"attention kernels need a fixed {what}, got one varying over the profile: {size!r}")
        if self.q_heads % self.kv_heads:
            raise CodegenError(f"{self.q_heads} query heads do not group over {self.kv_heads} key/value heads")
        for what, size in (("head_size", self.head_size), ("v_head_size", self.v_head_size)):
            if not 1 <= size <= MAX_HEAD_SIZE:
                raise CodegenError(f"attention kernels take head sizes 1 to {MAX_HEAD_SIZE}, got {what}={size}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise CodegenError(f"attention scale must be finite and not negative (Q and K are scaled by its "
                               f"square root), got {self.scale}")
        if self.q_heads > MAX_GRID_YZ or self.batch > MAX_GRID_YZ:
            raise CodegenError(f"attention over {self.batch} batches of {self.q_heads} heads exceeds CUDA's grid")
        self._check_mask()
        self._check_features()

    def _check_features(self) -> None:
        if self.cache and self.seqlen is not None:
            raise CodegenError("nonpad_kv_seqlen (an external KV cache) cannot be combined with past_key/past_value "
                               "(an internal one)")
        if not self.cache and self.past_len:
            raise CodegenError(f"a past length of {self.past_len} without a KV cache")
        if self.cache and not 0 <= self.past_len <= self.kv_len:
            raise CodegenError(f"a past of {self.past_len} keys does not fit {self.kv_len} keys in all")
        if self.seqlen not in (None, *SEQLEN_DTYPES):
            raise CodegenError(f"nonpad_kv_seqlen is stored as {'/'.join(d.short for d in SEQLEN_DTYPES)}, "
                               f"not {self.seqlen.short}")
        if not (math.isfinite(self.softcap) and self.softcap >= 0):
            raise CodegenError(f"attention softcap must be finite (0: none), got {self.softcap}")
        if not all(-1 <= w <= MAX_WINDOW for w in self.window):
            raise CodegenError(f"sliding window sizes are -1 (unbounded) or 0 to {MAX_WINDOW}, got {self.window}")
        if self.qk_mode not in (None, *QK_MODES):
            raise CodegenError(f"qk_matmul_output_mode must be one of {QK_MODES}, got {self.qk_mode}")

    def _check_mask(self) -> None:
        if self.mask not in MASKS:
            raise CodegenError(f"attention mask must be one of {MASKS}, got {self.mask!r}")
        if self.mask == "none":
            if self.mask_dtype is not None or self.mask_shape:
                raise CodegenError("an attention without a mask has no mask dtype or shape")
            return
        want = (DType.BOOL,) if self.mask == "bool" else MASK_DTYPES
        if self.mask_dtype not in want:
            raise CodegenError(f"a {self.mask} attention mask is stored as {'/'.join(d.short for d in want)}, "
                               f"not {self.mask_dtype.short if self.mask_dtype else None}")
        shape, scores = tuple(self.mask_shape), self.scores_shape
        if not 1 <= len(shape) <= 4 or min(shape) < 0:
            raise CodegenError(f"attention mask of shape {list(shape)}: rank 1 to 4 expected")
        if shape[-1] > self.kv_len:
            raise CodegenError(f"attention mask of shape {list(shape)} is longer than the {self.kv_len} keys")
        for mine, theirs in zip(shape[:-1], scores[4 - len(shape):-1]):
            if mine not in (1, theirs):
                raise CodegenError(f"attention mask of shape {list(shape)} does not broadcast to the scores "
                                   f"{list(scores)}")

    @property
    def scores_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.q_heads, self.q_len, self.kv_len)

    @property
    def new_len(self) -> int:
        """Keys in the K and V inputs (all of them without a cache)."""
        return self.kv_len - self.past_len

    @property
    def positioned(self) -> bool:
        """Whether keys are allowed by their position relative to the query's (causal, windows)."""
        return self.causal or self.window != (-1, -1)

    @property
    def placed(self) -> bool:
        """Whether a cache, per-batch valid key counts or a window place queries and keys (a
        per-block offset and key count; the plain kernels have neither)."""
        return self.cache or self.seqlen is not None or self.window != (-1, -1)

    def _dims(self, tensor: str) -> tuple[int, int, int]:
        """(heads, sequence, head size) of "Q", "K", "V" (as the attention kernels read them),
        "Y", the inputs "K_new" and "V_new", "K_past" and "V_past", the present outputs
        "K_present" and "V_present", or the scores "S"."""
        return {"Q": (self.q_heads, self.q_len, self.head_size),
                "K": (self.kv_heads, self.kv_len, self.head_size),
                "V": (self.kv_heads, self.kv_len, self.v_head_size),
                "Y": (self.q_heads, self.q_len, self.v_head_size),
                "K_new": (self.kv_heads, self.new_len, self.head_size),
                "V_new": (self.kv_heads, self.new_len, self.v_head_size),
                "K_past": (self.kv_heads, self.past_len, self.head_size),
                "V_past": (self.kv_heads, self.past_len, self.v_head_size),
                "K_present": (self.kv_heads, self.kv_len, self.head_size),
                "V_present": (self.kv_heads, self.kv_len, self.v_head_size),
                "S": (self.q_heads, self.q_len, self.kv_len)}[tensor]

    def _layout(self, tensor: str) -> str:
        """Q, Y and the K and V inputs have the node's layout; past, present and scores are bhsd."""
        if tensor in ("Q", "Y", "K_new", "V_new") or tensor in ("K", "V") and not self.cache:
            return self.layout
        return "bhsd"

    def shape(self, tensor: str) -> tuple[int, ...]:
        """The stored shape of ``tensor`` (a name ``_dims`` takes)."""
        heads, seq, size = self._dims(tensor)
        return (self.batch, seq, heads * size) if self._layout(tensor) == "bshd" else (self.batch, heads, seq, size)

    def strides(self, tensor: str) -> tuple[int, int, int]:
        """Elements between batches, heads and rows (sequence positions) of ``tensor``."""
        heads, seq, size = self._dims(tensor)
        if self._layout(tensor) == "bshd":
            return seq * heads * size, size, heads * size
        return heads * seq * size, seq * size, size

    def mask_strides(self) -> tuple[int, int, int]:
        """Elements between the mask's batches, heads and query rows (0 where broadcast)."""
        b, h, q, k = (1,) * (4 - len(self.mask_shape)) + tuple(self.mask_shape)
        return (0 if _broadcast(b) else h * q * k, 0 if _broadcast(h) else q * k, 0 if _broadcast(q) else k)

    def describe(self) -> str:
        """What the kernels compute (not ``qk_mode``: the fused kernel is the same with or without
        that output)."""
        mask = f" mask={self.mask}:{self.mask_dtype.short}{_listed(self.mask_shape)}" if self.mask != "none" else ""
        features = "".join([f" past={self.past_len}" if self.cache else "",
                            f" nonpad:{self.seqlen.short}" if self.seqlen is not None else "",
                            f" softcap={self.softcap:g}" if self.softcap > 0 else "",
                            f" window={self.window}" if self.window != (-1, -1) else ""])
        return (f"{self.layout} B={self.batch} H={self.q_heads}/{self.kv_heads} Sq={self.q_len} Skv={self.kv_len} "
                f"D={self.head_size}/{self.v_head_size} {self.dtype.short} scale={self.scale:g}"
                f"{' causal' if self.causal else ''}{mask}{features}")


@dataclass(frozen=True)
class AttentionTactic:
    """One implementation choice. ``mma``: tensor cores (fp16/bf16 storage), ``rows`` = 16
    query rows per warp, K/V tiles of ``kv_tile`` (32 or 64) keys, double-buffered. SIMT:
    ``rows`` (1 to 8) query rows per warp, tiles of 32 keys."""

    mma: bool
    warps: int
    rows: int
    kv_tile: int

    def __post_init__(self) -> None:
        if self.warps not in (1, 2, 4, 8):
            raise ValueError(f"attention tactic {self.label}: warps must be 1, 2, 4 or 8")
        if self.mma and (self.rows != 16 or self.kv_tile not in (32, 64)):
            raise ValueError(f"attention tactic {self.label}: tensor cores take 16 rows a warp and tiles of 32 or 64 keys")
        if not self.mma and (self.rows not in (1, 2, 4, 8) or self.kv_tile != 32):
            raise ValueError(f"attention tactic {self.label}: SIMT takes 1, 2, 4 or 8 rows a warp and tiles of 32 keys")

    @property
    def block_q(self) -> int:
        return self.warps * self.rows

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def label(self) -> str:
        return f"{'mma' if self.mma else 'simt'}_w{self.warps}_r{self.rows}_kv{self.kv_tile}"

    def smem_bytes(self, p: AttentionProblem) -> int:
        """Static shared memory per block for ``p``."""
        if self.mma:
            return 2 * 2 * _mma_stage(p, self)
        g = _simt_geometry(p)
        return 4 * (self.block_q * g["QS"] + 32 * g["KS"] + 32 * g["VS"] + self.block_q * 32)

    def grid(self, p: AttentionProblem) -> tuple[int, int, int]:
        """(query tiles, heads, batch); (0, 0, 0) when there is nothing to do."""
        grid = (-(-p.q_len // self.block_q), p.q_heads, p.batch)
        if grid[0] > MAX_GRID_X:
            raise CodegenError(f"attention {p.describe()} needs {grid[0]} query tiles, beyond CUDA's grid")
        return grid if all(grid) else (0, 0, 0)


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _mma_stage(p: AttentionProblem, t: AttentionTactic) -> int:
    """Elements of one shared-memory stage: a K and a V tile, rows padded by 8 elements
    (conflict-free ldmatrix); stage 1 first holds the Q tile."""
    ks, vs = _round16(p.head_size) + 8, _round16(p.v_head_size) + 8
    return max(t.kv_tile * (ks + vs), t.block_q * ks)


def _simt_geometry(p: AttentionProblem) -> dict[str, int]:
    """Shared-memory row lengths (floats) of the SIMT kernel: Q rows padded to float4 reads,
    K rows of odd length (lanes reading key ``lane`` hit distinct banks), V rows of whole
    warps of columns."""
    d = p.head_size
    dvl = -(-p.v_head_size // 32)
    return {"QS": -(-d // 4) * 4, "KS": d if d % 2 else d + 1, "DVL": dvl, "VS": 32 * dvl}


def candidate_tactics(p: AttentionProblem) -> tuple[AttentionTactic, ...]:
    """The tactics that fit ``p`` (48 KiB of static shared memory), tensor-core ones first."""
    tactics = []
    if p.dtype in C.NARROW_FLOATS:
        tactics += [AttentionTactic(True, w, 16, kv) for kv in (64, 32) for w in (4, 2, 1)]
    tactics += [AttentionTactic(False, 4, r, 32) for r in (8, 4, 2)]
    return tuple(t for t in tactics if t.smem_bytes(p) <= MAX_STATIC_SMEM)


def default_tactic(p: AttentionProblem) -> AttentionTactic:
    """Tensor cores for fp16/bf16, with the larger key tile that fits; the largest block of
    queries that still gives TARGET_BLOCKS blocks, else the smallest (small batches and
    short sequences need blocks more than they need K/V reuse)."""
    fitting = candidate_tactics(p)
    mma = p.dtype in C.NARROW_FLOATS
    kv = max(t.kv_tile for t in fitting if t.mma == mma)
    options = [t for t in fitting if t.mma == mma and t.kv_tile == kv]  # largest block_q first
    for t in options:
        if _most_blocks(p, t) >= TARGET_BLOCKS:
            return t
    return options[-1]


def _most_blocks(p: AttentionProblem, t: AttentionTactic) -> int:
    """Blocks of ``t``'s grid for ``p``; in a generic plan at the profile's largest batch and
    query length, so that every shape of the profile gets the same default (and candidate order)."""
    return -(-upper(p.q_len) // t.block_q) * p.q_heads * upper(p.batch)


def _dim(d: int) -> int:
    """A dim as the kernels take it: a plain int, or the DimInt of a generic plan kept as it is."""
    return d if is_dynamic(d) else int(d)


def _broadcast(n: int) -> bool:
    """Whether a mask dim of size ``n`` broadcasts (is 1 at every shape of the profile)."""
    return not is_dynamic(n) and n == 1


def _listed(shape: Sequence[int]) -> str:
    """``shape`` as ``list(shape)`` prints it, a dim argument as its C expression (not its value)."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def attention_problem(node: Node, inputs: Sequence[TensorType | None],
                      storage: Sequence[DType | None] | None = None) -> AttentionProblem:
    """``node`` (an ONNX Attention) on inputs of these static logical types (None for omitted
    optional ones), stored as ``storage`` says per input (default: the logical types; Y is
    stored as Q). CodegenError naming the node for what the kernels do not cover."""
    if node.domain not in _ONNX or node.op_type != "Attention":
        raise CodegenError(f"{node.label} is not an ONNX Attention")
    return _problem(node, inputs, storage)


def _problem(node: Node, inputs: Sequence[TensorType | None],
             storage: Sequence[DType | None] | None) -> AttentionProblem:
    label = node.label
    present = [i for i, name in enumerate(node.inputs) if name]
    if not {0, 1, 2} <= set(present):
        raise CodegenError(f"{label} needs Q, K and V")
    if (4 in present) != (5 in present):
        raise CodegenError(f"{label}: past_key and past_value come together")
    precision = node.attr("softmax_precision")
    if precision not in (None, SOFTMAX_FP32):
        raise CodegenError(f"{label}: softmax_precision {precision} (the attention kernels compute the softmax "
                           "in float32)")

    types = list(inputs) + [None] * (len(node.inputs) - len(inputs))
    kept = list(storage or []) + [None] * (len(node.inputs) - len(storage or []))
    q, k, v = types[:3]
    if any(t is None or not t.is_static for t in (q, k, v)):
        raise CodegenError(f"{label}: attention kernels need static shapes, got {q}, {k}, {v}")
    stored = [kept[i] or t.dtype for i, t in enumerate((q, k, v))]
    if len(set(stored)) != 1:
        raise CodegenError(f"{label}: Q, K and V are stored as {', '.join(d.short for d in stored)}; "
                           "one type expected")
    qs, ks, vs = (tuple(_dim(d) for d in t.shape) for t in (q, k, v))
    if not len(qs) == len(ks) == len(vs) or len(qs) not in (3, 4):
        raise CodegenError(f"{label}: Q, K and V must all be 3-D or all 4-D, got {list(qs)}, {list(ks)}, {list(vs)}")
    if len(qs) == 3:
        hq, hkv = int(node.attr("q_num_heads", 0)), int(node.attr("kv_num_heads", 0))
        if hq <= 0 or hkv <= 0:
            raise CodegenError(f"{label}: 3-D inputs need q_num_heads and kv_num_heads")
        if qs[2] % hq or ks[2] % hkv or vs[2] % hkv:
            raise CodegenError(f"{label}: hidden sizes {qs[2]}, {ks[2]}, {vs[2]} do not split into "
                               f"{hq}/{hkv} heads")
        layout = "bshd"
        qd, kd, vd = ((x[0], heads, x[1], x[2] // heads) for x, heads in ((qs, hq), (ks, hkv), (vs, hkv)))
    else:
        layout, (qd, kd, vd) = "bhsd", (qs, ks, vs)
    if not (qd[0] == kd[0] == vd[0] and kd[1] == vd[1] and kd[2] == vd[2] and qd[3] == kd[3]):
        raise CodegenError(f"{label}: Q {list(qs)}, K {list(ks)} and V {list(vs)} do not agree")
    head_size = qd[3]
    scale = float(node.attr("scale", 1 / math.sqrt(head_size) if head_size else 1.0))

    mask, mask_dtype, mask_shape = "none", None, ()
    if 3 in present:
        m = types[3]
        if m is None or not m.is_static:
            raise CodegenError(f"{label}: attention kernels need a static attn_mask shape, got {m}")
        mask_dtype = kept[3] or m.dtype
        mask = "bool" if m.dtype == DType.BOOL else "float"
        mask_shape = tuple(_dim(d) for d in m.shape)
    past_len = _past_len(label, types[4:6], kept[4:6], kd, vd, stored[0]) if 4 in present else 0
    seqlen = _seqlen_storage(label, types[6], kept[6], qd[0]) if 6 in present else None
    softcap = float(node.attr("softcap", 0.0))
    # a window below 0 is unbounded and one past MAX_WINDOW bounds nothing, as the reference has them
    window = tuple(min(max(int(node.attr(w, -1)), -1), MAX_WINDOW) for w in ("left_window_size", "right_window_size"))
    writes_scores = len(node.outputs) > 3 and bool(node.outputs[3])
    try:
        return AttentionProblem(qd[0], qd[1], kd[1], qd[2], kd[2] + past_len, head_size, vd[3], stored[0], layout,
                                scale, bool(node.attr("is_causal", 0)), mask, mask_dtype, mask_shape,
                                cache=4 in present, past_len=past_len, seqlen=seqlen,
                                softcap=softcap if softcap > 0 else 0.0,  # the spec applies it only above 0
                                window=window,
                                qk_mode=int(node.attr("qk_matmul_output_mode", 0)) if writes_scores else None)
    except CodegenError as exc:
        raise CodegenError(f"{label}: {exc}") from None


def _past_len(label: str, types: Sequence[TensorType | None], kept: Sequence[DType | None],
              k: Sequence[int], v: Sequence[int], dtype: DType) -> int:
    """The past length of past_key and past_value ([batch, kv_heads, past, head size], stored as
    Q is) that agree with the new keys' (batch, heads, -, head size) ``k`` and values' ``v``."""
    past_key, past_value = types
    if any(t is None or not t.is_static or t.rank != 4 for t in types):
        raise CodegenError(f"{label}: past_key and past_value must be 4-D of static shapes, got {past_key}, "
                           f"{past_value}")
    pk, pv = (tuple(_dim(d) for d in t.shape) for t in types)
    if not (pk[:3] == pv[:3] and pk[:2] == tuple(k[:2]) and pk[3] == k[3] and pv[3] == v[3]):
        raise CodegenError(f"{label}: past_key {list(pk)} and past_value {list(pv)} do not agree with K "
                           f"{list(k)} and V {list(v)} (as [batch, heads, seq, head size])")
    stored = [kept[i] or t.dtype for i, t in enumerate(types)]
    if set(stored) != {dtype}:
        raise CodegenError(f"{label}: past_key and past_value are stored as {', '.join(d.short for d in stored)}, "
                           f"not as Q ({dtype.short})")
    return pk[2]


def _seqlen_storage(label: str, t: TensorType | None, kept: DType | None, batch: int) -> DType:
    """How nonpad_kv_seqlen ([batch], int64) is stored."""
    if t is None or not t.is_static or tuple(t.shape) != (batch,):
        raise CodegenError(f"{label}: nonpad_kv_seqlen must have the shape [{batch}], got {t}")
    return kept or t.dtype


PRESENT = {"K": "present_key", "V": "present_value"}  # outputs 1 and 2, or scratch buffers so named
PAST = {"K": "past_key", "V": "past_value"}  # inputs 4 and 5
SCORES_THREADS = 128


def attention_kernel(problem: AttentionProblem, tactic: AttentionTactic | None = None) -> KernelSource:
    """The kernel computing ``problem`` with ``tactic`` (default: ``default_tactic``). Its
    arguments are Q (input 0), K and V (inputs 1 and 2; with a cache the present outputs 1 and
    2, which ``cache_kernel`` writes first), the mask (input 3) and nonpad_kv_seqlen (input 6)
    when there are, and Y (output 0); the launch is a GridLaunch. The source compiles for
    every arch from sm_75."""
    p = problem
    t = tactic or default_tactic(p)
    if t.mma and p.dtype not in C.NARROW_FLOATS:
        raise CodegenError(f"attention tactic {t.label}: tensor cores take float16 or bfloat16, not {p.dtype.short}")
    smem = t.smem_bytes(p)
    if smem > MAX_STATIC_SMEM:
        raise CodegenError(f"attention tactic {t.label} needs {smem} bytes of shared memory for {p.describe()} "
                           f"(at most {MAX_STATIC_SMEM})")
    args = [KernelArg("Q", BufferRole.IN, 0, p.dtype, p.shape("Q")), _kv_arg(p, "K"), _kv_arg(p, "V"),
            *_bias_args(p), KernelArg("Y", BufferRole.OUT, 0, p.dtype, p.shape("Y"))]
    launch = GridLaunch(t.grid(p), (t.threads, 1, 1), smem)
    return KernelSource.named("rtx_attn_", _source(p, t), launch, args)


def cache_kernel(problem: AttentionProblem, tensor: str) -> KernelSource:
    """present_key (``tensor`` "K") or present_value ("V"): [batch, kv_heads, past + new, head
    size] = past_key or past_value (input 4 or 5, with a cache) followed along the sequence by K
    or V (input 1 or 2, in the node's layout). A grid-stride copy, 16 bytes a thread where rows
    are whole 16-byte chunks and the pointers are aligned (element by element otherwise)."""
    p = problem
    index = "KV".index(tensor) + 1
    _, total, size = p._dims(tensor)
    width = 16 // p.dtype.itemsize
    vec = size % width == 0
    present = KernelArg(PRESENT[tensor], BufferRole.OUT, index, p.dtype, p.shape(f"{tensor}_present"))
    new = KernelArg(tensor, BufferRole.IN, index, p.dtype, p.shape(f"{tensor}_new"))
    past = [KernelArg(PAST[tensor], BufferRole.IN, index + 3, p.dtype, p.shape(f"{tensor}_past"))]
    args = (past if p.cache else []) + [new, present]
    io = C.storage_type(p.dtype)
    nb, nh, nr = p.strides(f"{tensor}_new")
    shape = "\n".join([
        _declare("long long", "LL", [("ROWS", p.batch * p.kv_heads * total)], "  // rows of present"),
        _declare("int", "", [("H", p.kv_heads), ("T", total), ("P", p.past_len), ("D", size)]),
        _declare("long long", "LL", [("NB", nb), ("NH", nh), ("NR", nr)], "  // the new rows' strides"),
    ])
    names = list(dim_names(shape))  # the helper reads the shape: in a generic plan, dim arguments it takes
    pointers = ["past", "x", "present"] if p.cache else ["x", "present"]
    source = render(_CACHE_SOURCE, prelude=C.PRELUDE, what=PRESENT[tensor], problem=p.describe(), shape=shape,
                    vec=int(vec), width=width, io=io, kernel=KERNEL_NAME,
                    params=", ".join([f"const {io}* __restrict__ {n}" for n in pointers[:-1]] +
                                     [f"{io}* __restrict__ present"]),
                    dim_params="".join(f", int {n}" for n in names), dim_args="".join(f", {n}" for n in names),
                    aligned=" | ".join(f"reinterpret_cast<unsigned long long>({n})" for n in pointers),
                    past="past" if p.cache else "nullptr")
    chunks = p.batch * p.kv_heads * total * (size // width if vec else size)
    return KernelSource.named("rtx_kv_cache_", source, LaunchPolicy(chunks), args)


def scores_kernel(problem: AttentionProblem) -> KernelSource:
    """qk_matmul_output (output 3, [batch, q_heads, q_len, kv_len] stored as Q) in mode
    ``problem.qk_mode``: the scaled scores (0), softcapped (1), biased as the attention is (2),
    or its probabilities (3; a row with no allowed key is zeros). One block a query row, a
    thread a key at a time, in fp32; mode 3 computes the scores twice (the row's maximum and
    sum, then the probabilities) rather than store them. Its other arguments are the attention
    kernel's but V and Y."""
    p = problem
    if p.qk_mode not in QK_MODES:
        raise CodegenError(f"attention {p.describe()}: no qk_matmul_output mode to write")
    args = [KernelArg("Q", BufferRole.IN, 0, p.dtype, p.shape("Q")), _kv_arg(p, "K"), *_bias_args(p),
            KernelArg("qk_matmul_output", BufferRole.OUT, 3, p.dtype, p.shape("S"))]
    io = C.storage_type(p.dtype)
    (qb, qh, qr), (kb, kh, kr) = p.strides("Q"), p.strides("K")
    shape = "\n".join([
        _declare("int", "", [("SQ", p.q_len), ("SKV", p.kv_len), ("D", p.head_size)]),
        _declare("int", "", [("GROUP", p.q_heads // p.kv_heads)], "  // query heads per key/value head"),
        _declare("long long", "LL", [("QB", qb), ("QH", qh), ("QR", qr), ("KB", kb), ("KH", kh), ("KR", kr)]),
        _mask_constants(p), _feature_constants(p),
    ])
    stages = [_softcap(p)] if p.qk_mode >= 1 else []
    if p.qk_mode >= 2:
        stages.append(_bias(p))
    store = "S[key] = " + C.store("score(key)" if p.qk_mode < 3 else "exp2f((score(key) - mu) * LOG2E) * inv",
                                  p.dtype) + ";"
    source = render(_SCORES_SOURCE, prelude=C.PRELUDE, mode=p.qk_mode, problem=p.describe(), neg_inf=_NEG_INF,
                    shape=shape, scale=C.literal(p.scale, F32), log2e=C.literal(math.log2(math.e), F32),
                    kernel=KERNEL_NAME, params=", ".join(_params(p, ["Q", "K"], "S")), io=io,
                    load_q=C.load("q[d]", p.dtype), load_k=C.load("kr[d]", p.dtype),
                    block_setup=_block_setup(p), stages=" ".join(s for s in stages if s),
                    softmax=_SCORES_SOFTMAX if p.qk_mode == 3 else "", store=store, threads=SCORES_THREADS)
    launch = GridLaunch((p.q_len, p.q_heads, p.batch) if p.q_len and p.kv_len and p.batch else (0, 0, 0),
                        (SCORES_THREADS, 1, 1))
    return KernelSource.named("rtx_attn_scores_", source, launch, args)


def _kv_arg(p: AttentionProblem, tensor: str) -> KernelArg:
    """K or V as the attention kernels read them: the input, or with a cache the present output."""
    index = "KV".index(tensor) + 1
    if p.cache:
        return KernelArg(PRESENT[tensor], BufferRole.OUT, index, p.dtype, p.shape(tensor))
    return KernelArg(tensor, BufferRole.IN, index, p.dtype, p.shape(tensor))


def _bias_args(p: AttentionProblem) -> list[KernelArg]:
    """The mask (input 3) and nonpad_kv_seqlen (input 6) where the node has them."""
    args = []
    if p.mask != "none":
        args.append(KernelArg("attn_mask", BufferRole.IN, 3, p.mask_dtype, tuple(p.mask_shape)))
    if p.seqlen is not None:
        args.append(KernelArg("nonpad_kv_seqlen", BufferRole.IN, 6, p.seqlen, (p.batch,)))
    return args


# ---------------------------------------------------------------- the source

def _source(p: AttentionProblem, t: AttentionTactic) -> str:
    if t.mma:
        return render(_MMA_SOURCE, **_constants(p, t), dim_params=_dim_params(p), bf16=int(p.dtype == BF16),
                      dp=_round16(p.head_size),
                      dvp=_round16(p.v_head_size), stage=_mma_stage(p, t),
                      pack_cvt="rtx_f2bf" if p.dtype == BF16 else "rtx_f2h")
    g = _simt_geometry(p)
    return render(_SIMT_SOURCE, **_constants(p, t), qs=g["QS"], ks=g["KS"], dvl=g["DVL"], vs=g["VS"],
                  in_t=C.storage_type(p.dtype),
                  load_q=C.load("q[r * QR + c]", p.dtype),
                  load_k=C.load("k[(k0 + r) * KR + c]", p.dtype),
                  load_v=C.load("v[(k0 + r) * VR + c]", p.dtype),
                  store=C.store("o[r][i] * inv", p.dtype))


def _constants(p: AttentionProblem, t: AttentionTactic) -> dict[str, str | int]:
    """The values of the placeholders both kernels share (_HEADER's, the parameters, the bias)."""
    (qb, qh, qr), (kb, kh, kr), (vb, vh, vr), (yb, yh, yr) = (p.strides(x) for x in "QKVY")
    shape = "\n".join(line for line in [
        _declare("int", "", [("SQ", p.q_len), ("SKV", p.kv_len), ("D", p.head_size), ("DV", p.v_head_size)]),
        _declare("int", "", [("GROUP", p.q_heads // p.kv_heads)], "  // query heads per key/value head"),
        _declare("long long", "LL", [("QB", qb), ("QH", qh), ("QR", qr), ("KB", kb), ("KH", kh), ("KR", kr)]),
        _declare("long long", "LL", [("VB", vb), ("VH", vh), ("VR", vr), ("YB", yb), ("YH", yh), ("YR", yr)]),
        _mask_constants(p), _feature_constants(p),
    ] if line)
    kv_tiles = ("#define KV_TILES ((SKV + BKV - 1) / BKV)" if is_dynamic(p.kv_len)
                else "constexpr int KV_TILES = (SKV + BKV - 1) / BKV;")
    names = list(dim_names(f"{p.q_len} {p.kv_len}"))
    dim_params, dim_args = _dim_params(p), "".join(f", {n}" for n in names)
    return dict(
        prelude=C.PRELUDE, problem=p.describe(), tactic=t.label, causal=int(p.causal), neg_inf=_NEG_INF,
        shape=shape, kv_tiles=kv_tiles, dim_args=dim_args,
        key_tiles=render(_key_tiles(p), dim_params=dim_params, **({"limits": _limits(p)} if p.placed else {})),
        tile_args=", offset, valid" if p.placed else "",
        first_tile=f"rtx_first_tile(q0, offset{dim_args})" if p.window[0] >= 0 else "0",
        scale=C.literal(p.scale, F32), log2e=C.literal(math.log2(math.e), F32),
        warps=t.warps, rows=t.rows, block_q=t.block_q, kv_tile=t.kv_tile, threads=t.threads,
        kernel=KERNEL_NAME, params=", ".join(_params(p, ["Q", "K", "V"], "Y")),
        block_setup=_block_setup(p), bias=" ".join(s for s in (_softcap(p), _bias(p)) if s))


def _dim_params(p: AttentionProblem) -> str:
    """The file-scope helpers read SQ, SKV and KV_TILES: in a generic plan, dim arguments they take."""
    return "".join(f", int {n}" for n in dim_names(f"{p.q_len} {p.kv_len}"))


def _params(p: AttentionProblem, inputs: Sequence[str], output: str) -> list[str]:
    """The kernel's parameters: the pointers ``inputs`` (of Q's storage), the mask M and
    NONPAD where the node has them, then the ``output``."""
    io = C.storage_type(p.dtype)
    params = [f"const {io}* __restrict__ {x}" for x in inputs]
    if p.mask != "none":
        params.append(f"const {C.storage_type(p.mask_dtype)}* __restrict__ M")
    if p.seqlen is not None:
        params.append(f"const {C.storage_type(p.seqlen)}* __restrict__ NONPAD")
    return params + [f"{io}* __restrict__ {output}"]


def _mask_constants(p: AttentionProblem) -> str:
    mb, mh, mq = _mask_strides(p) if p.mask != "none" else (0, 0, 0)
    return "\n".join([
        _declare("long long", "LL", [("MB", mb), ("MH", mh), ("MQ", mq)], "  // mask strides (0: broadcast)"),
        _declare("int", "", [("MLEN", p.mask_shape[-1] if p.mask != "none" else 0)],
                 "  // mask keys; later ones are -inf"),
    ])


def _feature_constants(p: AttentionProblem) -> str:
    """The constants of a cache, windows and softcap (none in the plain kernels)."""
    lines = []
    if p.cache:
        lines.append(_declare("long long", "LL", [("PAST", p.past_len)], "  // the queries' offset"))
    if p.window != (-1, -1):
        lines.append(_declare("long long", "LL", [("LEFT", p.window[0]), ("RIGHT", p.window[1])],
                              "  // sliding window (-1: unbounded)"))
    if p.softcap > 0:
        lines.append(f"constexpr float SOFTCAP = {C.literal(p.softcap, F32)};")
    return "\n".join(lines)


def _block_setup(p: AttentionProblem) -> str:
    """Statements after a block knows its ``b`` and ``h``: the mask's origin, and where queries
    and keys are placed, the ``valid`` keys and the queries' ``offset`` (query ``row`` is at
    position ``row + offset``, as the keys are numbered)."""
    lines = ["M += b * MB + h * MH;"] if p.mask != "none" else []
    if p.seqlen is not None:
        lines += ["const long long valid = (long long)NONPAD[b];  // this batch's keys; later ones are padding",
                  "const long long offset = valid - SQ;  // the queries are the last SQ of them"]
    elif p.placed:
        lines.append(f"const long long valid = SKV, offset = {'PAST' if p.cache else '0'};")
    return "\n  ".join(lines)


def _key_tiles(p: AttentionProblem) -> str:
    """The file-scope helpers giving a block's key tiles."""
    if not p.placed:
        return _KEY_TILES
    return _KEY_RANGE + (_FIRST_TILE if p.window[0] >= 0 else "")


def _limits(p: AttentionProblem) -> str:
    """Statements of ``rtx_key_tiles`` lowering ``end`` (one past the block's last key)."""
    limits = []
    if p.causal:
        limits.append("end = min(end, last + offset);  // causal")
    if p.window[1] >= 0:
        limits.append("end = min(end, last + offset + RIGHT);  // right window")
    if p.seqlen is not None:
        limits.append("end = min(end, valid);  // the batch's valid keys")
    return "".join(f"  {line}\n" for line in limits)


def _mask_strides(p: AttentionProblem) -> tuple[int | str, int | str, int | str]:
    """``p.mask_strides()``; in a generic plan, a mask dim that varies down to 1 broadcasts where
    it is 1 (stride 0 then, a C expression choosing at run time)."""
    dims = (1,) * (4 - len(p.mask_shape)) + tuple(p.mask_shape)
    return tuple(f"({n} == 1 ? 0 : {stride})" if is_dynamic(n) and n.lo <= 1 else stride
                 for n, stride in zip(dims[:3], p.mask_strides()))


def _declare(ctype: str, suffix: str, values: Sequence[tuple[str, int | str]], comment: str = "") -> str:
    """``constexpr ctype NAME = value, ...;`` for the fixed ``values``; one that is a dim argument
    (generic plans) a macro of its C expression over the kernel's (or a helper's) parameters."""
    varying = [is_dynamic(value) or isinstance(value, str) for _, value in values]
    fixed = [f"{name} = {value}{suffix}" for (name, value), v in zip(values, varying) if not v]
    lines = [f"#define {name} (({ctype})({value}))" for (name, value), v in zip(values, varying) if v]
    if fixed:
        lines.append(f"constexpr {ctype} {', '.join(fixed)};{comment}")
    elif lines:
        lines[-1] += comment
    return "\n".join(lines)


def _softcap(p: AttentionProblem) -> str:
    """The statement capping the scaled score ``x`` (none without softcap)."""
    return "x = SOFTCAP * tanhf(x / SOFTCAP);" if p.softcap > 0 else ""


def _bias(p: AttentionProblem) -> str:
    """Statements turning the (capped) score ``x`` of (``row``, ``key``) into the biased one."""
    lines = ["if (key >= SKV) x = RTX_NEG_INF;"]
    if p.seqlen is not None:
        lines.append("else if (key >= valid) x = RTX_NEG_INF;")
    position = "row + offset" if p.placed else "row"
    if p.causal:
        lines.append(f"else if (key > {position}) x = RTX_NEG_INF;")
    if p.window[0] >= 0:
        lines.append(f"else if (key < {position} - LEFT) x = RTX_NEG_INF;")
    if p.window[1] >= 0:
        lines.append(f"else if (key > {position} + RIGHT) x = RTX_NEG_INF;")
    if p.mask != "none":
        lines.append("else if (key >= MLEN) x = RTX_NEG_INF;")
        # rows past q_len (a partial last tile) are computed but not stored: read row q_len - 1
        element = "M[(long long)(row < SQ ? row : SQ - 1) * MQ + key]"
        if p.mask == "bool":
            lines.append(f"else if (!{C.load(element, DType.BOOL)}) x = RTX_NEG_INF;")
        else:
            lines.append(f"else x += {C.load(element, p.mask_dtype)};")
    return " ".join(lines)


# The problem's constants, first in both kernels.
_HEADER = r"""${prelude}
// rtxrt attention: ${problem}; tactic ${tactic}
#define RTX_CAUSAL ${causal}
#define RTX_NEG_INF ${neg_inf}
${shape}
constexpr float SCALE = ${scale}, LOG2E = ${log2e};
constexpr int WARPS = ${warps}, ROWS = ${rows}, BQ = ${block_q}, BKV = ${kv_tile}, THREADS = ${threads};
${kv_tiles}
"""

# After each kernel's geometry: what both kernels call.
_COMMON = r"""
constexpr unsigned FULL = 0xffffffffu;
// The block's first query: causal blocks run the last (longest) query tiles first.
__device__ __forceinline__ int rtx_first_query() {
  return (RTX_CAUSAL ? (int)(gridDim.x - 1u - blockIdx.x) : (int)blockIdx.x) * BQ;
}
${key_tiles}"""

# The key tiles a block needs without the features that place queries (the plain kernels).
_KEY_TILES = r"""// Key tiles the block needs: causal blocks stop at their last query.
__device__ __forceinline__ int rtx_key_tiles(int q0${dim_params}) {
  const int last = SQ - q0 < BQ ? SQ : q0 + BQ;  // one past the block's last query
  return RTX_CAUSAL ? min(KV_TILES, (last + BKV - 1) / BKV) : KV_TILES;
}
"""

# With a cache, nonpad_kv_seqlen or windows: a query's position is row + offset (per block).
_KEY_RANGE = r"""// Key tiles [rtx_first_tile, rtx_key_tiles) the block needs: none past the last key its last
// query may see (causal, right window, the batch's valid keys), none before the first key its
// first query may see (left window).
__device__ __forceinline__ int rtx_key_tiles(int q0, long long offset, long long valid${dim_params}) {
  const int last = SQ - q0 < BQ ? SQ : q0 + BQ;  // one past the block's last query
  long long end = SKV;  // one past the last key the block may see
${limits}  return end <= 0 ? 0 : (int)((end + BKV - 1) / BKV);
}
"""
_FIRST_TILE = r"""__device__ __forceinline__ int rtx_first_tile(int q0, long long offset${dim_params}) {
  const long long first = q0 + offset - LEFT;  // the first key the block's first query may see
  return first <= 0 ? 0 : (int)(min(first, (long long)SKV) / BKV);
}
"""

# Tensor cores. Fragments as the PTX ISA lays them out for m16n8k16: lane = 4 g + t holds
# rows g and g + 8 of A and C, columns 2t, 2t + 1 of C (and k 2t, 2t + 1, 2t + 8, 2t + 9).
_MMA_SOURCE = _HEADER + r"""
#define RTX_BF16 ${bf16}
constexpr int DP = ${dp}, DVP = ${dvp};  // padded to whole mma steps
constexpr int KS = DP + 8, VS = DVP + 8;  // shared-memory rows (elements), padded: conflict-free ldmatrix
constexpr int K_TILE = BKV * KS, STAGE = ${stage};
constexpr bool VEC_QK = D % 8 == 0, VEC_V = DV % 8 == 0;  // rows of whole 16-byte chunks
""" + _COMMON + r"""
""" + SHARED_AND_LDMATRIX + r"""#if RTX_BF16 && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
// sm_75 has no bf16 mma: the same m16n8k16 product, each lane gathering its rows of A and
// columns of B from the lanes that hold them.
__device__ __forceinline__ float rtx_lo(unsigned x) { return rtx_bf2f((unsigned short)(x & 0xffffu)); }
__device__ __forceinline__ float rtx_hi(unsigned x) { return rtx_bf2f((unsigned short)(x >> 16)); }
__device__ __forceinline__ void rtx_mma_emulated(float* c, const unsigned* a, const unsigned* b) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll 1
  for (int src = 0; src < 4; ++src) {  // k = 2 src, 2 src + 1, 2 src + 8, 2 src + 9
    const unsigned a0 = __shfl_sync(FULL, a[0], 4 * g + src), a1 = __shfl_sync(FULL, a[1], 4 * g + src);
    const unsigned a2 = __shfl_sync(FULL, a[2], 4 * g + src), a3 = __shfl_sync(FULL, a[3], 4 * g + src);
    const unsigned b00 = __shfl_sync(FULL, b[0], 8 * t + src), b01 = __shfl_sync(FULL, b[1], 8 * t + src);
    const unsigned b10 = __shfl_sync(FULL, b[0], 8 * t + 4 + src), b11 = __shfl_sync(FULL, b[1], 8 * t + 4 + src);
    c[0] += rtx_lo(a0) * rtx_lo(b00) + rtx_hi(a0) * rtx_hi(b00) + rtx_lo(a2) * rtx_lo(b01) + rtx_hi(a2) * rtx_hi(b01);
    c[1] += rtx_lo(a0) * rtx_lo(b10) + rtx_hi(a0) * rtx_hi(b10) + rtx_lo(a2) * rtx_lo(b11) + rtx_hi(a2) * rtx_hi(b11);
    c[2] += rtx_lo(a1) * rtx_lo(b00) + rtx_hi(a1) * rtx_hi(b00) + rtx_lo(a3) * rtx_lo(b01) + rtx_hi(a3) * rtx_hi(b01);
    c[3] += rtx_lo(a1) * rtx_lo(b10) + rtx_hi(a1) * rtx_hi(b10) + rtx_lo(a3) * rtx_lo(b11) + rtx_hi(a3) * rtx_hi(b11);
  }
}
#endif

// c += a * b for one 16x8 tile over k = 16.
__device__ __forceinline__ void rtx_mma(float* c, const unsigned* a, const unsigned* b) {
""" + MMA_SM80 + r"""#elif RTX_BF16
  rtx_mma_emulated(c, a, b);
""" + MMA_SM75 + r"""}

// Two values as the 16-bit pair of an mma fragment (the first in the low half).
__device__ __forceinline__ unsigned rtx_pack(float lo, float hi) {
  return (unsigned)${pack_cvt}(lo) | ((unsigned)${pack_cvt}(hi) << 16);
}

""" + CP_ASYNC + r"""// A ROWS x COLS_P tile into shared memory (rows of LD elements): element (r, c) is
// src[r * stride + c] for r < valid_rows and c < COLS, zero elsewhere. 16-byte copies where
// the shape (VEC) and the pointers (aligned) allow them.
template <int ROWS, int COLS, int COLS_P, int LD, bool VEC>
__device__ __forceinline__ void rtx_load_tile(unsigned short* dst, const unsigned short* __restrict__ src,
                                              long long stride, int valid_rows, bool aligned) {
  const int tid = threadIdx.x;
  if (VEC && aligned) {
    constexpr int PER_ROW = COLS_P / 8, CHUNKS = ROWS * PER_ROW;
#pragma unroll
    for (int i = 0; i < (CHUNKS + THREADS - 1) / THREADS; ++i) {
      const int c = tid + i * THREADS;
      if (CHUNKS % THREADS == 0 || c < CHUNKS) {
        const int r = c / PER_ROW, col = (c % PER_ROW) * 8;
        const bool valid = r < valid_rows && col < COLS;
        rtx_copy16(dst + r * LD + col, valid ? src + r * stride + col : src, valid);
      }
    }
  } else {
    constexpr int ELEMS = ROWS * COLS_P;
#pragma unroll 4
    for (int i = 0; i < (ELEMS + THREADS - 1) / THREADS; ++i) {
      const int e = tid + i * THREADS;
      if (ELEMS % THREADS == 0 || e < ELEMS) {
        const int r = e / COLS_P, col = e % COLS_P;
        dst[r * LD + col] = (r < valid_rows && col < COLS) ? src[r * stride + col] : (unsigned short)0;
      }
    }
  }
}

// The K and V tiles of keys k0.. into one stage.
__device__ __forceinline__ void rtx_load_kv(unsigned short* stage, const unsigned short* __restrict__ k,
                                            const unsigned short* __restrict__ v, int k0, bool aligned${dim_params}) {
  const int rows = SKV - k0 < BKV ? SKV - k0 : BKV;
  rtx_load_tile<BKV, D, DP, KS, VEC_QK>(stage, k + k0 * KR, KR, rows, aligned);
  rtx_load_tile<BKV, DV, DVP, VS, VEC_V>(stage + K_TILE, v + k0 * VR, VR, rows, aligned);
}

extern "C" __global__ void __launch_bounds__(THREADS) ${kernel}(${params}) {
  __shared__ __align__(16) unsigned short smem[2 * STAGE];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = lane & 3;
  const int q0 = rtx_first_query(), h = blockIdx.y, b = blockIdx.z;
  const unsigned short* __restrict__ q = Q + b * QB + h * QH + q0 * QR;
  const unsigned short* __restrict__ k = K + b * KB + (h / GROUP) * KH;
  const unsigned short* __restrict__ v = V + b * VB + (h / GROUP) * VH;
  ${block_setup}
  const bool aligned = ((reinterpret_cast<unsigned long long>(Q) | reinterpret_cast<unsigned long long>(K) |
                         reinterpret_cast<unsigned long long>(V)) & 15) == 0;
  const int tiles = rtx_key_tiles(q0${tile_args}${dim_args}), first = ${first_tile};

  // The Q tile goes through stage 1 while the first K/V tile lands in stage 0.
  rtx_load_tile<BQ, D, DP, KS, VEC_QK>(smem + STAGE, q, QR, SQ - q0 < BQ ? SQ - q0 : BQ, aligned);
  rtx_commit();
  if (first < tiles) rtx_load_kv(smem, k, v, first * BKV, aligned${dim_args});
  rtx_commit();
  rtx_wait<1>();
  __syncthreads();
  unsigned qf[DP / 16][4];  // this warp's 16 rows of Q as A fragments, k steps of 16
  {
    const unsigned base = rtx_smem_addr(smem + STAGE);
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk)
      rtx_ldmatrix_x4(qf[kk], base + 2u * ((warp * 16 + (lane & 15)) * KS + kk * 16 + (lane >> 4) * 8));
  }
  __syncthreads();  // stage 1 is free for the second K/V tile

  float o[DVP / 8][4];
#pragma unroll
  for (int n = 0; n < DVP / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {RTX_NEG_INF, RTX_NEG_INF}, l[2] = {0.0f, 0.0f};  // rows g and g + 8; l: this lane's part
  const int row0 = q0 + warp * 16 + (lane >> 2);

  for (int j = first; j < tiles; ++j) {  // tile j in stage (j - first) & 1
    if (j + 1 < tiles) rtx_load_kv(smem + ((j + 1 - first) & 1) * STAGE, k, v, (j + 1) * BKV, aligned${dim_args});
    rtx_commit();
    rtx_wait<1>();  // tile j (all but the newest group) has landed
    __syncthreads();
    const unsigned ks = rtx_smem_addr(smem + ((j - first) & 1) * STAGE), vs = ks + 2u * K_TILE;

    float s[BKV / 8][4];  // S = Q K^T: 16 rows x BKV keys of this warp
#pragma unroll
    for (int n = 0; n < BKV / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk)
#pragma unroll
      for (int nj = 0; nj < BKV / 16; ++nj) {  // K rows are the mma's columns: B as [N, K]
        unsigned r[4];
        rtx_ldmatrix_x4(r, ks + 2u * ((nj * 16 + (lane & 7) + (lane >> 4) * 8) * KS + kk * 16 + ((lane >> 3) & 1) * 8));
        rtx_mma(s[2 * nj], qf[kk], r);
        rtx_mma(s[2 * nj + 1], qf[kk], r + 2);
      }

    const int k0 = j * BKV;
    float tile_max[2] = {RTX_NEG_INF, RTX_NEG_INF};
#pragma unroll
    for (int n = 0; n < BKV / 8; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int row = row0 + (c >> 1) * 8, key = k0 + n * 8 + 2 * t + (c & 1);
        float x = s[n][c] * SCALE;
        ${bias}
        s[n][c] = x;
        tile_max[c >> 1] = fmaxf(tile_max[c >> 1], x);
      }
    float mu[2];  // the running maximum, 0 while a row has no allowed key (exp2(-inf) = 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = fmaxf(tile_max[r], __shfl_xor_sync(FULL, tile_max[r], 1));
      mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      mu[r] = m_new == RTX_NEG_INF ? 0.0f : m_new;
      const float alpha = exp2f((m[r] - mu[r]) * LOG2E);
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int n = 0; n < DVP / 8; ++n) { o[n][2 * r] *= alpha; o[n][2 * r + 1] *= alpha; }
    }
    unsigned pa[BKV / 16][4];  // P as A fragments: the C layout of two 8-key tiles is A's over 16 keys
#pragma unroll
    for (int n = 0; n < BKV / 8; ++n) {
      const float p0 = exp2f((s[n][0] - mu[0]) * LOG2E), p1 = exp2f((s[n][1] - mu[0]) * LOG2E);
      const float p2 = exp2f((s[n][2] - mu[1]) * LOG2E), p3 = exp2f((s[n][3] - mu[1]) * LOG2E);
      l[0] += p0 + p1;
      l[1] += p2 + p3;
      pa[n >> 1][(n & 1) * 2] = rtx_pack(p0, p1);
      pa[n >> 1][(n & 1) * 2 + 1] = rtx_pack(p2, p3);
    }
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk)
#pragma unroll
      for (int nj = 0; nj < DVP / 16; ++nj) {  // V rows are the mma's k: B as [K, N], transposed
        unsigned r[4];
        rtx_ldmatrix_x4_trans(r, vs + 2u * ((kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * VS + nj * 16 + (lane >> 4) * 8));
        rtx_mma(o[2 * nj], pa[kk], r);
        rtx_mma(o[2 * nj + 1], pa[kk], r + 2);
      }
    __syncthreads();  // this stage is read: the next iteration's copy may overwrite it
  }

  Y += b * YB + h * YH;
  const bool paired = DV % 2 == 0 && (reinterpret_cast<unsigned long long>(Y) & 3) == 0;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = l[r] + __shfl_xor_sync(FULL, l[r], 1);
    sum += __shfl_xor_sync(FULL, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row with no allowed key gives zeros
    const int row = row0 + r * 8;
    if (row < SQ) {
      unsigned short* y = Y + row * YR;
#pragma unroll
      for (int n = 0; n < DVP / 8; ++n) {
        const int col = n * 8 + 2 * t;
        const float v0 = o[n][2 * r] * inv, v1 = o[n][2 * r + 1] * inv;
        if (paired && col + 1 < DV) {
          *reinterpret_cast<unsigned*>(y + col) = rtx_pack(v0, v1);
        } else {
          if (col < DV) y[col] = ${pack_cvt}(v0);
          if (col + 1 < DV) y[col + 1] = ${pack_cvt}(v1);
        }
      }
    }
  }
}
"""

# SIMT: lane = key of the tile for the scores, lane = output columns lane, lane + 32, ...
# for P V. Q is stored pre-scaled.
_SIMT_SOURCE = _HEADER + r"""constexpr int QS = ${qs}, KS = ${ks}, DVL = ${dvl}, VS = ${vs};
""" + _COMMON + r"""
extern "C" __global__ void __launch_bounds__(THREADS) ${kernel}(${params}) {
  __shared__ __align__(16) float qs[BQ * QS];
  __shared__ float ks[BKV * KS];
  __shared__ float vs[BKV * VS];
  __shared__ __align__(16) float ps[WARPS][ROWS][BKV];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q0 = rtx_first_query(), h = blockIdx.y, b = blockIdx.z;
  const ${in_t}* __restrict__ q = Q + b * QB + h * QH + q0 * QR;
  const ${in_t}* __restrict__ k = K + b * KB + (h / GROUP) * KH;
  const ${in_t}* __restrict__ v = V + b * VB + (h / GROUP) * VH;
  ${block_setup}
  for (int e = tid; e < BQ * QS; e += THREADS) {
    const int r = e / QS, c = e % QS;
    qs[e] = (q0 + r < SQ && c < D) ? ${load_q} * SCALE : 0.0f;
  }
  const int tiles = rtx_key_tiles(q0${tile_args}${dim_args}), first = ${first_tile};
  float o[ROWS][DVL], m[ROWS], l[ROWS];  // l: this lane's part of the row sum
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    m[r] = RTX_NEG_INF;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < DVL; ++i) o[r][i] = 0.0f;
  }
  const int row0 = q0 + warp * ROWS;
  const float* qw = qs + warp * ROWS * QS;

  for (int j = first; j < tiles; ++j) {
    const int k0 = j * BKV;
    __syncthreads();  // the previous tile is read (and the Q tile written)
    for (int e = tid; e < BKV * D; e += THREADS) {
      const int r = e / D, c = e % D;
      ks[r * KS + c] = k0 + r < SKV ? ${load_k} : 0.0f;
    }
    for (int e = tid; e < BKV * VS; e += THREADS) {
      const int r = e / VS, c = e % VS;
      vs[e] = (k0 + r < SKV && c < DV) ? ${load_v} : 0.0f;
    }
    __syncthreads();

    float s[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) s[r] = 0.0f;
    const float* kr = ks + lane * KS;
#pragma unroll 4
    for (int d = 0; d < D / 4 * 4; d += 4) {
      const float k_0 = kr[d], k_1 = kr[d + 1], k_2 = kr[d + 2], k_3 = kr[d + 3];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const float4 qv = *reinterpret_cast<const float4*>(qw + r * QS + d);
        s[r] = fmaf(qv.w, k_3, fmaf(qv.z, k_2, fmaf(qv.y, k_1, fmaf(qv.x, k_0, s[r]))));
      }
    }
#pragma unroll
    for (int d = D / 4 * 4; d < D; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) s[r] = fmaf(qw[r * QS + d], kd, s[r]);
    }

    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int row = row0 + r;
      float x = s[r];
      ${bias}
      float mx = x;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, off));
      const float m_new = fmaxf(m[r], mx);
      const float mu = m_new == RTX_NEG_INF ? 0.0f : m_new;  // no allowed key yet: exp2(-inf) = 0
      const float alpha = exp2f((m[r] - mu) * LOG2E);
      const float p = exp2f((x - mu) * LOG2E);
      m[r] = m_new;
      l[r] = l[r] * alpha + p;
#pragma unroll
      for (int i = 0; i < DVL; ++i) o[r][i] *= alpha;
      ps[warp][r][lane] = p;
    }
    __syncwarp();
    const float* vl = vs + lane;
#pragma unroll 2
    for (int jj = 0; jj < BKV; jj += 4) {
      float vv[4][DVL];
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int i = 0; i < DVL; ++i) vv[u][i] = vl[(jj + u) * VS + 32 * i];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const float4 p4 = *reinterpret_cast<const float4*>(&ps[warp][r][jj]);
#pragma unroll
        for (int i = 0; i < DVL; ++i)
          o[r][i] = fmaf(p4.w, vv[3][i], fmaf(p4.z, vv[2][i], fmaf(p4.y, vv[1][i], fmaf(p4.x, vv[0][i], o[r][i]))));
      }
    }
  }

  Y += b * YB + h * YH;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float sum = l[r];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(FULL, sum, off);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row with no allowed key gives zeros
    const int row = row0 + r;
    if (row < SQ) {
#pragma unroll
      for (int i = 0; i < DVL; ++i) {
        const int c = lane + 32 * i;
        if (c < DV) Y[row * YR + c] = ${store};
      }
    }
  }
}
"""

# present = concat(past, new): chunk i of W elements is column c of present's row r = (b, h, s).
_CACHE_SOURCE = r"""${prelude}
// rtxrt attention: ${what} = concat(past, new) along the sequence; ${problem}
${shape}
constexpr bool VEC = ${vec};  // rows of whole 16-byte chunks

template <typename CHUNK, int W>
__device__ __forceinline__ void rtx_concat(const ${io}* __restrict__ past, const ${io}* __restrict__ x,
                                           ${io}* __restrict__ present${dim_params}) {
  constexpr int PER_ROW = D / W;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < ROWS * PER_ROW;
       i += (long long)gridDim.x * blockDim.x) {
    const int c = (int)(i % PER_ROW) * W, s = (int)(i / PER_ROW % T);
    const long long r = i / PER_ROW, bh = r / T;
    const ${io}* src = s < P ? past + (bh * P + s) * D : x + bh / H * NB + bh % H * NH + (s - P) * NR;
    *reinterpret_cast<CHUNK*>(present + r * D + c) = *reinterpret_cast<const CHUNK*>(src + c);
  }
}

extern "C" __global__ void __launch_bounds__(256) ${kernel}(${params}) {
  if (VEC && ((${aligned}) & 15) == 0) {
    rtx_concat<uint4, ${width}>(${past}, x, present${dim_args});
  } else {
    rtx_concat<${io}, 1>(${past}, x, present${dim_args});
  }
}
"""

# qk_matmul_output: a block a query row; score(key) is the row's score of ``key`` at this mode's stage.
_SCORES_SOURCE = r"""${prelude}
// rtxrt attention: qk_matmul_output mode ${mode}; ${problem}
#define RTX_NEG_INF ${neg_inf}
${shape}
constexpr float SCALE = ${scale}, LOG2E = ${log2e};
constexpr int THREADS = ${threads}, WARPS = THREADS / 32;
constexpr unsigned FULL = 0xffffffffu;

// (m, l) and (m2, l2), each a maximum and a sum of exp(score - maximum), as one (m: -inf, l: 0 for none).
__device__ __forceinline__ void rtx_merge(float& m, float& l, float m2, float l2) {
  const float mx = fmaxf(m, m2), mu = mx == RTX_NEG_INF ? 0.0f : mx;
  l = l * exp2f((m - mu) * LOG2E) + l2 * exp2f((m2 - mu) * LOG2E);
  m = mx;
}

extern "C" __global__ void __launch_bounds__(THREADS) ${kernel}(${params}) {
  __shared__ float qs[D];
  const int row = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const ${io}* __restrict__ q = Q + b * QB + h * QH + row * QR;
  const ${io}* __restrict__ k = K + b * KB + (h / GROUP) * KH;
  ${block_setup}
  for (int d = threadIdx.x; d < D; d += THREADS) qs[d] = ${load_q} * SCALE;
  __syncthreads();
  S += (((long long)b * gridDim.y + h) * SQ + row) * SKV;
  auto score = [&](int key) {
    const ${io}* kr = k + key * KR;
    float x = 0.0f;
    for (int d = 0; d < D; ++d) x = fmaf(qs[d], ${load_k}, x);
    ${stages}
    return x;
  };
${softmax}  for (int key = threadIdx.x; key < SKV; key += THREADS) ${store}
}
"""

# Mode 3: the row's maximum and sum (a thread's, the warp's, the block's), then the probabilities.
_SCORES_SOFTMAX = r"""  __shared__ float ms[WARPS], ls[WARPS];
  float m = RTX_NEG_INF, l = 0.0f;
  for (int key = threadIdx.x; key < SKV; key += THREADS) rtx_merge(m, l, score(key), 1.0f);
  for (int off = 16; off > 0; off >>= 1) rtx_merge(m, l, __shfl_xor_sync(FULL, m, off), __shfl_xor_sync(FULL, l, off));
  if ((threadIdx.x & 31) == 0) { ms[threadIdx.x >> 5] = m; ls[threadIdx.x >> 5] = l; }
  __syncthreads();
  m = ms[0], l = ls[0];
  for (int w = 1; w < WARPS; ++w) rtx_merge(m, l, ms[w], ls[w]);
  const float mu = m == RTX_NEG_INF ? 0.0f : m, inv = l > 0.0f ? 1.0f / l : 0.0f;  // no allowed key: zeros
"""
