"""Shape-generic elementwise, data-movement and GEMM-epilogue kernels (codegen/dynamic.py):
where dims vary over a profile, each generator writes one source for every shape of it (the
varying dims are ``int`` kernel arguments, ``KernelSource.dims`` their values), decides what
that source looks like from the dims' expressions and bounds (never their values), computes
the right result at each shape (run on the fake device with the dims passed), and compiles
with NVRTC. Plain ints keep all-literal sources that take no dims."""
from __future__ import annotations

import numpy as np

from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings, divisible, same_dim
from rtxrt.backends.cuda.codegen.epilogue import epilogue_kernel
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.data_movement_source import (
    cast_kernel,
    concat_kernel,
    expand_kernel,
    gather_kernel,
    layout_conversion,
    slice_kernel,
    transpose_kernel,
)
from rtxrt.backends.cuda.ops.elementwise_source import broadcast_shape, elementwise_kernel
from rtxrt.backends.cuda.ops.gemm_source import GemmProblem
from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from tests.fake_gpu.device import FakeDevice

F16, F32, I64 = DType.FLOAT16, DType.FLOAT32, DType.INT64
N, H, W = "rtxd_i0_0", "rtxd_i0_2", "rtxd_i0_3"  # input 0's batch and image axes (NCHW)
SEQ = "rtxd_i0_1"
OTHER_H, OTHER_W = "rtxd_i1_2", "rtxd_i1_3"  # input 1's image axes: the same sizes, named apart
OUT_SEQ = "rtxd_o0_1"


def image(n: int, h: int, w: int) -> dict[str, int]:
    return {N: n, H: h, W: w, OTHER_H: h, OTHER_W: w}


def generic(make, values: dict[str, int], bounds: dict[str, tuple[int, int]] | None = None):
    """``make(d)`` with ``d[name]`` the DimInt of each dim argument (bounds 1..512 unless
    given), lowered with their values bound."""
    bounds = bounds or {}
    dims = {name: dim(v, name, *bounds.get(name, (1, 512))) for name, v in values.items()}
    with dim_bindings(values):
        return make(dims)


def one_source(make, shapes: list[dict[str, int]], **kw):
    """The kernels ``make`` gives at each of ``shapes``; they must be one source and name."""
    kernels = [generic(make, values, **kw) for values in shapes]
    assert len({k.source for k in kernels}) == 1, "the source depends on the dims' values"
    assert len({k.name for k in kernels}) == 1
    return kernels


def compiles(*kernels) -> None:
    cubins = compile_many([(k.name, k.source) for k in kernels], "sm_86")
    assert all(cubins[k.name] for k in kernels)


def run(kernel, arrays, out_dtype) -> np.ndarray:
    """``kernel`` on the fake device (its dims passed as int arguments after the pointers)."""
    device = FakeDevice(16 << 20)
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(kernel.source.encode())
    inputs = iter(cupy.asarray(np.ascontiguousarray(a)) for a in arrays)
    args, out = [], None
    for arg in kernel.args:
        if arg.role is BufferRole.IN:
            args.append(next(inputs))
        else:
            out = cupy.ndarray(tuple(int(d) for d in arg.shape), out_dtype)
            args.append(out)
    args += [np.int32(v) for v in kernel.dims]
    module.get_function(kernel.name)((kernel.launch.grid(), 1, 1), (kernel.launch.block, 1, 1), tuple(args))
    return out.get()


# ----------------------------------------------------------------------------- the dim helpers

def test_same_dim_compares_dims_as_functions_of_the_dim_arguments():
    s = dim(37, SEQ, 1, 128)
    t = dim(37, "rtxd_i1_1", 1, 128)  # the same size here, but another argument
    assert same_dim(768 * s, s * 768) and same_dim((s * 4) * 3, s * 12)
    assert same_dim(0 * s, 0) and same_dim(1 * s, s) and same_dim(64, 64)
    assert not same_dim(s, t) and not same_dim(s, 37) and not same_dim(s * 2, s + s + 1)


def test_divisible_holds_only_where_every_shape_of_the_profile_is_a_multiple():
    s = dim(40, SEQ, 1, 128)
    assert divisible(s * 64, 8) and divisible(s * 6 + 2 * s, 8) and divisible(48, 8)
    assert not divisible(s, 8)  # 40 here, but 41 elsewhere
    assert not divisible(s * 4, 8) and not divisible(-(-s // 2) * 8 + 0 * s + 1, 8)


def test_a_dim_that_may_be_one_is_not_dropped_and_a_fixed_size_wins_over_a_dim():
    n = dim(1, N, 1, 8)
    assert broadcast_shape([(n, 3), (1, 3)]) == (n, 3)
    assert broadcast_shape([(n, 5), (n, 1)]) == (n, 5)
    assert broadcast_shape([(dim(5, SEQ, 1, 9), 2), (5, 2)]) == (5, 2)
    assert broadcast_shape([(2, 3), (4, 3)]) is None


# ----------------------------------------------------------------------------- elementwise

def add_relu(d: dict[str, int], *, bias: bool = False):
    """A residual Add (+ ReLU) over an NHWC image: two same-shaped operands whose dims are
    named apart, or the image and a per-channel bias [C]."""
    x = TensorType(F16, (d[N], d[H], d[W], 64))
    other = TensorType(F16, (64,)) if bias else TensorType(F16, (d[N], d[OTHER_H], d[OTHER_W], 64))
    return elementwise_kernel(Node("Add", ["a", "b"], ["y"]), [x, other])


def test_a_residual_add_over_a_varying_image_is_one_kernel_reading_both_operands_at_the_loop_index():
    shapes = [image(1, 32, 32), image(4, 17, 9), image(2, 1, 1)]
    kernels = one_source(add_relu, shapes)
    for values, kernel in zip(shapes, kernels):
        assert kernel.dims == (values[N], values[H], values[W])  # sorted names; input 1's not used
        assert kernel.launch.elements == values[N] * values[H] * values[W] * 64
    source = kernels[0].source
    assert "in0[i]" in source and "in1[i]" in source and "r = i;" not in source  # no coordinates at all
    assert f"int {N}, int {H}, int {W})" in source and OTHER_H not in source
    compiles(kernels[0])


def test_a_broadcast_bias_over_a_varying_image_divides_by_literals_only():
    (kernel, _) = one_source(lambda d: add_relu(d, bias=True), [image(1, 8, 8), image(3, 5, 7)])
    assert "r % 64u" in kernel.source and "in1[c1]" in kernel.source
    assert "r % ((unsigned int)" not in kernel.source
    compiles(kernel)


def test_a_generic_broadcast_computes_the_same_as_numpy_at_each_shape():
    rng = np.random.default_rng(0)

    def mul(d):  # [N, S, 8] * [N, 1, 8] (a per-sample gate, broadcast over the sequence)
        a, b = TensorType(F32, (d[N], d[SEQ], 8)), TensorType(F32, (d[N], 1, 8))
        return elementwise_kernel(Node("Mul", ["a", "b"], ["y"]), [a, b])

    kernels = one_source(mul, [{N: 2, SEQ: 5}, {N: 3, SEQ: 1}])
    for (n, s), kernel in zip([(2, 5), (3, 1)], kernels):
        a = rng.standard_normal((n, s, 8)).astype(np.float32)
        b = rng.standard_normal((n, 1, 8)).astype(np.float32)
        np.testing.assert_array_equal(run(kernel, [a, b], np.float32), a * b)


def test_plain_ints_keep_a_literal_elementwise_kernel_taking_no_dims():
    kernel = add_relu({N: 1, H: 32, W: 32, OTHER_H: 32, OTHER_W: 32}, bias=True)
    assert kernel.dims == () and "rtxd_" not in kernel.source
    assert "over shape [1, 32, 32, 64]" in kernel.source and "r % 64u; r /= 64u;" in kernel.source


# ----------------------------------------------------------------------------- data movement

def test_a_layout_conversion_of_a_varying_image_is_one_kernel_and_transposes_right():
    def to_nhwc(d):
        return layout_conversion((d[N], 16, d[H], d[W]), True, F32)

    shapes = [image(1, 4, 6), image(2, 3, 5), image(1, 1, 1)]
    kernels = one_source(to_nhwc, shapes)
    compiles(kernels[0])
    rng = np.random.default_rng(1)
    for values, kernel in zip(shapes, kernels):
        x = rng.standard_normal((values[N], 16, values[H], values[W])).astype(np.float32)
        np.testing.assert_array_equal(run(kernel, [x], np.float32), x.transpose(0, 2, 3, 1))


def test_a_copy_vectorizes_where_every_shape_allows_it_and_not_where_one_might_not():
    def channel_slice(d):  # channels 16..47 of an fp16 NHWC-like [N, H, W, 64]: runs of 32 elements
        return slice_kernel((d[N], d[H], d[W], 64), [16], [48], F16, [3])

    (kernel, _) = one_source(channel_slice, [image(1, 8, 8), image(2, 3, 5)])
    assert "uint4" in kernel.source  # 16-byte copies: each run is 4 aligned vectors at every shape
    compiles(kernel)

    def odd_rows(d):  # rows of a varying width W: even here, odd elsewhere
        return cast_kernel((d[N], d[H], d[W]), F16, F16)

    (copy, _) = one_source(odd_rows, [image(1, 8, 8), image(1, 8, 10)])
    assert "uint4" not in copy.source and "unsigned short" in copy.source


def test_a_slice_of_a_varying_axis_takes_its_length_from_the_output_and_counts_from_the_end():
    def last_tokens(d):  # x[:, -4:, :] of [N, S, 32], S from 4 to 128
        x = (d[N], d[SEQ], 32)
        return slice_kernel(x, [-4], [2**62], F32, [1], out_shape=(d[N], 4, 32))

    def head(d):  # x[:, :S', :] where the output's S' varies (a mask cut to the sequence)
        return slice_kernel((1, 128, 32), [0], [d[OUT_SEQ]], F32, [1], out_shape=(1, d[OUT_SEQ], 32))

    bounds = {SEQ: (4, 128), OUT_SEQ: (1, 128)}
    shapes = [{N: 2, SEQ: 10}, {N: 1, SEQ: 4}]
    kernels = one_source(last_tokens, shapes, bounds=bounds)
    rng = np.random.default_rng(2)
    for values, kernel in zip(shapes, kernels):
        x = rng.standard_normal((values[N], values[SEQ], 32)).astype(np.float32)
        np.testing.assert_array_equal(run(kernel, [x], np.float32), x[:, -4:, :])
    (cut, other) = one_source(head, [{OUT_SEQ: 7}, {OUT_SEQ: 100}], bounds=bounds)
    assert cut.dims == (7,) and other.dims == (100,)
    x = rng.standard_normal((1, 128, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(cut, [x], np.float32), x[:, :7, :])
    compiles(kernels[0], cut)


def test_concat_gather_expand_and_cast_over_varying_dims_are_one_kernel_each():
    def concat(d):
        return concat_kernel([(d[N], d[H], d[W], 32), (d[N], d[H], d[W], 16)], -1, F16)

    def gather(d):  # token embeddings: a fixed table, indices [N, S]
        return gather_kernel((1000, 64), (d[N], d[SEQ]), 0, F16, I64)

    def expand(d):  # [N, 1, 8] to [N, S, 8]
        return expand_kernel((d[N], 1, 8), (d[N], d[SEQ], 8), F32)

    def cast(d):
        return cast_kernel((d[N], d[SEQ], 768), F32, F16)

    built = []
    for make, shapes in [(concat, [image(1, 4, 4), image(3, 7, 2)]), (gather, [{N: 1, SEQ: 3}, {N: 4, SEQ: 77}]),
                         (expand, [{N: 1, SEQ: 3}, {N: 2, SEQ: 9}]), (cast, [{N: 1, SEQ: 1}, {N: 8, SEQ: 128}])]:
        built.append(one_source(make, shapes))
    compiles(*(k[0] for k in built))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(built[2][1], [x], np.float32), np.broadcast_to(x, (2, 9, 8)))
    table = rng.standard_normal((1000, 64)).astype(np.float16)
    ids = rng.integers(0, 1000, (4, 77)).astype(np.int64)
    np.testing.assert_array_equal(run(built[1][1], [table, ids], np.float16), table[ids])


def test_plain_ints_keep_literal_data_movement_kernels_taking_no_dims():
    kernel = transpose_kernel((2, 16, 4, 6), (0, 2, 3, 1), F32)
    assert kernel.dims == () and "rtxd_" not in kernel.source
    assert "Transpose perm [0, 2, 3, 1]: [2, 16, 4, 6] -> [2, 4, 6, 16]" in kernel.source


# ----------------------------------------------------------------------------- GEMM epilogue

def conv_epilogue(d, **kw):
    """The epilogue after cuBLAS of a 1x1 convolution over an NHWC image: M = N*H*W rows."""
    return epilogue_kernel(GemmProblem(d[N] * d[H] * d[W], 64, 32, dtype=F16, bias=True, activation="relu", **kw))


def test_an_epilogue_over_varying_rows_is_one_kernel_with_its_strides_in_the_kernel():
    kernels = one_source(conv_epilogue, [image(1, 8, 8), image(4, 3, 5)])
    source = kernels[0].source
    assert "constexpr long long" not in source  # a stride of the rows varies: computed in the kernel
    assert "const long long LDZ = 64, LDD = 64" in source
    assert "b = 0, r = i;" in source  # one matrix: no division by the varying matrix size
    assert kernels[1].dims == (4, 3, 5) and kernels[1].launch.elements == 4 * 3 * 5 * 64
    compiles(kernels[0])


def test_an_epilogue_over_a_batch_that_may_be_one_is_one_kernel():
    def batched(d):  # attention-like: batch N of [S, 64] products with a residual
        return epilogue_kernel(GemmProblem(d[SEQ], 64, 64, dtype=F16, batch=d[N], residual="after_activation"))

    (one, many) = one_source(batched, [{N: 1, SEQ: 16}, {N: 3, SEQ: 16}])
    assert [a.shape for a in many.args if a.name == "D"] == [(3, 16, 64)]
    assert [a.shape for a in one.args if a.name == "D"] == [(1, 16, 64)]
    compiles(one)


def test_an_epilogue_of_plain_ints_keeps_its_literal_strides():
    kernel = conv_epilogue({N: 1, H: 8, W: 8})
    assert kernel.dims == () and "constexpr long long LDZ = 64, LDD = 64, SZ = 4096, SD = 4096;" in kernel.source
