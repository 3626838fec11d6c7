"""RNN, GRU and LSTM on a real GPU agree with the reference backend, run whole through
``rtxrt.Session`` (the JIT, cuBLAS for the input projections, the generated cell kernels, the
CUDA graph): every case of tests/backends/cuda/test_recurrent_codegen.py (op x direction x
layout x sequence_lens x initial states, peepholes, input_forget, clip, activations,
linear_before_reset, outputs left out, float16, opset 7), wide states, shape-generic engines
at several batch sizes and sequence lengths, and an ONNX file. No node runs on the host.

Tolerances, relative to each output's largest magnitude (at least 1): float32 1e-5 (cuBLAS in
true fp32 and the cell kernels' float32 sums, compiled without FMA contraction; only the order
of the sums differs from numpy's); float16 storage 2e-3 (both sides compute in fp32 from the
same fp16 values and round once to fp16, so they differ by at most an fp16 ulp).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.backends.cuda.test_recurrent_codegen import CASES, TOLERANCE, Case
from tests.fake_gpu.engine import check_matches_reference

pytestmark = pytest.mark.gpu


def session_of(model, tmp_path, **options):
    import rtxrt

    return rtxrt.Session(model, cache_dir=tmp_path / "cache", progress=False, **options)


def reference(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from rtxrt.backends.reference.executor import ReferenceExecutor

    return ReferenceExecutor(model).run(dict(feeds))


def run_and_check(session, model, feeds: dict[str, np.ndarray], tol: float, what: str) -> dict[str, np.ndarray]:
    """The session's outputs for ``feeds``, checked against the reference backend running
    ``model``; the session ran every node on the GPU."""
    assert session.on_gpu and session.backend.startswith("cuda")
    names = list(session.model.graph.outputs)
    got = dict(zip(names, session.run(None, feeds)))
    assert session.stats["host_nodes"] == [], session.stats["host_nodes"]
    for name, value in got.items():
        assert np.isfinite(np.asarray(value, np.float64)).all(), f"{what} {name}: non-finite outputs"
    check_matches_reference(got, reference(model, feeds), tol=tol, what=what)
    return got


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_case_matches_the_reference_on_the_gpu(case: Case, tmp_path):
    session = session_of(case.model(), tmp_path)
    for seed in (0, 1):  # the second run replays the CUDA graph the first captured
        run_and_check(session, case.model(), case.feeds(seed), TOLERANCE[case.dtype], f"{case.id} seed {seed}")


WIDE = [
    Case("LSTM", "bidirectional", lens=True, initial=True, peepholes=True, seq=48, batch=16, hidden=256,
         input_size=96, weight_scale=0.08),
    Case("GRU", "bidirectional", layout=1, lens=True, initial=True, seq=48, batch=16, hidden=256, input_size=96,
         weight_scale=0.08),
    Case("GRU", "reverse", lens=True, linear_before_reset=1, seq=48, batch=16, hidden=256, input_size=96,
         weight_scale=0.08),
    Case("RNN", "bidirectional", layout=1, lens=True, initial=True, seq=48, batch=16, hidden=256, input_size=96,
         weight_scale=0.08),
]
WIDE += [Case(c.op, c.direction, c.layout, c.lens, c.initial, c.peepholes, linear_before_reset=c.linear_before_reset,
              dtype="float16", seq=c.seq, batch=c.batch, hidden=c.hidden, input_size=c.input_size,
              weight_scale=c.weight_scale) for c in WIDE]


@pytest.mark.parametrize("case", WIDE, ids=lambda c: c.id)
def test_wide_states_over_long_sequences_match_the_reference(case: Case, tmp_path):
    """Thousands of threads a step, many blocks, hundreds of terms in each dot product."""
    session = session_of(case.model(), tmp_path)
    run_and_check(session, case.model(), case.feeds(0), TOLERANCE[case.dtype], case.id)


GENERIC = [
    Case("LSTM", "bidirectional", lens=True, initial=True, peepholes=True, clip=3.0),
    Case("GRU", "reverse", layout=1, lens=True, initial=True),
    Case("GRU", "forward", linear_before_reset=1, dtype="float16"),
    Case("RNN", "bidirectional", layout=1, initial=True, activations=("Relu", "Softsign")),
]


@pytest.mark.parametrize("case", GENERIC, ids=lambda c: c.id)
def test_a_generic_engine_runs_every_batch_size_and_sequence_length(case: Case, tmp_path):
    """Batch and sequence length left symbolic: the session's generic engine (kernels taking
    them as arguments) runs each new shape at once; a shape run again may move to its own
    specialized engine (built in the background). Every run matches the reference."""
    model = case.model(symbolic=True)
    session = session_of(model, tmp_path)
    for k, (seq, batch) in enumerate([(5, 3), (9, 2), (1, 1), (5, 3), (5, 3), (16, 7)]):
        run_and_check(session, case.model(symbolic=True), case.feeds(k, seq, batch), TOLERANCE[case.dtype],
                      f"{case.id} at seq {seq}, batch {batch} ({session.last_engine})")


def test_cuda_graph_replay_and_eager_launches_agree(tmp_path):
    case = Case("GRU", "bidirectional", layout=1, lens=True, initial=True, seq=20, batch=4, hidden=32)
    feeds = case.feeds(0)
    graph = session_of(case.model(), tmp_path).run(None, feeds)
    eager = session_of(case.model(), tmp_path, use_cuda_graph=False).run(None, feeds)
    for a, b in zip(graph, eager):
        np.testing.assert_array_equal(a, b)


def test_an_onnx_file_runs_on_the_gpu(tmp_path):
    """An ONNX LSTM with symbolic batch and sequence (opset 14, layout 1), compiled by the
    session from the file."""
    import onnx
    from onnx import TensorProto, helper

    from rtxrt.frontend.onnx_import import load_onnx
    from tests.helpers import make_model

    rng = np.random.default_rng(5)
    h, i = 24, 10
    node = helper.make_node("LSTM", ["x", "w", "r", "b", "lens", "h0", "c0"], ["y", "yh", "yc"], hidden_size=h,
                            direction="bidirectional", layout=1, clip=4.0)
    proto = make_model([node], [("x", TensorProto.FLOAT, ["n", "s", i]), ("lens", TensorProto.INT32, ["n"]),
                                ("h0", TensorProto.FLOAT, ["n", 2, h]), ("c0", TensorProto.FLOAT, ["n", 2, h])],
                       [("y", TensorProto.FLOAT, None), ("yh", TensorProto.FLOAT, None),
                        ("yc", TensorProto.FLOAT, None)],
                       {"w": rng.uniform(-0.3, 0.3, (2, 4 * h, i)).astype(np.float32),
                        "r": rng.uniform(-0.3, 0.3, (2, 4 * h, h)).astype(np.float32),
                        "b": rng.uniform(-0.3, 0.3, (2, 8 * h)).astype(np.float32)}, opset=14)
    path = tmp_path / "lstm.onnx"
    onnx.save(proto, path)
    session = session_of(path, tmp_path)
    for batch, seq in ((3, 7), (1, 2)):
        feeds = {"x": rng.uniform(-2, 2, (batch, seq, i)).astype(np.float32),
                 "lens": rng.integers(0, seq + 1, batch).astype(np.int32),
                 "h0": rng.uniform(-1, 1, (batch, 2, h)).astype(np.float32),
                 "c0": rng.uniform(-1, 1, (batch, 2, h)).astype(np.float32)}
        run_and_check(session, load_onnx(proto), feeds, 1e-5, f"onnx file at batch {batch}, seq {seq}")
