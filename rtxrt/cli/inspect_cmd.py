"""``rtxrt inspect model.rtxir``: format, inputs/outputs, op counts, precisions and sizes."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..format import read_header, read_rtxir
from ..ir.graph import Graph, Model, TensorType
from ..formatting import format_bytes, table


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show what a .rtxir file holds")
    p.add_argument("model", type=Path)
    p.add_argument("--nodes", action="store_true", help="also list every node with its input and output types")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    info = read_header(args.model)
    model = read_rtxir(args.model)
    graph = model.graph
    print(f"{args.model}: rtxir format {info.format_version[0]}.{info.format_version[1]}, "
          f"{format_bytes(info.file_size)}, ir hash {info.ir_hash[:16]}")
    print(f"  built by rtxrt {info.rtxrt_version} from {info.producer or 'an unknown producer'}; "
          f"options {info.options}")
    opsets = ", ".join(f"{domain or 'ai.onnx'} {version}" for domain, version in sorted(model.opsets.items()))
    print(f"  opsets: {opsets}")
    print(f"  sections: {', '.join(f'{k} {format_bytes(v)}' for k, v in info.sections.items())}")
    print("\ninputs:")
    for name in graph.inputs:
        print(f"  {name}: {_type(graph, name)}")
    print("outputs:")
    for name in graph.outputs:
        print(f"  {name}: {_type(graph, name)}")
    nested = sum(1 for _ in graph.walk()) - len(graph.nodes)
    print(f"\n{len(graph.nodes)} nodes" + (f" (+{nested} in subgraphs)" if nested else "") + ":")
    ops = Counter(node.op_type if not node.domain else f"{node.domain}::{node.op_type}" for node in graph.walk())
    print(table(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])), ("op", "count")))
    print("\nprecisions:")
    print(table(_precisions(model), ("dtype", "nodes computing in it", "weights", "weight bytes")))
    if args.nodes:
        print("\nnodes:")
        for node in graph.nodes:
            ins = ", ".join(f"{n}: {_type(graph, n)}" for n in node.inputs if n)
            outs = ", ".join(f"{n}: {_type(graph, n)}" for n in node.outputs if n)
            print(f"  {node.name} = {node.op_type}({ins}) -> {outs}")
    return 0


def _type(graph: Graph, name: str) -> str:
    t = graph.types.get(name)
    if t is None and name in graph.initializers:
        t = TensorType.of(graph.initializers[name])
    return str(t) if t else "?"


def _precisions(model: Model) -> list[tuple]:
    """Per element type: nodes whose first output has it, weights stored in it and their bytes."""
    graph = model.graph
    nodes: Counter = Counter()
    for node in graph.nodes:
        t = graph.types.get(node.outputs[0]) if node.outputs and node.outputs[0] else None
        if t is not None:
            nodes[t.dtype.short] += 1
    weights: Counter = Counter()
    weight_bytes: Counter = Counter()
    for array in graph.initializers.values():
        short = TensorType.of(array).dtype.short
        weights[short] += 1
        weight_bytes[short] += int(array.nbytes)
    kinds = sorted(set(nodes) | set(weights), key=lambda k: (-nodes[k], k))
    return [(k, nodes[k], weights[k], format_bytes(weight_bytes[k])) for k in kinds]
