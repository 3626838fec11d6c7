"""``keep_fp32`` (``rtxrt aot --keep-fp32``) entries are node names of the model as imported
or op types: a typo is refused before the passes run, with close matches, not silently pinned
to nothing."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from rtxrt.aot import aot_compile
from rtxrt.aot.options import AotOptions
from rtxrt.errors import InputError
from tests.helpers import make_model

F = TensorProto.FLOAT


def conv_relu_softmax():
    """conv -> relu -> flatten -> matmul -> softmax; fusion turns conv+relu into one FusedConv
    named "conv" and keeps no node named "relu"."""
    rng = np.random.default_rng(0)
    return make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "m"], ["p"], name="mm"),
         helper.make_node("Softmax", ["p"], ["y"], name="softmax")],
        [("x", F, [1, 3, 4, 4])], [("y", F, [1, 2])],
        {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
         "m": rng.standard_normal((64, 2)).astype(np.float32)},
        opset=20,
    )


def compile_keeping(*keep: str):
    return aot_compile(conv_relu_softmax(), AotOptions(precision="fp16", keep_fp32=keep))


@pytest.mark.parametrize("entry", ["relu", "mm", "Conv", "Softmax", "FusedConv", "rtxrt::FusedConv",
                                   "LayerNormalization"])
def test_node_names_and_op_types_are_accepted(entry):
    """Names of imported nodes (even fused away), their op types, and op types fusion makes."""
    compile_keeping(entry)


@pytest.mark.parametrize("entry, suggestion", [("Convv", "Conv"), ("softmax_", "softmax"), ("RELU", "Relu"),
                                               ("MatMull", "MatMul")])
def test_a_typo_is_refused_with_close_matches(entry, suggestion):
    with pytest.raises(InputError, match=rf"--keep-fp32 '{entry}': .*did you mean .*'{suggestion}'"):
        compile_keeping("mm", entry)


def test_a_name_like_nothing_is_refused_without_suggestions():
    with pytest.raises(InputError, match=r"--keep-fp32 'zzzzzz': the model has no node of that name and no op of "
                                         r"that type$"):
        compile_keeping("zzzzzz")


def test_the_check_holds_whatever_the_precision():
    with pytest.raises(InputError, match="Convv"):
        aot_compile(conv_relu_softmax(), AotOptions(precision="fp32", keep_fp32=("Convv",)))
