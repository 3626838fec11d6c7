"""Specializing a model to input shapes infers its types, lends the small values that follow
from them (shape arithmetic) as constants and infers again. The passes after the first infer
only the nodes those values reach; the types must be exactly those of full passes."""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the zoo models are exported from torch")

import rtxrt.backends.memory_plan as memory_plan  # noqa: E402
from rtxrt.aot import compile_onnx  # noqa: E402
from rtxrt.aot.options import AotOptions  # noqa: E402
from rtxrt.ir.infer import infer_types  # noqa: E402

CASES = {  # exported with dynamic dims; shapes to specialize at
    "bert": [{n: s for n in ("input_ids", "attention_mask", "token_type_ids")} for s in ((1, 5), (3, 17))],
    "yolo_tiny": [{"input": (1, 3, 64, 64)}, {"input": (2, 3, 96, 160)}],
}


@pytest.mark.parametrize("name", list(CASES))
def test_later_passes_infer_only_what_the_lent_values_reach_and_agree_with_full_passes(exported_dynamic, name, monkeypatch):
    model = compile_onnx(exported_dynamic(name), AotOptions(precision="fp16"))
    passes: list[set | None] = []

    def counting(model, memo=None, changed=None):
        passes.append(None if changed is None else set(changed))
        return infer_types(model, memo=memo, changed=changed)

    for shapes in CASES[name]:
        monkeypatch.setattr(memory_plan, "infer_types", counting)
        incremental = memory_plan.specialize(model, shapes).graph.types
        assert passes[0] is None and len(passes) > 1, "the model has shape values to lend"
        assert all(p for p in passes[1:])  # later passes start from the values lent
        monkeypatch.setattr(memory_plan, "infer_types", lambda model, memo=None, changed=None: infer_types(model))
        assert incremental == memory_plan.specialize(model, shapes).graph.types
        passes.clear()
