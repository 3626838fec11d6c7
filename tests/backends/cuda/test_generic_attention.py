"""Generic (shape-independent) attention, row and normalization kernels: in a generic plan the
dims that vary over the profile reach these generators as DimInts (codegen/dynamic.py), and
each generator must give the same source (so the same kernel name and cubin) and the same
candidate tactics at every shape of the profile, take the varying dims as ``int`` kernel
arguments whose values are the planned shape's, and compile. No GPU needed.

The DimInts are made as the plan builder makes them: ``rtxd_i<input>_<axis>``, bound with
``dim_bindings`` while the kernel is generated."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.attention_source import (
    attention_kernel,
    attention_problem,
    candidate_tactics,
    default_tactic,
)
from rtxrt.backends.cuda.ops.normalization_source import normalization_kernel
from rtxrt.backends.cuda.ops.reduction_source import reduction_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType

F32, F16 = DType.FLOAT32, DType.FLOAT16
Spans = Mapping[tuple[int, int], tuple[int, int]]  # (input, axis) -> (lo, hi) over the profile


def generic_types(dtypes: Sequence[DType], shapes: Sequence[tuple[int, ...]],
                  spans: Spans) -> tuple[list[TensorType], dict[str, int]]:
    """TensorTypes of ``shapes``, the axes of ``spans`` DimInts named as the builder names them,
    and the bindings of those names (their values at ``shapes``)."""
    types, bindings = [], {}
    for i, (dtype, shape) in enumerate(zip(dtypes, shapes)):
        axes = []
        for a, size in enumerate(shape):
            if (i, a) in spans:
                name = f"rtxd_i{i}_{a}"
                bindings[name] = size
                axes.append(dim(size, name, *spans[(i, a)]))
            else:
                axes.append(size)
        types.append(TensorType(dtype, tuple(axes)))
    return types, bindings


def compiles(kernels: Sequence[KernelSource]) -> None:
    cubins = compile_many([(k.name, k.source) for k in kernels], "sm_86")
    assert set(cubins) == {k.name for k in kernels}
    assert all(c.startswith(b"\x7fELF") for c in cubins.values())


# ---------------------------------------------------------------- attention

HEADS, HEAD = 12, 64
BATCHES, SEQS = (1, 8), (1, 128)  # the profile


def bert_attention(batch: int, seq: int, dtype: DType = F16, *, generic: bool = True):
    """A BERT-like Attention (3-D, float padding mask [B, 1, 1, S]) at (batch, seq): its node,
    the types (batch and seq DimInts when ``generic``) and the bindings."""
    node = Node("Attention", ["Q", "K", "V", "attn_mask"], ["Y"], {"q_num_heads": HEADS, "kv_num_heads": HEADS},
                name="attn")
    hidden = (batch, seq, HEADS * HEAD)
    spans = {(i, 0): BATCHES for i in range(4)} | {(i, 1): SEQS for i in range(3)} | {(3, 3): SEQS}
    types, bindings = generic_types([F32] * 4, [hidden, hidden, hidden, (batch, 1, 1, seq)],
                                    spans if generic else {})
    return node, types, [dtype] * 4, bindings


def attention_kernels(batch: int, seq: int, dtype: DType = F16) -> tuple[list[str], list[KernelSource]]:
    """Labels and kernels of every candidate tactic (the default first, as lower_attention orders them)."""
    node, types, storage, bindings = bert_attention(batch, seq, dtype)
    with dim_bindings(bindings):
        p = attention_problem(node, types, storage)
        first = default_tactic(p)
        tactics = [first] + [t for t in candidate_tactics(p) if t != first]
        return [t.label for t in tactics], [attention_kernel(p, t) for t in tactics]


@pytest.mark.parametrize("dtype", [F16, F32], ids=["tensor-cores", "simt"])
def test_attention_kernels_and_tactics_are_the_same_at_every_shape_of_the_profile(dtype):
    shapes = [(2, 16), (5, 100), (1, 1), (8, 128)]
    results = [attention_kernels(b, s, dtype) for b, s in shapes]
    labels, kernels = results[0]
    assert len(labels) > 1
    for (b, s), (other_labels, others) in zip(shapes, results):
        assert other_labels == labels  # the same candidates in the same order: the opt shape's tuning holds
        assert [k.source for k in others] == [k.source for k in kernels]
        for k in others:
            # Q's batch and length, K's length, the mask's batch and keys, in name order
            assert k.dims == (b, s, s, b, s)
            assert "int rtxd_i0_0, int rtxd_i0_1, int rtxd_i1_1, int rtxd_i3_0, int rtxd_i3_3)" in k.source
    compiles(kernels)


def test_attention_grid_is_the_planned_shapes_and_the_default_is_the_profiles_largest_grids():
    node, types, storage, bindings = bert_attention(3, 37)
    with dim_bindings(bindings):
        p = attention_problem(node, types, storage)
        for t in candidate_tactics(p):
            assert attention_kernel(p, t).launch.grid == (-(-37 // t.block_q), HEADS, 3)
    node, types, storage, _ = bert_attention(BATCHES[1], SEQS[1], generic=False)
    assert default_tactic(p) == default_tactic(attention_problem(node, types, storage))


def test_a_specialized_attention_kernel_keeps_its_shapes_as_constants():
    node, types, storage, _ = bert_attention(2, 16, generic=False)
    kernel = attention_kernel(attention_problem(node, types, storage))
    assert "rtxd_" not in kernel.source and kernel.dims == ()
    assert "constexpr int SQ = 16, SKV = 16, D = 64, DV = 64;" in kernel.source
    assert "rtx_key_tiles(int q0)" in kernel.source


def test_generic_attention_sizes_are_macros_over_the_kernel_and_helper_arguments():
    _, kernels = attention_kernels(2, 16)
    source = kernels[0].source
    assert "#define SQ ((int)(rtxd_i0_1))" in source and "#define SKV ((int)(rtxd_i1_1))" in source
    assert "#define KV_TILES ((SKV + BKV - 1) / BKV)" in source
    assert "constexpr int D = 64, DV = 64;" in source  # head sizes stay literals
    # the file-scope helpers reading SQ, SKV and KV_TILES take the dims they are made of
    assert "rtx_key_tiles(int q0, int rtxd_i0_1, int rtxd_i1_1)" in source
    assert "rtx_key_tiles(q0, rtxd_i0_1, rtxd_i1_1)" in source
    # a mask batch that varies down to 1 broadcasts where it is 1
    assert "#define MB ((long long)((rtxd_i3_0 == 1 ? 0 : rtxd_i3_3)))" in source
    assert "constexpr long long MH = 0LL, MQ = 0LL;" in source


def test_causal_4d_attention_without_mask_is_generic():
    node = Node("Attention", ["Q", "K", "V"], ["Y"], {"is_causal": 1}, name="gpt2")
    spans = {(i, a): r for i in range(3) for a, r in ((0, BATCHES), (2, SEQS))}
    sources = set()
    for b, s in [(1, 7), (4, 100)]:
        types, bindings = generic_types([F32] * 3, [(b, 4, s, 32)] * 3, spans)
        with dim_bindings(bindings):
            p = attention_problem(node, types, [F16] * 3)
            kernels = [attention_kernel(p, t) for t in candidate_tactics(p)]
        sources.add(tuple(k.source for k in kernels))
        assert all(k.dims == (b, s, s) for k in kernels)
    assert len(sources) == 1
    compiles(kernels[:1] + kernels[-1:])  # one tensor-core and one SIMT kernel


def test_heads_that_vary_over_the_profile_are_a_codegen_error():
    node = Node("Attention", ["Q", "K", "V"], ["Y"], {}, name="varying_heads")
    types, bindings = generic_types([F32] * 3, [(2, 4, 16, 32)] * 3, {(i, 1): (1, 8) for i in range(3)})
    with dim_bindings(bindings), pytest.raises(CodegenError, match="fixed q_heads"):
        attention_problem(node, types, [F16] * 3)


# ---------------------------------------------------------------- rows: LayerNorm, Softmax


def row_kernel(op: str, shape: tuple[int, ...], spans: Spans, dtype: DType = F16, **attrs) -> KernelSource:
    params = 2 if op == "LayerNormalization" else 0
    names = ["x"] + [f"p{i}" for i in range(params)]
    types, bindings = generic_types([dtype] * (1 + params), [shape] + [shape[-1:]] * params, spans)
    with dim_bindings(bindings):
        return reduction_kernel(Node(op, names, ["y"], attrs, name=op.lower()), types)


def test_layer_norm_over_varying_batch_and_sequence_is_one_kernel():
    spans = {(0, 0): BATCHES, (0, 1): SEQS}
    kernels = [row_kernel("LayerNormalization", (b, s, 768), spans) for b, s in [(2, 16), (5, 100), (8, 128)]]
    assert len({k.source for k in kernels}) == 1
    assert [k.dims for k in kernels] == [(2, 16), (5, 100), (8, 128)]
    assert [k.launch.elements for k in kernels] == [2 * 16 * 32, 5 * 100 * 32, 8 * 128 * 32]  # a warp per row
    assert "row < ((unsigned int)((rtxd_i0_0*rtxd_i0_1)))" in kernels[0].source
    assert "768u" in kernels[0].source  # the fixed row length stays a literal
    compiles(kernels[:1])


def test_softmax_over_a_varying_row_length_takes_a_block_where_the_profile_reaches_long_rows():
    spans = {(0, 0): (1, 4), (0, 2): (1, 2048), (0, 3): (1, 2048)}
    kernels = [row_kernel("Softmax", (b, 12, s, s), spans, F32, axis=-1) for b, s in [(1, 16), (3, 1500)]]
    assert kernels[0].source == kernels[1].source
    assert "a block of 256 per row" in kernels[0].source  # even at 16 keys: 2048 is the profile's longest row
    assert kernels[0].launch.block == 256 and kernels[0].launch.elements == 1 * 12 * 16 * 256
    assert "c < ((unsigned int)(rtxd_i0_3))" in kernels[0].source
    compiles(kernels[:1])


def test_a_mean_over_a_varying_count_divides_by_it_as_float32():
    spans = {(0, 1): (1, 4096)}
    kernel = row_kernel("ReduceMean", (4, 300), spans, F32, keepdims=0)  # no axes: over all of [4, n]
    assert "s / ((float)((4*rtxd_i0_1)))" in kernel.source
    compiles([kernel])


# ---------------------------------------------------------------- InstanceNorm, GroupNorm


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("op,groups", [("InstanceNormalization", None), ("GroupNormalization", 8)])
def test_normalization_over_varying_batch_and_image_size_is_one_kernel(op, groups, layout):
    attrs = {"num_groups": groups} if groups else {}
    node = Node(op, ["x", "scale", "bias"], ["y"], attrs, name=op.lower())
    spans = {(0, 0): (1, 4), (0, 2): (32, 256), (0, 3): (32, 256)}
    kernels = []
    for n, h, w in [(1, 64, 64), (3, 160, 96), (1, 32, 32)]:
        types, bindings = generic_types([F32] * 3, [(n, 40, h, w), (40,), (40,)], spans)
        with dim_bindings(bindings):
            kernels.append(normalization_kernel(node, types, F16, layout))
        assert kernels[-1].dims == (n, h, w)
    assert len({k.source for k in kernels}) == 1
    assert len({k.launch.block for k in kernels}) == 1  # chosen from the profile's largest group
    assert "rtxd_i0_0, 40, rtxd_i0_2, rtxd_i0_3]" in kernels[0].source  # the comment names dims, not values
    compiles(kernels[:1])


# ---------------------------------------------------------------- on the GPU: generic == specialized
#
# The specialized kernels are checked against the reference backend by test_gpu_attention.py
# and test_gpu_reduction.py; here each generic kernel, launched with its dim arguments, must
# write what the specialized kernel of the same shape writes, at shapes across the profile
# (its ends, odd sizes, a mask batch of 1 broadcast over a larger batch).


def gpu_run(kernel: KernelSource, arrays: Sequence, load):
    """``kernel`` launched on ``arrays`` (the node's inputs by index) with its dim arguments: the
    output's bits, poisoned with all ones (a NaN) before the launch."""
    import cupy
    import numpy as np

    from rtxrt.backends.cuda.codegen.kernel_source import GridLaunch

    from .helpers import storage, to_device

    (out,) = kernel.outputs
    bits = {2: np.uint16, 4: np.uint32}[storage(out.dtype).itemsize]
    y = cupy.full(out.shape, np.iinfo(bits).max, dtype=bits)
    args = [y if a in kernel.outputs else to_device(arrays[a.index]) for a in kernel.args]
    launch = kernel.launch
    if isinstance(launch, GridLaunch):
        grid, block = launch.grid, launch.block
    else:
        grid, block = (launch.grid(), 1, 1), (launch.block, 1, 1)
    if all(grid):
        load(kernel)(grid, block, (*args, *(np.int32(d) for d in kernel.dims)))
    cupy.cuda.get_current_stream().synchronize()
    return y.get()


def gpu_same(generic: KernelSource, specialized: KernelSource, arrays: Sequence, load, ulps: int = 0) -> None:
    """Both kernels write the same bits (``ulps``: or values that close, where the generic
    kernel reduces in another order: a block per row over the profile's longest rows)."""
    import numpy as np

    assert generic.dims and not specialized.dims
    got, want = gpu_run(generic, arrays, load), gpu_run(specialized, arrays, load)
    assert (want != np.iinfo(want.dtype).max).all(), "the specialized kernel left elements unwritten"
    if ulps:
        floats = {np.uint16: np.float16, np.uint32: np.float32}[want.dtype.type]
        eps = np.finfo(floats).eps
        np.testing.assert_allclose(got.view(floats), want.view(floats), rtol=ulps * eps, atol=ulps * eps)
    else:
        np.testing.assert_array_equal(got, want)  # the same bits


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """``load(kernel)``: its function, compiled for this GPU (once per kernel)."""
    import cupy

    from rtxrt.backends.cuda.device import probe

    folder, loaded = tmp_path_factory.mktemp("generic_cubins"), {}

    def get(kernel: KernelSource):
        if kernel.name not in loaded:
            (cubin,) = compile_many([(kernel.name, kernel.source)], probe().arch).values()
            path = folder / f"{kernel.name}.cubin"
            path.write_bytes(cubin)
            loaded[kernel.name] = cupy.RawModule(path=str(path)).get_function(kernel.name)
        return loaded[kernel.name]

    return get


def _random(rng, shape, dtype, scale=1.0):
    from .helpers import random
    return random(rng, shape, dtype, scale)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F16, F32], ids=["tensor-cores", "simt"])
@pytest.mark.parametrize("batch,seq,mask_batch", [(1, 1, 1), (3, 37, 3), (8, 128, 8), (5, 100, 1)])
def test_gpu_generic_attention_writes_what_the_specialized_kernel_writes(dtype, batch, seq, mask_batch, load):
    import numpy as np

    rng = np.random.default_rng(seq)
    hidden = (batch, seq, HEADS * HEAD)
    arrays = [_random(rng, hidden, dtype, 2.0), _random(rng, hidden, dtype, 2.0), _random(rng, hidden, dtype)]
    mask = np.where(np.arange(seq) < seq - 3 * np.arange(mask_batch).reshape(-1, 1, 1, 1), 0.0, -1e4)
    arrays.append(mask.astype(arrays[0].dtype))
    node, _, storage, _ = bert_attention(batch, seq, dtype, generic=False)
    shapes = [hidden] * 3 + [(mask_batch, 1, 1, seq)]
    spans = {(i, 0): BATCHES for i in range(4)} | {(i, 1): SEQS for i in range(3)} | {(3, 3): SEQS}
    types, bindings = generic_types([F32] * 4, shapes, spans)
    fixed = [TensorType(F32, s) for s in shapes]
    with dim_bindings(bindings):
        p = attention_problem(node, types, storage)
        tactics = candidate_tactics(p)
        generic = [attention_kernel(p, t) for t in tactics]
    specialized = [attention_kernel(attention_problem(node, fixed, storage), t) for t in tactics]
    for g, s in zip(generic, specialized):
        gpu_same(g, s, arrays, load)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 37), (8, 128)])
def test_gpu_generic_rows_write_what_the_specialized_kernels_write(batch, seq, load):
    import numpy as np

    rng = np.random.default_rng(seq)
    cases = [("LayerNormalization", (batch, seq, 768), {(0, 0): BATCHES, (0, 1): SEQS}, F16, {}),
             ("Softmax", (batch, 12, seq, seq), {(0, 0): BATCHES, (0, 2): SEQS, (0, 3): (1, 2048)}, F32,
              {"axis": -1})]
    for op, shape, spans, dtype, attrs in cases:
        params = 2 if op == "LayerNormalization" else 0
        arrays = [_random(rng, shape, dtype, 3.0)] + [_random(rng, shape[-1:], dtype) for _ in range(params)]
        node = Node(op, ["x"] + [f"p{i}" for i in range(params)], ["y"], attrs, name=op.lower())
        fixed = reduction_kernel(node, [TensorType(dtype, shape)] + [TensorType(dtype, shape[-1:])] * params)
        gpu_same(row_kernel(op, shape, spans, dtype, **attrs), fixed, arrays, load, ulps=8)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("n,h,w", [(1, 32, 32), (3, 36, 44), (2, 96, 64)])
def test_gpu_generic_normalization_writes_what_the_specialized_kernel_writes(layout, n, h, w, load):
    import numpy as np

    rng = np.random.default_rng(h)
    node = Node("GroupNormalization", ["x", "scale", "bias"], ["y"], {"num_groups": 8}, name="gn")
    shapes = [(n, 40, h, w), (40,), (40,)]
    physical = shapes[0] if layout == "NCHW" else (n, h, w, 40)
    arrays = [_random(rng, physical, F16, 3.0), _random(rng, (40,), F16), _random(rng, (40,), F16)]
    types, bindings = generic_types([F32] * 3, shapes, {(0, 0): (1, 4), (0, 2): (32, 256), (0, 3): (32, 256)})
    with dim_bindings(bindings):
        generic = normalization_kernel(node, types, F16, layout)
    fixed = normalization_kernel(node, [TensorType(F32, s) for s in shapes], F16, layout)
    gpu_same(generic, fixed, arrays, load)
