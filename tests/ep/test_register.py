"""register(): an unchanged onnxruntime application gets rtxrt by naming RtxrtExecutionProvider;
unregister() restores onnxruntime exactly."""
from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_inference_collection as collection
from rtxrt_ep.register import is_registered, names_provider, register, unregister
from rtxrt_ep.session import InferenceSession as RtxrtSession

PROVIDER = "RtxrtExecutionProvider"
CPU = "CPUExecutionProvider"
ORIGINAL_SESSION = onnxruntime.InferenceSession
ORIGINAL_AVAILABLE = onnxruntime.get_available_providers
ORIGINAL_ALL = onnxruntime.get_all_providers


@pytest.fixture(autouse=True)
def clean_registration():
    unregister()
    yield
    unregister()


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rtxrt's "no GPU: CPU reference backend"
        yield


def model_bytes() -> bytes:
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def check_runs(session) -> None:
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    want = ORIGINAL_SESSION(model_bytes(), providers=[CPU]).run(None, {"x": x})[0]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


def test_available_providers_list_rtxrt_first_only_while_registered():
    before = onnxruntime.get_available_providers()
    assert PROVIDER not in before and PROVIDER not in onnxruntime.get_all_providers()
    register()
    assert is_registered()
    assert onnxruntime.get_available_providers() == [PROVIDER, *before]
    assert onnxruntime.get_all_providers()[0] == PROVIDER
    unregister()
    assert not is_registered()
    assert onnxruntime.get_available_providers() == before
    assert onnxruntime.get_available_providers is ORIGINAL_AVAILABLE
    assert onnxruntime.get_all_providers is ORIGINAL_ALL


def test_naming_the_provider_routes_to_rtxrt():
    register()
    session = onnxruntime.InferenceSession(model_bytes(), providers=[PROVIDER, CPU], provider_options=[{"device_id": "0"}, {}])
    assert type(session) is RtxrtSession
    assert session.get_providers()[0] == PROVIDER
    assert [p.kind for p in session.partitions()] == ["rtxrt"]
    check_runs(session)


@pytest.mark.parametrize("providers", [
    [(PROVIDER, {"device_id": 0}), CPU],  # the (name, options) tuple form
    [CPU, PROVIDER],  # not first
])
def test_every_spelling_of_the_providers_list_routes(providers):
    register()
    session = onnxruntime.InferenceSession(model_bytes(), providers=providers)
    assert type(session) is RtxrtSession
    check_runs(session)


def test_providers_given_positionally_and_from_the_defining_module():
    register()
    session = collection.InferenceSession(model_bytes(), None, [PROVIDER, CPU])
    assert type(session) is RtxrtSession


def test_sessions_made_through_the_hook_are_onnxruntime_sessions():
    register()
    session = onnxruntime.InferenceSession(model_bytes(), providers=[PROVIDER, CPU])
    assert isinstance(session, onnxruntime.InferenceSession)
    assert isinstance(session, collection.InferenceSession)
    assert not isinstance(session, ORIGINAL_SESSION)  # the class object from before register()


@pytest.mark.parametrize("providers", [[CPU], None])
def test_other_providers_get_onnxruntime_unchanged(providers):
    register()
    session = onnxruntime.InferenceSession(model_bytes(), providers=providers)
    assert isinstance(session, ORIGINAL_SESSION)
    assert not isinstance(session, RtxrtSession)
    assert session.get_providers() == [CPU]
    check_runs(session)


def test_unregister_restores_the_original_classes_and_keeps_sessions_working():
    register()
    session = onnxruntime.InferenceSession(model_bytes(), providers=[PROVIDER, CPU])
    unregister()
    assert onnxruntime.InferenceSession is ORIGINAL_SESSION
    assert collection.InferenceSession is ORIGINAL_SESSION
    check_runs(session)
    with pytest.warns(UserWarning, match="RtxrtExecutionProvider"):  # onnxruntime's own "not available"
        plain = onnxruntime.InferenceSession(model_bytes(), providers=[PROVIDER, CPU])
    assert type(plain) is ORIGINAL_SESSION


def test_registering_twice_is_harmless():
    register()
    hooked = onnxruntime.InferenceSession
    register()
    assert onnxruntime.InferenceSession is hooked
    assert onnxruntime.get_available_providers().count(PROVIDER) == 1
    unregister()
    assert onnxruntime.InferenceSession is ORIGINAL_SESSION
    unregister()  # and so is unregistering twice
    assert onnxruntime.InferenceSession is ORIGINAL_SESSION


def test_a_class_imported_before_register_is_not_hooked():
    early = onnxruntime.InferenceSession  # what `from onnxruntime import InferenceSession` binds
    register()
    with pytest.warns(UserWarning, match="RtxrtExecutionProvider"):
        session = early(model_bytes(), providers=[PROVIDER, CPU])
    assert type(session) is ORIGINAL_SESSION
    assert session.get_providers() == [CPU]


def test_names_provider_reads_both_spellings():
    assert names_provider([PROVIDER])
    assert names_provider([(PROVIDER, {}), CPU])
    assert not names_provider([CPU])
    assert not names_provider(None)
    assert not names_provider(PROVIDER)  # a bare string is not a providers list


def test_package_register_keeps_the_hook_where_onnxruntime_selects_no_plugin_providers(monkeypatch):
    import rtxrt_ep

    monkeypatch.setattr(onnxruntime, "__version__", "1.24.4")  # before 1.25 `providers=[name]` finds no plugin
    rtxrt_ep.register()
    try:
        assert is_registered() and onnxruntime.InferenceSession is not ORIGINAL_SESSION
        check_runs(onnxruntime.InferenceSession(model_bytes(), providers=[PROVIDER, CPU]))
    finally:
        rtxrt_ep.unregister()
    assert onnxruntime.InferenceSession is ORIGINAL_SESSION and not rtxrt_ep.is_registered()
