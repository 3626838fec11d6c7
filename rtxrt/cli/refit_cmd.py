"""``rtxrt refit model.rtxir --weights W -o full.rtxir``: attach weights to a weightless .rtxir."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..display import format_bytes
from .arguments import check_writable


def add_parser(sub) -> None:
    p = sub.add_parser("refit", help="attach weights to a weightless .rtxir (from `rtxrt aot --weightless`)")
    p.add_argument("model", type=Path, help="the weightless .rtxir file")
    p.add_argument("--weights", type=Path, required=True,
                   help="the original .onnx, or a .safetensors file keyed by the original initializer names")
    p.add_argument("-o", "--output", type=Path, required=True, help="the full .rtxir file to write")
    p.add_argument("--allow-unused", action="store_true",
                   help="warn about, rather than refuse, weights the model does not have")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..aot.refit import refit

    check_writable(args.output)
    model = refit(args.model, args.weights, args.output, allow_unused=args.allow_unused)
    print(f"wrote {args.output} ({format_bytes(args.output.stat().st_size)}): "
          f"{len(model.graph.initializers)} initializers rebuilt from {args.weights}")
    return 0
