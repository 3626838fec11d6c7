"""The fake-device checks catch the bugs a reviewer planted in generated CUDA, each of which
all 963 CPU tests once let through. Every test plants one bug (an edit of the generated
source on its way to the fake device, or a swap of two Refs in the plan), asserts that the
check its test module runs on correct code now fails, and asserts that the plant applied (a
plant that stops matching the generators raises PlantNotApplied instead of passing)."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.plan.builder import finalize
from tests.backends.cuda.test_codegen_compile import CASES
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.engine import (
    KernelCatalog,
    check_bindings,
    check_model,
    conv_buffer,
    cublas_tactic,
    load_engine,
    plan_model,
    run_engine,
)
from tests.fake_gpu.kernels import check_elementwise_case
from tests.fake_gpu.models import (
    compiled,
    conv_feeds,
    conv_residual,
    elementwise_chain,
    elementwise_feeds,
    fused_matmul,
    matmul_feeds,
)
from tests.fake_gpu.plants import relu_max_one, residual_swapped, sub_as_add, swap_bias_and_residual


def small_device() -> FakeDevice:
    return FakeDevice(8 << 20)


@pytest.fixture
def device(monkeypatch):
    return FakeDevice().install(monkeypatch)


@pytest.fixture
def catalog(monkeypatch):
    return KernelCatalog().install(monkeypatch)


def cases(op_type):
    found = [c for c in CASES if c.node.op_type == op_type]
    assert found
    return found


# ---------------------------------------------------------------- 1. ReLU emitted as max(x, 1)

@pytest.mark.parametrize("case", cases("Relu"), ids=lambda c: c.id)
def test_relu_as_max_x_1_fails_the_elementwise_check(case):
    plant = relu_max_one()
    with pytest.raises(AssertionError):
        check_elementwise_case(case, small_device, mutate=plant)
    plant.require()


def test_relu_as_max_x_1_fails_a_model_with_a_fused_relu(device):
    plant = relu_max_one()
    with pytest.raises(AssertionError):
        check_model(device, elementwise_chain(), [elementwise_feeds(0)], "fp32", mutate=plant.engine_hook)
    plant.require()


def test_relu_as_max_x_1_in_the_gemm_epilogue_fails_the_matmul_check(device):
    plant = relu_max_one()
    with pytest.raises(AssertionError):
        check_model(device, fused_matmul(), [matmul_feeds(0)], "fp32", prefer=cublas_tactic,
                    mutate=plant.engine_hook)
    plant.require()


# ---------------------------------------------------------------- 2. residual before/after the activation swapped

@pytest.mark.parametrize("model, feeds", [(fused_matmul, matmul_feeds), (conv_residual, conv_feeds)],
                         ids=["matmul", "conv"])
def test_a_residual_added_on_the_wrong_side_of_the_activation_fails_the_model_check(device, model, feeds):
    plant = residual_swapped()
    with pytest.raises(AssertionError):
        check_model(device, model(), [feeds(0)], "fp32", prefer=cublas_tactic, mutate=plant.engine_hook)
    plant.require()


# ---------------------------------------------------------------- 3. Sub emitted as +

@pytest.mark.parametrize("case", cases("Sub"), ids=lambda c: c.id)
def test_sub_as_plus_fails_the_elementwise_check(case):
    plant = sub_as_add()
    with pytest.raises(AssertionError):
        check_elementwise_case(case, small_device, mutate=plant)
    plant.require()


def test_sub_as_plus_fails_a_model_with_a_fused_sub(device):
    plant = sub_as_add()
    with pytest.raises(AssertionError):
        check_model(device, elementwise_chain(), [elementwise_feeds(0)], "fp32", mutate=plant.engine_hook)
    plant.require()


# ---------------------------------------------------------------- 4. bias and residual pointers swapped

def test_swapped_bias_and_residual_pointers_fail_the_matmul_check(device, catalog):
    with pytest.raises(AssertionError):
        check_model(device, fused_matmul(), [matmul_feeds(0)], "fp32", prefer=cublas_tactic,
                    edit=lambda final: swap_bias_and_residual(final, catalog))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_swapped_bias_and_residual_pointers_fail_the_conv_binding_check_for_every_tactic(monkeypatch, catalog,
                                                                                        precision):
    model, feeds = compiled(conv_residual(), precision), conv_feeds(0)
    plan = plan_model(model, {k: v.shape for k, v in feeds.items()})
    conv = [i for i, s in enumerate(plan.steps) if s.node is not None and s.node.op_type == "FusedConv"
            and len([n for n in s.node.inputs if n]) == 4]  # the conv with bias and residual
    assert len(conv) == 1
    for c in range(len(plan.steps[conv[0]].candidates)):
        final = finalize(plan, {conv[0]: c})
        swap_bias_and_residual(final, catalog)  # (in the plan's candidate c: each is swapped once)
        device = FakeDevice(execute=False)  # bindings only: run, the epilogue would read Z out of bounds
        with monkeypatch.context() as m:
            device.install(m)
            engine = load_engine(device, final)
            mark = device.mark()
            run_engine(engine, feeds)
            with pytest.raises(AssertionError, match="should point at"):
                check_bindings(engine, catalog, device.since(mark), meaning=conv_buffer)
