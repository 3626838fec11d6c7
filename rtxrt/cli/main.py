"""``rtxrt`` entry point: parses the subcommand and turns errors into one-line messages.

Exit codes: 0 success, 1 bad input (model, file or inputs; the message says which),
2 bad command line, 3 internal error (a bug: rerun with RTXRT_DEBUG=1 for the traceback),
130 interrupted, 141 output pipe closed early (``rtxrt inspect m.rtxir | head``), as a
process killed by SIGPIPE reports it.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import RtxrtError
from ..backends.cuda.device import NoGpuError
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
from .arguments import UsageError

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141
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
    prefix = f"rtxrt {args.command}"
    try:
        with _warnings_as_lines(prefix):
            code = args.handler(args) or EXIT_OK
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoGpuError as exc:
        print(f"{prefix}: error: {args.command} needs an NVIDIA GPU: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RtxrtError as exc:
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"{prefix}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug in rtxrt, not the user's input
        if os.environ.get("RTXRT_DEBUG"):
            raise
        print(f"{prefix}: internal error: {type(exc).__name__}: {exc} "
              "(set RTXRT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


@contextmanager
def _warnings_as_lines(prefix: str) -> Iterator[None]:
    """Show each warning as one line, "rtxrt run: warning: ...": the user ran a command, so
    the source line that warned means nothing to them."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).removeprefix("rtxrt: ")  # the line starts with "rtxrt ..." already
        print(f"{prefix}: warning: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.showwarning = show
        yield


def _silence_stdout() -> None:
    """After EPIPE, point stdout at devnull so that Python's flush at exit does not fail again
    (the recipe of the ``signal`` module's documentation, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
