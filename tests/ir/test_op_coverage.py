"""Every operator the IR accepts runs on the reference backend, and the issue's list is covered."""
from __future__ import annotations

from rtxrt.backends.reference.kernel import all_kernels
from rtxrt.ir.ops import all_schemas

# The foundation issue's operator list (CNNs, transformers, UNets).
REQUIRED = """
Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Sigmoid Tanh HardSigmoid HardSwish Gelu
Erf Softplus Elu Clip Add Sub Mul Div Pow Equal Less Greater LessOrEqual GreaterOrEqual MatMul Gemm
Softmax LogSoftmax LayerNormalization InstanceNormalization GroupNormalization ReduceSum ReduceMean
ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare
MaxPool AveragePool GlobalAveragePool GlobalMaxPool Reshape Transpose Flatten Squeeze Unsqueeze
Concat Split Slice Gather GatherElements Expand Tile Pad Resize Upsample Where Cast Shape
ConstantOfShape Range Identity Dropout Einsum TopK ArgMax ArgMin CumSum DepthToSpace SpaceToDepth
QuantizeLinear DequantizeLinear Constant
""".split()


def test_every_schema_has_a_reference_kernel_and_every_kernel_a_schema():
    assert set(all_schemas()) == set(all_kernels())


def test_the_foundation_operator_list_is_supported():
    supported = {op for domain, op in all_schemas() if domain == ""}
    assert not set(REQUIRED) - supported
