"""fuse_conv: Conv + bias Add + activation + residual Add → one rtxrt::FusedConv.

Every Conv of the main graph becomes a FusedConv, with whatever of its epilogue (see
epilogue.py: the bias varies along the channel axis, 1) can join it, so the JIT has one
convolution op to generate.
"""
from __future__ import annotations

from ...ir.graph import Graph, Model, Node
from ...ir.ops.conv import sliding_window
from ...ir.rewrite import GraphIndex, NameGenerator, value_type
from ..options import AotOptions
from ..pass_result import PassResult
from .epilogue import bias_input, fuse_producers, match_epilogue, replace_with_fused


def _conv_attrs(graph: Graph, conv: Node) -> dict:
    """The Conv's attributes with kernel_shape, strides, dilations and group spelled out and
    auto_pad resolved into pads where the input's spatial size is known."""
    attrs = dict(conv.attrs)
    attrs["group"] = int(attrs.get("group", 1))
    x, w = value_type(graph, conv.inputs[0]), value_type(graph, conv.inputs[1])
    kernel = attrs.get("kernel_shape")
    if not kernel and w is not None and w.shape is not None:
        kernel = w.shape[2:]
    if x is None or x.shape is None or not kernel or not all(isinstance(k, int) for k in kernel):
        return attrs
    window = sliding_window(attrs, x.shape[2:], kernel)
    attrs.update(kernel_shape=list(kernel), strides=list(window.strides), dilations=list(window.dilations))
    if window.pads is not None:
        attrs["pads"] = list(window.pads)
        attrs.pop("auto_pad", None)
    return attrs


def _fuse(graph: Graph, index: GraphIndex, fresh: NameGenerator, conv: Node, opset: int) -> str | None:
    out = value_type(graph, conv.outputs[0])
    if out is None or not out.dtype.is_float:
        return None
    own = conv.inputs[2] if len(conv.inputs) > 2 else ""
    own_value = index.constant(own) if own else None
    ep = match_epilogue(graph, index, conv.outputs[0], 1, opset, take_bias=not own or own_value is not None)
    bias = own
    if ep.bias is not None:
        parts = [ep.bias] + ([(own, own_value)] if own else [])
        bias = bias_input(graph, fresh, parts, out, conv.name or conv.outputs[0])
    return replace_with_fused(graph, conv, "FusedConv", _conv_attrs(graph, conv), bias, ep)


def fuse_conv(model: Model, options: AotOptions) -> PassResult:
    return fuse_producers(model, ("Conv",), _fuse)
