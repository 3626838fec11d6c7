"""Dead-code elimination: nodes whose outputs nobody reads (ONNX inference ops have no side
effects), initializers nobody reads, and optional outputs nobody reads."""
from __future__ import annotations

from ...ir.graph import Model, Node
from ...ir.ops import VARIADIC, get_schema
from ...ir.rewrite import constants, node_reads, remove_nodes
from ..options import AotOptions
from ..pass_result import PassResult

# Before opset 14, BatchNormalization runs in training mode when its extra outputs are there.
_BATCHNORM_TRAINING_ATTR_SINCE = 14


def eliminate_dead_code(model: Model, options: AotOptions) -> PassResult:
    graph = model.graph
    result = PassResult()
    live = set(graph.outputs)
    dead: list[Node] = []
    for node in reversed(graph.nodes):
        if not any(name in live for name in node.outputs):
            dead.append(node)
            continue
        live.update(node_reads(node))
        if _drop_unused_optional_outputs(node, live, model.opset):
            result.add("removed unused optional output")
    remove_nodes(graph, dead)
    if dead:
        result.add("removed unused node", len(dead))
    # An initializer that is also a graph input stays: it is the default of that input.
    unused = [name for name in constants(graph) if name not in live]
    for name in unused:
        del graph.initializers[name]
    if unused:
        result.add("removed unused initializer", len(unused))
    return result


def _drop_unused_optional_outputs(node: Node, live: set[str], opset: int) -> bool:
    """Name unused optional outputs "" (trailing ones are dropped); True if any was."""
    schema = get_schema(node.op_type, node.domain)
    if schema is None or schema.max_outputs == VARIADIC:  # Split, If, Loop: every output counts
        return False
    if node.op_type == "BatchNormalization" and node.domain == "" and opset < _BATCHNORM_TRAINING_ATTR_SINCE:
        return False
    outputs = [name if i < schema.min_outputs or name in live else "" for i, name in enumerate(node.outputs)]
    while len(outputs) > schema.min_outputs and not outputs[-1]:
        outputs.pop()
    if outputs == node.outputs:
        return False
    node.outputs = outputs
    return True
