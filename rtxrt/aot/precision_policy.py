"""The precision policy, as data: which class each operator falls in, and what each
``--precision`` mode makes of each class. rtxrt.aot.passes.precision applies it.

Classes (``OpClass``):
- GEMM: tensor-core math (convolutions, matrix products, attention). Computes in the mode's
  ``gemm`` type and always accumulates in fp32 (attention's softmax included).
- PLAIN: elementwise math and data movement. Computes in the mode's ``plain`` type, the type
  its values are stored in, so a chain of them never converts.
- STATS: statistics that lose accuracy when summed or compared in fp16: softmax, the
  normalizations, means, maxima, orderings (ties appear when rounded). Computes in fp32; the
  result is back in a normal range, so it is stored narrow (unless it reads a WIDE result).
- WIDE: results that may leave the fp16 range or amplify rounding (sums, products, exp, pow,
  cumulative ops, losses). Computes in fp32 and keeps its result in fp32; elementwise nodes
  reading such a result stay in fp32 too (an exp/log/pow chain stays fp32 up to the next
  GEMM or statistic).
- OPAQUE: control flow and quantization, whose bodies and scales follow their own logical
  types: computed in fp32, inputs and outputs kept as they are.
- NONE: reads no float data (only shapes) or holds a constant: no annotation.

Quantization later: an int8 or fp8 mode is one more ``Mode`` whose ``storage`` is the
quantized type; the values it narrows get ``Storage.scale``/``zero_point`` naming calibration
tensors, and GEMM nodes compute in it while the other classes compute as ``plain`` says. The
classes do not change.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..ir.dtypes import DType
from ..ir.graph import Node


class OpClass(enum.Enum):
    GEMM = "gemm"
    PLAIN = "plain"
    STATS = "stats"
    WIDE = "wide"
    OPAQUE = "opaque"
    NONE = "none"


@dataclass(frozen=True)
class Mode:
    """What one ``--precision`` value means."""

    # The type float32 activations and weights are stored in on the device (None: float32).
    storage: DType | None
    # Compute type of GEMM-class nodes and of PLAIN-class nodes.
    gemm: str
    plain: str


MODES: dict[str, Mode] = {
    "fp32": Mode(None, "fp32", "fp32"),
    "tf32": Mode(None, "tf32", "fp32"),
    "fp16": Mode(DType.FLOAT16, "fp16", "fp16"),
    "bf16": Mode(DType.BFLOAT16, "bf16", "bf16"),
    # The fastest each op allows. On tensor-core GPUs that is fp16 for GEMM and elementwise
    # nodes (bf16 is no faster and keeps fewer mantissa bits) and fp32 for the sensitive
    # classes, which is fp16's table; int8/fp8 will join here where calibration scales exist.
    "best": Mode(DType.FLOAT16, "fp16", "fp16"),
}

# Ops of the default domain by name; other domains as "domain::op" (the report's spelling).
_CLASSES: dict[OpClass, str] = {
    OpClass.GEMM: """
        Conv ConvTranspose DeformConv Einsum Gemm MatMul Attention
        rtxrt::FusedConv rtxrt::FusedMatMul
    """,
    OpClass.PLAIN: """
        Abs Acos Acosh Add And Asin Asinh Atan Atanh AveragePool BitCast BitShift BitwiseAnd
        BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Cast CastLike Ceil Celu CenterCropPad
        Clip Col2Im Compress Concat ConstantOfShape Cos DepthToSpace Div Dropout Elu Equal Erf
        Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Greater GreaterOrEqual
        GridSample HammingWindow HannWindow HardSigmoid HardSwish Identity IsInf IsNaN
        LeakyRelu Less LessOrEqual Max MaxPool MaxUnpool Mean Min Mish Mod Mul Neg Not OneHot
        Or Pad PRelu Reciprocal Relu Reshape Resize ReverseSequence RoiAlign Round Scatter
        ScatterElements ScatterND Selu Shrink Sigmoid Sign Sin Slice Softsign SpaceToDepth
        Split Sqrt Squeeze Sub Sum Swish SwiGLU Tan Tanh TensorScatter ThresholdedRelu Tile
        Transpose Trilu Unsqueeze Upsample Where Xor AffineGrid RotaryEmbedding
    """,
    OpClass.STATS: """
        Softmax LogSoftmax Hardmax LayerNormalization GroupNormalization InstanceNormalization
        RMSNormalization BatchNormalization LpNormalization MeanVarianceNormalization LRN
        ReduceMean ReduceMax ReduceMin ReduceL2 ReduceLogSum ReduceLogSumExp
        ArgMax ArgMin TopK GlobalAveragePool GlobalMaxPool GlobalLpPool LpPool
        Log Softplus RNN GRU LSTM LinearAttention CausalConvWithState
    """,
    OpClass.WIDE: """
        Exp Pow Sinh Cosh ReduceSum ReduceSumSquare ReduceProd ReduceL1 CumSum CumProd Det
        DFT STFT MelWeightMatrix NegativeLogLikelihoodLoss SoftmaxCrossEntropyLoss
        TfIdfVectorizer Range
    """,
    OpClass.OPAQUE: """
        If Loop Scan NonMaxSuppression Unique NonZero QuantizeLinear DequantizeLinear
        DynamicQuantizeLinear QLinearConv QLinearMatMul ConvInteger MatMulInteger
    """,
    OpClass.NONE: "Shape Size Constant",
}
OP_CLASSES: dict[str, OpClass] = {op: cls for cls, ops in _CLASSES.items() for op in ops.split()}

# Inputs that are parameters of the computation rather than data: sizes, scales,
# coordinates, bounds. They are kept in float32, and so is everything computed into them
# (an index computed in fp16 changes shapes, not just digits).
EXACT_INPUTS: dict[str, tuple[int, ...]] = {
    "Resize": (1, 2),  # roi, scales
    "Upsample": (1,),  # scales
    "Range": (0, 1, 2),
    "OneHot": (1,),  # depth
    "Dropout": (1,),  # ratio
    "RoiAlign": (1,),  # boxes
    "GridSample": (1,),  # sampling coordinates
    "AffineGrid": (0,),  # theta
    "MelWeightMatrix": (3, 4),  # band edges in Hz
}

# A fused node also answers to the op types it was made from, so that ``--keep-fp32 Conv``
# still pins a Conv after fusion turned it into rtxrt::FusedConv.
FUSED_FROM: dict[str, tuple[str, ...]] = {
    "rtxrt::FusedConv": ("Conv",),
    "rtxrt::FusedMatMul": ("MatMul", "Gemm"),
}


# Every op name ``--keep-fp32`` may give, in the model or not: fusion makes ops the imported
# model may lack (a LayerNormalization from its pieces, rtxrt::FusedConv from a Conv).
KNOWN_OPS: frozenset[str] = frozenset(
    name for key in (*OP_CLASSES, "rtxrt::Elementwise") for name in (key, key.rpartition("::")[2])
)


def op_key(node: Node) -> str:
    """The node's op as the tables spell it: "Conv", "rtxrt::FusedConv"."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


# The more sensitive of two classes a fused chain's ops fall in wins.
_STRICTNESS = (OpClass.NONE, OpClass.PLAIN, OpClass.STATS, OpClass.WIDE, OpClass.OPAQUE)


def op_class(node: Node) -> OpClass:
    """The node's class; an op the table does not know is OPAQUE (left in fp32). A fused
    elementwise chain (rtxrt::Elementwise) is as sensitive as the most sensitive op of its
    body: a chain holding an Exp is WIDE, as the Exp alone would be."""
    key = op_key(node)
    if key == "rtxrt::Elementwise":
        return max((op_class(n) for n in node.attrs["body"].nodes), key=_STRICTNESS.index, default=OpClass.PLAIN)
    return OP_CLASSES.get(key, OpClass.OPAQUE)


def answers_to(node: Node) -> set[str]:
    """The names ``--keep-fp32`` may pin ``node`` by: its name, its op and the ops it fuses."""
    key = op_key(node)
    return {node.name, node.op_type, key, *FUSED_FROM.get(key, ())} - {""}
