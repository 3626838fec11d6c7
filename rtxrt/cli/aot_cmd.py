"""``rtxrt aot model.onnx -o model.rtxir``: compile an ONNX model into a portable .rtxir."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..aot import AotOptions, build_rtxir
from .report import format_bytes


def add_parser(sub) -> None:
    p = sub.add_parser("aot", help="compile an ONNX model into a portable .rtxir file (no GPU needed)")
    p.add_argument("model", type=Path, help="the .onnx file (external data beside it is read too)")
    p.add_argument("-o", "--output", type=Path, help="the .rtxir file to write (default: MODEL.rtxir)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or args.model.with_suffix(".rtxir")
    start = time.perf_counter()
    model = build_rtxir(args.model, output, AotOptions())
    seconds = time.perf_counter() - start
    print(
        f"wrote {output} ({format_bytes(output.stat().st_size)}): {len(model.graph.nodes)} nodes, "
        f"{format_bytes(model.graph.weight_bytes())} of weights, opset {model.opset}, {seconds:.2f} s"
    )
    return 0
