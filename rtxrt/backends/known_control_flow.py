"""Control flow decided when the plan is made becomes plain nodes: an ``If`` whose condition
is known (a comparison of shapes, a flag in the weights) is replaced by the branch it takes,
a ``Loop`` whose trip count is known (and whose body never stops it early) is unrolled, one
renamed copy of its body per iteration, and so is a ``Scan`` (its length is the scan axis of
a static shape). Their nodes are then planned like any others (on
the GPU, their shape arithmetic at plan time) instead of the If or Loop running on the host
as one opaque node."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..ir.graph import Graph, Model, Node

MAX_UNROLLED_NODES = 4096  # a Loop is unrolled only while its copies stay under this many nodes


def inline_known_control_flow(model: Model, known: Mapping[str, np.ndarray]) -> bool:
    """Replace, in place, each If and Loop of the main graph that ``known`` decides; True if
    any was replaced."""
    graph = model.graph
    changed = False
    nodes: list[Node] = []
    for index, node in enumerate(graph.nodes):
        inlined = None
        if node.op_type == "If" and not node.domain:
            inlined = _inline_if(graph, node, index, known)
        elif node.op_type == "Loop" and not node.domain:
            inlined = _unroll_loop(graph, node, index, known)
        elif node.op_type == "Scan" and not node.domain and model.opset >= 9:  # (Scan-8 batches differently)
            inlined = _unroll_scan(graph, node, index)
        if inlined is None:
            nodes.append(node)
        else:
            nodes += inlined
            changed = True
    graph.nodes = nodes
    return changed


def _inline_if(graph: Graph, node: Node, index: int, known: Mapping[str, np.ndarray]) -> list[Node] | None:
    """The taken branch's nodes, renamed apart from the main graph, then one Identity per
    output; None where the condition is unknown or the branch cannot be lifted."""
    cond = known.get(node.inputs[0]) if node.inputs else None
    if cond is None or np.size(cond) != 1:
        return None
    branch = node.attrs["then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"]
    if not isinstance(branch, Graph) or branch.inputs or not _liftable(branch):
        return None
    prefix = f"{node.name or f'If_{index}'}/"
    rename = _lift(graph, branch, prefix, {})
    nodes = _renamed_nodes(branch, rename, prefix)
    for out, inner in zip(node.outputs, branch.outputs):
        if out:
            nodes.append(Node("Identity", [rename.get(inner, inner)], [out], name=f"{prefix}output {out}"))
    return nodes


def _unroll_loop(graph: Graph, node: Node, index: int, known: Mapping[str, np.ndarray]) -> list[Node] | None:
    """The body once per iteration, each copy's carried values read from the last copy's,
    its scan outputs stacked at the end; None where the trip count is unknown, the body may
    stop early, or the copies would be too many."""
    body = node.attrs.get("body")
    trips = known.get(node.inputs[0]) if node.inputs and node.inputs[0] else None
    if not isinstance(body, Graph) or trips is None or np.size(trips) != 1 or not _liftable(body):
        return None
    count = int(np.asarray(trips).reshape(-1)[0])
    carried = len(node.inputs) - 2
    if count < 1 or count * max(len(body.nodes), 1) > MAX_UNROLLED_NODES or not _runs_every_trip(node, body, known):
        return None
    prefix = f"{node.name or f'Loop_{index}'}/"
    values = list(node.inputs[2:])  # the carried values as the next copy reads them
    scans: list[list[str]] = [[] for _ in body.outputs[1 + carried:]]
    nodes: list[Node] = []
    for i in range(count):
        step = f"{prefix}{i}/"
        iteration, cond = f"{step}iteration", f"{step}condition"
        graph.initializers[iteration] = np.array(i, np.int64)
        graph.initializers[cond] = np.array(True)
        inputs = dict(zip(body.inputs, [iteration, cond, *values]))
        rename = _lift(graph, body, step, inputs)
        nodes += _renamed_nodes(body, rename, step)
        values = [rename.get(v, v) for v in body.outputs[1:1 + carried]]
        for j, scanned in enumerate(body.outputs[1 + carried:]):
            axis = f"{step}axis"
            graph.initializers.setdefault(axis, np.array([0], np.int64))
            stacked = f"{step}scan {j}"
            nodes.append(Node("Unsqueeze", [rename.get(scanned, scanned), axis], [stacked], name=f"{step}stack {j}"))
            scans[j].append(stacked)
    finals = node.outputs[:carried]
    nodes += [Node("Identity", [v], [out], name=f"{prefix}output {out}") for v, out in zip(values, finals) if out]
    for j, out in enumerate(node.outputs[carried:]):
        if out:
            nodes.append(Node("Concat", scans[j], [out], {"axis": 0}, name=f"{prefix}output {out}"))
    return nodes


def _unroll_scan(graph: Graph, node: Node, index: int) -> list[Node] | None:
    """The body once per step of the scan axis (static in a specialized model): each copy
    reads one slice of every scan input (Gather) and the states the last copy made; the scan
    outputs are stacked along their axes in their directions. None where a length is not
    static or the copies would be too many."""
    body = node.attrs.get("body")
    if not isinstance(body, Graph) or not _liftable(body):
        return None
    scans = int(node.attrs.get("num_scan_inputs", 0))
    states, sequences = node.inputs[:len(node.inputs) - scans], node.inputs[len(node.inputs) - scans:]
    in_axes = _padded(node.attrs.get("scan_input_axes"), scans)
    in_directions = _padded(node.attrs.get("scan_input_directions"), scans)
    lengths, axes = set(), []
    for name, axis in zip(sequences, in_axes):
        t = graph.types.get(name)
        if t is None or not t.is_static:
            return None
        axes.append(axis % len(t.shape))
        lengths.add(t.shape[axes[-1]])
    count = lengths.pop() if len(lengths) == 1 else 0
    if count < 1 or count * max(len(body.nodes), 1) > MAX_UNROLLED_NODES:
        return None
    scanned_names = body.outputs[len(states):]
    out_axes = []
    for name, axis in zip(scanned_names, _padded(node.attrs.get("scan_output_axes"), len(scanned_names))):
        t = body.types.get(name)
        if axis < 0 and (t is None or t.shape is None):
            return None  # a negative axis needs the rank of what the body scans out
        out_axes.append(axis % (len(t.shape) + 1) if axis < 0 else axis)
    prefix = f"{node.name or f'Scan_{index}'}/"
    values, scanned = list(states), [[] for _ in scanned_names]
    nodes: list[Node] = []
    for t in range(count):
        step = f"{prefix}{t}/"
        slices = []
        for k, (name, axis, direction) in enumerate(zip(sequences, axes, in_directions)):
            at = f"{step}at {k}"
            graph.initializers[at] = np.array(count - 1 - t if direction else t, np.int64)
            slices.append(f"{step}slice {k}")
            nodes.append(Node("Gather", [name, at], [slices[-1]], {"axis": axis}, name=f"{step}slice {k}"))
        rename = _lift(graph, body, step, dict(zip(body.inputs, [*values, *slices])))
        nodes += _renamed_nodes(body, rename, step)
        values = [rename.get(v, v) for v in body.outputs[:len(states)]]
        for j, name in enumerate(scanned_names):
            scanned[j].append(rename.get(name, name))
    nodes += [Node("Identity", [v], [out], name=f"{prefix}output {out}")
              for v, out in zip(values, node.outputs[:len(states)]) if out]
    out_directions = _padded(node.attrs.get("scan_output_directions"), len(scanned_names))
    for j, out in enumerate(node.outputs[len(states):]):
        if not out:
            continue
        axis = out_axes[j]
        where = f"{prefix}stack axis {j}"
        graph.initializers[where] = np.array([axis], np.int64)
        parts = []
        for t, value in enumerate(scanned[j][::-1] if out_directions[j] else scanned[j]):
            parts.append(f"{prefix}{t}/stacked {j}")
            nodes.append(Node("Unsqueeze", [value, where], [parts[-1]], name=f"{prefix}{t}/stack {j}"))
        nodes.append(Node("Concat", parts, [out], {"axis": axis}, name=f"{prefix}output {out}"))
    return nodes


def _padded(values, count: int) -> list[int]:
    return [int(v) for v in (values or [])] + [0] * (count - len(values or []))


def _runs_every_trip(node: Node, body: Graph, known: Mapping[str, np.ndarray]) -> bool:
    """The Loop's condition is absent or known true, and the body passes it on unchanged or
    returns a constant true: the trip count alone decides how often the body runs."""
    if len(node.inputs) > 1 and node.inputs[1]:
        cond = known.get(node.inputs[1])
        if cond is None or not bool(np.asarray(cond).reshape(-1)[0]):
            return False
    out = body.outputs[0]
    if out == body.inputs[1]:
        return True
    if out in body.initializers:
        return bool(np.asarray(body.initializers[out]).reshape(-1)[0])
    producer = next((n for n in body.nodes if out in n.outputs), None)
    return producer is not None and producer.op_type == "Identity" and producer.inputs[0] == body.inputs[1]


def _liftable(body: Graph) -> bool:
    """No subgraph nested in ``body`` reads a value ``body`` defines (renaming those would
    reach into it)."""
    defined = set(body.initializers) | set(body.inputs) | {o for n in body.nodes for o in n.outputs if o}
    return not any(sub.outer_reads() & defined for n in body.nodes for sub in n.subgraphs())


def _lift(graph: Graph, body: Graph, prefix: str, bound: Mapping[str, str]) -> dict[str, str]:
    """Names for ``body``'s values in ``graph``: its inputs as ``bound``, what it defines
    under ``prefix`` (its constants and storage annotations copied over)."""
    rename = dict(bound)
    defined = set(body.initializers) | {o for n in body.nodes for o in n.outputs if o}
    for name in defined:
        rename[name] = prefix + name
        if name in body.initializers:
            graph.initializers[prefix + name] = body.initializers[name]
        if name in body.storage:
            graph.storage[prefix + name] = body.storage[name]
    return rename


def _renamed_nodes(body: Graph, rename: Mapping[str, str], prefix: str) -> list[Node]:
    return [Node(n.op_type, [rename.get(i, i) for i in n.inputs], [rename.get(o, o) for o in n.outputs],
                 dict(n.attrs), prefix + n.name if n.name else "", n.domain, n.precision) for n in body.nodes]
