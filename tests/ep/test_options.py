"""Provider options arrive as ONNX Runtime passes them: a dict of strings."""
import pytest
from rtxrt_ep.options import ProviderOptions, parse_provider_options


def test_defaults():
    options = parse_provider_options(None)
    assert options == ProviderOptions()
    assert options.device_id == 0 and options.precision is None and options.runtime_cache_path is None
    assert options.enable_cuda_graph is True and options.dynamic_shapes_specialization == "lazy"
    assert options.min_subgraph_size == 1 and options.verbose is False
    assert options.embedded_kernels is False  # machine code from a file's builder runs only on request
    assert options.profile() == {}


def test_every_option_in_onnxruntime_string_form():
    options = parse_provider_options({
        "device_id": "1",
        "precision": "fp32",
        "nv_runtime_cache_path": "/tmp/cache",
        "enable_cuda_graph": "0",
        "nv_profile_min_shapes": "x:1x3x224x224,mask:1x1",
        "nv_profile_opt_shapes": "x:4x3x224x224,mask:4x64",
        "nv_profile_max_shapes": "x:8x3x224x224,mask:8x128",
        "dynamic_shapes_specialization": "eager",
        "min_subgraph_size": "3",
        "nv_detailed_build_log": "true",
        "embedded_kernels": "1",
    })
    assert options.device_id == 1
    assert options.precision == "fp32"
    assert options.runtime_cache_path == "/tmp/cache"
    assert options.enable_cuda_graph is False
    assert options.profile_min_shapes == {"x": (1, 3, 224, 224), "mask": (1, 1)}
    assert options.profile_opt_shapes == {"x": (4, 3, 224, 224), "mask": (4, 64)}
    assert options.profile_max_shapes == {"x": (8, 3, 224, 224), "mask": (8, 128)}
    assert options.profile() == {"x": ((1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224)),
                                 "mask": ((1, 1), (4, 64), (8, 128))}
    assert options.dynamic_shapes_specialization == "eager"
    assert options.min_subgraph_size == 3
    assert options.verbose is True
    assert options.embedded_kernels is True


def test_field_names_and_python_values_are_accepted_too():
    options = parse_provider_options({"device_id": 2, "enable_cuda_graph": False, "runtime_cache_path": "c",
                                      "profile_min_shapes": {"x": (1, 4)}, "profile_opt_shapes": {"x": [2, 4]},
                                      "profile_max_shapes": "x:3x4", "verbose": True, "precision": ""})
    assert (options.device_id, options.enable_cuda_graph, options.runtime_cache_path) == (2, False, "c")
    assert options.profile() == {"x": ((1, 4), (2, 4), (3, 4))}
    assert options.verbose is True and options.precision is None


def test_legacy_cuda_graph_key():
    assert parse_provider_options({"nv_cuda_graph_enable": "1"}).enable_cuda_graph is True


def test_unknown_keys_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown provider option\(s\) \['fp16', 'trt_engine_cache'\]") as info:
        parse_provider_options({"trt_engine_cache": "1", "fp16": "1", "device_id": "0"})
    assert "device_id" in str(info.value) and "nv_profile_min_shapes" in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("device_id", "gpu0", "device_id must be an integer"),
    ("device_id", "-1", "device_id must be >= 0"),
    ("enable_cuda_graph", "yes", "enable_cuda_graph must be 0/1"),
    ("verbose", "2", "verbose must be 0/1"),
    ("embedded_kernels", "yes", "embedded_kernels must be 0/1"),
    ("precision", "fp8", "precision must be empty or one of"),
    ("dynamic_shapes_specialization", "sometimes", "must be one of"),
    ("min_subgraph_size", "0", "min_subgraph_size must be >= 1"),
    ("nv_profile_min_shapes", "x1x3", "not of the form name:1x3x224x224"),
    ("nv_profile_min_shapes", "x:1xax3", "must be an integer"),
    ("nv_profile_min_shapes", "x:1x3,x:2x3", "names input 'x' twice"),
])
def test_bad_values_name_the_option(key, value, message):
    with pytest.raises(ValueError, match=message):
        parse_provider_options({key: value})


def test_same_option_under_two_names_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        parse_provider_options({"enable_cuda_graph": "1", "nv_cuda_graph_enable": "0"})


def test_profiles_must_agree():
    with pytest.raises(ValueError, match="must name the same inputs"):
        parse_provider_options({"nv_profile_min_shapes": "x:1x3", "nv_profile_max_shapes": "x:4x3"})
    with pytest.raises(ValueError, match="differ in rank"):
        parse_provider_options({"nv_profile_min_shapes": "x:1x3", "nv_profile_opt_shapes": "x:2x3",
                                "nv_profile_max_shapes": "x:4"})
    with pytest.raises(ValueError, match="min <= opt <= max"):
        parse_provider_options({"nv_profile_min_shapes": "x:4x3", "nv_profile_opt_shapes": "x:2x3",
                                "nv_profile_max_shapes": "x:8x3"})
