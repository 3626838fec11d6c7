"""The generated kernels of ONNX RNN, GRU and LSTM (the lowering is recurrent.py).

The input projection of every step (X times Wᵀ) is one cuBLAS GEMM into a float32 scratch
``xw`` of [rows, directions, G * H] (rows in X's own order: t * batch + b for layout 0,
b * seq + t for layout 1). What remains is the recurrence, one launch per time step (two for
GRU without ``linear_before_reset``), all launches of one kernel source:

- ``init_kernel``: the state from initial_h / initial_c (or zeros), and Y_h / Y_c from it
  (a sequence of no steps ends in its initial state);
- ``cell_kernels``: one thread per (direction, batch row, hidden unit) and step. It computes
  its G dot products ``h_prev . R[g * H + j]`` itself (R packed k-major, ``rt[d][g][k][j]``,
  so the threads of a warp read consecutive units), adds the biases, applies clip and the
  activations, and writes the new state, Y[t] and Y_h / Y_c. Both directions run in the same
  launch: direction d is at time ``step`` going forward, ``seq - 1 - step`` in reverse.

The hidden state is double-buffered (``h_in`` / ``h_out``: the lowering swaps two halves of
one scratch buffer by pointer offsets) because every thread reads all of its row's previous
state; the cell state is per thread, updated in place. A step past a sequence's length
(``sequence_lens``) keeps the state and writes zeros to Y, as the reference backend does; in
reverse, the steps past the length come first, so each sequence runs back over its valid part.

The state stays float32 whatever the storage type (the reference computes in float32); Y,
Y_h and Y_c are stored in their own types. The kernels are grid-stride loops without shared
memory (the previous state of a row is read through the read-only cache), so the fake
device's interpreter runs them.

Shape-generic: batch and sequence length are formatted into the source (DimInts in a generic
plan become kernel arguments); the step is an ``int`` argument of its own, before them, so the
source is the same at every step and at every shape of a profile.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ....ir.activations import get_activation
from ....ir.dtypes import DType
from ..codegen import CodegenError
from ..codegen import ctypes_map as C
from ..codegen.activation_c import activation_c
from ..codegen.device_helpers import NAN_MAX_MIN
from ..codegen.dynamic import dims_text, upper
from ..codegen.kernel_source import KERNEL_NAME, KernelSource, LaunchPolicy

BLOCK = 128  # small blocks: a step has few threads (batch x hidden), spread them over the SMs
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTIVATIONS = {"RNN": ("Tanh",), "GRU": ("Sigmoid", "Tanh"), "LSTM": ("Sigmoid", "Tanh", "Tanh")}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
STORED = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)  # types of X, the states and the outputs
_INT_LIMIT = 2**31

# name (lower case) -> (default alpha, default beta); None: the activation takes no such value.
# Which activations take an alpha or a beta decides how activation_alpha / activation_beta
# are consumed (in order, by the activations that take one), as the reference backend does.
ACTIVATION_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "relu": (None, None), "tanh": (None, None), "sigmoid": (None, None), "leakyrelu": (0.01, None),
    "hardsigmoid": (0.2, 0.5), "affine": (1.0, 0.0), "thresholdedrelu": (1.0, None), "scaledtanh": (1.0, 1.0),
    "elu": (1.0, None), "softsign": (None, None), "softplus": (None, None),
}


@dataclass(frozen=True)
class BoundActivation:
    """One activation of a cell with its alpha and beta (None where it takes none)."""

    name: str  # lower case
    alpha: float | None = None
    beta: float | None = None

    def c_expr(self, x: str) -> str:
        """The activation at the float C value ``x`` (a name), as the reference computes it."""
        a = None if self.alpha is None else C.literal(self.alpha, DType.FLOAT32)
        b = None if self.beta is None else C.literal(self.beta, DType.FLOAT32)
        shared = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "leakyrelu": "leaky_relu",
                  "hardsigmoid": "hard_sigmoid"}
        if self.name in shared:  # the formulas the fused epilogues use too
            activation = get_activation(shared[self.name])
            params = dict(zip((k for k, _ in activation.params), (self.alpha, self.beta)))
            return activation_c(activation, x, DType.FLOAT32, params)
        return {
            "affine": f"({a} * {x} + {b})",
            "thresholdedrelu": f"({x} > {a} ? {x} : 0.0f)",
            "scaledtanh": f"({a} * tanhf({b} * {x}))",
            "elu": f"({x} >= 0.0f ? {x} : {a} * (expf({x}) - 1.0f))",
            "softsign": f"({x} / (1.0f + fabsf({x})))",
            "softplus": f"(rtx_max({x}, 0.0f) + log1pf(expf(-fabsf({x}))))",  # log(1 + e^x), never overflowing
        }[self.name]


def bind_activations(op: str, names: Sequence[str] | None, alphas: Sequence[float], betas: Sequence[float],
                     directions: int) -> tuple[tuple[BoundActivation, ...], ...]:
    """Per direction, the cell's activations (f, g[, h]) with their parameters: ``names``
    lists every direction's in turn (None: the op's defaults)."""
    per = len(DEFAULT_ACTIVATIONS[op])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else \
        list(DEFAULT_ACTIVATIONS[op]) * directions
    if len(names) != per * directions:
        raise CodegenError(f"{op}: expected {per * directions} activations, got {names}")
    alphas, betas = [float(a) for a in alphas], [float(b) for b in betas]
    bound = []
    for name in names:
        try:
            alpha, beta = ACTIVATION_DEFAULTS[name.lower()]
        except KeyError:
            raise CodegenError(f"{op}: unsupported activation {name!r}") from None
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        bound.append(BoundActivation(name.lower(), alpha, beta))
    return tuple(tuple(bound[d * per:(d + 1) * per]) for d in range(directions))


@dataclass(frozen=True)
class RecurrentSpec:
    """Everything the kernels of one recurrent node depend on. ``seq`` and ``batch`` may be
    DimInts; the dtypes of optional inputs and outputs are None where the node has none."""

    op: str  # "RNN", "GRU" or "LSTM"
    hidden: int
    direction: str  # "forward", "reverse" or "bidirectional"
    batch_first: bool  # layout 1
    seq: int
    batch: int
    activations: tuple[tuple[BoundActivation, ...], ...]  # per direction
    clip: float | None = None
    input_forget: bool = False  # LSTM
    linear_before_reset: bool = False  # GRU
    peepholes: bool = False  # LSTM
    lens: DType | None = None  # sequence_lens
    initial_h: DType | None = None
    initial_c: DType | None = None
    y: DType | None = None
    y_h: DType | None = None
    y_c: DType | None = None

    @property
    def gates(self) -> int:
        return GATES[self.op]

    @property
    def directions(self) -> int:
        return DIRECTIONS[self.direction]

    @property
    def threads(self) -> int:
        """Threads of a step: one per (direction, batch row, hidden unit)."""
        return self.directions * self.batch * self.hidden

    @property
    def two_launches(self) -> bool:
        """GRU's candidate needs the reset gate of every unit: gates and candidate apart."""
        return self.op == "GRU" and not self.linear_before_reset

    def describe(self) -> str:
        layout = "batch-first" if self.batch_first else "seq-first"
        return (f"{self.op} {self.direction} H={self.hidden} seq={self.seq} batch={self.batch} {layout}"
                f"{' clip' if self.clip is not None else ''}{' lens' if self.lens else ''}")


@dataclass(frozen=True)
class RecurrentKernel:
    """A generated kernel whose pointer parameters are named buffers (``params``, in order:
    node inputs, outputs, the program's scratch and constants; the lowering maps each name
    to a Ref); ``per_step``: it takes the step index as an int before its dim arguments."""

    kernel: KernelSource
    params: tuple[str, ...]
    per_step: bool

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def source(self) -> str:
        return self.kernel.source

    def dims(self, step: int | None = None) -> tuple[int, ...]:
        """The int arguments of a launch (at ``step`` for a per-step kernel)."""
        return ((int(step),) if self.per_step else ()) + tuple(int(d) for d in self.kernel.dims)

    def grid(self) -> int:
        return int(self.kernel.launch.grid())


def check(spec: RecurrentSpec) -> None:
    """What the kernels assume of their sizes: 32-bit thread indexes (at every shape)."""
    if 2 * upper(spec.threads) + BLOCK >= _INT_LIMIT:
        raise CodegenError(f"{spec.describe()}: {upper(spec.threads)} threads a step exceed 32-bit indexes")
    for dtype in (spec.initial_h, spec.initial_c, spec.y, spec.y_h, spec.y_c):
        if dtype is not None and dtype not in STORED:
            raise CodegenError(f"{spec.describe()}: recurrent states and outputs are float32, float16 or bfloat16, "
                               f"not {dtype.short}")
    if spec.lens is not None and spec.lens not in (DType.INT32, DType.INT64):
        raise CodegenError(f"{spec.describe()}: sequence_lens must be int32 or int64, not {spec.lens.short}")


# ------------------------------------------------------------------------------ the kernels

def init_kernel(spec: RecurrentSpec) -> RecurrentKernel:
    """The state (h in the first half of scratch ``h``, c in scratch ``c``) from the initial
    states or zeros, and Y_h / Y_c from it."""
    check(spec)
    lstm = spec.op == "LSTM"
    params: list[tuple[str, str]] = []  # (name, C declaration)
    if spec.initial_h:
        params.append(("h0", _const_ptr(spec.initial_h, "h0")))
    if lstm and spec.initial_c:
        params.append(("c0", _const_ptr(spec.initial_c, "c0")))
    params.append(("h_state", "float* __restrict__ h_state"))
    if lstm:
        params.append(("c_state", "float* __restrict__ c_state"))
    if spec.y_h:
        params.append(("y_h", _ptr(spec.y_h, "y_h")))
    if lstm and spec.y_c:
        params.append(("y_c", _ptr(spec.y_c, "y_c")))
    body = [*_coordinates(spec), f"const int s = {_state_index(spec)};"]
    body.append(f"const float h = {C.load('h0[s]', spec.initial_h) if spec.initial_h else '0.0f'};")
    body.append("h_state[i] = h;")
    if spec.y_h:
        body.append(f"y_h[s] = {C.store('h', spec.y_h)};")
    if lstm:
        body.append(f"const float c = {C.load('c0[s]', spec.initial_c) if spec.initial_c else '0.0f'};")
        body.append("c_state[i] = c;")
        if spec.y_c:
            body.append(f"y_c[s] = {C.store('c', spec.y_c)};")
    return _kernel(f"{spec.op.lower()}_init_", spec, params, body, per_step=False,
                   comment=f"initial state of {spec.describe()}")


def cell_kernels(spec: RecurrentSpec) -> list[RecurrentKernel]:
    """The kernel(s) of one time step, launched in this order at every step."""
    check(spec)
    if spec.op == "LSTM":
        return [_lstm_cell(spec)]
    if spec.op == "RNN":
        return [_rnn_cell(spec)]
    if spec.linear_before_reset:
        return [_gru_cell(spec)]
    return [_gru_gates(spec), _gru_candidate(spec)]


def _lstm_cell(spec: RecurrentSpec) -> RecurrentKernel:
    h = spec.hidden
    params = _step_inputs(spec)
    if spec.peepholes:
        params.append(("peep", "const float* __restrict__ peep"))
    params += _lens_param(spec) + [("h_in", "const float* __restrict__ h_in"),
                                   ("h_out", "float* __restrict__ h_out"),
                                   ("c_state", "float* __restrict__ c_state")] + _output_params(spec)
    body = [*_step_prologue(spec), *_dot_products(spec, "h_in", range(4)),
            "const float h_old = h_in[i];", "const float c_old = c_state[i];"]
    if spec.peepholes:  # P holds the input, output and forget peepholes of each direction
        body.append(f"const float* __restrict__ p = peep + d * {3 * h} + j;")
    peep = (lambda k, c: f" + p[{k * h}] * {c}") if spec.peepholes else (lambda k, c: "")
    body += [f"const float z{g} = {_preactivation(spec, g)};" for g in range(4)]  # gates i, o, f, c
    f, g, act_h = (lambda x, k=k: _activation(spec, k, x) for k in range(3))
    body.append(f"const float gi = {f(_clip(spec, 'z0' + peep(0, 'c_old')))};")
    forget = "1.0f - gi" if spec.input_forget else f(_clip(spec, "z2" + peep(2, "c_old")))
    body.append(f"const float gf = {forget};")
    body.append(f"const float c_new = gf * c_old + gi * {g(_clip(spec, 'z3'))};")
    body.append(f"const float go = {f(_clip(spec, 'z1' + peep(1, 'c_new')))};")
    body.append(f"const float h_new = go * {act_h('c_new')};")
    body += _step_epilogue(spec, cell=True)
    return _kernel("lstm_cell_", spec, params, body, per_step=True, comment=f"one step of {spec.describe()}")


def _rnn_cell(spec: RecurrentSpec) -> RecurrentKernel:
    params = _step_inputs(spec) + _lens_param(spec) + [("h_in", "const float* __restrict__ h_in"),
                                                       ("h_out", "float* __restrict__ h_out")] + _output_params(spec)
    body = [*_step_prologue(spec), *_dot_products(spec, "h_in", range(1)), "const float h_old = h_in[i];",
            f"const float h_new = {_activation(spec, 0, _clip(spec, _preactivation(spec, 0)))};",
            *_step_epilogue(spec, cell=False)]
    return _kernel("rnn_cell_", spec, params, body, per_step=True, comment=f"one step of {spec.describe()}")


def _gru_cell(spec: RecurrentSpec) -> RecurrentKernel:
    """linear_before_reset: the candidate is x·W_h + r * (h·R_h + Rb_h), one launch."""
    h, gh = spec.hidden, spec.gates * spec.hidden
    params = _step_inputs(spec) + _lens_param(spec) + [("h_in", "const float* __restrict__ h_in"),
                                                       ("h_out", "float* __restrict__ h_out")] + _output_params(spec)
    body = [*_step_prologue(spec), *_dot_products(spec, "h_in", range(3)), "const float h_old = h_in[i];",
            f"const float gz = {_activation(spec, 0, _clip(spec, _preactivation(spec, 0)))};",
            f"const float gr = {_activation(spec, 0, _clip(spec, _preactivation(spec, 1)))};",
            f"const float cand = x[{2 * h}] + bw[{2 * h}] + gr * (acc2 + bw[{gh + 2 * h}]);",
            f"const float h_new = (1.0f - gz) * {_activation(spec, 1, _clip(spec, 'cand'))} + gz * h_old;",
            *_step_epilogue(spec, cell=False)]
    return _kernel("gru_cell_", spec, params, body, per_step=True, comment=f"one step of {spec.describe()}")


def _gru_gates(spec: RecurrentSpec) -> RecurrentKernel:
    """Launch 1 of a GRU step: the update gate z and r * h_prev, into scratch ``z`` / ``rh``."""
    params = _step_inputs(spec) + [("h_in", "const float* __restrict__ h_in"), ("z", "float* __restrict__ z"),
                                   ("rh", "float* __restrict__ rh")]
    body = [*_step_prologue(spec), *_dot_products(spec, "h_in", range(2)),
            f"z[i] = {_activation(spec, 0, _clip(spec, _preactivation(spec, 0)))};",
            f"rh[i] = {_activation(spec, 0, _clip(spec, _preactivation(spec, 1)))} * h_in[i];"]
    return _kernel("gru_gates_", spec, params, body, per_step=True, comment=f"gates of a step of {spec.describe()}")


def _gru_candidate(spec: RecurrentSpec) -> RecurrentKernel:
    """Launch 2 of a GRU step: the candidate x·W_h + (r * h_prev)·R_h + Rb_h and the new state."""
    h, gh = spec.hidden, spec.gates * spec.hidden
    params = _step_inputs(spec) + _lens_param(spec) + [
        ("h_in", "const float* __restrict__ h_in"), ("z", "const float* __restrict__ z"),
        ("rh", "const float* __restrict__ rh"), ("h_out", "float* __restrict__ h_out")] + _output_params(spec)
    body = [*_step_prologue(spec), *_dot_products(spec, "rh", (2,)), "const float h_old = h_in[i];",
            "const float gz = z[i];",
            f"const float cand = x[{2 * h}] + bw[{2 * h}] + acc2 + bw[{gh + 2 * h}];",
            f"const float h_new = (1.0f - gz) * {_activation(spec, 1, _clip(spec, 'cand'))} + gz * h_old;",
            *_step_epilogue(spec, cell=False)]
    return _kernel("gru_candidate_", spec, params, body, per_step=True,
                   comment=f"candidate of a step of {spec.describe()}")


# ------------------------------------------------------------------------------ pieces

def _coordinates(spec: RecurrentSpec) -> list[str]:
    """Thread ``i`` as (direction d, batch row b, hidden unit j): i = (d * batch + b) * H + j."""
    h, batch = spec.hidden, spec.batch
    lines = [f"const int j = i % {h};", f"const int b = (i / {h}) % ({batch});"]
    lines.append(f"const int d = i / ({h} * ({batch}));" if spec.directions > 1 else "const int d = 0;")
    return lines


def _state_index(spec: RecurrentSpec) -> str:
    """Where (d, b, j) sits in initial_h/c and Y_h/c: [dirs, batch, H], or [batch, dirs, H]."""
    return f"(b * {spec.directions} + d) * {spec.hidden} + j" if spec.batch_first else "i"


def _offset_type(spec: RecurrentSpec) -> str:
    """Indexes into xw and Y: 64-bit where they may pass 2**31 at some shape of the profile."""
    largest = upper(spec.seq) * upper(spec.batch) * spec.directions * spec.gates * spec.hidden
    return "long long" if largest >= _INT_LIMIT else "int"


def _step_inputs(spec: RecurrentSpec) -> list[tuple[str, str]]:
    return [("xw", "const float* __restrict__ xw"), ("rt", "const float* __restrict__ rt"),
            ("bias", "const float* __restrict__ bias")]


def _lens_param(spec: RecurrentSpec) -> list[tuple[str, str]]:
    return [("lens", f"const {C.storage_type(spec.lens)}* __restrict__ lens")] if spec.lens else []


def _output_params(spec: RecurrentSpec) -> list[tuple[str, str]]:
    params = []
    for name, dtype in (("y", spec.y), ("y_h", spec.y_h), ("y_c", spec.y_c if spec.op == "LSTM" else None)):
        if dtype is not None:
            params.append((name, _ptr(dtype, name)))
    return params


def _step_prologue(spec: RecurrentSpec) -> list[str]:
    """This thread's time t, and pointers to its row of xw, its biases and its column of R."""
    seq, batch, gh = spec.seq, spec.batch, spec.gates * spec.hidden
    off = _offset_type(spec)
    t = {"forward": "step", "reverse": f"({seq}) - 1 - step",
         "bidirectional": f"d == 0 ? step : ({seq}) - 1 - step"}[spec.direction]
    row = f"({off})b * ({seq}) + t" if spec.batch_first else f"({off})t * ({batch}) + b"
    return [*_coordinates(spec), f"const int t = {t};", f"const {off} row = {row};",
            f"const float* __restrict__ x = xw + (row * {spec.directions} + d) * {gh} + j;",
            f"const float* __restrict__ bw = bias + d * {2 * gh} + j;  // W's biases, then R's",
            f"const float* __restrict__ r = rt + d * {gh * spec.hidden} + j;  // rt[d][gate][k][j]"]


def _dot_products(spec: RecurrentSpec, state: str, gates: Sequence[int]) -> list[str]:
    """acc<g> = state[row] . R[g * H + j] for each gate g (sequential float32 sums)."""
    h = spec.hidden
    lines = [f"float acc{g} = 0.0f;" for g in gates]
    lines += [f"const float* __restrict__ hp = {state} + (i - j);  // the batch row the dot products read",
              "#pragma unroll 4",
              f"for (int k = 0; k < {h}; ++k) {{",
              "  const float hk = hp[k];"]
    lines += [f"  acc{g} += hk * r[k * {h}{f' + {g * h * h}' if g else ''}];" for g in gates]
    lines.append("}")
    return lines


def _preactivation(spec: RecurrentSpec, gate: int) -> str:
    """Gate ``gate``'s x·W + Wb + h·R + Rb, summed in the reference's order."""
    h, gh = spec.hidden, spec.gates * spec.hidden
    return f"x[{gate * h}] + bw[{gate * h}] + acc{gate} + bw[{gh + gate * h}]"


def _clip(spec: RecurrentSpec, value: str) -> str:
    return f"rtx_clip({value})" if spec.clip is not None else value


def _activation(spec: RecurrentSpec, k: int, value: str) -> str:
    """Activation ``k`` (f, g or h) of this thread's direction at ``value``."""
    names = [_activation_name(acts[k]) for acts in spec.activations]
    if len(set(names)) == 1:
        return f"{names[0]}({value})"
    return f"(d == 0 ? {names[0]}({value}) : {names[1]}({value}))"


def _activation_name(act: BoundActivation) -> str:
    return "rtx_act_" + "_".join(str(v).replace("-", "m").replace(".", "p").replace("+", "")
                                 for v in (act.name, act.alpha, act.beta) if v is not None)


def _step_epilogue(spec: RecurrentSpec, *, cell: bool) -> list[str]:
    """The new state where the step is inside the sequence, else the old one (and Y zero)."""
    h, dirs = spec.hidden, spec.directions
    off = _offset_type(spec)
    lines = []
    if spec.lens:
        lines.append("const bool live = t < lens[b];")
        lines.append("const float h_keep = live ? h_new : h_old;")
        if cell:
            lines.append("const float c_keep = live ? c_new : c_old;")
    else:
        lines.append("const float h_keep = h_new;")
        if cell:
            lines.append("const float c_keep = c_new;")
    lines.append("h_out[i] = h_keep;")
    if cell:
        lines.append("c_state[i] = c_keep;")
    if spec.y:
        index = (f"((({off})b * ({spec.seq}) + t) * {dirs} + d) * {h} + j" if spec.batch_first
                 else f"((({off})t * {dirs} + d) * ({spec.batch}) + b) * {h} + j")
        lines.append(f"y[{index}] = {C.store('live ? h_new : 0.0f' if spec.lens else 'h_new', spec.y)};")
    if spec.y_h or (cell and spec.y_c):
        lines.append(f"const int s = {_state_index(spec)};")
    if spec.y_h:
        lines.append(f"y_h[s] = {C.store('h_keep', spec.y_h)};")
    if cell and spec.y_c:
        lines.append(f"y_c[s] = {C.store('c_keep', spec.y_c)};")
    return lines


def _helpers(spec: RecurrentSpec) -> list[str]:
    """The prelude: fp16/bf16 conversions, NaN-propagating max/min, clip, the activations."""
    lines = []
    dtypes = {spec.initial_h, spec.initial_c, spec.y, spec.y_h, spec.y_c}
    if dtypes & {DType.FLOAT16, DType.BFLOAT16}:
        lines.append(C.PRELUDE)
    lines.append(NAN_MAX_MIN)
    if spec.clip is not None:
        limit = C.literal(spec.clip, DType.FLOAT32)
        lines.append(f"__device__ __forceinline__ float rtx_clip(float v) {{ return rtx_min(rtx_max(v, -{limit}), "
                     f"{limit}); }}")
    seen = set()
    for acts in spec.activations:
        for act in acts:
            name = _activation_name(act)
            if name not in seen:
                seen.add(name)
                lines.append(f"__device__ __forceinline__ float {name}(float v) {{ return {act.c_expr('v')}; }}")
    return lines


def _kernel(prefix: str, spec: RecurrentSpec, params: list[tuple[str, str]], body: list[str], *, per_step: bool,
            comment: str) -> RecurrentKernel:
    declarations = [decl for _, decl in params] + (["int step"] if per_step else [])
    threads = spec.threads
    source = "\n".join([
        f"// {comment}; seq {dims_text([spec.seq])}, batch {dims_text([spec.batch])}",
        *_helpers(spec),
        f'extern "C" __global__ void __launch_bounds__({BLOCK}) {KERNEL_NAME}({", ".join(declarations)}) {{',
        f"  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < {threads}; i += gridDim.x * blockDim.x) {{",
        *(f"    {line}" for line in body),
        "  }",
        "}",
        "",
    ])
    kernel = KernelSource.named(prefix, source, LaunchPolicy(threads, BLOCK), ())
    return RecurrentKernel(kernel, tuple(name for name, _ in params), per_step)


def _const_ptr(dtype: DType, name: str) -> str:
    return f"const {C.storage_type(dtype)}* __restrict__ {name}"


def _ptr(dtype: DType, name: str) -> str:
    return f"{C.storage_type(dtype)}* __restrict__ {name}"
