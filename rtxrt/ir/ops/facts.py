"""What the passes and backends need to know of an operator beyond its types, declared with
its schema (``register(..., facts=...)``) and read from there by every layer: how precision
modes treat it, which layouts its kernels take, whether it is pointwise, which inputs are
parameters that must stay exact."""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Precision(enum.Enum):
    """How ``--precision`` modes treat an operator (rtxrt.aot.precision_policy applies them).

    - GEMM: tensor-core math (convolutions, matrix products, attention). Computes in the mode's
      ``gemm`` type and always accumulates in fp32 (attention's softmax included).
    - PLAIN: elementwise math and data movement. Computes in the mode's ``plain`` type, the type
      its values are stored in, so a chain of them never converts.
    - STATS: statistics that lose accuracy when summed or compared in fp16: softmax, the
      normalizations, means, maxima, orderings (ties appear when rounded). Computes in fp32;
      the result is back in a normal range, so it is stored narrow (unless it reads a WIDE one).
    - WIDE: results that may leave the fp16 range or amplify rounding (sums, products, exp,
      pow, cumulative ops, losses). Computes in fp32 and keeps its result in fp32; elementwise
      nodes reading such a result stay in fp32 too.
    - OPAQUE: control flow and quantization, whose bodies and scales follow their own logical
      types: computed in fp32, inputs and outputs kept as they are.
    - NONE: reads no float data (only shapes) or holds a constant: no annotation.
    """

    GEMM = "gemm"
    PLAIN = "plain"
    STATS = "stats"
    WIDE = "wide"
    OPAQUE = "opaque"
    NONE = "none"


class Layout(enum.Enum):
    """Which memory layouts an operator's kernels take (rtxrt.aot.passes.layout reads it)."""

    LOGICAL = "logical"  # the logical layout only (NCHW for images)
    ANY = "any"  # pointwise on broadcast operands: any layout, as long as the operands agree
    SPATIAL = "spatial"  # a 4-D op with kernels for both NCHW and NHWC
    ANCHOR = "anchor"  # a convolution: its NHWC kernels are what makes a region channels-last
    CHANNEL_AXIS = "channel_axis"  # both layouts when its ``axis`` attribute is the channel axis
    PIXELS = "pixels"  # both layouts when it resizes only H and W


@dataclass(frozen=True)
class OpFacts:
    precision: Precision
    layout: Layout = Layout.LOGICAL
    # Computed element by element on broadcast operands: an rtxrt::Elementwise body may hold it
    # and the GPU backend generates its kernel from the elementwise emitters.
    elementwise: bool = False
    # Inputs that are parameters rather than data (sizes, scales, coordinates, bounds): kept
    # in float32, with everything computed into them (an index computed in fp16 changes shapes).
    exact_inputs: tuple[int, ...] = ()
    # Its GPU kernels take every float input in the node's compute type (tensor cores): a node
    # computing in fp16 casts a wider input rather than running a float32 kernel.
    tensor_core: bool = False
    # The op types a fused operator was made from, which ``--keep-fp32`` may name it by.
    fused_from: tuple[str, ...] = ()
    # Its output is its input's bytes under another shape: memory plans alias the two, the GPU
    # copies nothing, and chains of such ops collapse.
    view: bool = False
    # Computed as its ONNX function body: the frontend expands it when a model is imported
    # (onnx's own definition), so every backend runs the ops of the body.
    function_body: bool = False

    def but(self, **changes) -> OpFacts:
        return replace(self, **changes)


# The common cases, named once.
POINTWISE = OpFacts(Precision.PLAIN, Layout.ANY, elementwise=True)
PLAIN = OpFacts(Precision.PLAIN)  # data movement, indexing, pooling: results in the range of the inputs
SHAPE_ONLY = OpFacts(Precision.NONE)  # reads shapes or makes constants, no float data
STATS = OpFacts(Precision.STATS)
WIDE = OpFacts(Precision.WIDE)
OPAQUE = OpFacts(Precision.OPAQUE)
GEMM = OpFacts(Precision.GEMM, tensor_core=True)
VIEW = OpFacts(Precision.PLAIN, view=True)

# Operators whose results differ from run to run. rtxrt has no schema for them yet, but passes
# must never fold, share or precompute one of them.
NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                                  "Multinomial", "Bernoulli"})
