"""RNN, GRU and LSTM run on the GPU (rtxrt/backends/cuda/ops/recurrent.py): one cuBLAS GEMM
for the input projections of every step and direction, an init kernel, then one fused cell
kernel launch per time step (two for GRU without linear_before_reset), every launch of a node
the same kernel source; nothing runs on the host.

Each case below is a small model of one recurrent node, covering the ONNX spec: the three
directions, layout 0 and 1, sequence_lens (lengths of 0, of the whole sequence and between),
initial states, LSTM peepholes and input_forget, clip, every activation with its alpha and
beta, GRU's linear_before_reset, each output left out, float16 storage, opset 7. For each:

- the plan has no host step and the node's program is GEMM, init, then the step launches;
- its kernels compile with NVRTC for sm_75 and sm_90;
- the whole plan, run on the fake device (tests/fake_gpu: the real Engine, kernels
  interpreted, cuBLAS in numpy), matches the reference backend within 1e-5 of each output's
  largest magnitude (float16 storage: 2e-3).

A generic plan (batch and sequence length varying over a profile) needs the same kernel
sources at every shape of it and matches the reference at each.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen.dynamic import dim, dim_bindings
from rtxrt.backends.cuda.compile.nvrtc import compile_many
from rtxrt.backends.cuda.ops.recurrent_source import (
    BoundActivation,
    RecurrentSpec,
    bind_activations,
    cell_kernels,
    init_kernel,
)
from rtxrt.backends.cuda.plan.builder import Plan, build_plan, finalize
from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
from rtxrt.backends.cuda.plan.program import Gemm, Launch
from rtxrt.backends.reference.ops.recurrent import _activations as reference_activations
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Graph, Model, Node, TensorType
from tests.fake_gpu.device import FakeDevice, LaunchRecord
from tests.fake_gpu.engine import (
    check_matches_reference,
    check_plan_order,
    load_engine,
    plan_model,
    reference_outputs,
    run_engine,
)

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
TOLERANCE = {"float32": 1e-5, "float16": 2e-3}


# ----------------------------------------------------------------------------- the models

@dataclass(frozen=True)
class Case:
    """One recurrent node with its weights as initializers and X, sequence_lens, initial_h
    and initial_c as model inputs; ``outputs``: which of Y, Y_h, Y_c the node has."""

    op: str
    direction: str = "forward"
    layout: int = 0
    lens: bool = False
    initial: bool = False
    peepholes: bool = False
    clip: float | None = None
    activations: tuple[str, ...] = ()
    alphas: tuple[float, ...] = ()
    betas: tuple[float, ...] = ()
    linear_before_reset: int = 0
    input_forget: int = 0
    outputs: tuple[bool, ...] = (True, True, True)
    dtype: str = "float32"
    bias: bool = True
    opset: int = 22
    seq: int = 4
    batch: int = 3
    hidden: int = 5
    input_size: int = 3
    weight_scale: float = 0.6  # W and R uniform in +-weight_scale

    @property
    def id(self) -> str:
        parts = [self.op, self.direction, f"layout{self.layout}"]
        parts += [name for name, on in (("lens", self.lens), ("initial", self.initial), ("peepholes", self.peepholes),
                                        ("lbr", self.linear_before_reset), ("input_forget", self.input_forget),
                                        ("nobias", not self.bias)) if on]
        if self.clip is not None:
            parts.append(f"clip{self.clip}")
        if self.activations:
            parts.append("-".join(self.activations))
        if self.alphas or self.betas:
            parts.append(f"alpha{list(self.alphas)}beta{list(self.betas)}")
        if (self.seq, self.batch, self.hidden, self.input_size) != (4, 3, 5, 3):
            parts.append(f"seq{self.seq}batch{self.batch}hidden{self.hidden}input{self.input_size}")
        if not all(self.outputs[:self.states + 1]):
            parts.append("only_" + "_".join(n for n, on in zip(("Y", "Y_h", "Y_c"), self.outputs) if on))
        if self.dtype != "float32":
            parts.append(self.dtype)
        if self.opset != 22:
            parts.append(f"opset{self.opset}")
        return "-".join(parts)

    @property
    def states(self) -> int:
        return 2 if self.op == "LSTM" else 1

    @property
    def directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    def shapes(self, seq: int | str | None = None, batch: int | str | None = None) -> dict[str, tuple]:
        """The model inputs' shapes (symbolic where ``seq`` / ``batch`` are names)."""
        seq = self.seq if seq is None else seq
        batch = self.batch if batch is None else batch
        x = (batch, seq, self.input_size) if self.layout else (seq, batch, self.input_size)
        state = (batch, self.directions, self.hidden) if self.layout else (self.directions, batch, self.hidden)
        shapes = {"X": x}
        if self.lens:
            shapes["sequence_lens"] = (batch,)
        if self.initial:
            shapes["initial_h"] = state
            if self.op == "LSTM":
                shapes["initial_c"] = state
        return shapes

    def model(self, *, symbolic: bool = False) -> Model:
        """The IR model (``symbolic``: batch "N" and sequence length "S" left open)."""
        rng = np.random.default_rng(7)
        dtype = np.dtype(self.dtype)
        d, gh, h = self.directions, GATES[self.op] * self.hidden, self.hidden
        scale = self.weight_scale
        weights = {"W": rng.uniform(-scale, scale, (d, gh, self.input_size)),
                   "R": rng.uniform(-scale, scale, (d, gh, h))}
        if self.bias:
            weights["B"] = rng.uniform(-0.5, 0.5, (d, 2 * gh))
        if self.peepholes:
            weights["P"] = rng.uniform(-0.8, 0.8, (d, 3 * h))
        weights = {k: v.astype(dtype) for k, v in weights.items()}
        inputs = ["X", "W", "R", "B" if self.bias else "", "sequence_lens" if self.lens else "",
                  "initial_h" if self.initial else ""]
        if self.op == "LSTM":
            inputs += ["initial_c" if self.initial else "", "P" if self.peepholes else ""]
        while not inputs[-1]:
            inputs.pop()
        outputs = [name if on else "" for name, on in zip(("Y", "Y_h", "Y_c"), self.outputs[:self.states + 1])]
        while not outputs[-1]:
            outputs.pop()
        attrs = {"hidden_size": h, "direction": self.direction}
        if self.opset >= 14:
            attrs["layout"] = self.layout
        if self.clip is not None:
            attrs["clip"] = self.clip
        if self.activations:
            attrs["activations"] = list(self.activations)
        if self.alphas:
            attrs["activation_alpha"] = list(self.alphas)
        if self.betas:
            attrs["activation_beta"] = list(self.betas)
        if self.op == "GRU":
            attrs["linear_before_reset"] = self.linear_before_reset
        if self.op == "LSTM" and self.input_forget:
            attrs["input_forget"] = self.input_forget
        node = Node(self.op, inputs, outputs, attrs, name=self.op.lower())
        shapes = self.shapes("S", "N") if symbolic else self.shapes()
        element = DType.from_numpy(dtype)
        types = {name: TensorType(DType.INT32 if name == "sequence_lens" else element, shape)
                 for name, shape in shapes.items()}
        graph = Graph([node], list(shapes), [o for o in outputs if o], types, weights)
        return Model(graph, {"": self.opset})

    def feeds(self, seed: int = 0, seq: int | None = None, batch: int | None = None) -> dict[str, np.ndarray]:
        """Random inputs; sequence lengths include 0, the whole sequence and one between."""
        seq = self.seq if seq is None else seq
        batch = self.batch if batch is None else batch
        rng = np.random.default_rng(100 + seed)
        feeds = {}
        for name, shape in self.shapes(seq, batch).items():
            if name == "sequence_lens":
                lengths = [seq, 0, max(seq - 2, 1)] + list(rng.integers(0, seq + 1, max(batch - 3, 0)))
                feeds[name] = np.roll(np.array(lengths[:batch], np.int32), seed)
            else:
                feeds[name] = rng.uniform(-1.5, 1.5, shape).astype(self.dtype)
        return feeds


def _matrix() -> list[Case]:
    """Every op x direction x layout x (sequence_lens, initial states)."""
    return [Case(op, direction, layout, lens, initial)
            for op in ("RNN", "GRU", "LSTM")
            for direction in ("forward", "reverse", "bidirectional")
            for layout in (0, 1)
            for lens, initial in ((False, False), (True, False), (False, True), (True, True))]


FEATURES = [
    # LSTM: peepholes, input_forget, clip, activations with their parameters, per direction
    Case("LSTM", "bidirectional", lens=True, initial=True, peepholes=True),
    Case("LSTM", "reverse", layout=1, lens=True, initial=True, peepholes=True, clip=0.6),
    Case("LSTM", "bidirectional", initial=True, input_forget=1),
    Case("LSTM", "forward", lens=True, peepholes=True, input_forget=1, clip=0.4),
    Case("LSTM", "bidirectional", layout=1, lens=True, initial=True,
         activations=("HardSigmoid", "LeakyRelu", "ScaledTanh", "Sigmoid", "Elu", "Softsign"),
         alphas=(0.3, 0.05, 0.9, 1.1), betas=(0.4, 0.7)),
    Case("LSTM", "forward", activations=("Sigmoid", "Affine", "ThresholdedRelu"), alphas=(0.8, 0.2), betas=(0.1,)),
    Case("LSTM", "forward", bias=False, initial=True),
    # GRU: linear_before_reset both ways, clip, activations
    Case("GRU", "bidirectional", lens=True, initial=True, linear_before_reset=1),
    Case("GRU", "reverse", layout=1, lens=True, linear_before_reset=1, clip=0.3),
    Case("GRU", "bidirectional", layout=1, initial=True, clip=0.5),
    Case("GRU", "bidirectional", lens=True, activations=("Sigmoid", "Softplus", "HardSigmoid", "Tanh")),
    Case("GRU", "forward", initial=True, activations=("Affine", "ThresholdedRelu"), alphas=(0.5, 0.2), betas=(0.1,)),
    # RNN: activations, clip
    Case("RNN", "bidirectional", lens=True, initial=True, activations=("Relu", "Tanh")),
    Case("RNN", "reverse", layout=1, initial=True, activations=("Softplus",), clip=0.9),
    Case("RNN", "forward", activations=("ScaledTanh",), alphas=(1.3,), betas=(0.6,), clip=0.2),
    Case("RNN", "forward", lens=True, activations=("Elu",), alphas=(0.7,)),
    # each output on its own
    Case("LSTM", "bidirectional", lens=True, outputs=(False, False, True)),
    Case("LSTM", "reverse", layout=1, lens=True, initial=True, outputs=(True, False, False)),
    Case("GRU", "bidirectional", layout=1, lens=True, outputs=(False, True)),
    Case("RNN", "reverse", lens=True, outputs=(True, False)),
    # float16 storage (the GEMM takes fp16 X and W, the state stays fp32)
    Case("LSTM", "bidirectional", layout=1, lens=True, initial=True, peepholes=True, dtype="float16"),
    Case("GRU", "reverse", lens=True, initial=True, dtype="float16"),
    Case("RNN", "bidirectional", initial=True, dtype="float16"),
    # opset 7 (no layout attribute)
    Case("LSTM", "bidirectional", lens=True, initial=True, peepholes=True, opset=7),
    Case("GRU", "forward", lens=True, linear_before_reset=1, opset=7),
    Case("RNN", "reverse", initial=True, opset=7),
    # longer sequences and wider states than the matrix's
    Case("LSTM", "bidirectional", lens=True, seq=9, batch=2, hidden=33, input_size=7),
    Case("GRU", "forward", layout=1, seq=1, batch=1, hidden=16),
    Case("LSTM", "bidirectional", layout=1, lens=True, initial=True, peepholes=True, seq=12, batch=6, hidden=64,
         input_size=20),  # several blocks a step
]

CASES = _matrix() + FEATURES


def plan_of(case: Case) -> Plan:
    return build_plan(case.model(), case.shapes(), arch="sm_86", sm_count=46)


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {case.id: plan_of(case) for case in CASES}


def node_program(plan: Plan):
    (step,) = [s for s in plan.steps if s.node is not None and s.node.op_type in GATES]
    return step.candidates[0]


# ----------------------------------------------------------------------------- planning

def test_the_cases_are_distinct():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_node_runs_on_the_gpu_as_a_gemm_an_init_and_one_launch_per_step(case, plans):
    plan = plans[case.id]
    assert plan.host_steps == []
    program = node_program(plan)
    gemm, init, *steps = program.steps
    assert isinstance(gemm, Gemm) and gemm.trans_b and gemm.out_dtype == DType.FLOAT32
    assert gemm.dtype == DType.from_numpy(np.dtype(case.dtype))  # X and W as stored (fp16: exact weights)
    assert (gemm.m, gemm.n, gemm.k) == (case.seq * case.batch, case.directions * GATES[case.op] * case.hidden,
                                        case.input_size)
    assert isinstance(init, Launch) and init.dims == ()
    per_step = 2 if case.op == "GRU" and not case.linear_before_reset else 1
    assert len(steps) == per_step * case.seq and all(isinstance(s, Launch) for s in steps)
    # every step launches the same kernel(s), told the step by an int argument
    assert len({s.kernel for s in steps}) == per_step
    assert [s.dims[0] for s in steps] == [t for t in range(case.seq) for _ in range(per_step)]
    assert set(program.kernels) == {init.kernel} | {s.kernel for s in steps}
    # one thread per (direction, batch row, hidden unit)
    assert all(s.grid[0] * s.block[0] >= case.directions * case.batch * case.hidden for s in steps)


def test_the_state_buffers_take_turns_from_step_to_step(plans):
    case = Case("LSTM", "bidirectional", lens=True, initial=True)
    steps = node_program(plans[case.id]).steps[2:]
    state = case.directions * case.batch * case.hidden * 4
    offsets = [[(a.key, a.offset) for a in s.args if a.key == "h"] for s in steps]
    assert offsets[0] == [("h", 0), ("h", state)]  # reads the half init wrote, writes the other
    assert offsets[1] == [("h", state), ("h", 0)]
    assert offsets[2] == offsets[0]


def test_weights_not_known_when_planning_leave_the_node_on_the_host_naming_it():
    case = Case("LSTM", "forward")
    model = case.model()
    graph = model.graph
    w = graph.initializers.pop("W")
    graph.inputs.append("W")
    graph.types["W"] = TensorType(DType.FLOAT32, w.shape)
    plan = build_plan(model, {**case.shapes(), "W": w.shape}, arch="sm_86", sm_count=46)
    (host,) = plan.host_steps
    assert "LSTM node 'lstm'" in host.why_host and "W" in host.why_host


def test_an_unknown_activation_leaves_the_node_on_the_host():
    node = Case("RNN", activations=("Swish",)).model()
    plan = build_plan(node, Case("RNN").shapes(), arch="sm_86", sm_count=46)
    (host,) = plan.host_steps
    assert "activation" in host.why_host and "Swish" in host.why_host


# ----------------------------------------------------------------------------- activations

def test_activation_alphas_and_betas_go_in_order_to_the_activations_that_take_them():
    bound = bind_activations("LSTM", ["HardSigmoid", "LeakyRelu", "ScaledTanh", "Sigmoid", "Elu", "Softsign"],
                             [0.3, 0.05, 0.9, 1.1], [0.4, 0.7], 2)
    assert bound == ((BoundActivation("hardsigmoid", 0.3, 0.4), BoundActivation("leakyrelu", 0.05),
                      BoundActivation("scaledtanh", 0.9, 0.7)),
                     (BoundActivation("sigmoid"), BoundActivation("elu", 1.1), BoundActivation("softsign")))
    # left out: the ONNX defaults; none given: the op's defaults for every direction
    assert bind_activations("GRU", ["Affine", "ThresholdedRelu"], [], [], 1) == \
        ((BoundActivation("affine", 1.0, 0.0), BoundActivation("thresholdedrelu", 1.0)),)
    assert bind_activations("RNN", None, [], [], 2) == ((BoundActivation("tanh"),), (BoundActivation("tanh"),))


ACTIVATION_NAMES = ["Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid",
                    "Elu", "Softsign", "Softplus"]


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_each_activation_computes_what_the_reference_computes(name):
    """An RNN of one unit with R = 0, W = 1 and no bias is the activation of its input."""
    (act,), = bind_activations("RNN", [name], [0.7], [0.3], 1)
    x = np.array([-30.0, -3.0, -1.0, -0.25, -0.0, 0.0, 0.25, 0.69, 0.71, 1.0, 3.0, 30.0, np.nan], np.float32)
    model = Model(Graph([Node("RNN", ["X", "W", "R"], ["Y"], {"hidden_size": 1, "activations": [name],
                                                            "activation_alpha": [0.7], "activation_beta": [0.3]})],
                        ["X"], ["Y"], {"X": TensorType(DType.FLOAT32, (1, x.size, 1))},
                        {"W": np.ones((1, 1, 1), np.float32), "R": np.zeros((1, 1, 1), np.float32)}), {"": 22})
    got = _fake_run(model, {"X": x.reshape(1, -1, 1)})["Y"].reshape(-1)
    (fn,) = reference_activations([name], [0.7], [0.3])
    np.testing.assert_allclose(got, fn(x), rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=f"{act}")


# ----------------------------------------------------------------------------- NVRTC

@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_every_kernel_compiles(plans, arch):
    kernels = {name: source for plan in plans.values() for name, source in plan.kernels.items()}
    cubins = compile_many(kernels.items(), arch)
    assert set(cubins) == set(kernels) and all(cubins.values())


# ----------------------------------------------------------------------------- the fake device

def _fake_run(model: Model, feeds: dict[str, np.ndarray], *, dims=None, constants=None, device=None):
    """``model`` planned at the feeds' shapes and run whole on a fake device; the device ran
    the plan's steps in order and interpreted every kernel."""
    from _pytest.monkeypatch import MonkeyPatch

    with MonkeyPatch.context() as monkeypatch:
        device = FakeDevice(64 << 20).install(monkeypatch)
        plan = plan_model(model, {k: v.shape for k, v in feeds.items()}, dims=dims, constants=constants)
        assert plan.host_steps == []
        engine = load_engine(device, finalize(plan))
        mark = device.mark()
        outputs = run_engine(engine, feeds)
        records = device.since(mark)
        check_plan_order(engine, records)
        launches = [r for r in records if isinstance(r, LaunchRecord)]
        assert launches and all(r.executed for r in launches), [(r.kernel, r.why_not) for r in launches]
    return outputs


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_plan_matches_the_reference_on_the_fake_device(case):
    model = case.model()
    for seed in (0, 1):
        feeds = case.feeds(seed)
        got = _fake_run(model, feeds)
        assert set(got) == {o for o in model.graph.outputs}
        check_matches_reference(got, reference_outputs(case.model(), feeds), tol=TOLERANCE[case.dtype],
                                what=f"{case.id} seed {seed}")


def test_a_sequence_of_no_steps_ends_in_its_initial_state():
    case = Case("LSTM", "bidirectional", lens=True, initial=True, seq=0)
    feeds = case.feeds()
    got = _fake_run(case.model(), feeds)
    assert got["Y"].shape == (0, 2, case.batch, case.hidden)
    np.testing.assert_array_equal(got["Y_h"], feeds["initial_h"])
    np.testing.assert_array_equal(got["Y_c"], feeds["initial_c"])


def test_steps_past_a_sequence_keep_its_state_and_write_zeros():
    case = Case("GRU", "bidirectional", lens=True, initial=True)
    feeds = case.feeds()
    got = _fake_run(case.model(), feeds)
    lens = feeds["sequence_lens"]
    for b, n in enumerate(lens):
        assert not got["Y"][n:, :, b].any()
        assert got["Y"][:n, :, b].all()
    empty = int(np.flatnonzero(lens == 0)[0])
    np.testing.assert_array_equal(got["Y_h"][:, empty], feeds["initial_h"][:, empty])


# ----------------------------------------------------------------------------- generic plans

GENERIC = [
    Case("LSTM", "bidirectional", lens=True, initial=True, peepholes=True),
    Case("GRU", "reverse", layout=1, lens=True, initial=True),
    Case("GRU", "bidirectional", linear_before_reset=1, clip=0.5),
    Case("RNN", "forward", layout=1, initial=True),
]


@pytest.mark.parametrize("case", GENERIC, ids=lambda c: c.id)
def test_a_generic_plan_uses_one_set_of_kernels_and_matches_the_reference_at_every_shape(case):
    model = case.model(symbolic=True)
    low, opt, high = (1, 1), (3, 2), (6, 4)  # (seq, batch)
    ranges = {name: tuple(case.shapes(*sb)[name] for sb in (low, opt, high)) for name in case.shapes()}
    dims, memo = dim_ranges(model, sample_shapes(ranges)), {}
    kernels = None
    for k, (seq, batch) in enumerate([opt, low, (5, 3), high]):
        feeds = case.feeds(k, seq, batch)
        plan = plan_model(model, {n: v.shape for n, v in feeds.items()}, dims=dims, constants=memo)
        program = node_program(plan)
        assert kernels is None or program.kernels == kernels, f"new kernels at seq {seq}, batch {batch}"
        kernels = program.kernels
        launches = [s for s in program.steps if isinstance(s, Launch)]
        per_step = 2 if case.op == "GRU" and not case.linear_before_reset else 1
        assert len(launches) == 1 + per_step * seq
        # the varying dims are kernel arguments: after the step index, the same at every step
        assert launches[0].dims and len({s.dims[1:] for s in launches[1:]}) == 1 and launches[1].dims[1:]
        got = _fake_run(model, feeds, dims=dims, constants=memo)
        check_matches_reference(got, reference_outputs(case.model(symbolic=True), feeds), tol=1e-5,
                                what=f"{case.id} at seq {seq}, batch {batch}")


def test_the_generators_write_one_source_for_every_batch_and_sequence_length():
    base = RecurrentSpec("LSTM", 6, "bidirectional", True, 0, 0, bind_activations("LSTM", None, [], [], 2),
                         peepholes=True, lens=DType.INT32, initial_h=DType.FLOAT16, initial_c=DType.FLOAT16,
                         y=DType.FLOAT16, y_h=DType.FLOAT16, y_c=DType.FLOAT16, clip=2.0)
    sources, values = set(), set()
    for seq, batch in ((3, 2), (17, 5)):
        bound = {"rtxd_i0_0": batch, "rtxd_i0_1": seq}  # layout 1: X is [batch, seq, input]
        with dim_bindings(bound):
            spec = replace(base, seq=dim(seq, "rtxd_i0_1", 1, 64), batch=dim(batch, "rtxd_i0_0", 1, 8))
            kernels = [init_kernel(spec), *cell_kernels(spec)]
        sources.add(tuple(k.source for k in kernels))
        values.add(tuple(k.dims(step=1) for k in kernels))
        assert kernels[1].dims(step=1) == (1, batch, seq)  # the step, then the dims (by name)
    assert len(sources) == 1 and len(values) == 2
    for arch in ("sm_75", "sm_90"):
        cubins = compile_many([(k.name, k.source) for k in kernels], arch)
        assert all(cubins[k.name] for k in kernels)


# ----------------------------------------------------------------------------- through the AOT pipeline

def test_an_onnx_model_compiled_at_fp16_runs_on_the_gpu_and_matches_the_reference(monkeypatch):
    """Relu -> LSTM -> Tanh at fp16 precision: X arrives in fp16 storage, the float32 weights
    would round in an fp16 GEMM, so the LSTM takes X in float32 (one conversion) and still
    runs on the GPU."""
    from onnx import TensorProto, helper

    from tests.fake_gpu.engine import check_model, plan_model as plan_onnx
    from tests.fake_gpu.models import compiled
    from tests.helpers import make_model

    rng = np.random.default_rng(3)
    h, i = 6, 4
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("LSTM", ["a", "w", "r", "b", "lens"], ["y", "yh", "yc"], hidden_size=h,
                              direction="bidirectional", layout=1),
             helper.make_node("Tanh", ["y"], ["out"])]
    proto = make_model(nodes, [("x", TensorProto.FLOAT, [2, 5, i]), ("lens", TensorProto.INT32, [2])],
                       [("out", TensorProto.FLOAT, None), ("yh", TensorProto.FLOAT, None),
                        ("yc", TensorProto.FLOAT, None)],
                       {"w": rng.uniform(-0.5, 0.5, (2, 4 * h, i)).astype(np.float32),
                        "r": rng.uniform(-0.5, 0.5, (2, 4 * h, h)).astype(np.float32),
                        "b": rng.uniform(-0.5, 0.5, (2, 8 * h)).astype(np.float32)}, opset=22)
    feeds = [{"x": np.random.default_rng(s).uniform(-2, 2, (2, 5, i)).astype(np.float32),
              "lens": np.array([5, 2 + s], np.int32)} for s in (0, 1)]
    plan = plan_onnx(compiled(proto, "fp16"), {"x": (2, 5, i), "lens": (2,)})
    assert plan.host_steps == []
    (lstm,) = [s for s in plan.steps if s.node is not None and s.node.op_type == "LSTM"]
    assert plan.forms[lstm.inputs[0]].dtype == DType.FLOAT32 and "lstm" in lstm.candidates[0].label
    check_model(FakeDevice().install(monkeypatch), proto, feeds, "fp16")
