"""``rtxrt cache ls|size|clear|prune``: what the runtime cache holds, emptying and capping it.

Uninstalling an app: an app that keeps its own cache directory (Session(cache_dir=APPDIR)
or RTXRT_CACHE_DIR=APPDIR) runs "rtxrt cache clear --cache-dir APPDIR" and then deletes
APPDIR. An app that shares the user's cache removes only its own models' entries:
"rtxrt cache clear --model a.rtxir --model b.rtxir". Entries being built right now (their
build lock is held) are never removed; the command says how many were left.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from ..display import format_bytes, table
from ..backends.cuda.cache.runtime_cache import ENV_VAR, RuntimeCache

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "2GiB", "500MB", "1.5G" or "4096". KiB/MiB/GiB/TiB and the bare K/M/G/T are
    powers of 1024; KB/MB/GB/TB are powers of 1000."""
    match = _SIZE.fullmatch(text)
    if not match or (match[3] and not match[2]):  # "1iB"
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 2GiB, 500MB, 1.5G, 4096)")
    number, prefix, binary, b = match.groups()
    unit = prefix.lower() + ("b" if b and not binary and prefix else "")
    return int(float(number) * _UNITS[unit])


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list, measure, clear or cap the runtime cache of JIT-compiled kernels",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, handler in (
        ("ls", "list the entries: model, GPU, size, last used", run_ls),
        ("size", "print how many bytes the cache holds", run_size),
        ("clear", "remove every entry, or those of --model (entries being built right now are left)", run_clear),
        ("prune", "remove least-recently-used entries until the cache fits --max-size", run_prune),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("--cache-dir", type=Path, default=None,
                            help=f"the cache directory (default: ${ENV_VAR}, else the user cache directory)")
        action.set_defaults(handler=handler)
        if name == "clear":
            action.add_argument("--model", type=Path, action="append", default=[], metavar="MODEL.rtxir",
                                help="remove only this model's entries (every GPU and option); repeatable")
        if name == "prune":
            action.add_argument("--max-size", type=parse_size, required=True, metavar="SIZE",
                                help="the cap, e.g. 2GiB, 500MB, 1.5G (K/M/G/T and KiB.. are 1024-based, KB.. 1000)")


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
    if args.model:
        return _clear_models(cache, args.model)
    freed = cache.clear()
    left = len(cache.entries())
    busy = f"; {_entries(left)} being built {'was' if left == 1 else 'were'} left" if left else ""
    print(f"freed {format_bytes(freed)} ({freed} bytes) from {cache.root}{busy}")
    return 0


def _clear_models(cache: RuntimeCache, models: list[Path]) -> int:
    from ..format import read_header

    hashes = {model: read_header(model).ir_hash for model in models}  # every file checked before removing
    for model, ir_hash in hashes.items():
        removed = cache.remove_model(ir_hash)
        freed = sum(info.size for info in removed)
        left = sum(1 for info in cache.entries() if info.key is not None and info.key.ir_hash == ir_hash)
        busy = f"; {_entries(left)} being built {'was' if left == 1 else 'were'} left" if left else ""
        print(f"{model}: removed {_entries(len(removed))} of model {ir_hash[:12]}, freed {format_bytes(freed)} "
              f"({freed} bytes) from {cache.root}{busy}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    cache = RuntimeCache(args.cache_dir)
    removed = cache.evict(args.max_size)
    freed, size = sum(info.size for info in removed), cache.size()
    print(f"removed {_entries(len(removed))} least recently used, freed {format_bytes(freed)} ({freed} bytes); "
          f"{cache.root} holds {format_bytes(size)} of {format_bytes(args.max_size)} allowed")
    if size > args.max_size:
        print(f"still above the cap with {_entries(len(cache.entries()))} left: entries being built right now "
              "are kept; prune again when they finish")
    return 0


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "?"
