"""A generic plan computes a value at plan time at every shape of its profile or at none.

Position embeddings (a Gather of a table by Range(seq)) follow from the shapes alone, and are
computed when planning while they are small; at long sequences they pass the size limit
(memory_plan._MAX_PLAN_VALUE) and become a kernel. Decided per shape, the long sequences of a
profile would need a kernel its generic engine never compiled (a BERT profile of 1..512
tokens ran every sequence past 341 on the CPU, 2-15 s a run); decided by the largest size over
the profile, every shape runs the kernels compiled at load."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from rtxrt.aot import compile_onnx
from rtxrt.backends.cuda.plan.builder import build_plan, finalize
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from tests.helpers import make_model

WIDTH = 1024  # 256 positions of it fill the limit (2**18 elements)


def position_model():
    table = np.random.default_rng(0).standard_normal((512, WIDTH)).astype(np.float32)
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
             helper.make_node("Range", ["zero", "seq", "step"], ["positions"]),
             helper.make_node("Gather", ["table", "positions"], ["embedded"], axis=0),
             helper.make_node("Add", ["x", "embedded"], ["y"])]
    constants = {"table": table, "one": np.array(1, np.int64), "zero": np.array(0, np.int64),
                 "step": np.array(1, np.int64)}
    proto = make_model(nodes, [("x", TensorProto.FLOAT, ["batch", "seq", WIDTH])],
                       [("y", TensorProto.FLOAT, None)], constants, 18)
    return compile_onnx(proto.SerializeToString())


def test_a_value_computed_at_plan_time_at_short_sequences_is_a_kernel_at_every_length():
    model = position_model()
    ranges = {"x": ((1, 1, WIDTH), (1, 128, WIDTH), (2, 512, WIDTH))}
    dims = dim_ranges(model, sample_shapes(ranges))
    opt = build_plan(model, {"x": (1, 128, WIDTH)}, arch="sm_86", sm_count=46, dims=dims)
    loaded = set(finalize(opt, {}).kernels)
    assert any("Gather" in step.label for step in opt.steps)  # a kernel even where it would fit the limit
    for seq in (1, 100, 300, 512):
        plan = build_plan(model, {"x": (2, seq, WIDTH)}, arch="sm_86", sm_count=46, dims=dims, tune=False)
        assert set(finalize(plan, {}).kernels) <= loaded, seq


def test_without_a_profile_a_small_value_is_still_computed_at_plan_time():
    plan = build_plan(position_model(), {"x": (1, 128, WIDTH)}, arch="sm_86", sm_count=46)
    assert not any("Gather" in step.label for step in plan.steps)
