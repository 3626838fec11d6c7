"""Rewrites that the ONNX version converter misses when it lifts old models to opset 13."""
from __future__ import annotations

import onnx
from onnx import helper


def rewrite_coerced_hardmax(proto: onnx.ModelProto) -> None:
    """Before opset 13, Hardmax(axis=k) flattened its input to 2-D at k and took the max of
    each row; from 13 it works along one axis. The converter copies the node unchanged, so
    spell the old meaning out: Flatten(axis=k) → Hardmax(axis=1) → Reshape(to the input's shape)."""
    nodes = []
    for node in proto.graph.node:
        if node.op_type != "Hardmax" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        x, y, tag = node.input[0], node.output[0], node.name or node.output[0]
        nodes += [
            helper.make_node("Shape", [x], [f"{tag}/shape"], name=f"{tag}/shape"),
            helper.make_node("Flatten", [x], [f"{tag}/2d"], name=f"{tag}/flatten", axis=axis),
            helper.make_node("Hardmax", [f"{tag}/2d"], [f"{tag}/max"], name=node.name, axis=1),
            helper.make_node("Reshape", [f"{tag}/max", f"{tag}/shape"], [y], name=f"{tag}/reshape"),
        ]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def restore_legacy_resize_defaults(proto: onnx.ModelProto) -> None:
    """Upsample and Resize before opset 11 sampled at ``x_out / scale`` and took the floor for
    nearest; the converter's Resize-11+ would fall back to half_pixel and round_prefer_floor.
    Every Resize in a converted pre-11 model came from such a node, so pin the old behaviour."""
    for node in proto.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
            continue
        present = {a.name for a in node.attribute}
        if "coordinate_transformation_mode" not in present:
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        if "nearest_mode" not in present:
            node.attribute.append(helper.make_attribute("nearest_mode", "floor"))
