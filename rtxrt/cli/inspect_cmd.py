"""``rtxrt inspect model.rtxir``: format, inputs/outputs, op counts, precisions and sizes.
``--plan sm_86``: which nodes of a model (.rtxir or .onnx) would run on the GPU of that arch,
planned without a GPU, and why the others would run on the host."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ..backends.cuda.device import SUPPORTED_ARCHS
from ..display import format_bytes, table
from ..errors import InputError
from ..format import read_cubin_index, read_header, read_rtxir
from ..ir.checker import check_and_type
from ..ir.graph import Graph, Model, TensorType
from .arguments import shapes


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show what a .rtxir file holds, or (--plan) where its nodes would run")
    p.add_argument("model", type=Path, help="the .rtxir file to show (with --plan: an .onnx file too)")
    p.add_argument("--nodes", action="store_true", help="also list every node with its input and output types")
    p.add_argument("--plan", metavar="ARCH", choices=SUPPORTED_ARCHS,
                   help=f"plan the model for this GPU arch ({', '.join(SUPPORTED_ARCHS)}; no GPU needed) and "
                        "list the nodes that would run on the host, with the reason, and the GPU/host segments")
    p.add_argument("--shapes", type=shapes, default={},
                   help="with --plan: input shapes, e.g. input:1x3x224x224 (symbolic dims default to 1)")
    p.add_argument("--json", action="store_true", help="with --plan: print the report as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.plan:
        return _run_plan(args)
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
    _print_cubins(args.model)
    if graph.stripped:  # a weightless file (rtxrt aot --weightless)
        from math import prod

        left_out = sum(prod(t.shape) * t.dtype.itemsize for t in graph.stripped.values())
        print(f"  weightless: {len(graph.stripped)} initializers ({format_bytes(left_out)}) left out; "
              "attach them with `rtxrt refit`")
    print("\ninputs:")
    for name in graph.inputs:
        print(f"  {name}: {_type(graph, name)}")
    print("outputs:")
    for name in graph.outputs:
        print(f"  {name}: {_type(graph, name)}")
    print(f"\n{len(graph.nodes)} nodes:")
    print(_op_table(graph.nodes))
    inner = [n for node in graph.nodes for sub in node.subgraphs() for n in sub.walk()]
    if inner:  # bodies of fused elementwise nodes and control flow, counted apart
        print(f"\n{len(inner)} nodes inside subgraphs (fused bodies, If/Loop/Scan):")
        print(_op_table(inner))
    print("\nprecisions:")
    print(table(_precisions(model), ("logical dtype", "nodes producing it", "weights", "weight bytes")))
    _print_annotations(graph)
    if args.nodes:
        print("\nnodes:")
        for node in graph.nodes:
            ins = ", ".join(f"{n}: {_type(graph, n)}" for n in node.inputs if n)
            outs = ", ".join(f"{n}: {_type(graph, n)}{_stored(graph, n)}" for n in node.outputs if n)
            precision = f"  [{node.precision.compute}, accumulate {node.precision.accumulate}]" if node.precision else ""
            print(f"  {node.name} = {node.op_type}({ins}) -> {outs}{precision}")
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    from ..backends.cuda.plan.coverage import plan_coverage
    from ..runtime.session import load_model_and_bytes

    model, _ = load_model_and_bytes(args.model)
    check_and_type(model)
    graph = model.graph
    inputs = [n for n in graph.inputs if n not in graph.initializers]
    unknown = sorted(set(args.shapes) - set(inputs))
    if unknown:
        raise InputError(f"--shapes names unknown input(s) {unknown}; the model's inputs are {inputs}")
    shapes = {}
    for name in inputs:
        declared = graph.types[name].shape if graph.types.get(name) is not None else None
        given = args.shapes.get(name)
        if given is None and declared is None:
            raise InputError(f"input {name!r} has no declared shape; give it with --shapes {name}:DxD...")
        if given is not None and declared is not None and len(given) != len(declared):
            raise InputError(f"--shapes {name}: rank {len(given)}, the model says {list(declared)}")
        shapes[name] = given or tuple(d if isinstance(d, int) else 1 for d in declared)
    report = plan_coverage(model, shapes, args.plan)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return 0
    print(f"{args.model} planned for {args.plan} at {', '.join(f'{n}:{_dims(s)}' for n, s in shapes.items())}:")
    print(f"  {report.nodes} nodes: {report.gpu_nodes} on the GPU, {report.plan_time_nodes} computed at plan time, "
          f"{len(report.host_nodes)} on the host")
    if report.host_nodes:
        print("\non the host:")
        for host in report.host_nodes:
            print(f"  {host.node} ({host.op}): {host.why}")
    print(f"\n{len(report.segments)} segment(s): " + ", ".join(f"{s.kind} {len(s.nodes)}" for s in report.segments))
    return 0


def _dims(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _print_cubins(path: Path) -> None:
    """The machine code the file embeds (rtxrt aot --precompile): for which GPUs, at which
    shapes, whether each arch's cubins are bound to this file's graph, and when they run."""
    index = read_cubin_index(path)
    if not index.sizes:
        return
    archs = sorted(index.sizes, key=lambda arch: int(arch[3:].rstrip("af")))
    kernels = ", ".join(f"{arch} {len(index.sizes[arch])} ({format_bytes(sum(index.sizes[arch].values()))})"
                        for arch in archs)
    shapes = "; ".join(", ".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in each.items())
                       for each in index.shapes)
    print(f"  precompiled kernels (GPU machine code): {kernels}; at input shapes {shapes or '-'}")
    print("    they run only when asked (--trust-embedded-kernels, Session(embedded_kernels=True)), and only if bound")
    for arch in archs:
        problem = index.problems[arch]
        print(f"    {arch}: " + (f"NOT USABLE: these cubins {problem}" if problem else "bound to this file's graph"))


def _print_annotations(graph: Graph) -> None:
    """What --precision and the layout pass decided: compute precisions and device storage."""
    if not graph.storage and all(node.precision is None for node in graph.nodes):
        print("no precision or layout annotations: every node computes in its logical types")
        return
    computes = Counter((n.precision.compute, n.precision.accumulate) if n.precision else ("-", "-") for n in graph.nodes)
    rows = [(c, a, k) for (c, a), k in sorted(computes.items(), key=lambda kv: (-kv[1], kv[0]))]
    print("\ncompute (- : as the logical types say):")
    print(table(rows, ("compute", "accumulate", "nodes")))
    values: Counter = Counter()
    weights: Counter = Counter()
    weight_bytes: Counter = Counter()
    for name, st in graph.storage.items():
        kind = (st.dtype.short, st.layout or "-")
        if name in graph.initializers:
            weights[kind] += 1
            weight_bytes[kind] += int(graph.initializers[name].size) * st.dtype.itemsize
        else:
            values[kind] += 1
    kinds = sorted(set(values) | set(weights))
    print("\ndevice storage (values stored unlike their logical type; layout - : logical):")
    print(table([(d, layout, values[(d, layout)], weights[(d, layout)], format_bytes(weight_bytes[(d, layout)]))
                 for d, layout in kinds], ("dtype", "layout", "values", "weights", "weight bytes")))


def _stored(graph: Graph, name: str) -> str:
    st = graph.storage.get(name)
    if st is None:
        return ""
    return f" stored {st.dtype.short}" + (f" {st.layout}" if st.layout else "")


def _op_table(nodes) -> str:
    ops = Counter(node.op_type if not node.domain else f"{node.domain}::{node.op_type}" for node in nodes)
    return table(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])), ("op", "count"))


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
