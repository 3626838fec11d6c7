"""``rtxrt cache ls|size|clear``: what the runtime cache holds, and emptying it."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..formatting import format_bytes, table
from ..jit.cache import ENV_VAR, RuntimeCache


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list, measure or clear the runtime cache of JIT-compiled kernels")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, handler in (
        ("ls", "list the entries: model, GPU, size, last used", run_ls),
        ("size", "print how many bytes the cache holds", run_size),
        ("clear", "remove every entry (entries being built right now are left)", run_clear),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--cache-dir", type=Path, default=None,
                            help=f"the cache directory (default: ${ENV_VAR}, else the user cache directory)")
        action.set_defaults(handler=handler)


def run_ls(args: argparse.Namespace) -> int:
    cache = RuntimeCache(args.cache_dir)
    infos = cache.entries()
    if not infos:
        print(f"runtime cache {cache.root}: empty")
        return 0
    print(f"runtime cache {cache.root}: {_entries(len(infos))}, {format_bytes(cache.size())}")
    rows = []
    for info in infos:
        key = info.key
        rows.append((key.ir_hash[:12] if key else "?", key.gpu_name if key else "?", key.arch if key else "?",
                     key.rtxrt_version if key else "?", format_bytes(info.size), _when(info.last_used),
                     "ok" if info.complete else "incomplete"))
    print(table(rows, ("model", "gpu", "arch", "rtxrt", "size", "last used", "state")))
    return 0


def run_size(args: argparse.Namespace) -> int:
    cache = RuntimeCache(args.cache_dir)
    size = cache.size()
    print(f"{format_bytes(size)} ({size} bytes) in {_entries(len(cache.entries()))} at {cache.root}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    cache = RuntimeCache(args.cache_dir)
    freed = cache.clear()
    left = len(cache.entries())
    busy = f"; {_entries(left)} being built {'was' if left == 1 else 'were'} left" if left else ""
    print(f"freed {format_bytes(freed)} ({freed} bytes) from {cache.root}{busy}")
    return 0


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "?"
