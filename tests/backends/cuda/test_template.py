"""The one templating style of generated CUDA (rtxrt/backends/cuda/codegen/template.py): a
template is plain CUDA with ``${name}`` placeholders, and ``render`` fills every one of them
or refuses. A kernel's function is ``${kernel}``, rendered as KERNEL_NAME, and
``KernelSource.named`` names it after a hash of the source."""
from __future__ import annotations

import pytest

from rtxrt.backends.cuda.plan.program import BufferRole
from rtxrt.ir.dtypes import DType
from rtxrt.ir.graph import Node, TensorType
from rtxrt.backends.cuda.codegen import CodegenError
from rtxrt.backends.cuda.codegen.kernel_source import KERNEL_NAME, KernelArg, KernelSource, LaunchPolicy
from rtxrt.backends.cuda.codegen.template import placeholders, render
from rtxrt.backends.cuda.ops.conv_implicit_source import IMPLICIT_TILES, ImplicitGemmTactic
from rtxrt.backends.cuda.ops.conv_source import conv_plan
from rtxrt.backends.cuda.ops.gemm_simt_source import simt_gemm_kernel
from rtxrt.backends.cuda.ops.gemm_source import GemmProblem
from rtxrt.backends.cuda.ops.normalization_source import normalization_kernel

from .test_attention_codegen import CASES as ATTENTION_CASES

F32, F16 = DType.FLOAT32, DType.FLOAT16

KERNEL = r"""// ${comment}
extern "C" __global__ void ${kernel}(const float* __restrict__ x, float* __restrict__ y) {
  for (int i = threadIdx.x; i < ${n}; i += blockDim.x) { y[i] = ${op}; }
}
"""


# ---------------------------------------------------------------- render

def test_render_fills_every_placeholder_and_leaves_the_braces_alone():
    source = render(KERNEL, comment="double", kernel="twice", n=67, op="2.0f * x[i]")
    assert source == (
        "// double\n"
        'extern "C" __global__ void twice(const float* __restrict__ x, float* __restrict__ y) {\n'
        "  for (int i = threadIdx.x; i < 67; i += blockDim.x) { y[i] = 2.0f * x[i]; }\n"
        "}\n")


def test_a_placeholder_used_twice_gets_the_same_value_twice():
    assert render("${t}* a; ${t}* b;", t="float") == "float* a; float* b;"


def test_values_are_inserted_as_they_are_not_rendered_again():
    assert render("x = ${value};", value="{a, b}") == "x = {a, b};"


def test_placeholders_lists_a_templates_names():
    assert placeholders(KERNEL) == {"comment", "kernel", "n", "op"}
    assert placeholders("no placeholders {}") == set()


def test_a_placeholder_without_a_value_is_refused_by_name():
    with pytest.raises(CodegenError, match=r"placeholders without values \['op'\]"):
        render(KERNEL, comment="c", kernel="k", n=1)


def test_a_value_without_a_placeholder_is_refused_by_name():
    with pytest.raises(CodegenError, match=r"values without placeholders \['extra'\]"):
        render(KERNEL, comment="c", kernel="k", n=1, op="x[i]", extra="oops")


def test_a_dollar_that_opens_no_placeholder_is_refused():
    for template in ("cost $5", "${ spaced }", "$name", "${unclosed"):
        with pytest.raises(CodegenError, match="opens no placeholder"):
            render(template)


@pytest.mark.parametrize("value", [0.5, True, None, [1, 2]], ids=repr)
def test_values_are_code_or_integers(value):
    """A float or bool would be written as Python prints it (0.5 is a double in CUDA, True is
    not C at all): those go through ctypes_map.literal or int() first."""
    with pytest.raises(CodegenError, match="values are code"):
        render("constexpr int N = ${n};", n=value)


def test_integers_are_written_in_decimal():
    assert render("${a} ${b}", a=0, b=-(2**40)) == "0 -1099511627776"


def test_a_value_holding_a_placeholder_is_refused():
    """A template passed on unrendered would reach the compiler with its placeholders."""
    with pytest.raises(CodegenError, match=r"value of body holds a '\$'"):
        render("{ ${body} }", body="y = ${op};")


# ---------------------------------------------------------------- naming

def _copy_kernel(source: str) -> KernelSource:
    args = (KernelArg("x", BufferRole.IN, 0, F32, (67,)), KernelArg("y", BufferRole.OUT, 0, F32, (67,)))
    return KernelSource.named("rtx_test_", source, LaunchPolicy(67), args)


def test_a_rendered_kernel_is_named_after_a_hash_of_its_source():
    source = render(KERNEL, comment="copy", kernel=KERNEL_NAME, n=67, op="x[i]")
    kernel = _copy_kernel(source)
    assert kernel.name.startswith("rtx_test_") and kernel.name == _copy_kernel(source).name
    assert kernel.source == source.replace(KERNEL_NAME, kernel.name)
    other = _copy_kernel(render(KERNEL, comment="copy", kernel=KERNEL_NAME, n=68, op="x[i]"))
    assert other.name != kernel.name


def test_a_source_must_name_its_kernel_exactly_once():
    for source in ("no kernel here", f"{KERNEL_NAME} {KERNEL_NAME}"):
        with pytest.raises(ValueError, match="names"):
            _copy_kernel(source)


# ---------------------------------------------------------------- the generators

def _templated_kernels() -> dict[str, KernelSource]:
    """A kernel from each template of the generators."""
    norm = Node("GroupNormalization", ["x", "scale", "bias"], ["y"], {"num_groups": 4}, name="gn")
    pads = {"pads": [1, 1, 1, 1]}
    nhwc = ((1, 64, 8, 8), (64, 64, 3, 3), pads, F16)
    return {
        "simt gemm": simt_gemm_kernel(GemmProblem(70, 50, 30, dtype=F32, bias=True, activation="relu",
                                                  residual="before_activation")),
        "attention simt": ATTENTION_CASES[0].kernel(),
        "attention mma": ATTENTION_CASES[1].kernel(),
        "im2col vectors": conv_plan(*nhwc, "NHWC", bias=True).steps[0].kernel,
        "im2col taps": conv_plan((1, 3, 9, 9), (8, 3, 3, 3), pads, F16, "NCHW").steps[0].kernel,
        "depthwise": conv_plan((1, 8, 9, 9), (8, 1, 3, 3), {**pads, "group": 8}, F32, bias=True).steps[0].kernel,
        "implicit gemm": conv_plan(*nhwc, "NHWC", tactic=ImplicitGemmTactic(IMPLICIT_TILES[0])).steps[0].kernel,
        "group norm nhwc": normalization_kernel(norm, [TensorType(F32, (1, 16, 8, 8)), TensorType(F32, (16,)),
                                                      TensorType(F32, (16,))], F16, "NHWC"),
    }


@pytest.mark.parametrize("what, kernel", _templated_kernels().items())
def test_generated_sources_are_filled_in_and_name_their_kernel(what, kernel):
    assert "$" not in kernel.source and KERNEL_NAME not in kernel.source
    assert f" {kernel.name}(" in kernel.source
