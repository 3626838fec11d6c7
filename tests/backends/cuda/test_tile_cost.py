"""The cost model that drops GEMM tiles before they are compiled (ops/tile_cost.py): only tiles
behind at every SM count go, never a plan's own tiles nor the 64x64 ones, and never where a
dim varies over a profile."""
from __future__ import annotations

from rtxrt.backends.cuda.codegen.dynamic import DimInt, dim
from rtxrt.backends.cuda.ops.conv_source import conv_gemm_tactics, conv_plan
from rtxrt.backends.cuda.ops.gemm_source import CANDIDATE_TACTICS, GemmProblem, GemmTactic, candidate_tactics
from rtxrt.backends.cuda.ops.tile_cost import worth_timing
from rtxrt.ir.dtypes import DType

BIG = GemmTactic(128, 128, 32, 2, 2)
# ResNet-50's layer-3 3x3 conv at batch 1: 196 rows, so 128x128 tiles make 4 blocks
FEW_ROWS = GemmProblem(196, 256, 2304)


def test_tiles_that_leave_most_sms_idle_are_dropped_and_the_rest_kept_in_order():
    tiles = candidate_tactics(FEW_ROWS)
    kept = worth_timing(FEW_ROWS, tiles)
    assert BIG in tiles and BIG not in kept
    assert list(kept) == [t for t in tiles if t in kept] and len(kept) >= 3
    assert all(t in kept for t in tiles if (t.bm, t.bn) == (64, 64))


def test_a_big_problem_keeps_every_tile():
    big = GemmProblem(4096, 4096, 4096)
    assert worth_timing(big, candidate_tactics(big)) == candidate_tactics(big)


def test_the_tiles_to_keep_stay_whatever_the_model_says():
    assert BIG in worth_timing(FEW_ROWS, candidate_tactics(FEW_ROWS), keep=(BIG,))


def test_a_dim_that_varies_over_a_profile_keeps_every_tile():
    rows = dim(196, "rows", 1, 1000)
    problem = GemmProblem(rows, 256, 2304)
    assert worth_timing(problem, CANDIDATE_TACTICS) == CANDIDATE_TACTICS


def test_a_fixed_size_given_as_a_dim_argument_is_pruned_like_that_size():
    rows = DimInt(196, "rows", 196, 196)  # a shape-agnostic kernel's argument (ops/lowering.py)
    assert worth_timing(GemmProblem(rows, 256, 2304), CANDIDATE_TACTICS) == \
        worth_timing(GemmProblem(196, 256, 2304), CANDIDATE_TACTICS) != CANDIDATE_TACTICS


def test_a_convolution_offers_its_default_plan_and_the_implicit_gemms_that_can_win():
    plan = conv_plan((1, 256, 14, 14), (256, 256, 3, 3), {"pads": [1, 1, 1, 1]}, DType.FLOAT16, "NHWC", bias=True)
    tactics = conv_gemm_tactics(plan)
    labels = [t.label for t in tactics]
    assert [t for t in tactics if not t.label.startswith("implicit_")] == [plan.steps[-1].kernel.tactic]
    assert f"implicit_{BIG.label}" not in labels and "implicit_64x64x32_w2x2_s2" in labels


def test_without_the_implicit_gemm_a_convolution_keeps_its_im2col_tiles():
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    plan = conv_plan((32, 3, 224, 224), (64, 3, 3, 3), attrs, DType.FLOAT16, "NHWC")  # C = 3: no implicit GEMM
    assert len(conv_gemm_tactics(plan)) > 1
