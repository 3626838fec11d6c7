"""EPContext models through the plugin provider: onnxruntime's compiler (``ModelCompiler``, or
the session option ``ep.context_enable=1``) writes rtxrt's EPContext nodes as
``compile_ep_context`` does, and a session through the plugin runs such nodes from their .rtxir
without AOT, whichever of the two made them."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from rtxrt_ep.ep_context import compile_ep_context
from rtxrt_ep.registration import plugin_problem

from rtxrt.format.layout import MAGIC

from .test_ep_context import ATOL, RTOL, attrs, context_nodes, cut_model, expected, feeds, run_drop_in

PROBLEM = plugin_problem()
pytestmark = [pytest.mark.skipif(PROBLEM is not None, reason=f"no plugin provider here: {PROBLEM}"),
              pytest.mark.usefixtures("plugin_library")]

PROVIDER = "RtxrtExecutionProvider"
PROVIDERS = [PROVIDER, "CPUExecutionProvider"]


def compile_with_onnxruntime(tmp_path, *, embed: bool) -> str:
    source, output = tmp_path / "model.onnx", tmp_path / "out" / "model_ctx.onnx"
    onnx.save(cut_model(), str(source))
    output.parent.mkdir()
    options = onnxruntime.SessionOptions()
    options.add_provider(PROVIDER, {})
    onnxruntime.ModelCompiler(options, str(source), embed_compiled_data_into_model=embed).compile_to_file(str(output))
    return str(output)


def assert_matches_the_original(outputs: list[np.ndarray]) -> None:
    for got, want in zip(outputs, expected(cut_model()), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("embed", [True, False])
def test_model_compiler_writes_rtxrts_epcontext_nodes(tmp_path, embed):
    path = compile_with_onnxruntime(tmp_path, embed=embed)
    model = onnx.load(path)
    assert [n.op_type for n in model.graph.node] == ["EPContext", "SequenceConstruct", "SequenceAt", "EPContext"]
    for node in context_nodes(model):
        a = attrs(node)
        assert node.domain == "com.microsoft" and a["partition_name"].decode() == node.name
        assert (a["source"], a["main_context"], a["embed_mode"]) == (PROVIDER.encode(), 1, int(embed))
        assert a["ep_sdk_version"].startswith(b"rtxrt ") and a["onnx_model_filename"] == b"model.onnx"
        context = a["ep_cache_context"]
        if not embed:  # a sidecar beside the compiled model, named as compile_ep_context names them
            assert context.decode() == f"model_ctx_{node.name}.rtxir"
            context = (tmp_path / "out" / context.decode()).read_bytes()
        assert context.startswith(MAGIC)


@pytest.mark.parametrize("embed", [True, False])
def test_the_plugin_runs_a_compiled_model_without_aot(tmp_path, forbid_aot, partitions_on_gpu, embed):
    path = compile_with_onnxruntime(tmp_path, embed=embed)
    forbid_aot()
    session = onnxruntime.InferenceSession(path, providers=PROVIDERS)
    assert_matches_the_original(session.run(None, feeds()))
    assert partitions_on_gpu == [False, False]  # both EPContext nodes ran in rtxrt


def test_compile_ep_context_files_run_through_the_plugin(tmp_path, forbid_aot, partitions_on_gpu):
    compile_ep_context(cut_model(), tmp_path / "m_ctx.onnx", embed=False)
    forbid_aot()
    session = onnxruntime.InferenceSession(str(tmp_path / "m_ctx.onnx"), providers=PROVIDERS)
    assert_matches_the_original(session.run(None, feeds()))
    assert partitions_on_gpu == [False, False]


def test_onnxruntime_compiled_files_run_in_the_drop_in_session(tmp_path, forbid_aot):
    path = compile_with_onnxruntime(tmp_path, embed=False)
    forbid_aot()
    assert_matches_the_original(run_drop_in(path))


def test_the_session_option_writes_the_compiled_model_beside_the_session(tmp_path):
    source, output = tmp_path / "model.onnx", tmp_path / "model_ctx.onnx"
    onnx.save(cut_model(), str(source))
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("ep.context_enable", "1")
    options.add_session_config_entry("ep.context_file_path", str(output))
    options.add_session_config_entry("ep.context_embed_mode", "1")
    session = onnxruntime.InferenceSession(str(source), options, providers=PROVIDERS)
    assert_matches_the_original(session.run(None, feeds()))
    assert len(context_nodes(onnx.load(str(output)))) == 2


def test_sidecar_contexts_for_a_model_compiled_to_bytes_are_refused_clearly(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(cut_model(), str(source))
    options = onnxruntime.SessionOptions()
    options.add_provider(PROVIDER, {})
    compiler = onnxruntime.ModelCompiler(options, str(source), embed_compiled_data_into_model=False)
    with pytest.raises(Exception, match="ep.context_embed_mode=1"):
        compiler.compile_to_bytes()
    embedded = onnxruntime.ModelCompiler(options, str(source), embed_compiled_data_into_model=True).compile_to_bytes()
    assert len(context_nodes(onnx.load_from_string(embedded))) == 2
