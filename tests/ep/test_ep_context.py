"""EP-context models: rtxrt partitions become com.microsoft::EPContext nodes holding the .rtxir
(embedded or beside the file); loading one runs without AOT and matches the original model."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from rtxrt_ep.ep_context import (
    compile_ep_context,
    has_ep_context,
    load_ep_context_partitions,
    rtxrt_source,
)
from rtxrt_ep.partition import partition
from rtxrt_ep.session import InferenceSession

import rtxrt
from rtxrt.errors import FormatError, ModelError
from rtxrt.format.layout import MAGIC

PROVIDERS = ["RtxrtExecutionProvider", "CPUExecutionProvider"]
# The reference backend and onnxruntime both compute in float32; sums differ only in order.
RTOL, ATOL = 1e-5, 1e-6


def cut_model() -> onnx.ModelProto:
    """MatMul, Relu | SequenceConstruct, SequenceAt | MatMul, TopK, Cast, Add: rtxrt runs no
    sequences, so the middle is onnxruntime's and the model has two rtxrt partitions."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([3], np.int64), "k"),
             numpy_helper.from_array(np.array(0, np.int64), "zero")]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("SequenceConstruct", ["r", "x"], ["seq"], name="seq"),
        helper.make_node("SequenceAt", ["seq", "zero"], ["s"], name="at"),
        helper.make_node("MatMul", ["s", "w"], ["h2"], name="mm2"),
        helper.make_node("TopK", ["h2", "k"], ["values", "indices"], name="topk", axis=-1),
        helper.make_node("Cast", ["indices"], ["fi"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["values", "fi"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "cut", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", 8])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(11).standard_normal((2, 8)).astype(np.float32)}


def expected(model: onnx.ModelProto) -> list[np.ndarray]:
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds())


def run_drop_in(source) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rtxrt's "no GPU: CPU reference backend"
        session = InferenceSession(source, providers=PROVIDERS)
        return session.run(None, feeds())


def context_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "EPContext"]


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_each_rtxrt_partition_becomes_one_epcontext_node_and_the_rest_stays(tmp_path):
    model = cut_model()
    out = compile_ep_context(model, tmp_path / "cut_ctx.onnx")
    assert [p.kind for p in partition(model)] == ["rtxrt", "onnxruntime", "rtxrt"]
    assert [(n.domain, n.op_type) for n in out.graph.node] == [
        ("com.microsoft", "EPContext"), ("", "SequenceConstruct"), ("", "SequenceAt"), ("com.microsoft", "EPContext")]
    assert [vi.name for vi in out.graph.input] == ["x"]
    assert [vi.name for vi in out.graph.output] == ["y", "r"]
    assert {o.domain: o.version for o in out.opset_import} == {"": 17, "com.microsoft": 1}
    first, second = context_nodes(out)
    assert (list(first.input), list(first.output)) == (["x"], ["r"])
    assert (list(second.input), list(second.output)) == (["s"], ["y"])
    a = attrs(first)
    assert a["main_context"] == 1 and a["embed_mode"] == 1
    assert a["source"] == b"RtxrtExecutionProvider"
    assert a["partition_name"] == first.name.encode() and first.name != second.name
    assert a["ep_sdk_version"].startswith(b"rtxrt ")
    assert a["ep_cache_context"][:8] == rtxrt_source(load_ep_context_partitions(out)[0])[:8]
    assert has_ep_context(out) and not has_ep_context(model)
    assert onnx.load(str(tmp_path / "cut_ctx.onnx")) == out


def test_attributes_follow_onnxruntimes_epcontext_schema(tmp_path):
    schema = next(s for s in onnxruntime.capi.onnxruntime_pybind11_state.get_all_operator_schema()
                  if s.name == "EPContext" and s.domain == "com.microsoft")
    out = compile_ep_context(cut_model(), tmp_path / "m.onnx")
    for node in context_nodes(out):
        for a in node.attribute:
            assert a.name in schema.attributes, a.name
            assert schema.attributes[a.name].type.name == onnx.AttributeProto.AttributeType.Name(a.type), a.name


def test_embedded_context_round_trips_without_aot(tmp_path, forbid_aot):
    model = cut_model()
    compile_ep_context(model, tmp_path / "m_ctx.onnx")
    forbid_aot()
    for got, want in zip(run_drop_in(str(tmp_path / "m_ctx.onnx")), expected(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_embedded_context_loads_from_bytes(tmp_path, forbid_aot):
    model = cut_model()
    out = compile_ep_context(model, tmp_path / "m_ctx.onnx")
    forbid_aot()
    for got, want in zip(run_drop_in(out.SerializeToString()), expected(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_external_context_is_a_sidecar_file_found_relative_to_the_model(tmp_path, forbid_aot):
    model = cut_model()
    built = tmp_path / "build"
    out = compile_ep_context(model, built / "m_ctx.onnx", embed=False)
    forbid_aot()
    for node in context_nodes(out):
        a = attrs(node)
        assert a["embed_mode"] == 0
        assert a["ep_cache_context"] == f"m_ctx_{node.name}.rtxir".encode()
        assert (built / a["ep_cache_context"].decode()).read_bytes().startswith(MAGIC)
    moved = shutil.copytree(built, tmp_path / "shipped")  # the files travel together
    for got, want in zip(run_drop_in(str(moved / "m_ctx.onnx")), expected(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_external_context_needs_the_models_folder(tmp_path):
    out = compile_ep_context(cut_model(), tmp_path / "m_ctx.onnx", embed=False)
    with pytest.raises(ModelError, match=r"EPContext node 'cut_rtxrt_0'.*load the model from its path"):
        load_ep_context_partitions(out)


def test_external_context_must_stay_inside_the_models_folder(tmp_path):
    out = compile_ep_context(cut_model(), tmp_path / "inner" / "m_ctx.onnx", embed=False)
    for a in context_nodes(out)[0].attribute:
        if a.name == "ep_cache_context":
            a.s = b"../secret.rtxir"
    (tmp_path / "secret.rtxir").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"EPContext node 'cut_rtxrt_0'.*inside the model's folder"):
        load_ep_context_partitions(out, tmp_path / "inner")


def test_missing_sidecar_names_the_node(tmp_path):
    out = compile_ep_context(cut_model(), tmp_path / "m_ctx.onnx", embed=False)
    (tmp_path / "m_ctx_cut_rtxrt_2.rtxir").unlink()
    with pytest.raises(ModelError, match=r"EPContext node 'cut_rtxrt_2'.*does not exist"):
        load_ep_context_partitions(out, tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_context_bytes_give_a_clear_error_naming_the_node(tmp_path, damage):
    path = tmp_path / "m_ctx.onnx"
    out = compile_ep_context(cut_model(), path)
    node = context_nodes(out)[1]
    for a in node.attribute:
        if a.name == "ep_cache_context":
            data = bytearray(a.s)
            if damage == "flip":
                data[len(data) // 2] ^= 0xFF
            else:
                del data[len(data) // 2:]
            a.s = bytes(data)
    onnx.save(out, str(path))
    with pytest.raises(FormatError, match=r"EPContext node 'cut_rtxrt_2'.*not a usable \.rtxir"):
        load_ep_context_partitions(out)
    with pytest.raises(FormatError, match=r"EPContext node 'cut_rtxrt_2'"):
        run_drop_in(str(path))


def test_a_context_from_another_provider_is_refused_by_name(tmp_path):
    out = compile_ep_context(cut_model(), tmp_path / "m_ctx.onnx")
    for a in context_nodes(out)[0].attribute:
        if a.name == "source":
            a.s = b"NvTensorRTRTXExecutionProvider"
    with pytest.raises(ModelError, match=r"EPContext node 'cut_rtxrt_0' was made by 'NvTensorRTRTXExecutionProvider'"):
        load_ep_context_partitions(out)


def test_loaded_partitions_mirror_the_compiled_ones(tmp_path):
    model = cut_model()
    out = compile_ep_context(model, tmp_path / "m_ctx.onnx")
    compiled, loaded = partition(model), load_ep_context_partitions(out)
    assert [(p.kind, p.inputs, p.outputs) for p in loaded] == [(p.kind, p.inputs, p.outputs) for p in compiled]
    assert [p.nodes for p in loaded] == [["cut_rtxrt_0"], ["seq", "at"], ["cut_rtxrt_2"]]
    middle = loaded[1].model
    assert {t.name for t in middle.graph.initializer} == {"zero"}
    assert [vi.type.tensor_type.elem_type for vi in middle.graph.input] == [TensorProto.FLOAT] * 2


def test_values_onnx_cannot_type_take_their_types_from_onnxruntime(tmp_path, forbid_aot):
    """com.microsoft::Gelu (onnxruntime's, not rtxrt's) outputs a value ONNX shape inference
    leaves untyped; the rtxrt partition after it still compiles, and the file records the type."""
    w = numpy_helper.from_array(np.random.default_rng(9).standard_normal((8, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
         helper.make_node("Gelu", ["h"], ["g"], name="gelu", domain="com.microsoft"),
         helper.make_node("MatMul", ["g", "w"], ["y"], name="mm2")], "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], initializer=[w])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("com.microsoft", 1)])
    out = compile_ep_context(model, tmp_path / "gelu_ctx.onnx")
    assert [n.op_type for n in out.graph.node] == ["EPContext", "Gelu", "EPContext"]
    assert {vi.name: vi.type.tensor_type.elem_type for vi in out.graph.value_info}["g"] == TensorProto.FLOAT
    forbid_aot()
    for got, want in zip(run_drop_in(str(tmp_path / "gelu_ctx.onnx")), expected(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_an_unchanged_onnxruntime_app_loads_the_context_model_after_register(tmp_path, forbid_aot):
    from rtxrt_ep.register import register, unregister

    model = cut_model()
    compile_ep_context(model, tmp_path / "m_ctx.onnx")
    forbid_aot()
    register()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            session = onnxruntime.InferenceSession(str(tmp_path / "m_ctx.onnx"), providers=PROVIDERS)
            got = session.run(None, feeds())
    finally:
        unregister()
    assert [p.kind for p in session.partitions()] == ["rtxrt", "onnxruntime", "rtxrt"]
    for g, want in zip(got, expected(model), strict=True):
        np.testing.assert_allclose(g, want, rtol=RTOL, atol=ATOL)


def test_machine_code_in_a_context_runs_only_when_embedded_kernels_is_set(tmp_path, monkeypatch):
    compile_ep_context(cut_model(), tmp_path / "m_ctx.onnx")
    seen = []
    init = rtxrt.Session.__init__

    def recording_init(self, source, **kwargs):
        seen.append(kwargs["embedded_kernels"])
        init(self, source, **kwargs)

    monkeypatch.setattr(rtxrt.Session, "__init__", recording_init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        InferenceSession(str(tmp_path / "m_ctx.onnx"), providers=PROVIDERS)
        InferenceSession(str(tmp_path / "m_ctx.onnx"), providers=[("RtxrtExecutionProvider", {"embedded_kernels": "1"}),
                                                                  "CPUExecutionProvider"])
    assert seen == [False, False, True, True]  # each session's two EPContext partitions


def test_a_model_whose_external_data_was_not_loaded_is_refused_by_name(tmp_path, monkeypatch):
    onnx.save(cut_model(), str(tmp_path / "cut.onnx"), save_as_external_data=True, location="cut.weights",
              size_threshold=0)
    monkeypatch.chdir(tmp_path)  # where the data is, but a model in memory has no folder
    unloaded = onnx.load(str(tmp_path / "cut.onnx"), load_external_data=False)
    with pytest.raises(ModelError, match=r"tensor\(s\) \['k', 'w', 'zero'\].*\['cut.weights'\].*pass the model's path"):
        compile_ep_context(unloaded, tmp_path / "out" / "m_ctx.onnx")
    compile_ep_context(tmp_path / "cut.onnx", tmp_path / "out" / "m_ctx.onnx")  # from its path it is read
    for got, want in zip(run_drop_in(str(tmp_path / "out" / "m_ctx.onnx")), expected(cut_model()), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
