"""The activation table (rtxrt/ir/activations.py) and its two interpreters: numpy (the
reference backend's ONNX activation ops and fused epilogue) and CUDA C (the elementwise
kernels and the fused epilogues).

Each fused activation computes, in the reference epilogue, what the ONNX op it stands for
computes, to the bit, on ordinary values, extremes, infinities, signed zeros and NaN;
parameters left out take the table's defaults everywhere; the C expressions are the ones the
kernels have always compiled (parentheses only where C needs them, the compute type's
literals and libm functions); unknown activations are refused."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.activation_c import CExpr, CMaths, activation_c
from rtxrt.backends.cuda.codegen.epilogue import activation_functions
from rtxrt.backends.cuda.ops.elementwise_source import elementwise_kernel
from rtxrt.backends.reference.activation_numpy import NumpyMaths
from rtxrt.backends.reference.kernel import find_kernel
from rtxrt.backends.reference.ops.fused import epilogue
from rtxrt.ir import activations as table
from rtxrt.ir.activations import ACTIVATIONS, ONNX_ACTIVATIONS, Activation, Maths, activation_params
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType

F32, F64, I32 = DType.FLOAT32, DType.FLOAT64, DType.INT32

VALUES = np.concatenate([
    [-np.inf, -1e30, -700.0, -100.0, -20.0, -6.0, -3.5, -3.0, -2.5, -1.0, -0.5, -1e-8, -1e-40, -0.0, 0.0,
     1e-40, 1e-8, 0.5, 1.0, 2.5, 3.0, 3.5, 6.0, 20.0, 89.0, 100.0, 710.0, 1e30, np.inf, np.nan, -np.nan],
    np.random.default_rng(0).normal(0.0, 5.0, 200),
])

# fused activation -> (ONNX op, its attributes, the fused params in the table's order), with
# parameters left out and given
CASES = [
    ("none", "Identity", {}, []),
    ("relu", "Relu", {}, []),
    ("leaky_relu", "LeakyRelu", {}, []),
    ("leaky_relu", "LeakyRelu", {"alpha": 0.3}, [0.3]),
    ("leaky_relu", "LeakyRelu", {"alpha": -2.0}, [-2.0]),
    ("clip", "Clip", {"min": -1.5, "max": 0.75}, [-1.5, 0.75]),
    ("clip", "Clip", {"min": 3.0, "max": 1.0}, [3.0, 1.0]),
    ("clip", "Clip", {"min": 0.0}, [0.0]),
    ("sigmoid", "Sigmoid", {}, []),
    ("tanh", "Tanh", {}, []),
    ("hard_sigmoid", "HardSigmoid", {}, []),
    ("hard_sigmoid", "HardSigmoid", {"alpha": 0.25}, [0.25]),
    ("hard_sigmoid", "HardSigmoid", {"alpha": -1.0, "beta": -0.0}, [-1.0, -0.0]),
    ("hard_swish", "HardSwish", {}, []),
    ("silu", "Swish", {}, []),
    ("gelu", "Gelu", {}, []),
    ("gelu_tanh", "Gelu", {"approximate": "tanh"}, []),
]


def run_kernel(op_type: str, *inputs, domain: str = "", opset: int = 21, **attrs) -> np.ndarray:
    names = [f"x{i}" if x is not None else "" for i, x in enumerate(inputs)]
    node = Node(op_type, names, ["y"], attrs, name="n", domain=domain)
    return find_kernel(op_type, domain)(node, opset, None).run(*inputs)


def onnx_op(op_type: str, x: np.ndarray, attrs: dict) -> np.ndarray:
    if op_type != "Clip":
        return run_kernel(op_type, x, **attrs)
    bounds = [None if attrs.get(k) is None else np.array(attrs[k], x.dtype) for k in ("min", "max")]
    return run_kernel("Clip", x, *bounds)


def fused(x: np.ndarray, activation: str, params: list[float]) -> np.ndarray:
    """The reference fused epilogue of a FusedMatMul whose product is ``x``."""
    node = Node("FusedMatMul", ["a", "b"], ["y"], {"activation": activation, "activation_params": params},
                name="n", domain="rtxrt")
    kernel = find_kernel("FusedMatMul", "rtxrt")(node, 1, None)
    return epilogue(kernel, x, None).astype(x.dtype)


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)
    numbers = ~np.isnan(a.astype(np.float64))
    assert np.array_equal(np.signbit(a[numbers]), np.signbit(b[numbers]))  # signed zeros too


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("activation, op_type, attrs, params", CASES, ids=lambda v: str(v))
def test_the_fused_epilogue_computes_what_the_onnx_op_computes(activation, op_type, attrs, params, dtype):
    with np.errstate(over="ignore"):
        x = VALUES.astype(dtype)
    assert_same_bits(fused(x, activation, params), onnx_op(op_type, x, attrs))


def test_every_activation_and_onnx_activation_is_checked():
    assert {c[0] for c in CASES} == set(ACTIVATIONS)
    assert {c[1] for c in CASES} >= set(ONNX_ACTIVATIONS) - {"Swish"} | {"Gelu", "Clip"}


def test_swish_is_x_times_sigmoid_of_alpha_x():
    x = VALUES.astype(np.float32)
    with np.errstate(all="ignore"):
        expected = x * (np.float32(1) / (np.float32(1) + np.exp(-(np.float32(1.5) * x))))
    assert_same_bits(run_kernel("Swish", x, alpha=1.5), expected)


def test_integer_relu_and_clip_stay_integer():
    x = np.array([-(2**63), -5, 0, 7, 2**62 + 1, 2**63 - 1], np.int64)
    assert run_kernel("Relu", x).tolist() == [0, 0, 0, 7, 2**62 + 1, 2**63 - 1]
    assert run_kernel("Clip", x, None, np.array(2**62 + 1, np.int64)).tolist() == [
        -(2**63), -5, 0, 7, 2**62 + 1, 2**62 + 1]


# ---------------------------------------------------------------- defaults

def test_parameters_left_out_take_the_table_defaults_everywhere(monkeypatch):
    """Change the table's defaults: every consumer follows (none restates them)."""
    for name, op_type, defaults in (("leaky_relu", "LeakyRelu", (("alpha", 0.375),)),
                                    ("hard_sigmoid", "HardSigmoid", (("alpha", 0.125), ("beta", 0.25)))):
        changed = Activation(defaults, ACTIVATIONS[name].formula)
        monkeypatch.setitem(ACTIVATIONS, name, changed)
        monkeypatch.setitem(ONNX_ACTIVATIONS, op_type, changed)
    assert activation_params("leaky_relu") == {"alpha": 0.375}
    x = np.array([-2.0, 4.0], np.float32)
    assert run_kernel("LeakyRelu", x).tolist() == [-0.75, 4.0]
    assert fused(x, "leaky_relu", []).tolist() == [-0.75, 4.0]
    assert run_kernel("HardSigmoid", x).tolist() == [0.0, 0.75]
    assert fused(x, "hard_sigmoid", []).tolist() == [0.0, 0.75]
    literal = "(0x1.8000000000000p-2f)"  # 0.375
    assert literal in activation_functions("leaky_relu", activation_params("leaky_relu"))
    kernel = elementwise_kernel(Node("LeakyRelu", ["x0"], ["y"], {}, name="l"), [TensorType(DType.FLOAT32, (4,))])
    assert literal in kernel.source


def test_the_table_defaults_are_onnx_s():
    assert activation_params("leaky_relu") == {"alpha": 0.01}
    assert activation_params("hard_sigmoid") == {"alpha": 0.2, "beta": 0.5}
    assert activation_params("clip") == {"min": -math.inf, "max": math.inf}
    assert table.SWISH.params == (("alpha", 1.0),)


# ---------------------------------------------------------------- the interpreters

def maths_operations() -> set[str]:
    return {n for n, f in inspect.getmembers(Maths, inspect.isfunction) if not n.startswith("_")}


@pytest.mark.parametrize("interpreter", [NumpyMaths, CMaths])
def test_each_interpreter_implements_the_whole_maths_interface(interpreter):
    assert maths_operations() <= set(dir(interpreter))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_prints_as_c_with_the_compute_type_s_libm(name):
    single = activation_c(ACTIVATIONS[name], "v0", F32, activation_params(name))
    double = activation_c(ACTIVATIONS[name], "v0", F64, activation_params(name))
    assert "v0" in single and single.count("(") == single.count(")")
    for function in ("exp", "tanh", "erfc"):
        assert (f"{function}(" in double) == (f"{function}f(" in single)
        assert f"{function}f(" not in double


def test_c_expressions_take_the_compute_type_and_only_the_parentheses_c_needs():
    one = "(0x1.0000000000000p+0f)"
    assert activation_c(ACTIVATIONS["sigmoid"], "x", F32, {}) == f"({one} / ({one} + expf(-x)))"
    assert activation_c(ACTIVATIONS["sigmoid"], "x", F64, {}) == \
        "((0x1.0000000000000p+0) / ((0x1.0000000000000p+0) + exp(-x)))"
    assert activation_c(ACTIVATIONS["gelu_tanh"], "x", F32, {}) == (
        f"((0x1.0000000000000p-1f) * x * ({one} + "
        "tanhf((0x1.9884540000000p-1f) * (x + (0x1.6e4e260000000p-5f) * (x * x * x)))))")
    assert activation_c(ACTIVATIONS["gelu"], "x", F32, {}) == \
        "((0x1.0000000000000p-1f) * x * erfcf(-(x / (0x1.6a09e60000000p+0f))))"
    assert activation_c(table.SWISH, "v", F32, {"alpha": 1.5}) == \
        f"(v * ({one} / ({one} + expf(-((0x1.8000000000000p+0f) * v)))))"
    assert activation_c(ACTIVATIONS["leaky_relu"], "x", F32, {"alpha": 0.5}) == \
        "(x < (0x0.0p+0f) ? x * (0x1.0000000000000p-1f) : x)"
    assert activation_c(ACTIVATIONS["hard_sigmoid"], "x", F32, {"alpha": 0.5, "beta": -0.5}) == \
        "rtx_min(rtx_max((0x1.0000000000000p-1f) * x + (-0x1.0000000000000p-1f), (0x0.0p+0f)), " + one + ")"


def test_c_integers_relu_and_clip_bounds_that_are_names_or_left_out():
    assert activation_c(ACTIVATIONS["relu"], "v0", I32, {}) == "rtx_max(v0, (int)0)"
    clip = ACTIVATIONS["clip"]
    assert activation_c(clip, "v0", I32, {"min": "v1", "max": "v2"}) == "rtx_min(rtx_max(v0, v1), v2)"
    assert activation_c(clip, "v0", F32, {"min": None, "max": "v2"}) == "rtx_min(v0, v2)"
    assert activation_c(clip, "v0", F32, {"min": None, "max": None}) == "v0"


def test_a_negated_negation_is_not_a_decrement():
    m = CMaths(F32)
    assert m.neg(m.neg(CExpr("x"))).text == "-(-x)"


def test_unknown_activations_are_refused():
    with pytest.raises(CodegenError, match="unknown activation 'swishy'"):
        activation_functions("swishy", {})
    with pytest.raises(ValueError, match="unknown activation"):
        activation_params("swishy")
    with pytest.raises(CodegenError, match="Gelu with approximate='erf'"):
        elementwise_kernel(Node("Gelu", ["x0"], ["y"], {"approximate": "erf"}, name="g"),
                           [TensorType(DType.FLOAT32, (4,))])
    assert table.onnx_activation("Softplus", {}) is None
