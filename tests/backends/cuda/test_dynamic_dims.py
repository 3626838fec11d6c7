"""Dims that vary over a profile: DimInt arithmetic is C arithmetic over the kernel's dim
arguments, a kernel source names them as parameters, and a profile's varying axes are found."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen.dynamic import DimInt, c_int, dim, dim_bindings, upper
from rtxrt.backends.cuda.codegen.kernel_source import KERNEL_NAME, KernelSource, LaunchPolicy
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes


def c_value(expr: str, **values: int) -> int:
    """What C computes for ``expr`` (non-negative operands: / and % truncate as // and %)."""
    return eval(expr.replace("(long long)", "").replace("/", "//"), {}, values)  # noqa: S307


def test_arithmetic_keeps_the_value_and_an_expression_c_computes_the_same():
    for s, b in itertools.product([1, 7, 128, 513], [1, 3, 8]):
        seq, batch = DimInt(s, "rtxd_i0_1", 1, 1024), DimInt(b, "rtxd_i0_0", 1, 8)
        for value, expect in [(seq * batch * 768, s * b * 768), (-(-seq // 64), -(-s // 64)),
                              ((seq + 2 - 3) // 2 + 1, (s - 1) // 2 + 1), (seq % 7, s % 7), (4096 - seq, 4096 - s)]:
            assert value == expect
            assert c_value(str(value), rtxd_i0_1=s, rtxd_i0_0=b) == expect, str(value)


def test_a_product_that_may_pass_two_to_the_31_computes_in_64_bits():
    big = DimInt(4, "rtxd_i0_0", 1, 4096) * 1024 * 1024
    assert upper(big) == 4096 * 1024 * 1024 and "(long long)" in str(big)
    assert "(long long)" not in str(DimInt(4, "rtxd_i0_0", 1, 16) * 1024)


def test_a_fixed_dim_is_a_plain_int_and_formats_as_before():
    assert type(dim(8, "rtxd_i0_0", 8, 8)) is int
    assert c_int(64, "u") == "64u" and c_int(DimInt(3, "rtxd_o0_2", 1, 9), "u") == "((unsigned int)(rtxd_o0_2))"


def test_a_generic_kernel_takes_its_dims_as_int_parameters_after_the_pointers():
    source = f'extern "C" __global__ void {KERNEL_NAME}(float* out0) {{ out0[0] = rtxd_i0_1 + rtxd_i0_0; }}\n'
    with dim_bindings({"rtxd_i0_0": 2, "rtxd_i0_1": 37}):
        kernel = KernelSource.named("rtx_t_", source, LaunchPolicy(10), ())
    assert f"{kernel.name}(float* out0, int rtxd_i0_0, int rtxd_i0_1)" in kernel.source
    assert kernel.dims == (2, 37)
    with dim_bindings({"rtxd_i0_0": 5, "rtxd_i0_1": 1}):
        other = KernelSource.named("rtx_t_", source, LaunchPolicy(10), ())
    assert other.name == kernel.name and other.dims == (5, 1)  # same source, same cubin
    with pytest.raises(ValueError, match="no node being lowered binds"):
        KernelSource.named("rtx_t_", source, LaunchPolicy(10), ())


def test_the_axes_that_vary_over_a_profile_are_found_through_the_graph():
    from onnx import TensorProto, helper

    from rtxrt.frontend.onnx_import import load_onnx
    from tests.helpers import make_model

    model = load_onnx(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                                 [("x", TensorProto.FLOAT, ["batch", "seq", 8])], [("y", TensorProto.FLOAT, None)],
                                 {"w": np.ones((8, 4), np.float32)}).SerializeToString())
    ranges = dim_ranges(model, sample_shapes({"x": ((1, 1, 8), (2, 16, 8), (4, 64, 8))}))
    assert ranges.sizes["y"] == ((1, 4), (1, 64), 4)
