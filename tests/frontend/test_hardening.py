"""Hostile or sloppy ONNX files get a clean ModelError naming what is wrong (exit 1 from the
command line), never a crash, and never make rtxrt read a file the model has no business with."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rtxrt
from rtxrt.aot import build_rtxir, compile_onnx
from rtxrt.errors import GraphError, ModelError, RtxrtError
from rtxrt.frontend import load_onnx
from rtxrt.ir.checker import check_graph
from rtxrt.ir.graph import Graph
from tests.helpers import make_model

WEIGHTS = np.arange(16, dtype=np.float32)


def add_weights_model() -> onnx.ModelProto:
    """y = x + w, w: float32[16] (an initializer)."""
    return make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                      [("x", TensorProto.FLOAT, [16])], [("y", TensorProto.FLOAT, [16])], {"w": WEIGHTS})


def constant_weights_model() -> onnx.ModelProto:
    """y = x + w, w: float32[16] (a Constant node)."""
    return make_model([helper.make_node("Constant", [], ["w"], name="weights", value=numpy_helper.from_array(WEIGHTS)),
                       helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                      [("x", TensorProto.FLOAT, [16])], [("y", TensorProto.FLOAT, [16])])


def sparse_weights_model() -> onnx.ModelProto:
    """y = x + w, w: float32[16] (a sparse initializer)."""
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                       [("x", TensorProto.FLOAT, [16])], [("y", TensorProto.FLOAT, [16])])
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(np.arange(16, dtype=np.int64), "w_idx"), [16]))
    return model


def weight_tensor(model: onnx.ModelProto) -> onnx.TensorProto:
    """The TensorProto holding ``w``, wherever the model keeps it."""
    graph = model.graph
    if graph.initializer:
        return graph.initializer[0]
    if graph.sparse_initializer:
        return graph.sparse_initializer[0].values
    return graph.node[0].attribute[0].t


def externalize(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    """Point ``w`` at external data in ``location`` (as onnx.save with external data would)."""
    tensor = weight_tensor(model)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="length", value=str(WEIGHTS.nbytes))
    return model


WEIGHT_FORMS = {"initializer": add_weights_model, "Constant node": constant_weights_model,
                "sparse initializer": sparse_weights_model}
# How errors name the tensor of each form.
NAMED = {"initializer": "initializer 'w'", "Constant node": "Constant node 'weights'",
         "sparse initializer": "sparse initializer 'w'"}


# -- 1, 2: external data comes only from inside the model's folder --------------------------


@pytest.mark.parametrize("form", WEIGHT_FORMS)
def test_a_model_given_as_bytes_or_proto_never_reads_external_data_from_the_current_directory(tmp_path, monkeypatch,
                                                                                             form):
    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    monkeypatch.chdir(tmp_path)
    model = externalize(WEIGHT_FORMS[form](), "weights.bin")
    for source in (model, model.SerializeToString()):
        with pytest.raises(ModelError, match=f"{NAMED[form]}.*'weights.bin'.*base_dir") as info:
            load_onnx(source)
        assert isinstance(info.value, RtxrtError)


@pytest.mark.parametrize("form", WEIGHT_FORMS)
def test_a_model_given_as_bytes_or_proto_reads_external_data_from_the_base_dir_it_names(tmp_path, form):
    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    model = externalize(WEIGHT_FORMS[form](), "weights.bin")
    for source in (model, model.SerializeToString()):
        graph = load_onnx(source, base_dir=tmp_path).graph
        weights = graph.initializers["w"] if "w" in graph.initializers else graph.nodes[0].attrs["value"]
        np.testing.assert_array_equal(weights, WEIGHTS)


def test_the_aot_entry_points_pass_base_dir_on(tmp_path):
    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    data = externalize(add_weights_model(), "weights.bin").SerializeToString()
    np.testing.assert_array_equal(compile_onnx(data, base_dir=tmp_path).graph.initializers["w"], WEIGHTS)
    result = build_rtxir(data, tmp_path / "m.rtxir", base_dir=tmp_path)
    np.testing.assert_array_equal(result.model.graph.initializers["w"], WEIGHTS)


def test_a_path_reads_external_data_beside_it_unless_another_base_dir_is_named(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(WEIGHTS.tobytes())
    path = tmp_path / "model" / "m.onnx"
    onnx.save(externalize(add_weights_model(), "w.bin"), path)
    with pytest.raises(ModelError, match="initializer 'w'.*'w.bin' does not exist"):
        load_onnx(path)
    np.testing.assert_array_equal(load_onnx(path, base_dir=tmp_path / "weights").graph.initializers["w"], WEIGHTS)


def escapes(tmp_path) -> dict[str, str]:
    """Locations that lead out of ``tmp_path/model``, each to a real file."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(WEIGHTS.tobytes())
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "link.bin").symlink_to(secret)
    (tmp_path / "model" / "sub").mkdir()
    return {"..": "../secret.bin", "inner ..": "sub/../../secret.bin", "absolute": str(secret),
            "symlink": "link.bin"}


@pytest.mark.parametrize("form", WEIGHT_FORMS)
@pytest.mark.parametrize("escape", ["..", "inner ..", "absolute", "symlink"])
def test_external_data_outside_the_model_folder_is_refused_naming_the_tensor_and_file(tmp_path, form, escape):
    location = escapes(tmp_path)[escape]
    path = tmp_path / "model" / "m.onnx"
    onnx.save(externalize(WEIGHT_FORMS[form](), location), path)
    with pytest.raises(ModelError, match=f"{NAMED[form]}.*{location!r}") as info:
        load_onnx(path)
    assert "model's folder" in str(info.value)
    with pytest.raises(ModelError, match=f"{NAMED[form]}.*{location!r}"):  # the same rule for a named base_dir
        load_onnx(path.read_bytes(), base_dir=path.parent)


@pytest.mark.parametrize("entries, message", [
    ({"length": "999"}, "bytes 0..999 of the external file 'weights.bin', which has only 64"),
    ({"offset": "-4"}, "offset -4 is negative"),
    ({"offset": "four"}, "offset 'four' is not a number"),
])
def test_external_data_entries_that_do_not_fit_the_file_are_refused(tmp_path, entries, message):
    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    model = externalize(add_weights_model(), "weights.bin")
    tensor = weight_tensor(model)
    del tensor.external_data[1:]
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    with pytest.raises(ModelError, match=f"initializer 'w'.*{message}"):
        load_onnx(model, base_dir=tmp_path)


def test_the_command_line_reports_an_escaping_external_file_as_bad_input(tmp_path):
    path = tmp_path / "model" / "m.onnx"
    onnx.save(externalize(add_weights_model(), escapes(tmp_path)[".."]), path)
    result = subprocess.run([sys.executable, "-m", "rtxrt.cli", "aot", str(path), "-o", str(tmp_path / "m.rtxir")],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "initializer 'w'" in result.stderr and "'../secret.bin'" in result.stderr
    assert "internal error" not in result.stderr


# -- 3: negative dims -------------------------------------------------------------------------


def relu_model(x_shape, y_shape, value_info_shape=None) -> onnx.ModelProto:
    model = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
                       [("x", TensorProto.FLOAT, x_shape)], [("y", TensorProto.FLOAT, y_shape)])
    if value_info_shape is not None:
        model.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, value_info_shape))
    return model


@pytest.mark.parametrize("where, model", [
    ("x", relu_model([-3, 4], [None, 4])),
    ("y", relu_model([2, 4], [2, -2])),
    ("r", relu_model([2, 4], [2, 4], value_info_shape=[-5, 4])),
], ids=["input", "output", "value_info"])
def test_a_negative_dim_is_refused_naming_the_value_and_the_dim(where, model):
    with pytest.raises(ModelError, match=rf"value '{where}' declares dim -\d"):
        load_onnx(model)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # no GPU here: the reference backend runs
def test_a_dim_of_minus_one_means_unknown_and_takes_any_batch():
    model = relu_model([-1, 3, 224, 224], [-1, 3, 224, 224])
    assert load_onnx(model).graph.types["x"].shape == (None, 3, 224, 224)
    session = rtxrt.Session(model.SerializeToString(), fallback="cpu", progress=False)
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0))


# -- 4: tensors whose dims claim more data than they hold ---------------------------------------


def lying_tensor(name: str = "c") -> onnx.TensorProto:
    """Dims [1000, 1000] over 3 values."""
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    tensor.dims[:] = [1000, 1000]
    return tensor


def lying_raw_tensor(name: str = "c") -> onnx.TensorProto:
    tensor = numpy_helper.from_array(np.ones(3, np.float32), name)
    tensor.dims[:] = [1000, 1000]
    return tensor


def negative_dims_tensor(name: str = "c") -> onnx.TensorProto:
    """Dims [-1, 3] over 6 values: numpy would quietly take -1 as "whatever fits"."""
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [6], list(range(6)))
    tensor.dims[:] = [-1, 3]
    return tensor


def lying_sparse(name: str = "c") -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(lying_tensor(name), numpy_helper.from_array(np.array([0, 1, 2]), "idx"), [9])


def out_of_range_sparse(name: str = "c") -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(numpy_helper.from_array(np.ones(2, np.float32), name),
                                     numpy_helper.from_array(np.array([1, -1]), "idx"), [4])


def model_holding(kind: str, make) -> onnx.ModelProto:
    """y = Identity(c) where c is the lying tensor, held as ``kind``."""
    nodes = [helper.make_node("Identity", ["c"], ["y"], name="id")]
    model = make_model(nodes, [], [("y", TensorProto.FLOAT, None)])
    if kind == "initializer":
        model.graph.initializer.append(make())
    elif kind == "sparse initializer":
        model.graph.sparse_initializer.append(make())
    elif kind == "Constant node":
        attr = "sparse_value" if isinstance(make(), onnx.SparseTensorProto) else "value"
        model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], name="k", **{attr: make()}))
    else:  # a tensor attribute of another op
        model.graph.node.insert(0, helper.make_node("ConstantOfShape", ["shape"], ["c"], name="k", value=make()))
        model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "shape"))
    return model


@pytest.mark.parametrize("kind, make", [
    ("initializer", lying_tensor), ("initializer", lying_raw_tensor), ("initializer", negative_dims_tensor),
    ("Constant node", lying_tensor), ("Constant node", lying_raw_tensor), ("Constant node", negative_dims_tensor),
    ("Constant node", lying_sparse), ("Constant node", out_of_range_sparse),
    ("sparse initializer", lying_sparse), ("sparse initializer", out_of_range_sparse),
    ("ConstantOfShape node", lying_tensor),
])
def test_every_tensor_that_does_not_hold_what_its_dims_claim_is_a_model_error_naming_it(kind, make):
    named = {"initializer": "initializer 'c'", "sparse initializer": "sparse initializer 'c'",
             "Constant node": "Constant node 'k'", "ConstantOfShape node": "ConstantOfShape node 'k'"}[kind]
    with pytest.raises(ModelError, match=named):
        load_onnx(model_holding(kind, make))


def test_the_command_line_reports_a_lying_constant_as_bad_input(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model_holding("Constant node", lying_tensor), path)
    result = subprocess.run([sys.executable, "-m", "rtxrt.cli", "aot", str(path), "-o", str(tmp_path / "m.rtxir")],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "Constant node 'k'" in result.stderr and "[1000, 1000]" in result.stderr


# -- 5: every name defined once -----------------------------------------------------------------


def two_inputs_named_x() -> onnx.ModelProto:
    return make_model([helper.make_node("Add", ["x", "x"], ["y"])],
                      [("x", TensorProto.FLOAT, [4]), ("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4])])


def two_outputs_named_y() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"])],
                      [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4]), ("y", TensorProto.FLOAT, [4])])


def two_nodes_producing_y() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="first"), helper.make_node("Neg", ["x"], ["y"], name="second")],
                      [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4])])


def a_node_overwriting_input_x() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["x"], name="again"), helper.make_node("Neg", ["x"], ["y"])],
                      [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4])])


def a_node_overwriting_initializer_w() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["w"], name="again"), helper.make_node("Add", ["x", "w"], ["y"])],
                      [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4])], {"w": np.ones(4, np.float32)})


@pytest.mark.parametrize("make, message", [
    (two_inputs_named_x, "input 'x' is declared 2 times"),
    (two_outputs_named_y, "output 'y' is declared 2 times"),
    (two_nodes_producing_y, "Neg node 'second' produces 'y', which is already produced by Relu node 'first'"),
    (a_node_overwriting_input_x, "Relu node 'again' produces 'x', which is already a graph input"),
    (a_node_overwriting_initializer_w, "Relu node 'again' produces 'w', which is already an initializer"),
])
def test_a_name_defined_twice_is_refused_naming_it(make, message):
    with pytest.raises(ModelError, match=message):
        load_onnx(make())


def test_an_initializer_may_still_give_an_input_its_default():
    model = add_weights_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [16]))
    assert load_onnx(model).graph.inputs == ["x"]


def test_the_ir_checker_refuses_a_graph_input_listed_twice():
    with pytest.raises(GraphError, match="input 'x' is listed twice"):
        check_graph(Graph([], ["x", "x"], ["x"], {}, {}, "g"), outer=set())
