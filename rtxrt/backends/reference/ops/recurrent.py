"""RNN, GRU and LSTM, plus LinearAttention and CausalConvWithState.

The recurrent layers share one driver (``_Recurrent``): it handles layout, directions,
sequence lengths and initial states; each subclass supplies one time step of its cell.
Time steps run one after another, each vectorized over the batch.
"""
from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ....ir.activations import get_activation
from ..activation_numpy import evaluate
from ..kernel import OpRun

Activation = Callable[[np.ndarray], np.ndarray]


def _shared(name: str) -> tuple[Callable[..., np.ndarray], float | None, float | None]:
    """An activation of rtxrt.ir.activations; its parameters, in order, are alpha and beta."""
    activation = get_activation(name)
    keys = [key for key, _ in activation.params]
    defaults = [default for _, default in activation.params] + [None, None]
    return (lambda x, a, b: evaluate(activation, x, dict(zip(keys, (a, b))))), defaults[0], defaults[1]


# name → (function of x, alpha, beta; default alpha; default beta). None: takes no such value.
# The ones that are fused activations too come from their one definition.
_ACTIVATIONS: dict[str, tuple[Callable[..., np.ndarray], float | None, float | None]] = {
    "relu": _shared("relu"),
    "tanh": _shared("tanh"),
    "sigmoid": _shared("sigmoid"),
    "leakyrelu": _shared("leaky_relu"),
    "hardsigmoid": _shared("hard_sigmoid"),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1)), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: np.logaddexp(x, 0), None, None),
}


def _activations(names: list[str], alphas: list[float], betas: list[float]) -> list[Activation]:
    """Bind each named activation to its alpha/beta; the lists are consumed in order by the
    activations that take such a value."""
    alphas, betas = list(alphas), list(betas)
    bound = []
    for name in names:
        try:
            fn, alpha, beta = _ACTIVATIONS[name.lower()]
        except KeyError:
            raise ValueError(f"unsupported activation {name!r}") from None
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        bound.append(lambda x, fn=fn, a=alpha, b=beta: fn(x, a, b))
    return bound


class _Recurrent(OpRun):
    gates: ClassVar[int]  # gate blocks stacked in W, R and each half of B
    default_activations: ClassVar[tuple[str, ...]]
    has_cell: ClassVar[bool] = False  # LSTM carries a cell state besides the hidden state

    def run(self, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
        dtype = x.dtype
        work = np.promote_types(dtype, np.float32)  # fp16 accumulates in fp32
        batch_first = self.attr("layout", 0) == 1
        if batch_first:
            x, initial_h, initial_c = (None if v is None else np.swapaxes(v, 0, 1) for v in (x, initial_h, initial_c))
        seq, batch, _ = x.shape
        directions, _, hidden = r.shape
        zeros = np.zeros((directions, batch, hidden), work)
        h0 = zeros if initial_h is None else initial_h.astype(work)
        c0 = zeros if initial_c is None else initial_c.astype(work)
        b = np.zeros((directions, 2 * self.gates * hidden), work) if b is None else b.astype(work)
        lens = np.full(batch, seq) if sequence_lens is None else sequence_lens.astype(np.int64)
        reverse_only = self.attr("direction", "forward") == "reverse"
        acts = self._bound_activations(directions)
        x, split = x.astype(work), self.gates * hidden  # B holds the input biases, then the recurrence biases
        per_direction = []
        for d in range(directions):
            params = (r[d].astype(work), b[d, split:], None if p is None else p[d].astype(work))
            gx = x @ w[d].astype(work).T + b[d, :split]  # input projections of all steps at once
            per_direction.append(self._direction(gx, h0[d], c0[d], params, lens, reverse_only or d == 1, acts[d]))
        ys, hs, cs = zip(*per_direction)
        y, h, c = np.stack(ys, axis=1), np.stack(hs), np.stack(cs)  # [seq, dir, batch, hidden], [dir, batch, hidden]
        if batch_first:
            y, h, c = y.transpose(2, 0, 1, 3), np.swapaxes(h, 0, 1), np.swapaxes(c, 0, 1)
        outputs = (y, h, c) if self.has_cell else (y, h)
        return tuple(v.astype(dtype) for v in outputs)

    def _bound_activations(self, directions: int) -> list[list[Activation]]:
        per = len(self.default_activations)
        names = self.attr("activations", None) or list(self.default_activations) * directions  # ONNX lists both directions' defaults
        if len(names) != per * directions:
            raise ValueError(f"expected {per * directions} activations, got {names}")
        bound = _activations(names, self.attr("activation_alpha", []), self.attr("activation_beta", []))
        return [bound[d * per : (d + 1) * per] for d in range(directions)]

    def _direction(self, gx, h, c, params, lens, reverse, acts):
        """Run one direction over all time steps; steps past a sequence's length keep its
        state and output zeros."""
        seq = gx.shape[0]
        y = np.zeros((seq, *h.shape), h.dtype)
        for t in range(seq - 1, -1, -1) if reverse else range(seq):
            live = (t < lens)[:, None]
            h_new, c_new = self._step(gx[t], h, c, params, acts)
            h, c = np.where(live, h_new, h), np.where(live, c_new, c)
            y[t] = np.where(live, h_new, 0)
        return y, h, c

    def _clip(self, x: np.ndarray) -> np.ndarray:
        limit = self.attr("clip")
        return x if limit is None else np.clip(x, -limit, limit)

    def _step(self, gx, h, c, params, acts):
        """One time step: new hidden and cell states from the input projection ``gx``."""
        raise NotImplementedError


class RNN(_Recurrent):
    gates = 1
    default_activations = ("Tanh",)

    def _step(self, gx, h, c, params, acts):
        r, rb, _ = params
        return acts[0](self._clip(gx + h @ r.T + rb)), c


class GRU(_Recurrent):
    gates = 3  # update z, reset r, hidden h
    default_activations = ("Sigmoid", "Tanh")

    def _step(self, gx, h, c, params, acts):
        r, rb, _ = params
        f, g = acts
        n = h.shape[-1]
        zr = gx[:, : 2 * n] + h @ r[: 2 * n].T + rb[: 2 * n]
        z, reset = f(self._clip(zr[:, :n])), f(self._clip(zr[:, n:]))
        if self.attr("linear_before_reset", 0):
            candidate = gx[:, 2 * n:] + reset * (h @ r[2 * n:].T + rb[2 * n:])
        else:
            candidate = gx[:, 2 * n:] + (reset * h) @ r[2 * n:].T + rb[2 * n:]
        return (1 - z) * g(self._clip(candidate)) + z * h, c


class LSTM(_Recurrent):
    gates = 4  # input i, output o, forget f, cell c
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    has_cell = True

    def _step(self, gx, h, c, params, acts):
        r, rb, p = params
        f, g, act_h = acts
        n = h.shape[-1]
        z = gx + h @ r.T + rb
        pi, po, pf = (0, 0, 0) if p is None else (p[:n], p[n : 2 * n], p[2 * n:])
        i = f(self._clip(z[:, :n] + pi * c))
        forget = 1 - i if self.attr("input_forget", 0) else f(self._clip(z[:, 2 * n : 3 * n] + pf * c))
        c_new = forget * c + i * g(self._clip(z[:, 3 * n:]))
        o = f(self._clip(z[:, n : 2 * n] + po * c_new))
        return o * act_h(c_new), c_new


class LinearAttention(OpRun):
    """S_t = decay_t * S_{t-1} + k_t ⊗ v'_t, o_t = scale * q_t·S_t, where v'_t = v_t for the
    plain rules and beta_t * (v_t - S^T k_t) for the delta rules; one step per token."""

    def run(self, query, key, value, past_state=None, decay=None, beta=None):
        rule = self.attr("update_rule", "gated_delta")
        if rule not in ("linear", "gated", "delta", "gated_delta"):
            raise ValueError(f"unsupported update_rule {rule!r}")
        gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
        if gated != (decay is not None) or delta != (beta is not None):
            raise ValueError(f"update_rule {rule!r} needs decay: {gated}, beta: {delta}")
        hq, hkv = int(self.attr("q_num_heads")), int(self.attr("kv_num_heads"))
        if hq <= 0 or hkv <= 0 or hq % hkv:
            raise ValueError(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
        batch, steps, _ = query.shape
        dk, dv, group = query.shape[-1] // hq, value.shape[-1] // hkv, hq // hkv
        f32 = np.float32
        q = query.reshape(batch, steps, hkv, group, dk).astype(f32)  # query head h reads kv head h // group
        k = key.reshape(batch, steps, hkv, dk).astype(f32)
        v = value.reshape(batch, steps, hkv, dv).astype(f32)
        if decay is not None:  # per head [.., hkv] or per key dimension [.., hkv * dk]
            decay = np.exp(decay.reshape(batch, steps, hkv, -1).astype(f32))[..., None]
        if beta is not None:  # per head [.., hkv] or shared [.., 1]
            beta = beta.reshape(batch, steps, -1, 1).astype(f32)
        state_dtype = query.dtype if past_state is None else past_state.dtype
        state = np.zeros((batch, hkv, dk, dv), f32) if past_state is None else past_state.astype(f32)
        scale = self.attr("scale", 0.0) or 1.0 / np.sqrt(dk)
        out = np.empty((batch, steps, hkv, group, dv), f32)
        for t in range(steps):
            if gated:
                state = state * decay[:, t]
            update = v[:, t]
            if delta:
                update = beta[:, t] * (update - np.einsum("bhkv,bhk->bhv", state, k[:, t]))
            state = state + k[:, t, :, :, None] * update[:, :, None, :]
            out[:, t] = scale * np.einsum("bhgk,bhkv->bhgv", q[:, t], state)
        return out.reshape(batch, steps, hq * dv).astype(query.dtype), state.astype(state_dtype)


class CausalConvWithState(OpRun):
    """Depthwise causal 1-D convolution over [batch, channels, length], left-padded with the
    carried state (or zeros); the new state is the last k-1 positions of the padded input."""

    def run(self, x, weight, bias=None, past_state=None):
        activation = self.attr("activation", "none")
        if activation not in ("none", "silu", "swish"):
            raise ValueError(f"unsupported activation {activation!r}")
        batch, channels, length = x.shape
        k = weight.shape[2]
        past = np.zeros((batch, channels, k - 1), x.dtype) if past_state is None else past_state
        padded = np.concatenate([past, x], axis=2)
        work = np.promote_types(x.dtype, np.float32)
        windows = sliding_window_view(padded.astype(work), k, axis=2)  # [batch, channels, length, k]
        y = np.einsum("bclk,ck->bcl", windows, weight[:, 0].astype(work))
        if bias is not None:
            y = y + bias.astype(work)[:, None]
        if activation != "none":
            y = evaluate(get_activation("silu"), y, {})
        return y.astype(x.dtype), padded[:, :, length:]
