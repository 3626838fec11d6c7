"""Every pointer every launch gets points at the buffer its kernel argument means.

A generated kernel describes its pointer parameters as KernelArgs (input i / output j of the
node); a lowering binds them with Refs, which the Engine resolves through the arena layout.
Nothing but a GPU run checked that the two agree, and a GPU run only catches a swap whose
numbers come out wrong. Here the Engine runs on the fake device (tiled GEMM and conv kernels
are not interpreted, only recorded) and every recorded pointer is compared with the address
of the buffer its KernelArg names (tests/fake_gpu/engine.py check_bindings), for every tactic
of a FusedConv with bias and residual and of a FusedMatMul; the device must also have run the
steps in plan order."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.plan.builder import finalize
from tests.fake_gpu.device import FakeDevice, LaunchRecord
from tests.fake_gpu.engine import (
    KernelCatalog,
    check_bindings,
    conv_buffer,
    load_engine,
    node_buffer,
    plan_model,
    run_engine,
)
from tests.fake_gpu.models import compiled, conv_feeds, conv_residual, fused_matmul, matmul_feeds


@pytest.fixture
def catalog(monkeypatch):
    return KernelCatalog().install(monkeypatch)


def every_tactic(plan, op_type):
    """(label, choices) for each candidate index of the ``op_type`` steps (steps with fewer
    candidates keep their last)."""
    steps = [i for i, s in enumerate(plan.steps) if s.node is not None and s.node.op_type == op_type]
    assert steps, [s.label for s in plan.steps]
    for k in range(max(len(plan.steps[i].candidates) for i in steps)):
        choices = {i: min(k, len(plan.steps[i].candidates) - 1) for i in steps}
        yield " / ".join(plan.steps[i].candidates[c].label for i, c in choices.items()), choices


def bind_every_tactic(monkeypatch, catalog, model, feeds, op_type, meaning):
    """check_bindings for one run of each tactic; returns {tactic: pointers checked}."""
    plan = plan_model(model, {k: v.shape for k, v in feeds.items()})
    checked = {}
    for label, choices in every_tactic(plan, op_type):
        device = FakeDevice(opaque="skip")  # tiled kernels are recorded, not run
        with monkeypatch.context() as m:
            device.install(m)
            engine = load_engine(device, finalize(plan, choices))
            mark = device.mark()
            run_engine(engine, feeds)
            records = device.since(mark)
            checked[label] = check_bindings(engine, catalog, records, meaning=meaning)
            assert any(isinstance(r, LaunchRecord) for r in records)
    return checked


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_conv_tactic_binds_x_weights_bias_residual_workspace_and_y(monkeypatch, catalog, precision):
    checked = bind_every_tactic(monkeypatch, catalog, compiled(conv_residual(), precision), conv_feeds(0),
                                "FusedConv", conv_buffer)
    assert len(checked) >= 3 and all(checked.values()), checked  # im2col GEMMs, cuBLAS (and implicit GEMMs)
    assert any("cublas" in label for label in checked)
    if precision == "fp16":
        assert any("implicit" in label for label in checked)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_matmul_tactic_binds_a_b_bias_residual_and_d(monkeypatch, catalog, precision):
    checked = bind_every_tactic(monkeypatch, catalog, compiled(fused_matmul(), precision), matmul_feeds(0),
                                "FusedMatMul", node_buffer)
    assert len(checked) >= 2 and all(checked.values()), checked
    assert any(label.startswith("mma" if precision == "fp16" else "simt") for label in checked), checked


def test_a_wrong_binding_is_reported_with_the_buffer_it_hit(monkeypatch, catalog):
    """The check names what a stray pointer points at: the swap planted in
    test_fake_planted_bugs.py fails with 'should point at ... but points at ...'."""
    from tests.fake_gpu.plants import swap_bias_and_residual

    model, feeds = compiled(fused_matmul()), matmul_feeds(0)
    plan = plan_model(model, {k: v.shape for k, v in feeds.items()})
    (label, choices), *_ = [t for t in every_tactic(plan, "FusedMatMul") if "cublas" in t[0]]
    final = finalize(plan, choices)
    swap_bias_and_residual(final, catalog)
    device = FakeDevice(opaque="skip", execute=False)
    with monkeypatch.context() as m:
        device.install(m)
        engine = load_engine(device, final)
        mark = device.mark()
        run_engine(engine, feeds)
        with pytest.raises(AssertionError, match=r"bias \(input 2\) should point at .* but points at .*input 3"):
            check_bindings(engine, catalog, device.since(mark))


def test_each_pointer_resolves_to_the_graph_value_it_points_at(monkeypatch):
    """A launch record's pointers, through the plan's layout: the fused elementwise kernel
    reads the graph inputs x and y and writes f; the transpose reads f."""
    from tests.fake_gpu.engine import resolve_launches, run_model
    from tests.fake_gpu.models import elementwise_chain, elementwise_feeds

    device = FakeDevice()
    with monkeypatch.context() as m:
        device.install(m)
        run = run_model(device, compiled(elementwise_chain()), elementwise_feeds(0))
        table = resolve_launches(run.engine, run.records)
    (fused, fused_kernel, fused_args), (transpose, _, transpose_args) = table[:2]
    assert fused.startswith("Elementwise") and fused_kernel.startswith("rtx_ew_")
    assert [a.split(" ")[0] for a in fused_args] == ["x", "y", "f"]
    assert transpose.startswith("Transpose") and transpose_args[0].split(" ")[0] == "f"
