"""``rtxrt`` entry point: parses the subcommand and turns errors into one-line messages.

Exit codes: 0 success, 1 bad input (model, file or inputs; the message says which),
2 bad command line, 3 internal error (a bug: rerun with RTXRT_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import RtxrtError
from . import (
    aot_cmd,
    bench_cmd,
    cache_cmd,
    demo_cmd,
    doctor_cmd,
    inspect_cmd,
    jit_cmd,
    refit_cmd,
    run_cmd,
)

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
COMMANDS = (demo_cmd, aot_cmd, refit_cmd, inspect_cmd, run_cmd, jit_cmd, bench_cmd, cache_cmd, doctor_cmd)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="rtxrt", description="Two-stage (AOT + JIT) inference runtime.")
    parser.add_argument("--version", action="version", version=f"rtxrt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or EXIT_OK
    except RtxrtError as exc:
        print(f"rtxrt {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"rtxrt {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in rtxrt, not the user's input
        if os.environ.get("RTXRT_DEBUG"):
            raise
        print(f"rtxrt {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set RTXRT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL
