"""Every generated elementwise kernel computes what the reference backend computes, checked
on the CPU: the fake device's interpreter runs the kernel's actual CUDA source.

The catalogue is the compile test's (tests/backends/cuda/test_codegen_compile.py CASES: every
elementwise op in every type the emitter takes, and fused bodies); inputs are the GPU
test's random ones with edge values (signed zeros, halves, fp16's limits, overflow,
denormals, infinities, NaN) in their first elements; reference and tolerances are the GPU
test's (tests/backends/cuda/test_gpu_elementwise.py). Without a GPU, this is what catches an
emitter writing the wrong C."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from tests.backends.cuda.test_codegen_compile import CASES, Case
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.kernels import check_elementwise_case, inputs_with_edges, run_kernel


def small_device() -> FakeDevice:
    return FakeDevice(8 << 20)


@pytest.fixture
def device(monkeypatch):
    return small_device().install(monkeypatch)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kernel_computes_what_the_reference_computes(case: Case):
    check_elementwise_case(case, small_device)


def test_edge_values_reach_every_float_case_that_takes_them():
    case = next(c for c in CASES if c.id == "Add-float16_float16")
    x, row = inputs_with_edges(case)
    assert np.isnan(x.reshape(-1)[:30]).any() and np.isinf(x.reshape(-1)[:30]).any()
    assert (np.signbit(row) & (row == 0)).any()  # -0.0 (the broadcast input gets them too)


def test_a_grid_smaller_than_the_work_still_covers_all_of_it(device):
    """The grid-stride loop: any grid (even one block) visits every element once."""
    case = next(c for c in CASES if c.id == "groupnorm_affine_relu-float16")
    kernel = case.kernel()
    arrays = inputs_with_edges(case)
    (one_block,) = run_kernel(device, kernel, arrays, grid=1)
    (full,) = run_kernel(device, kernel, arrays)
    np.testing.assert_array_equal(one_block.view(np.uint16), full.view(np.uint16))


def test_kernels_are_interpreted_for_the_arch_they_run_on(monkeypatch):
    """fp32 -> bf16 rounds with cvt.rn.bf16.f32 from sm_80 and with integer arithmetic before:
    both branches of the prelude give the same bits."""
    case = next(c for c in CASES if c.id == "Cast_to_bfloat16-float32")
    kernel = case.kernel()
    arrays = inputs_with_edges(case)
    results = []
    for arch in (750, 860):
        device = FakeDevice(8 << 20, arch=arch)
        with monkeypatch.context() as m:
            device.install(m)
            results.append(run_kernel(device, kernel, arrays)[0].view(np.uint16))
    np.testing.assert_array_equal(*results)


def test_an_integer_kernel_wraps_and_truncates_as_c_does(device):
    """int32 Sub wraps (computed unsigned), Div truncates toward zero and a zero divisor gives 0."""
    shape = (6,)
    a = np.array([-7, 7, -7, 2**31 - 1, -(2**31), 5], np.int32)
    b = np.array([2, -2, -2, -1, 1, 0], np.int32)
    for op, want in (("Sub", (a.astype(np.int64) - b).astype(np.int32)), ("Div", np.array([-3, -3, 3, -(2**31 - 1),
                                                                                           -(2**31), 0], np.int32))):
        kernel = elementwise_kernel(Node(op, ["a", "b"], ["y"]), [TensorType(DType.INT32, shape)] * 2)
        (got,) = run_kernel(device, kernel, [a, b])
        np.testing.assert_array_equal(got, want, err_msg=op)
