"""Command-line argument checks shared by every subcommand.

A malformed value is argparse's own error (exit 2): the ``type=`` functions here raise
``argparse.ArgumentTypeError``, which argparse reports with the usage line. Checks that need
several arguments together raise ``UsageError`` (also exit 2). Output paths are checked before
the slow part, so that a typo in ``-o`` does not cost a whole build.
"""
from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path


class UsageError(Exception):
    """Arguments that parse one by one but do not go together (exit 2)."""


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, iteration counts)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (warm-up runs, device indices)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def dim(text: str) -> tuple[str, int]:
    """``"batch=4"`` → ("batch", 4): the size of one symbolic dim."""
    name, sep, value = text.partition("=")
    if not name or not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=SIZE, e.g. batch=4")
    return name, int(value)


def shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input:1x3x224x224,mask:1x128"`` (trtexec's form) → {"input": (1, 3, 224, 224), ...}."""
    parsed: dict[str, tuple[int, ...]] = {}
    for item in filter(None, text.split(",")):
        name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            shape = None
        if not sep or not name or shape is None or any(d < 0 for d in shape):
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME:DxDxD, e.g. input:1x3x224x224")
        parsed[name] = shape
    return parsed


def profile(text: str) -> dict[str, list[tuple[int, ...]]]:
    """``"input_ids:1x8:1x128:8x512,mask:1x8:1x128:8x512"`` → {name: [min, opt, max]}."""
    parsed = {}
    for item in filter(None, text.split(",")):
        name, *ranges = item.split(":")
        try:
            dims = [tuple(int(d) for d in r.split("x")) for r in ranges]
        except ValueError:
            dims = []
        if not name or len(dims) != 3:
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME:MIN:OPT:MAX, e.g. input_ids:1x8:1x128:8x512")
        parsed[name] = dims
    return parsed


def check_writable(path: Path) -> None:
    """Raise the OSError that writing ``path`` would raise, naming it, before any work is done:
    its folder is missing or read-only, or it is a folder itself."""
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if not os.access(folder, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def add_trust_embedded_kernels(parser: argparse.ArgumentParser) -> None:
    """The opt-in to run the machine code a .rtxir embeds (see FORMAT.md, "CUBINS")."""
    parser.add_argument("--trust-embedded-kernels", action="store_true",
                        help="also run the kernels `rtxrt aot --precompile` embedded in the file (GPU machine code "
                             "from its builder; used only where bound to the file's graph) instead of compiling "
                             "them; only for files whose builder you trust")
