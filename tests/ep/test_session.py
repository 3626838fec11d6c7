"""InferenceSession: a drop-in for onnxruntime.InferenceSession that runs rtxrt partitions
through rtxrt (the numpy reference backend without a GPU: conftest.py opts in) and the rest
through onnxruntime."""
import ctypes
import logging
import os
import warnings
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.backend.test.case.node import collect_testcases
from rtxrt_ep.session import InferenceSession

import rtxrt
from rtxrt.errors import ExecutionError
from rtxrt.backends.cuda.device import find_gpu
from tests.conformance.onnx_suite import parse_shard

from . import all_supported, cut_chain, diamond, make_model, sequence_cut, tensor

PROVIDERS = ["RtxrtExecutionProvider", "CPUExecutionProvider"]
rng = np.random.default_rng(7)

pytestmark = pytest.mark.filterwarnings("ignore:rtxrt.*fallback='cpu'")


def both(model, **kwargs):
    data = model.SerializeToString()
    return (InferenceSession(data, providers=PROVIDERS, **kwargs),
            ort.InferenceSession(data, providers=["CPUExecutionProvider"]))


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("build", [all_supported, cut_chain, diamond, sequence_cut])
def test_outputs_equal_onnxruntime(build):
    ours, theirs = both(build())
    shape = [d if isinstance(d, int) else 3 for d in ours.get_inputs()[0].shape]
    feeds = {"x": randn(*shape)}
    for got, want in zip(ours.run(None, feeds), theirs.run(None, feeds), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cut_chain_runs_as_three_partitions():
    ours, _ = both(cut_chain())
    assert [p.kind for p in ours.partitions()] == ["rtxrt", "onnxruntime", "rtxrt"]
    assert "3 partition(s)" in ours.partition_summary()
    assert ours.get_providers() == PROVIDERS


def test_without_the_provider_it_is_plain_onnxruntime():
    session = InferenceSession(cut_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.partitions() == []
    x = randn(2, 8)
    reference = ort.InferenceSession(cut_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0])
    assert session.get_modelmeta().graph_name == "test"  # the rest of onnxruntime's API passes through


def test_provider_options_both_spellings():
    data = cut_chain().SerializeToString()
    listed = InferenceSession(data, providers=PROVIDERS, provider_options=[{"enable_cuda_graph": "0"}, {}])
    tupled = InferenceSession(data, providers=[("RtxrtExecutionProvider", {"enable_cuda_graph": "0"}),
                                               "CPUExecutionProvider"])
    for session in (listed, tupled):
        options = session.get_provider_options()
        assert options["RtxrtExecutionProvider"]["enable_cuda_graph"] == "0"
        assert options["RtxrtExecutionProvider"]["embedded_kernels"] == "0"
        assert options["CPUExecutionProvider"] == {}
    with pytest.raises(ValueError, match="unknown provider option"):
        InferenceSession(data, providers=[("RtxrtExecutionProvider", {"trt_fp16_enable": "1"})])


@pytest.fixture
def session_keywords(monkeypatch) -> list[dict]:
    """The keyword arguments of every rtxrt.Session built from here on, in order."""
    seen: list[dict] = []
    init = rtxrt.Session.__init__

    def recording_init(self, source, **kwargs):
        seen.append(kwargs)
        init(self, source, **kwargs)

    monkeypatch.setattr(rtxrt.Session, "__init__", recording_init)
    return seen


def test_embedded_kernels_run_only_when_the_option_says_so(session_keywords):
    data = cut_chain().SerializeToString()
    InferenceSession(data, providers=PROVIDERS)
    assert [kw["embedded_kernels"] for kw in session_keywords] == [False, False]  # both rtxrt partitions
    session_keywords.clear()
    opted = InferenceSession(data, providers=PROVIDERS, provider_options=[{"embedded_kernels": "1"}, {}])
    assert [kw["embedded_kernels"] for kw in session_keywords] == [True, True]
    assert opted.get_provider_options()["RtxrtExecutionProvider"]["embedded_kernels"] == "1"


def test_a_model_in_bytes_with_external_data_is_refused_not_read_from_the_current_directory(tmp_path, monkeypatch):
    onnx.save(cut_chain(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.weights",
              size_threshold=0)
    monkeypatch.chdir(tmp_path)  # the data file is right here, where the current directory would find it
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=r"given as bytes, but tensor\(s\) \['w'\] keep their data in external file\(s\) "
                             r"\['m.weights'\].*pass the model's path"):
        InferenceSession((tmp_path / "m.onnx").read_bytes(), providers=PROVIDERS)
    from_path = InferenceSession(str(tmp_path / "m.onnx"), providers=PROVIDERS)
    assert [p.kind for p in from_path.partitions()] == ["rtxrt", "onnxruntime", "rtxrt"]
    theirs = ort.InferenceSession(cut_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    x = randn(3, 8)
    np.testing.assert_allclose(from_path.run(None, {"x": x})[0], theirs.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def api_model():
    """Symbolic, fixed, unnamed and undeclared dims; an int64 input; two outputs."""
    nodes = [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "nf"], ["p"])]
    inputs = [tensor("x", ["batch", 3]), tensor("y", [None, 3]), tensor("n", [], TensorProto.INT64)]
    outputs = [helper.make_tensor_value_info("s", TensorProto.FLOAT, None), tensor("p", ["batch", 3])]
    return make_model(nodes, inputs, outputs)


def describe(args):
    return [(a.name, a.type, a.shape) for a in args]


def test_inputs_and_outputs_are_described_as_onnxruntime_does():
    ours, theirs = both(api_model())
    assert describe(ours.get_inputs()) == describe(theirs.get_inputs())
    assert describe(ours.get_outputs()) == describe(theirs.get_outputs())


def test_run_a_subset_of_outputs_and_list_feeds():
    ours, theirs = both(api_model())
    feeds = {"x": randn(2, 3), "y": [[1, 2, 3], [4, 5, 6]], "n": np.array(3)}
    [p] = ours.run(["p"], feeds)
    [want] = theirs.run(["p"], feeds)
    np.testing.assert_allclose(p, want, rtol=1e-6)
    outputs = ours.run(None, feeds)
    assert len(outputs) == 2
    np.testing.assert_array_equal(outputs[1], p)


BAD_FEEDS = {
    "unknown input": ({"x": np.ones((2, 3), np.float32), "y": np.ones((2, 3), np.float32), "n": np.array(1),
                       "z": np.ones(1)}, "z"),
    "missing input": ({"x": np.ones((2, 3), np.float32), "n": np.array(1)}, "y"),
    "wrong dtype": ({"x": np.ones((2, 3)), "y": np.ones((2, 3), np.float32), "n": np.array(1)}, "tensor(double)"),
    "wrong rank": ({"x": np.ones((2, 3), np.float32), "y": np.ones((1, 2, 3), np.float32), "n": np.array(1)}, "y"),
    "wrong dim": ({"x": np.ones((2, 4), np.float32), "y": np.ones((2, 4), np.float32), "n": np.array(1)}, "x"),
    "python scalar": ({"x": np.ones((2, 3), np.float32), "y": np.ones((2, 3), np.float32), "n": 1}, "int"),
}


@pytest.mark.parametrize("case", list(BAD_FEEDS))
def test_bad_inputs_raise_what_onnxruntime_raises(case):
    feeds, named = BAD_FEEDS[case]
    ours, theirs = both(api_model())
    with pytest.raises(Exception) as expected:
        theirs.run(None, feeds)
    with pytest.raises(type(expected.value)) as got:
        ours.run(None, feeds)
    assert type(got.value) is type(expected.value)
    assert named in str(got.value)


def test_unknown_output_name_raises_what_onnxruntime_raises():
    ours, theirs = both(api_model())
    feeds = {"x": randn(2, 3), "y": randn(2, 3), "n": np.array(1)}
    with pytest.raises(Exception) as expected:
        theirs.run(["q"], feeds)
    with pytest.raises(type(expected.value), match="Invalid output name:q"):
        ours.run(["q"], feeds)


def test_io_binding_with_cpu_arrays():
    ours, theirs = both(cut_chain())
    x = randn(4, 8)
    [want] = theirs.run(None, {"x": x})
    binding = ours.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y")
    ours.run_with_iobinding(binding)
    [got] = binding.copy_outputs_to_cpu()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(binding.get_outputs()[0], got)


def test_io_binding_by_pointer_into_a_buffer_of_the_caller():
    ours, theirs = both(cut_chain())
    x = randn(3, 8)
    out = np.full((3, 8), np.nan, np.float32)
    binding = ours.io_binding()
    binding.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, out.shape, out.ctypes.data)
    ours.run_with_iobinding(binding)
    np.testing.assert_allclose(out, theirs.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert ctypes.addressof(ctypes.c_char.from_buffer(out)) == out.ctypes.data  # written in place


def test_verbose_logs_the_partitioning(caplog):
    with caplog.at_level(logging.INFO, logger="rtxrt_ep"):
        InferenceSession(cut_chain().SerializeToString(), providers=PROVIDERS,
                         provider_options=[{"nv_detailed_build_log": "1"}, {}])
    assert "3 partition(s): 2 rtxrt (4 nodes), 1 onnxruntime (1 nodes)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rtxrt_ep"):
        InferenceSession(cut_chain().SerializeToString(), providers=PROVIDERS)
    assert caplog.text == ""


def test_a_partition_rtxrt_fails_to_run_falls_back_to_onnxruntime(monkeypatch, caplog):
    ours, theirs = both(all_supported())

    def broken(self, output_names, feeds):
        raise ExecutionError("node MatMul_0: simulated failure")

    monkeypatch.setattr(rtxrt.Session, "run", broken)
    x = randn(2, 4)
    with caplog.at_level(logging.WARNING, logger="rtxrt_ep"):
        [got] = ours.run(None, {"x": x})
    np.testing.assert_allclose(got, theirs.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert [p.kind for p in ours.partitions()] == ["onnxruntime"]
    assert "simulated failure" in caplog.text


def node_suite_passes(make_session, cases) -> int:
    passed = 0
    for case in cases:
        try:  # a failing case counts as failed, whatever it raised
            session = make_session(case.model.SerializeToString())
            names = {i.name for i in session.get_inputs()}
            for inputs, outputs in case.data_sets:
                feeds = dict(zip([vi.name for vi in case.model.graph.input if vi.name in names], inputs))
                for got, want in zip(session.run(None, feeds), outputs, strict=True):
                    if isinstance(want, np.ndarray) and want.dtype.kind in "OUS":
                        assert np.array_equal(got, want)
                    elif isinstance(want, np.ndarray):
                        np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
        except Exception:  # noqa: BLE001, S112
            continue
        passed += 1
    return passed


def suite_shard(cases: list) -> list:
    """RTXRT_SUITE_SHARD=K/N keeps every N-th case from the K-th (the GPU run splits the suite
    over processes: there every case JIT-compiles its kernels)."""
    shard = os.environ.get("RTXRT_SUITE_SHARD")
    if not shard:
        return cases
    index, count = parse_shard(shard)
    return cases[index::count]


def test_onnx_node_suite_passes_at_least_as_often_as_onnxruntime_cpu():
    ort.set_default_logger_severity(4)  # the suite's many expected onnxruntime warnings and errors
    try:
        cases = suite_shard(collect_testcases(""))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("rtxrt_ep").disabled = True
            ours = node_suite_passes(lambda data: InferenceSession(data, providers=PROVIDERS), cases)
            theirs = node_suite_passes(lambda data: ort.InferenceSession(data, providers=["CPUExecutionProvider"]),
                                       cases)
    finally:
        ort.set_default_logger_severity(2)
        logging.getLogger("rtxrt_ep").disabled = False
    device = "GPU" if find_gpu() else "reference backend"
    print(f"ONNX node suite ({len(cases)} cases): RtxrtExecutionProvider+CPU ({device}) {ours}, "
          f"onnxruntime CPU {theirs}")
    assert ours >= theirs


@pytest.mark.gpu
def test_gpu_partitions_match_onnxruntime_and_bind_device_buffers():
    import cupy

    ours = InferenceSession(cut_chain().SerializeToString(), providers=PROVIDERS)
    theirs = ort.InferenceSession(cut_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    x = randn(5, 8)
    want = theirs.run(None, {"x": x})[0].astype(np.float64)
    # GPU transcendental functions (tanh, erf in Gelu's neighbours) differ from the CPU by a few ulp.
    np.testing.assert_allclose(ours.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-5)
    x_gpu = cupy.asarray(x)
    out_gpu = cupy.full((5, 8), cupy.nan, cupy.float32)
    binding = ours.io_binding()
    binding.bind_input("x", "cuda", 0, np.float32, x.shape, x_gpu.data.ptr)
    binding.bind_output("y", "cuda", 0, np.float32, out_gpu.shape, out_gpu.data.ptr)
    ours.run_with_iobinding(binding)
    np.testing.assert_allclose(cupy.asnumpy(out_gpu), want, rtol=1e-4, atol=1e-5)
    binding.bind_output("y", "cuda")
    ours.run_with_iobinding(binding)
    [result] = binding.get_outputs()
    assert isinstance(result, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(result), want, rtol=1e-4, atol=1e-5)


class _DeviceOrtValue:
    """What onnxruntime-gpu's IOBinding.get_outputs() returns for an output bound to "cuda"."""

    def __init__(self, array):
        self.array = array

    def data_type(self) -> str:
        assert self.array.dtype == np.float32  # the test model is float32 throughout
        return "tensor(float)"

    def shape(self) -> list[int]:
        return list(self.array.shape)

    def data_ptr(self) -> int:
        return self.array.data.ptr


class _CudaProviderStandIn:
    """onnxruntime with its CUDA provider, as far as the provider's onnxruntime partitions use it
    (the device image has CPU onnxruntime only, and onnxruntime-gpu cannot be brought there):
    inputs bound by device pointer are read from the GPU, outputs are handed back in GPU memory.
    The arithmetic is the real CPU session's."""

    device_inputs: ClassVar[list[str]] = []  # names bound by device pointer, in order

    def __init__(self, model_bytes, sess_options=None, providers=None, **kwargs):
        self.session = _REAL_ORT_SESSION(model_bytes, sess_options, providers=["CPUExecutionProvider"], **kwargs)

    def __getattr__(self, name):
        return getattr(self.session, name)

    def io_binding(self):
        return _CudaBindingStandIn()

    def run_with_iobinding(self, binding):
        results = self.session.run(binding.output_names, binding.feeds)
        import cupy

        binding.results = [_DeviceOrtValue(cupy.asarray(r)) for r in results]


class _CudaBindingStandIn:
    def __init__(self):
        self.feeds, self.output_names, self.results = {}, [], []

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        import cupy

        assert device_type == "cuda" and device_id == 0
        dtype = np.dtype(element_type)
        memory = cupy.cuda.UnownedMemory(buffer_ptr, int(np.prod(shape)) * dtype.itemsize, None, device_id)
        self.feeds[name] = cupy.ndarray(tuple(shape), dtype, cupy.cuda.MemoryPointer(memory, 0)).get()
        _CudaProviderStandIn.device_inputs.append(name)

    def bind_cpu_input(self, name, array):
        self.feeds[name] = array

    def bind_output(self, name, device_type, device_id=0):
        assert device_type == "cuda"
        self.output_names.append(name)

    def get_outputs(self):
        return self.results


_REAL_ORT_SESSION = ort.InferenceSession


@pytest.mark.gpu
def test_with_onnxruntime_cuda_tensors_cross_partitions_on_the_device(monkeypatch):
    import cupy
    import rtxrt_ep.session as ep_session

    want = ort.InferenceSession(cut_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    monkeypatch.setattr(ep_session.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ep_session.ort, "InferenceSession", _CudaProviderStandIn)
    monkeypatch.setattr(_CudaProviderStandIn, "device_inputs", [])
    ours = InferenceSession(cut_chain().SerializeToString(), providers=PROVIDERS)
    assert [p.kind for p in ours.partitions()] == ["rtxrt", "onnxruntime", "rtxrt"]

    seen = []
    run = rtxrt.Session.run

    def recording_run(self, output_names, feeds):  # what each rtxrt partition is given
        seen.append({name: type(value) for name, value in feeds.items()})
        return run(self, output_names, feeds)

    monkeypatch.setattr(rtxrt.Session, "run", recording_run)
    x = randn(4, 8)
    np.testing.assert_allclose(ours.run(None, {"x": x})[0], want.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert _CudaProviderStandIn.device_inputs == ["b"]  # rtxrt's output reached onnxruntime as a device pointer
    assert seen[1] == {"c": cupy.ndarray, "a": cupy.ndarray}  # and onnxruntime's came back on the device
