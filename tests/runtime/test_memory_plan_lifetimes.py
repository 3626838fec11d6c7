"""The memory planner's direct API: values described by their lifetimes (size, first and last
step, view of) rather than by a graph. Dead values' bytes are reused, live ones never share a
byte, views share their source's buffer, and the checker catches a plan that breaks this."""
from __future__ import annotations

import numpy as np
import pytest

from rtxrt.backends.memory_plan import (
    ALIGNMENT,
    Lifetime,
    MemoryPlan,
    PlanError,
    check_lifetimes,
    fit_in,
    plan_lifetimes,
    plan_memory,
)
from rtxrt.ir.graph import Graph, Node

KB = 1024


def overlap(plan: MemoryPlan, a: str, b: str) -> bool:
    lo_a, lo_b = plan.offsets[a], plan.offsets[b]
    return lo_a < lo_b + plan.sizes[b] and lo_b < lo_a + plan.sizes[a]


def test_a_dead_values_bytes_are_reused():
    values = [Lifetime("a", 4 * KB, 0, 1), Lifetime("b", 4 * KB, 1, 2), Lifetime("c", 4 * KB, 2, 3)]
    plan = plan_lifetimes(values, check=True)
    assert plan.offsets["a"] == plan.offsets["c"]  # a is dead when c is written
    assert not overlap(plan, "a", "b") and not overlap(plan, "b", "c")
    assert plan.arena_bytes == 8 * KB == plan.lower_bound_bytes
    assert plan.naive_bytes == 12 * KB


def test_values_alive_at_the_same_step_never_share_bytes():
    values = [Lifetime("long", 8 * KB, 0, 5), Lifetime("x", 4 * KB, 2, 2), Lifetime("y", 4 * KB, 2, 3),
              Lifetime("z", 4 * KB, 3, 4)]
    plan = plan_lifetimes(values, check=True)
    for a, b in [("long", "x"), ("long", "y"), ("long", "z"), ("x", "y"), ("y", "z")]:
        assert not overlap(plan, a, b), (a, b)
    assert plan.lifetimes == {"long": (0, 5), "x": (2, 2), "y": (2, 3), "z": (3, 4)}


def test_offsets_are_aligned_and_sizes_kept():
    values = [Lifetime("a", 1, 0, 1), Lifetime("b", 300, 0, 1), Lifetime("c", 0, 0, 1)]
    plan = plan_lifetimes(values, check=True)
    assert all(offset % ALIGNMENT == 0 for offset in plan.offsets.values())
    assert plan.sizes == {"a": 1, "b": 300, "c": 0}
    assert plan.arena_bytes % ALIGNMENT == 0 and plan.arena_bytes >= 2 * ALIGNMENT


def test_a_view_shares_its_sources_buffer_and_extends_its_life():
    values = [Lifetime("src", 4 * KB, 0, 1), Lifetime("view", 4 * KB, 1, 4, view_of="src"),
              Lifetime("again", 4 * KB, 2, 4, view_of="view"), Lifetime("other", 4 * KB, 2, 3)]
    plan = plan_lifetimes(values, check=True)
    assert plan.aliases == {"view": "src", "again": "src"}  # chains resolve to the first value
    assert plan.offsets["view"] == plan.offsets["again"] == plan.offsets["src"]
    assert not overlap(plan, "src", "other")  # src's buffer lives to step 4 through its views


@pytest.mark.parametrize("seed", range(5))
def test_random_lifetimes_plan_safely(seed):
    rng = np.random.default_rng(seed)
    values = []
    for i in range(60):
        first = int(rng.integers(0, 40))
        values.append(Lifetime(f"v{i}", int(rng.integers(0, 64 * KB)), first, first + int(rng.integers(0, 10))))
    plan = plan_lifetimes(values, check=True)
    for a in values:
        for b in values:
            if a is not b and a.first <= b.last and b.first <= a.last and a.size and b.size:
                assert not overlap(plan, a.value, b.value), (a, b)
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes


def random_values(rng, count: int = 60, view_every: int = 7) -> list[Lifetime]:
    """Random lifetimes; every ``view_every``-th value a view of the one before, written where
    that one is last read (as the plan builder makes views)."""
    values: list[Lifetime] = []
    for i in range(count):
        if i % view_every == 0 and i:
            source = values[-1]
            values.append(Lifetime(f"v{i}", source.size, source.last, source.last + 3, source.value))
            continue
        first = int(rng.integers(0, 40))
        values.append(Lifetime(f"v{i}", int(rng.integers(1, 64 * KB)), first, first + int(rng.integers(0, 10))))
    return values


@pytest.mark.parametrize("seed", range(5))
def test_smaller_values_of_the_same_lifetimes_fit_in_the_larger_ones_plan(seed):
    """A generic engine's new shape: the same values and steps, none larger than at the
    profile's largest shape, take the places planned there."""
    rng = np.random.default_rng(seed)
    large = random_values(rng)
    reference = plan_lifetimes(large, check=True)
    small: list[Lifetime] = []
    for v in large:  # renamed, as values whose names spell their shapes are
        size = small[-1].size if v.view_of else int(rng.integers(0, v.size + 1))  # (a view: its source's size)
        small.append(Lifetime(f"{v.value}@small", size, v.first, v.last, v.view_of and f"{v.view_of}@small"))
    plan = fit_in(reference, small)
    assert plan is not None and plan.arena_bytes == reference.arena_bytes
    assert plan.offsets == {f"{name}@small": offset for name, offset in reference.offsets.items()}
    check_lifetimes(plan, small)  # (raises where two live values share a byte)
    assert plan.sizes == {v.value: v.size for v in small} and plan.lower_bound_bytes <= reference.lower_bound_bytes


def test_values_that_do_not_fit_the_reference_are_planned_anew():
    large = random_values(np.random.default_rng(0))
    reference = plan_lifetimes(large, check=True)
    grown = [Lifetime(v.value, v.size + (i == 5), v.first, v.last, v.view_of) for i, v in enumerate(large)]
    moved = [Lifetime(v.value, v.size, v.first, v.last + (i == 5), v.view_of) for i, v in enumerate(large)]
    fewer = large[:-1]
    unviewed = [Lifetime(v.value, v.size, v.first, v.last) for v in large]
    assert fit_in(reference, large) is not None
    assert all(fit_in(reference, values) is None for values in (grown, moved, fewer, unviewed))


def test_the_checker_catches_live_values_sharing_bytes():
    values = [Lifetime("a", 4 * KB, 0, 2), Lifetime("b", 4 * KB, 1, 3)]
    plan = plan_lifetimes(values)
    bad = MemoryPlan({"a": 0, "b": 0}, plan.sizes, plan.lifetimes, plan.arena_bytes, plan.naive_bytes,
                     plan.lower_bound_bytes)
    with pytest.raises(PlanError, match="overlaps"):
        check_lifetimes(bad, values)
    unaligned = MemoryPlan({"a": 0, "b": 4 * KB + 8}, plan.sizes, plan.lifetimes, 16 * KB, plan.naive_bytes,
                           plan.lower_bound_bytes)
    with pytest.raises(PlanError, match="unaligned"):
        check_lifetimes(unaligned, values)


def test_a_graph_plans_as_its_lifetimes_do():
    """plan_memory reads lifetimes off a graph and plans them with plan_lifetimes."""
    nodes = [Node("Relu", ["x"], ["a"]), Node("Relu", ["a"], ["b"]), Node("Reshape", ["b", "s"], ["c"]),
             Node("Relu", ["c"], ["d"])]
    graph = Graph(nodes, ["x", "s"], ["d"])
    sizes = {"a": 4 * KB, "b": 4 * KB, "c": 4 * KB, "d": 4 * KB}
    from_graph = plan_memory(graph, sizes, allow_views=True, check=True)
    direct = plan_lifetimes([Lifetime("a", 4 * KB, 0, 1), Lifetime("b", 4 * KB, 1, 2),
                             Lifetime("c", 4 * KB, 2, 3, view_of="b"), Lifetime("d", 4 * KB, 3, 4)])
    assert from_graph == direct
