"""``rtxrt aot model.onnx -o model.rtxir``: compile an ONNX model into a portable .rtxir."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..aot import AotOptions, build_rtxir
from ..aot.options import PRECISIONS
from ..aot.precompile import PrecompileOptions
from ..errors import InputError
from ..display import format_bytes
from ..backends.cuda.device import SUPPORTED_ARCHS
from .arguments import UsageError, check_writable, profile, shapes


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
    p.add_argument("--precompile", metavar="ARCHS",
                   help="also embed the kernels compiled for these GPU archs, comma-separated (any of "
                        f"{','.join(SUPPORTED_ARCHS)}): a GPU of one of them compiles nothing on first launch")
    p.add_argument("--shapes", type=shapes,
                   help="the input shapes to precompile at, e.g. input:1x3x224x224,mask:1x128 "
                        "(default: the model's static shapes); other shapes compile on first use")
    p.add_argument("--profile", type=profile, metavar="NAME:MIN:OPT:MAX,...",
                   help="shape range of inputs with symbolic dims, e.g. input_ids:1x8:1x128:8x512; sessions "
                        "specialize to the opt shapes at load and refuse shapes outside the range")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for path in filter(None, (args.output, args.report)):  # the default output sits beside the model
        check_writable(path)
    output = args.output or args.model.with_suffix(".rtxir")
    keep = tuple(item for arg in args.keep_fp32 for item in arg.split(",") if item)
    try:
        options = AotOptions(precision=args.precision, keep_fp32=keep, optimize=not args.no_optimize,
                             weightless=args.weightless)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    precompile = None
    if args.precompile is not None:
        archs = tuple(a.strip() for a in args.precompile.split(",") if a.strip())
        precompile = PrecompileOptions(archs, args.shapes or {})
    elif args.shapes is not None:
        raise UsageError("--shapes is for --precompile: name the GPU archs too, e.g. --precompile sm_86,sm_89")
    if precompile is not None and not precompile.shapes and args.profile:
        precompile = PrecompileOptions(precompile.archs, {n: r[1] for n, r in args.profile.items()})
    result = build_rtxir(args.model, output, options, precompile_for=precompile, profile=args.profile)
    report = result.report
    print(f"wrote {output} ({format_bytes(output.stat().st_size)}) in {report.seconds:.2f} s, "
          f"opset {result.model.opset}, precision {options.precision}")
    print(report.summary())
    for arch in result.precompiled:
        print(f"precompiled {arch.summary()}")
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
