"""Reductions, softmax and arg-reductions over any axes (ops/reduction*.py), on the CPU:

- how an input is walked (``walk``: fixed 1s dropped, neighbouring kept or reduced dims
  merged) and which kernels are offered in which order (rows for trailing axes; ``columns``
  and ``split`` otherwise, ordered by the profile's bounds);
- every ``columns`` kernel of the catalogue (tests/backends/cuda/test_reduction_codegen.py)
  computes what the reference backend computes, run on the fake device (tests/fake_gpu), and
  so does the ``columns`` kernel of every trailing case (the row kernels' warp shuffles are
  not interpretable; the GPU test runs them);
- shape-generic kernels: one source at every shape of a profile, right at each;
- channels-last inputs are reduced in place;
- models with such nodes plan with no host step, and run on the fake device as the
  reference does.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.codegen.kernel_source import KernelSource
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.context import LowerContext, Unsupported
from rtxrt.backends.cuda.ops.reduction import channels_last, kernel_for, lower_reduction, node_kernel, tactics
from rtxrt.backends.cuda.ops.reduction_axes_source import strided_kernel, walk
from rtxrt.backends.cuda.ops.reduction_source import reduction_problem
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.forms import NHWC, TensorForm
from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, Storage, TensorType
from tests.fake_gpu.device import FakeDevice
from tests.fake_gpu.engine import check_matches_reference, reference_outputs, run_model

from .test_reduction_codegen import CASES, Case, compare, poisoned, random_inputs, reference, storage

F32, F16, BF16, I64 = DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.INT64


def fake_run(kernel: KernelSource, arrays: list[np.ndarray]) -> np.ndarray:
    """``kernel`` on the fake device (its dim arguments after the pointers); the output, poisoned
    before the launch, viewed as its type."""
    device = FakeDevice(64 << 20)
    cupy = device.cupy
    module = cupy.cuda.function.Module()
    module.load(kernel.source.encode())
    (out_arg,) = kernel.outputs
    shape = tuple(int(d) for d in out_arg.shape)
    out = cupy.asarray(poisoned(out_arg.dtype, shape))
    inputs = iter(arrays)
    args = [out if a.role is BufferRole.OUT else cupy.asarray(np.ascontiguousarray(_bits(next(inputs))))
            for a in kernel.args]
    args += [np.int32(d) for d in kernel.dims]
    if kernel.launch.grid():
        module.get_function(kernel.name)((kernel.launch.grid(), 1, 1), (kernel.launch.block, 1, 1), tuple(args))
    return out.get().view(storage(out_arg.dtype)).reshape(shape)  # (the fake holds a scalar as [1])


def _bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint16) if array.dtype == ml_dtypes.bfloat16 else array


# ---------------------------------------------------------------- the walk and the tactics

def test_axis_1_of_nchw_is_outer_reduced_inner():
    w = walk((2, 16, 5, 7), (1,))
    assert w.kept == ((2, 16 * 35), (35, 1)) and w.reduced == ((16, 35),)
    assert (w.outputs, w.count) == (70, 16)


def test_non_adjacent_axes_are_loops_of_their_own_and_neighbours_merge():
    w = walk((4, 6, 50, 3), (0, 2))
    assert w.kept == ((6, 150), (3, 1)) and w.reduced == ((4, 900), (50, 3))
    assert walk((2, 3, 4, 5), (2, 3)) == walk((6, 20), (1,))  # trailing: one kept and one reduced group
    assert walk((2, 3, 4, 5), (0, 1)).reduced == ((6, 20),)


def test_fixed_ones_drop_out_but_a_dim_that_may_be_one_stays():
    assert walk((4, 1, 5), (1,)).kept == ((20, 1),) and walk((4, 1, 5), (1,)).reduced == ()
    n = dim(1, "rtxd_i0_1", 1, 8)
    w = walk((4, n, 5), (1,))
    assert [str(s) for s, _ in w.reduced] == ["rtxd_i0_1"] and len(w.kept) == 2


def test_trailing_axes_get_the_row_kernel_and_others_the_strided_kernels_in_order_of_their_bounds():
    def offered(shape, axes):
        node = Node("ReduceSum", ["x", "axes"], ["y"])
        return tactics(reduction_problem(node, [TensorType(F32, shape)], axes=axes))

    assert offered((8, 16, 64), (2,)) == offered((8, 16, 64), (1, 2)) == offered((8, 64, 1), (1,)) == ["rows"]
    assert offered((8, 16, 64, 64), (1,)) == ["columns"]  # 16 elements an output: nothing to split
    assert offered((8, 512, 4096), (1,)) == ["columns", "split"]  # 32768 outputs fill the GPU
    assert offered((2, 4096, 8), (1,)) == ["split", "columns"]  # 16 outputs of 4096 elements
    assert offered((8, 64), ()) == ["rows"]  # over every axis


def test_the_lowering_offers_every_strided_kernel_when_tuning_and_the_first_otherwise():
    node = Node("ReduceMean", ["x", "axes"], ["y"], {"keepdims": 0}, name="pool")
    for tune, labels in ((True, ["split", "columns"]), (False, ["split"])):
        ctx = LowerContext(node, [TensorForm(F16, (2, 4096, 8)), TensorForm(I64, (1,))], [TensorForm(F16, (2, 8))],
                           [None, np.array([1])], 21, "sm_86", 46, tune=tune)
        programs = lower_reduction(ctx)
        assert [p.label for p in programs] == labels
        assert all(p.outputs == [TensorForm(F16, (2, 8))] for p in programs)


# ---------------------------------------------------------------- on the fake device

COLUMN_CASES = [c for c in CASES if c.kernel().name.startswith("rtx_cols_")]


def test_every_strided_op_and_axes_variant_of_the_catalogue_has_a_columns_kernel():
    assert len(COLUMN_CASES) >= 25
    ops = {c.node.op_type for c in COLUMN_CASES}
    assert ops == {c.node.op_type for c in CASES} - {"LayerNormalization", "RMSNormalization"}


@pytest.mark.parametrize("case", COLUMN_CASES, ids=lambda c: c.id)
def test_a_columns_kernel_computes_what_the_reference_backend_computes(case):
    kernel = case.kernel()
    arrays = random_inputs(case)
    compare(fake_run(kernel, arrays), reference(case, arrays), kernel, case, arrays)


ROW_CASES = [c for c in CASES if c.kernel().name.startswith("rtx_row_") and c.node.op_type not in
             ("LayerNormalization", "RMSNormalization") and max(int(d) for d in c.inputs[0].shape) < 5000]


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.id)
def test_the_columns_kernel_of_a_trailing_case_computes_what_the_reference_backend_computes(case):
    """The per-op semantics over the trailing cases' shapes and types (the folds of
    reduction_source.FOLDS, LogSumExp's shift, the arg order), checked on the CPU through the
    one kernel the interpreter runs; the GPU test runs the row kernels themselves."""
    r = reduction_problem(case.node, list(case.inputs), opset=case.opset, axes=case.axes)
    kernel = strided_kernel(r, "columns")
    arrays = random_inputs(case)
    compare(fake_run(kernel, arrays), reference(case, arrays), kernel, case, arrays)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin", "Hardmax", "ReduceMax", "ReduceMin", "ReduceLogSumExp",
                                "Softmax"])
def test_nans_and_infinities_come_out_as_numpy_has_them(op):
    x = np.array([[1.0, np.nan, 3.0, np.nan], [-np.inf, -np.inf, -np.inf, -np.inf], [np.inf, 2.0, np.inf, 1.0],
                  [2.0, 2.0, -1.0, 2.0]], np.float32).T.copy()  # reduced along axis 0
    for last in ((0, 1) if op.startswith("Arg") else (0,)):
        attrs = {"axis": 0, "select_last_index": last} if op.startswith("Arg") else (
            {"axis": 0} if op in ("Hardmax", "Softmax") else {"axes": [0], "keepdims": 0})
        node = Node(op, ["x"], ["y"], attrs, name="n")
        kernel = node_kernel(node, [TensorType(F32, x.shape)], opset=13)
        assert kernel.name.startswith("rtx_cols_")
        with np.errstate(invalid="ignore"):  # the reference's -inf - -inf
            want = find_kernel(op)(node, 13, None).run(x)
        np.testing.assert_array_equal(fake_run(kernel, [x]), want)


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceLogSumExp", "ReduceMean"])
def test_a_scalar_is_its_own_reduction_after_the_per_element_part(op):
    x = np.array(-2.5, np.float32)
    node = Node(op, ["x"], ["y"], {"keepdims": 0}, name="n")
    kernel = node_kernel(node, [TensorType(F32, ())])
    assert kernel.outputs[0].shape == () and kernel.launch.elements == 1
    np.testing.assert_array_equal(fake_run(kernel, [x]), find_kernel(op)(node, 21, None).run(x))


# ---------------------------------------------------------------- shape-generic kernels

def generic_kernel(op: str, shape: tuple[int, ...], varying: dict[int, tuple[int, int]], dtype: DType = F32, *,
                   tactic: str | None = None, axes: tuple[int, ...] | None = None, **attrs) -> KernelSource:
    """``op``'s kernel over an input of ``shape`` whose axes in ``varying`` (axis -> bounds over
    the profile) are dim arguments, as a generic plan hands them to the lowering."""
    names = {a: f"rtxd_i0_{a}" for a in varying}
    dims = tuple(dim(v, names[a], *varying[a]) if a in varying else v for a, v in enumerate(shape))
    node = Node(op, ["x"] + (["axes"] if axes is not None else []), ["y"], attrs, name=op.lower())
    with dim_bindings({names[a]: shape[a] for a in varying}):
        return node_kernel(node, [TensorType(dtype, dims)], axes=axes, tactic=tactic)


def generic_case(op: str, shape: tuple[int, ...], dtype: DType, axes=None, values="uniform", ranges=(),
                 **attrs) -> Case:
    node = Node(op, ["x"] + (["axes"] if axes is not None else []), ["y"], attrs, name=op.lower())
    return Case(f"{op}-{shape}", node, (TensorType(dtype, shape),), 21, axes, tuple(ranges), None, values)


@pytest.mark.parametrize("op, shapes, varying, dtype, kw", [
    ("Softmax", [(1, 16, 4, 6), (3, 16, 5, 7)], {0: (1, 8), 2: (1, 64), 3: (1, 64)}, F16, {"axis": 1}),
    ("ArgMax", [(2, 10, 3, 3), (1, 10, 8, 5)], {0: (1, 8), 2: (1, 64), 3: (1, 64)}, F32,
     {"axis": 1, "keepdims": 0, "values": "ties"}),
    ("ReduceMean", [(2, 5, 64), (3, 17, 64)], {0: (1, 8), 1: (1, 32)}, BF16,
     {"axes": (1,), "keepdims": 0, "ranges": [(0.5, 3.0)]}),  # mean pooling over a varying sequence
    ("ReduceSumSquare", [(4, 3, 5, 2), (4, 6, 5, 2)], {1: (1, 8)}, F32, {"axes": (0, 2)}),
    ("Hardmax", [(1, 7, 9), (2, 7, 9)], {0: (1, 4)}, F32, {"axis": 1, "values": "ties"}),
])
def test_a_generic_strided_kernel_is_one_source_and_right_at_each_shape(op, shapes, varying, dtype, kw):
    values, ranges = kw.pop("values", "uniform"), kw.pop("ranges", ())
    kernels = [generic_kernel(op, s, varying, dtype, **kw) for s in shapes]
    assert len({k.source for k in kernels}) == 1 and len({k.name for k in kernels}) == 1
    assert all(k.dims and k.name.startswith("rtx_cols_") for k in kernels)
    for shape, kernel in zip(shapes, kernels):
        assert kernel.dims == tuple(shape[a] for a in sorted(varying))
        c = generic_case(op, shape, dtype, values=values, ranges=ranges, **kw)
        arrays = random_inputs(c)
        compare(fake_run(kernel, arrays), reference(c, arrays), kernel, c, arrays)


def test_the_split_kernel_is_chosen_from_the_bounds_and_is_one_source_at_every_shape():
    varying = {0: (1, 4), 1: (1, 4096)}
    kernels = [generic_kernel("ReduceMean", s, varying, F16, axes=(1,), keepdims=0) for s in [(1, 16, 8), (4, 3000, 8)]]
    assert len({k.source for k in kernels}) == 1
    assert all(k.name.startswith("rtx_split_") for k in kernels)  # even at 16 elements: the profile reaches 4096
    assert [k.launch.elements for k in kernels] == [256, 256]  # one block per 32 outputs
    assert "j < ((unsigned int)(rtxd_i0_1))" in kernels[0].source


def test_a_dim_that_is_one_at_this_shape_is_not_dropped_from_a_generic_kernel():
    one, three = (generic_kernel("Softmax", (b, 6, 5), {0: (1, 8), 1: (1, 8)}, axis=1) for b in (1, 3))
    assert one.source == three.source and one.dims == (1, 6)


def test_generic_strided_kernels_compile():
    kernels = [generic_kernel("ReduceLogSumExp", (2, 40, 3, 5), {0: (1, 8), 2: (1, 64)}, BF16, axes=(1, 3),
                              tactic=t) for t in ("columns", "split")]
    kernels.append(generic_kernel("ArgMin", (2, 300, 7), {0: (1, 8), 2: (1, 64)}, F16, tactic="split", axis=1))
    for arch in ("sm_75", "sm_90"):
        assert set(compile_many([(k.name, k.source) for k in kernels], arch)) == {k.name for k in kernels}


# ---------------------------------------------------------------- channels-last inputs

def lowered(node: Node, x: TensorForm, out: TensorForm, consts=(None,)) -> list:
    ctx = LowerContext(node, [x] + [TensorForm(I64, (len(c),)) for c in consts[1:]], [out], list(consts), 21,
                       "sm_86", 46, tune=False)
    return lower_reduction(ctx)


def test_a_channel_softmax_of_a_channels_last_input_is_a_row_kernel_writing_channels_last():
    (program,) = lowered(Node("Softmax", ["x"], ["y"], {"axis": 1}), TensorForm(F16, (2, 32, 5, 7), NHWC),
                         TensorForm(F16, (2, 32, 5, 7)))
    assert program.label == "softmax" and program.outputs == [TensorForm(F16, (2, 32, 5, 7), NHWC)]
    (source,) = program.kernels.values()
    assert "over [70, 32]" in source


@pytest.mark.parametrize("op, attrs, axes", [("ReduceMean", {"keepdims": 1}, [2, 3]), ("ArgMax", {"axis": 0}, None),
                                             ("ReduceMax", {"keepdims": 0}, [1, 2, 3]), ("Hardmax", {"axis": 2}, None)])
def test_a_channels_last_input_is_reduced_in_place(op, attrs, axes):
    x = np.random.default_rng(5).uniform(-3, 3, (2, 6, 4, 5)).astype(np.float32)
    node = Node(op, ["x"] + (["axes"] if axes else []), ["y"], attrs, name="n")
    want = find_kernel(op)(node, 21, None).run(x, *([np.array(axes)] if axes else []))
    consts = (None, np.array(axes)) if axes else (None,)
    (program,) = lowered(node, TensorForm(F32, x.shape, NHWC), TensorForm(DType.from_numpy(want.dtype), want.shape),
                         consts)
    four_d = len(want.shape) == 4
    assert program.outputs == [TensorForm(DType.from_numpy(want.dtype), want.shape, NHWC if four_d else "")]
    physical, _ = channels_last(node, reduction_problem(node, [TensorType(F32, x.shape)], axes=axes))
    assert list(program.kernels) == [kernel_for(physical, tactics(physical)[0]).name]
    got = fake_run(strided_kernel(physical, "columns"), [x.transpose(0, 2, 3, 1).copy()])
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2) if four_d else got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("node, message", [
    (Node("ReduceSum", ["x", "axes"], ["y"], {"keepdims": 0}, name="n"), "n'.*would reorder the kept axes"),
    (Node("LayerNormalization", ["x", "s"], ["y"], {"axis": 1}, name="n"), "n'.*channels-last"),
    (Node("Hardmax", ["x"], ["y"], {"axis": 1}, name="n"), "n'.*Hardmax over several axes"),
])
def test_what_a_channels_last_input_cannot_do_is_unsupported_naming_the_node(node, message):
    x = TensorForm(F32, (2, 6, 4, 5), NHWC)
    inputs = [x, TensorForm(F32, (6, 4, 5))] if node.op_type == "LayerNormalization" else [x, TensorForm(I64, (1,))]
    ctx = LowerContext(node, inputs[:len(node.inputs)], [TensorForm(F32, (6, 4, 5))],
                       [None, np.array([0])][:len(node.inputs)], 11 if node.op_type == "Hardmax" else 21, "sm_86", 46)
    with pytest.raises(Unsupported, match=message):
        lower_reduction(ctx)


# ---------------------------------------------------------------- models

def model_of(nodes: list[Node], inputs: dict[str, tuple[tuple[int, ...], DType]], outputs: list[str],
             initializers: dict[str, np.ndarray] | None = None, opset: int = 21, storage_of=None) -> Model:
    types = {n: TensorType(dt, s) for n, (s, dt) in inputs.items()}
    graph = Graph(nodes, list(inputs), outputs, types, dict(initializers or {}))
    graph.storage.update(storage_of or {})
    return Model(graph, {"": opset})


def detector_head(shape: tuple = (2, 16, 6, 5)) -> Model:
    """A channel softmax (a DFL head), a channel ArgMax (segmentation), a Hardmax, a sum over
    the batch and height, and a per-element ReduceL2 (noop_with_empty_axes)."""
    nodes = [Node("Softmax", ["x"], ["soft"], {"axis": 1}, name="dfl"),
             Node("ArgMax", ["x"], ["label"], {"axis": 1, "keepdims": 0}, name="seg"),
             Node("Hardmax", ["x"], ["hard"], {"axis": 1}, name="hard"),
             Node("ReduceSum", ["soft", "a02"], ["sum"], {"keepdims": 0}, name="sum02"),
             Node("ReduceL2", ["x"], ["abs"], {"noop_with_empty_axes": 1}, name="abs"),
             Node("ReduceLogSumExp", ["x", "a1"], ["lse"], {"keepdims": 1}, name="lse")]
    return model_of(nodes, {"x": (shape, F32)}, ["soft", "label", "hard", "sum", "abs", "lse"],
                    {"a02": np.array([0, 2]), "a1": np.array([-3])})


def test_a_model_reducing_over_channels_and_other_axes_plans_with_no_host_step():
    plan = build_plan(detector_head(), {"x": (2, 16, 6, 5)}, arch="sm_86", sm_count=46)
    assert plan.host_steps == []
    labels = {s.node.name: [c.label for c in s.candidates] for s in plan.steps if s.node is not None}
    assert labels == {"dfl": ["columns"], "seg": ["columns"], "hard": ["columns"], "sum02": ["columns"],
                      "abs": ["columns"], "lse": ["columns"]}


def test_a_model_reducing_over_channels_and_other_axes_runs_as_the_reference_does(monkeypatch):
    model = detector_head()
    x = np.random.default_rng(3).uniform(-3, 3, (2, 16, 6, 5)).astype(np.float32)
    x[0, :, 0, 0] = 1.0  # a tie along the channels: the first index wins
    run = run_model(FakeDevice().install(monkeypatch), model, {"x": x})
    check_matches_reference(run.outputs, reference_outputs(model, {"x": x}), tol=1e-5)


def test_a_generic_plan_of_the_model_needs_the_same_kernels_at_every_shape_of_its_profile():
    model = detector_head(("batch", 16, "height", "width"))
    ranges = {"x": ((1, 16, 2, 2), (2, 16, 6, 5), (4, 16, 12, 12))}
    dims = dim_ranges(model, sample_shapes(ranges))
    plans = [build_plan(model, shapes, arch="sm_86", sm_count=46, dims=dims) for shapes in sample_shapes(ranges)]
    assert all(p.host_steps == [] for p in plans)
    assert len({tuple(sorted(p.kernels.items())) for p in plans}) == 1
    assert all("rtxd_" in source for source in plans[0].kernels.values())


def vision_reductions(opset: int) -> Model:
    """A global average pool, channel mean and max (CBAM), a channel ArgMax and Softmax, with
    the axes as attributes (opset 13) or constant inputs (opset 18 on)."""
    nodes, consts = [], {}

    def reduce(op: str, name: str, axes: list[int], **attrs) -> None:
        if opset >= 18:
            nodes.append(Node(op, ["x", f"{name}_axes"], [name], attrs, name=name))
            consts[f"{name}_axes"] = np.array(axes)
        else:
            nodes.append(Node(op, ["x"], [name], {"axes": axes, **attrs}, name=name))

    reduce("ReduceMean", "gap", [2, 3], keepdims=1)
    reduce("ReduceMean", "channel_mean", [1], keepdims=1)
    reduce("ReduceMax", "channel_max", [-3], keepdims=1)
    nodes += [Node("ArgMax", ["x"], ["seg"], {"axis": 1}, name="seg"),
              Node("Softmax", ["x"], ["prob"], {"axis": 1}, name="prob")]
    return model_of(nodes, {"x": ((1, 21, 16, 16), F16)}, [n.name for n in nodes], consts, opset)


@pytest.mark.parametrize("opset", [13, 21])
def test_common_vision_reductions_plan_with_no_host_step(opset):
    plan = build_plan(vision_reductions(opset), {"x": (1, 21, 16, 16)}, arch="sm_86", sm_count=46)
    assert plan.host_steps == [], [s.why_host for s in plan.host_steps]
    labels = {s.node.name: s.candidates[0].label for s in plan.steps if s.node is not None}
    assert labels == {"gap": "reducemean", "channel_mean": "columns", "channel_max": "columns", "seg": "columns",
                      "prob": "columns"}


def test_a_channels_last_value_is_softmaxed_without_a_conversion():
    """A channels-last region (as aot/passes/layout.py marks one: a channel softmax runs NHWC)
    holds the Relu and the Softmax: nothing converts between them."""
    nodes = [Node("Relu", ["x"], ["r"], name="relu"), Node("Softmax", ["r"], ["y"], {"axis": 1}, name="sm")]
    region = {"x": Storage(F16, NHWC), "r": Storage(F16, NHWC)}
    model = model_of(nodes, {"x": ((2, 32, 5, 7), F16)}, ["y"], storage_of=region)
    plan = build_plan(model, {"x": (2, 32, 5, 7)}, arch="sm_86", sm_count=46)
    (softmax,) = [s for s in plan.steps if s.node is not None and s.node.name == "sm"]
    assert [c.label for c in softmax.candidates] == ["softmax"]  # the row kernel, over channels
    assert plan.forms[softmax.inputs[0]].layout == NHWC
    assert plan.steps[plan.steps.index(softmax) - 1].node.name == "relu"  # no conversion between them


def test_what_has_no_kernel_runs_on_the_host_with_the_reason_naming_the_node():
    nodes = [Node("ReduceL2", ["x"], ["y"], {"axes": [1]}, name="wide")]
    model = model_of(nodes, {"x": ((4, 5, 6), DType.FLOAT64)}, ["y"], opset=13)
    plan = build_plan(model, {"x": (4, 5, 6)}, arch="sm_86", sm_count=46)
    (step,) = plan.host_steps
    assert "ReduceL2 node 'wide'" in step.why_host and "float64" in step.why_host


def test_an_empty_tensor_plans_no_launch():
    r = reduction_problem(Node("Softmax", ["x"], ["y"], {"axis": 1}), [TensorType(F32, (0, 16, 4))])
    assert strided_kernel(r).launch.grid() == 0 and strided_kernel(r, "split").launch.grid() == 0
