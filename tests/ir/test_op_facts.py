"""An operator is declared once, with its schema: its facts (precision class, layouts,
pointwise or not, exact inputs) are complete and consistent, and every layer that keeps
something per operator (reference kernels, GPU lowerings, the elementwise code generator)
covers the operators the facts say it must."""
from __future__ import annotations

import pytest

from rtxrt.aot.precision_policy import answers_to, known_ops, op_class
from rtxrt.backends.cuda.ops.lowering import LOWERINGS
from rtxrt.backends.reference.kernel import KERNELS, all_kernels
from rtxrt.ir.graph import Node
from rtxrt.ir.ops import Layout, OpFacts, Precision, all_schemas, elementwise_ops, get_schema
from rtxrt.ir.ops.registry import SCHEMAS, attribute_default, register
from rtxrt.op_table import OpTable, op_key

SCHEMA_ITEMS = sorted(all_schemas().items())


@pytest.mark.parametrize("key, schema", SCHEMA_ITEMS, ids=[op_key(op, d) for (d, op), _ in SCHEMA_ITEMS])
def test_every_operator_declares_consistent_facts(key, schema):
    facts = schema.facts
    assert isinstance(facts, OpFacts)
    assert isinstance(facts.precision, Precision) and isinstance(facts.layout, Layout)
    if facts.elementwise:  # pointwise ops take any layout and live in the default domain
        assert facts.layout is Layout.ANY and schema.domain == ""
    if facts.tensor_core or facts.layout is Layout.ANCHOR:
        assert facts.precision is Precision.GEMM
    assert all(0 <= i < schema.max_inputs for i in facts.exact_inputs)
    assert all(get_schema(op) is not None for op in facts.fused_from)
    if facts.layout is Layout.CHANNEL_AXIS:  # the layout pass reads the axis
        assert "axis" in schema.signature(21).attributes


def test_every_operator_has_a_reference_kernel_and_every_kernel_a_schema():
    assert set(all_schemas()) == set(all_kernels())


def test_every_gpu_lowering_is_for_a_known_operator():
    assert set(LOWERINGS) - set(all_schemas()) == set()


def test_every_elementwise_operator_has_a_gpu_lowering_and_a_generated_kernel():
    from rtxrt.backends.cuda.ops import elementwise_source

    for op in elementwise_ops():
        assert ("", op) in LOWERINGS, op
        assert op in elementwise_source._OPS, op  # the emitter of its CUDA expression


def test_the_layout_and_precision_passes_read_the_schemas():
    assert {"Add", "BitShift", "BitwiseAnd", "Relu", "Cast"} <= elementwise_ops()
    assert op_class(Node("Exp", ["x"], ["y"])) is Precision.WIDE
    assert op_class(Node("Conv", ["x", "w"], ["y"])) is Precision.GEMM
    assert op_class(Node("NoSuchOp", ["x"], ["y"])) is Precision.OPAQUE
    fused = Node("FusedConv", ["x", "w"], ["y"], domain="rtxrt", name="conv1")
    assert answers_to(fused) == {"conv1", "FusedConv", "rtxrt::FusedConv", "Conv"}
    assert {"Conv", "rtxrt::FusedMatMul", "LayerNormalization"} <= known_ops()


def test_attribute_defaults_come_from_the_schema():
    assert attribute_default(Node("LeakyRelu", ["x"], ["y"]), "alpha", 17) == pytest.approx(0.01)
    assert attribute_default(Node("Softmax", ["x"], ["y"]), "axis", 11) == 1
    assert attribute_default(Node("Softmax", ["x"], ["y"]), "axis", 13) == -1
    fused = Node("FusedMatMul", ["a", "b"], ["y"], domain="rtxrt")
    assert attribute_default(fused, "activation", 17) == "none"
    assert attribute_default(Node("Relu", ["x"], ["y"]), "no_such_attribute", 17) is None


def test_a_kernel_reads_a_left_out_attribute_as_its_schema_default():
    kernel = KERNELS.get("LeakyRelu")(Node("LeakyRelu", ["x"], ["y"]), 17, lambda *a: [])
    assert kernel.attr("alpha") == pytest.approx(0.01)
    assert kernel.attr("alpha", None) is None  # an explicit default wins


def test_an_operator_cannot_be_registered_twice():
    with pytest.raises(RuntimeError, match="two operator schemas for Relu"):
        register("Relu", lambda ctx: [], facts=OpFacts(Precision.PLAIN))
    assert SCHEMAS.get("Relu") is get_schema("Relu", "ai.onnx")


def test_a_table_imports_every_module_of_its_package_when_first_read():
    table: OpTable[str] = OpTable("test entry", "tests.ir")
    table.add("Thing", "x", domain="ai.onnx")
    assert table.get("Thing") == "x" and ("", "Thing") in table
    assert "tests.ir.test_rewrite" in __import__("sys").modules


def test_view_operators_are_aliased_and_lowered_as_views():
    from rtxrt.backends.cuda.ops.data_movement import lower_view
    from rtxrt.ir.ops import view_ops

    assert view_ops() == {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
    assert all(LOWERINGS.get(op) is lower_view for op in view_ops())
