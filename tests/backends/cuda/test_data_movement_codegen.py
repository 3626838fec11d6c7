"""Every generated data movement and pooling kernel compiles with NVRTC for every supported
arch (no GPU), and what cannot be generated is a clear CodegenError.

``CASES`` is the catalogue: each case builds one kernel and says how the reference backend
computes the same thing (a Node plus constant inputs); tests/backends/cuda/test_gpu_data_movement.py
runs the catalogue on the device.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.ops.data_movement_source import (
    cast_kernel,
    concat_kernel,
    expand_kernel,
    gather_kernel,
    layout_conversion,
    slice_kernel,
    tile_kernel,
    transpose_kernel,
)
from rtxrt.backends.cuda.ops.pool_source import pool_kernel

from .helpers import compile_for_every_arch

F32, F16, BF16, I64, I32, U8 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.INT64, DType.INT32, DType.UINT8


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], KernelSource]
    node: Node  # what the reference backend runs
    constants: tuple[np.ndarray, ...] = ()  # reference inputs after the kernel's own
    opset: int = 21
    layout: str = "NCHW"  # pools: NHWC cases run the reference on the NCHW transpose
    exact: bool = True  # data movement is bit-exact; pools compare within tolerances
    tags: frozenset[str] = field(default_factory=frozenset)

    def kernel(self) -> KernelSource:
        return self.build()


def node(op_type: str, inputs: int, **attrs) -> Node:
    return Node(op_type, [f"x{i}" for i in range(inputs)], ["y"], attrs, name=op_type.lower())


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def data_cases() -> list[Case]:
    cases = []
    for dtype in (F32, F16, I64, U8):
        for perm in ((0, 2, 3, 1), (0, 3, 1, 2), (3, 2, 1, 0), (1, 0, 2, 3), (0, 1, 2, 3)):
            cases.append(Case(f"Transpose{''.join(map(str, perm))}-{dtype.short}",
                              lambda p=perm, d=dtype: transpose_kernel((2, 3, 5, 7), p, d),
                              node("Transpose", 1, perm=list(perm))))
    cases.append(Case("Transpose_default_perm-float32", lambda: transpose_kernel((4, 33, 65), None, F32),
                      node("Transpose", 1)))
    for dtype in (F32, F16, BF16):
        cases += [
            Case(f"to_nhwc-{dtype.short}", lambda d=dtype: layout_conversion((2, 16, 9, 11), True, d),
                 node("Transpose", 1, perm=[0, 2, 3, 1])),
            Case(f"to_nchw-{dtype.short}", lambda d=dtype: layout_conversion((2, 9, 11, 16), False, d),
                 node("Transpose", 1, perm=[0, 3, 1, 2])),
        ]
    cases.append(Case("to_nhwc_3d-float16", lambda: layout_conversion((1, 4, 3, 5, 6), True, F16),
                      node("Transpose", 1, perm=[0, 2, 3, 4, 1])))
    for dtype in (F32, F16):
        cases += [
            Case(f"Concat_axis1-{dtype.short}",
                 lambda d=dtype: concat_kernel([(2, 3, 5), (2, 1, 5), (2, 0, 5), (2, 4, 5)], 1, d),
                 node("Concat", 4, axis=1)),
            Case(f"Concat_axis0-{dtype.short}", lambda d=dtype: concat_kernel([(2, 3), (5, 3)], 0, d),
                 node("Concat", 2, axis=0)),
            Case(f"Concat_8_last-{dtype.short}",
                 lambda d=dtype: concat_kernel([(3, 2, k + 1) for k in range(8)], -1, d),
                 node("Concat", 8, axis=-1)),
        ]
    big = -(2**63)
    slices = [  # (id, starts, ends, axes, steps)
        ("basic", (1, -2), (4, 0), (0, 2), (1, -2)),
        ("reverse_all", (-1,), (big,), (1,), (-1,)),
        ("clamped", (-100, 2), (2**62, 1000), (0, -1), (1, 3)),
        ("negative_steps", (4, 6, 8), (0, -100, 1), (0, 1, 2), (-2, -3, -1)),
        ("empty", (3,), (3,), (0,), (1,)),
    ]
    for sid, starts, ends, axes, steps in slices:
        for dtype in (F32, I64):
            cases.append(Case(f"Slice_{sid}-{dtype.short}",
                              lambda s=starts, e=ends, a=axes, t=steps, d=dtype: slice_kernel((5, 7, 9), s, e, d, a, t),
                              node("Slice", 5), (i64(*starts), i64(*ends), i64(*axes), i64(*steps)), opset=13))
    gathers = [("axis0", (5, 6, 7), (2, 3), 0, I64), ("axis1", (5, 6, 7), (4,), 1, I32),
               ("last_scalar", (5, 6, 7), (), -1, I64), ("rows", (50, 16), (9, 2), 0, I32)]
    for gid, shape, ishape, axis, itype in gathers:
        for dtype in (F32, F16):
            cases.append(Case(f"Gather_{gid}-{dtype.short}-{itype.short}",
                              lambda s=shape, i=ishape, a=axis, t=itype, d=dtype: gather_kernel(s, i, a, d, t),
                              node("Gather", 2, axis=axis)))
    for eid, shape, target in [("inner", (3, 1, 5), (2, 3, 4, 5)), ("scalar", (1,), (4, 4)), ("lower", (3, 4), (1, 4))]:
        for dtype in (F32, F16):
            cases.append(Case(f"Expand_{eid}-{dtype.short}", lambda s=shape, t=target, d=dtype: expand_kernel(s, t, d),
                              node("Expand", 2), (i64(*target),)))
    for tid, shape, repeats in [("3d", (2, 3, 4), (2, 1, 3)), ("1d", (5,), (4,)), ("zero", (2, 3), (0, 2))]:
        for dtype in (F32, U8):
            cases.append(Case(f"Tile_{tid}-{dtype.short}", lambda s=shape, r=repeats, d=dtype: tile_kernel(s, r, d),
                              node("Tile", 2), (i64(*repeats),)))
    # Copies of whole 16-byte vectors (see test_copies_of_aligned_runs_move_16_byte_vectors)
    cases += [
        Case("Slice_vector_last_axis-float16", lambda: slice_kernel((4, 6, 48), [16], [40], F16, [2]),
             node("Slice", 5), (i64(16), i64(40), i64(2), i64(1)), opset=13),
        Case("Slice_vector_middle_axis-float32", lambda: slice_kernel((3, 10, 8), [2], [9], F32, [1]),
             node("Slice", 5), (i64(2), i64(9), i64(1), i64(1)), opset=13),
        Case("Transpose_heads_vector-float16", lambda: transpose_kernel((2, 3, 5, 16), (0, 2, 1, 3), F16),
             node("Transpose", 1, perm=[0, 2, 1, 3])),
        Case("Expand_vector_rows-bfloat16", lambda: expand_kernel((3, 1, 16), (2, 3, 4, 16), BF16),
             node("Expand", 2), (i64(2, 3, 4, 16),)),
    ]
    for src, dst in [(F32, F16), (F16, F32), (F32, BF16), (BF16, F32), (F16, BF16), (BF16, F16), (F16, F16)]:
        cases.append(Case(f"Cast-{src.short}_to_{dst.short}", lambda s=src, d=dst: cast_kernel((3, 5, 67), s, d),
                          node("Cast", 1, to=int(dst))))
    return cases


POOLS = [  # (id, attrs); on a 2 x 5 x 13 x 11 input
    ("k3s1p1", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("k3s2p1_ceil", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("k2s2", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("k3x2_asym_pads_incl", {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0], "count_include_pad": 1}),
    ("k3_dilated_ceil", {"kernel_shape": [3, 3], "strides": [2, 3], "dilations": [2, 2], "pads": [1, 0, 1, 2],
                         "ceil_mode": 1, "count_include_pad": 1}),
    ("same_upper", {"kernel_shape": [4, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
]
NCHW_SHAPE = (2, 5, 13, 11)


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1])


def pool_cases() -> list[Case]:
    cases = []
    for pid, attrs in POOLS:
        for op in ("MaxPool", "AveragePool"):
            for dtype, layout in ((F32, "NCHW"), (F16, "NHWC")) if op == "MaxPool" else ((F32, "NHWC"), (F16, "NCHW")):
                shape = NCHW_SHAPE if layout == "NCHW" else nhwc(NCHW_SHAPE)
                a = {k: v for k, v in attrs.items() if op == "AveragePool" or k != "count_include_pad"}
                cases.append(Case(f"{op}_{pid}-{dtype.short}-{layout}",
                                  lambda o=op, s=shape, d=dtype, a=a, l=layout: pool_kernel(o, s, d, a, l),
                                  node(op, 1, **a), layout=layout, exact=False))
    cases.append(Case("MaxPool_k3s2-bfloat16-NHWC",
                      lambda: pool_kernel("MaxPool", nhwc(NCHW_SHAPE), BF16, dict(POOLS[1][1]), "NHWC"),
                      node("MaxPool", 1, **POOLS[1][1]), layout="NHWC", exact=False))
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        for dtype in (F32, F16, BF16):
            for layout in ("NCHW", "NHWC"):
                for shape in ((2, 6, 7, 9), (1, 3, 56, 56)) if dtype != BF16 else ((2, 6, 7, 9),):
                    s = shape if layout == "NCHW" else nhwc(shape)
                    cases.append(Case(f"{op}_{'x'.join(map(str, shape))}-{dtype.short}-{layout}",
                                      lambda o=op, s=s, d=dtype, l=layout: pool_kernel(o, s, d, None, l),
                                      node(op, 1), layout=layout, exact=False))
    return cases


CASES: list[Case] = data_cases() + pool_cases()


def test_every_kernel_compiles_for_every_supported_arch():
    started = time.perf_counter()
    kernels = {k.name: k.source for k in (case.kernel() for case in CASES)}
    generated = time.perf_counter() - started
    report = [f"{arch}: {s:.1f} s" for arch, _, s in compile_for_every_arch(kernels)]
    print(f"\n{len(CASES)} cases -> {len(kernels)} distinct kernels in {generated:.2f} s; " + "; ".join(report))


def test_copies_move_bytes_so_same_size_types_share_a_kernel():
    assert transpose_kernel((2, 3, 4), (2, 0, 1), F16).name == transpose_kernel((2, 3, 4), (2, 0, 1), DType.INT16).name
    assert transpose_kernel((2, 3, 4), (2, 0, 1), F32).name != transpose_kernel((2, 3, 4), (2, 0, 1), F16).name
    k = transpose_kernel((2, 3, 4), (2, 0, 1), F16)
    assert [(a.role, a.dtype, a.shape) for a in k.args] == [(BufferRole.IN, F16, (2, 3, 4)), (BufferRole.OUT, F16, (4, 2, 3))]


def test_layout_conversion_merges_the_spatial_dims_into_one_transpose():
    k = layout_conversion((2, 16, 9, 11), True, F32)
    assert k.outputs[0].shape == (2, 9, 11, 16)
    assert "c3" not in k.source and "c2 = r % 16u" in k.source  # [N, C, HW] -> [N, HW, C]
    back = layout_conversion((2, 9, 11, 16), False, F32)
    assert back.outputs[0].shape == (2, 16, 9, 11)


def test_a_copy_in_order_reads_at_the_loop_index():
    for k in (cast_kernel((3, 5), F32, F16), transpose_kernel((1, 6, 1, 4), (0, 2, 1, 3), F32),
              slice_kernel((4, 5), [0], [100], F32)):
        assert "in0[i]" in k.source and "%" not in k.source.split("extern")[1], k.source


def test_copies_of_aligned_runs_move_16_byte_vectors():
    split = slice_kernel((4096, 2304), [768], [1536], F16, [1])  # one output of a Q/K/V Split
    assert "uint4* __restrict__ out0" in split.source and split.launch.elements == 4096 * 768 // 8
    heads = transpose_kernel((32, 128, 12, 64), (0, 2, 1, 3), F16)
    assert "uint4" in heads.source and heads.launch.elements == 32 * 128 * 12 * 64 // 8
    assert "uint4" in slice_kernel((3, 10, 8), [2], [9], F32, [1]).source
    # a run that is not whole vectors, or starts between two: element by element
    for k in (slice_kernel((4, 48), [3], [27], F16, [1]), slice_kernel((4, 50), [0], [24], F16, [1]),
              transpose_kernel((2, 3, 5, 7), (0, 2, 1, 3), F16), slice_kernel((4, 48), [40], [0], F16, [1], [-1]),
              cast_kernel((4, 64), F16, F32)):
        assert "uint4" not in k.source, k.source


def test_tile_and_expand_shapes():
    assert tile_kernel((2, 3), (2, 2), F32).outputs[0].shape == (4, 6)
    assert expand_kernel((3, 1), (2, 1, 4), F32).outputs[0].shape == (2, 3, 4)
    assert gather_kernel((5, 6, 7), (), 1, F32).outputs[0].shape == (5, 7)
    assert slice_kernel((5, 7), [-1], [-(2**63)], F32, [0], [-2]).outputs[0].shape == (3, 7)


def test_empty_outputs_have_nothing_to_launch():
    assert slice_kernel((5, 7), [3], [3], F32).launch.grid() == 0
    assert tile_kernel((2, 3), (0, 1), F32).launch.grid() == 0


def test_pool_output_shapes_follow_the_window():
    k = pool_kernel("MaxPool", (1, 3, 8, 8), F32, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})
    assert k.outputs[0].shape == (1, 3, 4, 4)
    k = pool_kernel("AveragePool", (1, 8, 8, 3), F16, {"kernel_shape": [2, 2], "strides": [2, 2]}, "NHWC")
    assert k.outputs[0].shape == (1, 4, 4, 3)
    assert pool_kernel("GlobalAveragePool", (2, 7, 7, 5), F32, layout="NHWC").outputs[0].shape == (2, 1, 1, 5)


@pytest.mark.parametrize("make, message", [
    (lambda: transpose_kernel((2, 3), (0, 0), F32), "not a permutation"),
    (lambda: transpose_kernel((2, "n"), None, F32), "static shapes"),
    (lambda: layout_conversion((2, 3), True, F32), "rank >= 3"),
    (lambda: slice_kernel((4,), [0], [4], F32, [0], [0]), "step must not be 0"),
    (lambda: slice_kernel((4,), [0], [4], F32, [1]), "out of range"),
    (lambda: concat_kernel([(2, 3)] * 9, 0, F32), "1 to 8 inputs"),
    (lambda: concat_kernel([(2, 3), (3, 3)], 1, F32), "differ off axis"),
    (lambda: gather_kernel((4, 5), (2,), 0, F32, DType.FLOAT32), "int64 or int32"),
    (lambda: expand_kernel((3,), (4,), F32), "does not broadcast"),
    (lambda: tile_kernel((2, 3), (2,), F32), "one non-negative count"),
    (lambda: cast_kernel((4,), F32, I32), "float32, float16 and bfloat16"),
    (lambda: pool_kernel("MaxPool", (2, 5), F32, {"kernel_shape": []}), "rank >= 3"),
    (lambda: pool_kernel("MaxPool", (1, 2, 5, 5), I32, {"kernel_shape": [2, 2]}), "not int32"),
    (lambda: pool_kernel("LpPool", (1, 2, 5, 5), F32, {"kernel_shape": [2, 2]}), "LpPool"),
    (lambda: pool_kernel("MaxPool", (1, 2, 5, 5), F32, {"kernel_shape": [2, 2]}, "NDHWC"), "layout"),
    (lambda: pool_kernel("MaxPool", (1, 2, 5, 5), F32, {"kernel_shape": [2]}), "kernel has 1 axes"),
])
def test_what_cannot_be_generated_is_a_clear_codegen_error(make, message):
    with pytest.raises(CodegenError, match=message):
        make()
