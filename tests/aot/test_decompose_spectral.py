"""decompose's STFT and DFT rules (decompose_spectral.py): the GPU backend has no spectral
kernels, so an STFT becomes a strided 2-D Conv whose weights are the window times the DFT
basis, and a DFT a MatMul with the basis, with ONNX's semantics.

Every case is compiled by the whole pipeline and checked three ways: the op is gone, the
compiled model run by the reference backend agrees with the oracle on the original model at
two bindings of its symbolic dims (batch, length: no rewrite may bake one into a constant),
and the CUDA backend plans every node on the GPU (fp32 and fp16 precision). The oracle is
onnxruntime, except where it departs from the spec and ONNX's reference evaluator is the
oracle: an IRFFT whose dft_length is not 2 · (bins - 1) (onnxruntime does not crop or pad the
spectrum to dft_length / 2 + 1 bins as numpy.fft.irfft does), and an STFT with neither window
nor frame_length (one frame of the whole signal; onnxruntime fails). Tolerance (float32):
1e-5 of the output's largest magnitude; both sides sum at most a few hundred float32 products
(about 3e-6 here). float16/bfloat16 models: the transform is computed in float32, so the
output is within its type's rounding of the oracle on the float32 model of the same weights.
"""
from __future__ import annotations

import dataclasses
import io
import warnings
from dataclasses import dataclass, field
from typing import Callable

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from rtxrt.aot import AotOptions, compile_onnx
from rtxrt.aot.passes.decompose import decompose
from rtxrt.aot.passes.decompose_spectral import dft_basis
from rtxrt.backends.cuda.plan.builder import build_plan
from rtxrt.backends.reference.executor import ReferenceExecutor
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Model
from tests.aot.helpers import assert_close, ops, only, run_passes
from tests.helpers import make_model

F, F16, BF16, INT64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT64
SIZE_INPUTS = {"step", "length", "axis"}  # int64 where a case makes them graph inputs
rng = np.random.default_rng(0)

# Two bindings of the symbolic dims, all sizes different.
SIZES = ({"B": 2, "L": 100, "T": 11}, {"B": 3, "L": 57, "T": 20})


def hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def hamming(n: int) -> np.ndarray:
    return (25 / 46 - 21 / 46 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


@dataclass
class Case:
    """A one-op model (float32 unless ``elem_type``) on inputs of these shapes (symbolic dims
    as strings, bound by SIZES) and the op that must be gone after compilation. ``oracle``:
    "onnx" where onnxruntime departs from the spec. ``gpu``: whether every node must plan
    on the GPU."""

    nodes: list[onnx.NodeProto]
    inputs: dict[str, list]
    gone: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    oracle: str = "onnxruntime"
    gpu: bool = True

    def proto(self, elem_type: int = F) -> onnx.ModelProto:
        dtype = ml_dtypes.bfloat16 if elem_type == BF16 else helper.tensor_dtype_to_np_dtype(elem_type)
        weights = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in self.weights.items()}
        inputs = [(n, INT64 if n in SIZE_INPUTS else elem_type, s) for n, s in self.inputs.items()]
        return make_model(self.nodes, inputs, [("y", elem_type, None)], weights, self.opset)

    def feeds(self, binding: int = 0) -> dict[str, np.ndarray]:
        sizes = SIZES[binding]
        return {name: rng.standard_normal([sizes.get(d, d) for d in shape]).astype(np.float32)
                for name, shape in self.inputs.items()}


def stft(x_shape: list, step: int, window: np.ndarray | None = None, length: int | None = None,
         **attrs) -> Case:
    names, weights = ["x", "step"], {"step": np.array(step, np.int64)}
    if window is not None:
        weights["window"] = window
    if length is not None:
        weights["length"] = np.array(length, np.int64)
    names += ["window" if window is not None else "", "length" if length is not None else ""]
    while not names[-1]:
        names.pop()
    return Case([helper.make_node("STFT", names, ["y"], name="stft", **attrs)], {"x": x_shape}, "STFT", weights)


def dft(x_shape: list, length: int | None = None, axis: int | None = None, opset: int = 17, oracle: str = "onnxruntime",
        **attrs) -> Case:
    """A DFT; ``axis`` is the attribute before opset 20 and a constant input since."""
    names, weights = ["x", "length" if length is not None else ""], {}
    if length is not None:
        weights["length"] = np.array(length, np.int64)
    if axis is not None and opset >= 20:
        names.append("axis")
        weights["axis"] = np.array(axis, np.int64)
    elif axis is not None:
        attrs["axis"] = axis
    while not names[-1]:
        names.pop()
    node = helper.make_node("DFT", names, ["y"], name="dft", **attrs)
    return Case([node], {"x": x_shape}, "DFT", weights, opset, oracle)


CASES: dict[str, Callable[[], Case]] = {
    # STFT: real [B, L, 1], complex [B, L, 2], and [B, L] (onnxruntime takes it, torch writes it)
    "stft-hann-onesided": lambda: stft(["B", "L", 1], 4, hann(16)),
    "stft-hann-full": lambda: stft(["B", "L", 1], 4, hann(16), onesided=0),
    "stft-complex-full": lambda: stft(["B", "L", 2], 5, hamming(16), onesided=0),
    "stft-complex-onesided": lambda: stft(["B", "L", 2], 3, hann(12), onesided=1),
    "stft-frame-length-only": lambda: stft(["B", "L", 1], 7, length=20),
    "stft-window-and-frame-length": lambda: stft(["B", "L", 1], 6, rng.random(15).astype(np.float32), 15),
    "stft-step-beyond-the-frame": lambda: stft(["B", "L", 1], 24, hann(16)),
    "stft-one-frame-of-the-whole-signal": lambda: dataclasses.replace(stft(["B", 50, 1], 8), oracle="onnx"),
    "stft-rank-2-signal": lambda: stft(["B", "L"], 10, hann(32)),
    "stft-static-shape": lambda: stft([2, 100, 1], 4, hann(16)),
    "stft-opset-20": lambda: dataclasses.replace(stft(["B", "L", 1], 4, hann(16)), opset=20),
    # DFT, opset 17: the axis an attribute (default 1)
    "dft-real": lambda: dft(["B", 10, 9, 1]),
    "dft-complex-last-signal-axis": lambda: dft(["B", 10, 9, 2], axis=2),
    "dft-rfft": lambda: dft(["B", 10, 9, 1], onesided=1),
    "dft-rfft-odd": lambda: dft(["B", 9, 4, 1], onesided=1),
    "dft-inverse": lambda: dft(["B", 10, 9, 2], inverse=1),
    "dft-inverse-of-real": lambda: dft(["B", 10, 9, 1], axis=2, inverse=1),
    "dft-irfft": lambda: dft(["B", 6, 9, 2], inverse=1, onesided=1),
    "dft-length-shorter": lambda: dft(["B", 10, 9, 2], length=6),
    "dft-length-longer": lambda: dft(["B", 10, 9, 1], length=14, axis=2),
    "dft-rfft-length-longer": lambda: dft(["B", 10, 9, 1], length=16, onesided=1),
    "dft-inverse-length-shorter": lambda: dft(["B", 10, 9, 2], length=7, inverse=1),
    "dft-irfft-odd-length": lambda: dft(["B", 6, 9, 2], length=9, inverse=1, onesided=1, oracle="onnx"),
    "dft-irfft-length-shorter": lambda: dft(["B", 10, 9, 2], length=6, inverse=1, onesided=1, oracle="onnx"),
    "dft-irfft-length-longer": lambda: dft(["B", 4, 9, 2], length=14, inverse=1, onesided=1, oracle="onnx"),
    "dft-symbolic-axis-with-length": lambda: dft(["B", "T", 1], length=16, onesided=1),
    "dft-symbolic-axis-inverse": lambda: dft(["B", "T", 2], length=12, inverse=1),
    "dft-rank-2": lambda: dft([10, 2], axis=0),
    "dft-rank-5-middle-axis": lambda: dft(["B", 3, 8, 5, 2], axis=2),
    # DFT, opset 20: the axis a constant input (default -2)
    "dft-opset-20-default-axis": lambda: dft(["B", 10, 9, 1], opset=20),
    "dft-opset-20-axis-1": lambda: dft(["B", 10, 9, 2], axis=1, opset=20),
    "dft-opset-20-negative-axis": lambda: dft(["B", 10, 9, 1], axis=-3, opset=20, onesided=1),
    "dft-opset-20-irfft": lambda: dft(["B", 9, 6, 2], axis=-2, opset=20, inverse=1, onesided=1),
}
GPU_CASES = [name for name, make in CASES.items() if make().gpu]


def oracle(case: Case, proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    if case.oracle == "onnx":
        return ReferenceEvaluator(proto).run(["y"], feeds)[0]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feeds)[0]


def plan_host_steps(model: Model, feeds: dict[str, np.ndarray]) -> list[str]:
    plan = build_plan(model, {k: v.shape for k, v in feeds.items()}, arch="sm_86", sm_count=46)
    return [f"{s.label}: {s.why_host}" for s in plan.host_steps]


def left(model: Model, case: Case) -> list[str]:
    return [n.label for n in model.graph.nodes if n.op_type == case.gone]


# ---------------------------------------------------------------------------------------------
# Every case: gone, same function as the oracle, on the GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_op_is_gone_and_the_model_matches_the_oracle(name):
    case = CASES[name]()
    proto = case.proto()
    model = compile_onnx(proto.SerializeToString())
    assert left(model, case) == []
    for binding in range(len(SIZES)):
        feeds = case.feeds(binding)
        got = ReferenceExecutor(model).run(feeds)["y"]
        want = oracle(case, proto, feeds)
        assert got.shape == want.shape, name
        assert_close(got, want, name=name)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", GPU_CASES)
def test_every_node_plans_on_the_gpu(name, precision):
    case = CASES[name]()
    model = compile_onnx(case.proto().SerializeToString(), AotOptions(precision=precision))
    assert left(model, case) == []
    assert plan_host_steps(model, case.feeds()) == []


NARROW = {"float16": (F16, np.float16, 2e-3), "bfloat16": (BF16, ml_dtypes.bfloat16, 1e-2)}


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("name", ["stft-hann-onesided", "stft-complex-full", "dft-rfft", "dft-inverse",
                                  "dft-irfft", "dft-symbolic-axis-with-length", "dft-rank-5-middle-axis"])
def test_narrow_float_models_are_transformed_in_float32(name, dtype):
    """A float16 or bfloat16 model keeps its output type, its Conv or MatMul computes in
    float32 (a narrow basis would leak into quiet bins), and it is within the output type's
    rounding of the oracle on the float32 model with the same (rounded) weights."""
    elem_type, numpy_type, rtol = NARROW[dtype]
    case = CASES[name]()
    model = compile_onnx(case.proto(elem_type).SerializeToString())
    assert left(model, case) == []
    graph = model.graph
    assert graph.types["y"].dtype == DType.from_numpy(numpy_type)
    gemm = only(model, "FusedConv" if case.gone == "STFT" else "FusedMatMul")
    assert graph.types[gemm.inputs[0]].dtype == DType.FLOAT32
    assert graph.initializers[gemm.inputs[1]].dtype == np.float32
    feeds = {k: v.astype(numpy_type) for k, v in case.feeds().items()}
    got = ReferenceExecutor(model).run(feeds)["y"]
    assert got.dtype == numpy_type
    rounded = dataclasses.replace(case, weights={k: v.astype(numpy_type).astype(v.dtype) if v.dtype.kind == "f" else v
                                                 for k, v in case.weights.items()})
    want = oracle(case, rounded.proto(), {k: v.astype(np.float32) for k, v in feeds.items()})
    assert_close(got.astype(np.float32), want, rtol=rtol, name=name)
    assert plan_host_steps(model, feeds) == []


# ---------------------------------------------------------------------------------------------
# What each rewrite makes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inverse, onesided, channels", [(0, 0, 1), (0, 0, 2), (0, 1, 1), (1, 0, 2), (1, 0, 1)])
@pytest.mark.parametrize("n", [8, 9])
def test_the_basis_is_numpys_transform(n, inverse, onesided, channels):
    x = rng.standard_normal((3, n, channels))
    signal = x[..., 0] + 1j * x[..., 1] if channels == 2 else x[..., 0]
    want = np.fft.ifft(signal, axis=1) if inverse else np.fft.fft(signal, axis=1)
    cols = n // 2 + 1 if onesided else n
    basis = dft_basis(n, n, cols, channels, bool(inverse))
    got = x.reshape(3, -1) @ basis.reshape(n * channels, cols * 2)
    np.testing.assert_allclose(got.reshape(3, cols, 2), np.stack([want.real, want.imag], -1)[:, :cols], atol=1e-12)


@pytest.mark.parametrize("n, bins", [(8, 5), (9, 5), (10, 3), (6, 4)])
def test_the_irfft_basis_is_numpys_irfft(n, bins):
    """bins 0 .. n/2 of a Hermitian spectrum (fewer: the rest are 0), DC's and (n even)
    Nyquist's imaginary parts ignored."""
    x = rng.standard_normal((3, bins, 2))
    want = np.fft.irfft(x[..., 0] + 1j * x[..., 1], n, axis=1)
    rows = min(bins, n // 2 + 1)
    basis = dft_basis(n, rows, n, 2, inverse=True, real_output=True)
    np.testing.assert_allclose(x[:, :rows].reshape(3, -1) @ basis.reshape(rows * 2, n), want, atol=1e-12)


def test_stft_becomes_one_strided_conv_with_windowed_basis_weights():
    case = CASES["stft-hann-onesided"]()
    _, model, changes = run_passes(case.proto(), decompose)
    assert ops(model) == ["Reshape", "Conv", "Transpose", "Reshape"]
    conv = only(model, "Conv")
    assert conv.attrs == {"kernel_shape": [1, 16], "strides": [1, 4]}
    weights = model.graph.initializers[conv.inputs[1]]
    assert weights.shape == (2 * 9, 1, 1, 16)  # (bin, real/imaginary) x channel x 1 x sample
    t, k = np.arange(16), 3
    np.testing.assert_allclose(weights[2 * k, 0, 0], hann(16) * np.cos(2 * np.pi * k * t / 16), atol=1e-7)
    np.testing.assert_allclose(weights[2 * k + 1, 0, 0], -hann(16) * np.sin(2 * np.pi * k * t / 16), atol=1e-7)
    assert changes.changes == {"STFT→Conv": 1}


def test_a_complex_stft_reads_real_and_imaginary_parts_as_two_channels():
    _, model, _ = run_passes(CASES["stft-complex-full"]().proto(), decompose)
    assert ops(model) == ["Unsqueeze", "Transpose", "Conv", "Transpose", "Reshape"]
    assert model.graph.initializers[only(model, "Conv").inputs[1]].shape == (2 * 16, 2, 1, 16)


def test_stft_becomes_a_fused_conv_and_views():
    """Compiled, the Reshapes are views: the transform is one convolution kernel and one copy
    (the Transpose) on the GPU."""
    model = compile_onnx(CASES["stft-hann-onesided"]().proto().SerializeToString())
    assert ops(model) == ["Reshape", "FusedConv", "Transpose", "Reshape"]


def test_a_dft_along_the_second_to_last_axis_needs_no_transpose():
    _, model, changes = run_passes(CASES["dft-opset-20-default-axis"]().proto(), decompose)
    assert ops(model) == ["Reshape", "MatMul", "Reshape"]
    assert model.graph.initializers[only(model, "MatMul").inputs[1]].shape == (9, 18)
    assert changes.changes == {"DFT→MatMul": 1}


def test_a_dft_along_another_axis_moves_it_there_and_back():
    _, model, _ = run_passes(CASES["dft-rank-5-middle-axis"]().proto(), decompose)
    assert ops(model) == ["Transpose", "Reshape", "MatMul", "Reshape", "Transpose"]
    first, last = (n for n in model.graph.nodes if n.op_type == "Transpose")
    assert first.attrs["perm"] == [0, 1, 3, 2, 4] and last.attrs["perm"] == [0, 1, 3, 2, 4]


def test_a_longer_dft_length_needs_no_padding_and_a_shorter_one_slices():
    """Zeros add nothing to the sums: the basis has a row per sample there is."""
    _, model, _ = run_passes(CASES["dft-length-longer"]().proto(), decompose)
    assert "Pad" not in ops(model) and "Slice" not in ops(model)
    assert model.graph.initializers[only(model, "MatMul").inputs[1]].shape == (9, 14 * 2)
    _, model, _ = run_passes(CASES["dft-length-shorter"]().proto(), decompose)
    assert ops(model)[0] == "Slice" and "Pad" not in ops(model)
    assert model.graph.initializers[only(model, "MatMul").inputs[1]].shape == (6 * 2, 6 * 2)


def test_an_axis_of_unknown_length_is_padded_and_sliced_to_dft_length():
    _, model, _ = run_passes(CASES["dft-symbolic-axis-with-length"]().proto(), decompose)
    assert ops(model)[:2] == ["Pad", "Slice"]
    assert model.graph.initializers[only(model, "MatMul").inputs[1]].shape == (16, 9 * 2)


def test_a_window_from_a_window_op_folds_and_the_stft_decomposes():
    """HannWindow of a constant size is folded into an initializer before decompose runs."""
    nodes = [helper.make_node("HannWindow", ["size"], ["window"]),
             helper.make_node("STFT", ["x", "step", "window"], ["y"], name="stft")]
    weights = {"size": np.array(16, np.int64), "step": np.array(4, np.int64)}
    case = Case(nodes, {"x": ["B", "L", 1]}, "STFT", weights)
    model = compile_onnx(case.proto().SerializeToString())
    assert ops(model) == ["Reshape", "FusedConv", "Transpose", "Reshape"]
    feeds = case.feeds()
    assert_close(ReferenceExecutor(model).run(feeds)["y"], oracle(case, case.proto(), feeds))
    assert plan_host_steps(model, feeds) == []


@pytest.mark.parametrize("case", [
    Case([helper.make_node("STFT", ["x", "step", "window"], ["y"])], {"x": ["B", "L", 1], "step": []}, "STFT",
         {"window": hann(16)}),
    Case([helper.make_node("STFT", ["x", "step", "window"], ["y"])], {"x": ["B", "L", 1], "window": [16]}, "STFT",
         {"step": np.array(4, np.int64)}),
    Case([helper.make_node("STFT", ["x", "step"], ["y"])], {"x": ["B", "L", 1]}, "STFT",  # frame: the whole signal
         {"step": np.array(4, np.int64)}),
    Case([helper.make_node("DFT", ["x", "length"], ["y"])], {"x": ["B", 10, 1], "length": []}, "DFT"),
    Case([helper.make_node("DFT", ["x", "", "axis"], ["y"])], {"x": ["B", 10, 9, 1], "axis": []}, "DFT", opset=20),
    Case([helper.make_node("DFT", ["x"], ["y"])], {"x": ["B", "T", 1]}, "DFT"),  # the length: the unknown axis
    Case([helper.make_node("DFT", ["x"], ["y"])], {"x": ["B", 4096, 2]}, "DFT"),  # a 256 MiB basis
], ids=["runtime-frame-step", "runtime-window", "unknown-frame-length", "runtime-dft-length", "runtime-axis",
        "unknown-dft-length", "basis-too-large"])
def test_sizes_known_only_at_run_time_leave_the_op(case):
    _, model, changes = run_passes(case.proto(), decompose)
    assert ops(model) == [case.gone] and not changes.changed


# ---------------------------------------------------------------------------------------------
# A log-mel front end exported from torch
# ---------------------------------------------------------------------------------------------


def log_mel_module(complex_output: bool):
    torch = pytest.importorskip("torch")

    class LogMel(torch.nn.Module):
        """Whisper's front end: |STFT|² (n_fft 400, hop 160, Hann, centred) through a mel filter
        bank, then log. ``complex_output``: the complex STFT, else its (real, imaginary) view."""

        def __init__(self):
            super().__init__()
            self.register_buffer("window", torch.hann_window(400))
            self.register_buffer("mel", torch.rand(201, 80, generator=torch.Generator().manual_seed(0)))

        def forward(self, audio):
            if complex_output:
                power = torch.stft(audio, 400, 160, window=self.window, return_complex=True).abs() ** 2
            else:
                power = torch.stft(audio, 400, 160, window=self.window, return_complex=False).pow(2).sum(-1)
            return torch.log((power.transpose(1, 2) @ self.mel).clamp(min=1e-10))

    return torch, LogMel().eval()


def torchscript_export(torch, module) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 16000),), f, opset_version=17, dynamo=False, input_names=["audio"],
                          output_names=["y"], dynamic_axes={"audio": {0: "batch", 1: "samples"}})
    return f.getvalue()


def dynamo_export(torch, module) -> bytes:
    pytest.importorskip("onnxscript")
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=800, max=480000)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.randn(2, 16000),), dynamo=True, opset_version=17, verbose=False,
                                    input_names=["audio"], output_names=["y"], dynamic_shapes=(dims,))
    return program.model_proto.SerializeToString()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_torch_log_mel_spectrogram_runs_on_the_gpu_and_matches_onnxruntime(exporter):
    """The TorchScript exporter refuses return_complex=True ("STFT does not currently support
    complex types"), so it exports the (real, imaginary) view, and writes the STFT on the
    [batch, samples] signal itself; the dynamo exporter takes the complex STFT. Both write
    one STFT, gone after compilation; at two batch sizes and lengths, no host node, and the
    log-mel features agree with onnxruntime (1e-5 of the largest magnitude: the log of sums
    of float32 products)."""
    torch, module = log_mel_module(complex_output=exporter == "dynamo")
    exported = (dynamo_export if exporter == "dynamo" else torchscript_export)(torch, module)
    assert [n.op_type for n in onnx.load_from_string(exported).graph.node].count("STFT") == 1
    model = compile_onnx(exported)
    assert "STFT" not in ops(model)
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    for shape in [(2, 16000), (3, 9001)]:
        feeds = {"audio": rng.standard_normal(shape).astype(np.float32)}
        want = session.run(["y"], feeds)[0]
        assert_close(ReferenceExecutor(model).run(feeds)["y"], want, name=exporter)
        assert plan_host_steps(model, feeds) == []
