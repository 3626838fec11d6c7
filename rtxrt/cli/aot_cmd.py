"""``rtxrt aot model.onnx -o model.rtxir``: compile an ONNX model into a portable .rtxir."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..aot import AotOptions, build_rtxir
from ..aot.options import PRECISIONS
from ..errors import InputError
from ..formatting import format_bytes


def add_parser(sub) -> None:
    p = sub.add_parser("aot", help="compile an ONNX model into a portable .rtxir file (no GPU needed)")
    p.add_argument("model", type=Path, help="the .onnx file (external data beside it is read too)")
    p.add_argument("-o", "--output", type=Path, help="the .rtxir file to write (default: MODEL.rtxir)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="target precision; numerically sensitive ops keep fp32 statistics (default fp32)")
    p.add_argument("--keep-fp32", action="append", default=[], metavar="NODE_OR_OP",
                   help="pin a node (by name) or every node of an op type to fp32; repeat or comma-separate")
    p.add_argument("--weightless", action="store_true", help="write the graph without weights (attach them with refit)")
    p.add_argument("--no-optimize", action="store_true", help="import and check only, no passes")
    p.add_argument("--report", type=Path, help="also write the summary as JSON to this file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or args.model.with_suffix(".rtxir")
    keep = tuple(item for arg in args.keep_fp32 for item in arg.split(",") if item)
    try:
        options = AotOptions(precision=args.precision, keep_fp32=keep, optimize=not args.no_optimize,
                             weightless=args.weightless)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    result = build_rtxir(args.model, output, options)
    report = result.report
    print(f"wrote {output} ({format_bytes(output.stat().st_size)}) in {report.seconds:.2f} s, "
          f"opset {result.model.opset}, precision {options.precision}")
    print(report.summary())
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
