"""``rtxrt jit MODEL`` and ``rtxrt prewarm MODEL...``: specialize models to this GPU into the
runtime cache ahead of time, so that the app's first launch loads instead of compiling."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import RtxrtError
from ..display import format_bytes
from ..backends.cuda.cache.runtime_cache import ENV_VAR
from ..runtime import Session
from .arguments import add_trust_embedded_kernels, non_negative_int, shapes
from .inputs import shaped_random_inputs


def add_parser(sub) -> None:
    p = sub.add_parser("jit", help="specialize a model to this GPU now and keep the result in the runtime cache")
    p.add_argument("model", type=Path, help="the .rtxir (or .onnx) file to specialize")
    _common(p)
    p.set_defaults(handler=run_jit)
    p = sub.add_parser("prewarm", help="JIT several models into the runtime cache (e.g. from an installer)")
    p.add_argument("models", type=Path, nargs="+", help="the .rtxir files to specialize")
    _common(p)
    p.add_argument("--low-priority", action="store_true", help="run at the lowest CPU priority (nice 19)")
    p.set_defaults(handler=run_prewarm)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", type=shapes, default={},
                   help="input shapes for models with symbolic dims, e.g. input:1x3x224x224,mask:1x128")
    p.add_argument("--cache-dir", type=Path, help=f"runtime cache directory (default: ${ENV_VAR}, else the user cache)")
    p.add_argument("--device", type=non_negative_int, default=0, help="index of the GPU to use (default 0)")
    p.add_argument("--precision", choices=["fp32"], help="override the .rtxir's precision annotations")
    add_trust_embedded_kernels(p)


def jit_one(path: Path, args: argparse.Namespace) -> dict:
    """Specialize one model; returns its Session's JIT statistics."""
    session = Session(path, device=args.device, cache_dir=args.cache_dir, precision=args.precision, progress=True,
                      embedded_kernels=args.trust_embedded_kernels)
    if session.static_input_shapes() is None or args.shapes:
        feeds = shaped_random_inputs(session.inputs, args.shapes, 0)
        session.engine({k: v.shape for k, v in feeds.items()})
    return session.stats | {"backend": session.backend}


def run_jit(args: argparse.Namespace) -> int:
    stats = jit_one(args.model, args)
    _report(args.model, stats)
    return 0


def run_prewarm(args: argparse.Namespace) -> int:
    if args.low_priority and hasattr(os, "nice"):
        os.nice(19)
    started, failed = time.perf_counter(), 0
    for path in args.models:
        try:
            _report(path, jit_one(path, args))
        except RtxrtError as exc:  # the app still works: it will JIT on first use instead
            failed += 1
            print(f"{path}: not prewarmed ({exc}); it will be specialized on first use", file=sys.stderr)
    print(f"prewarmed {len(args.models) - failed} of {len(args.models)} model(s) in "
          f"{time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


def _report(path: Path, stats: dict) -> None:
    how = ("loaded from the runtime cache" if stats["from_cache"] else
           f"compiled {stats['kernels_compiled']} kernels in {stats['compile_seconds']:.1f} s, "
           f"tuned in {stats['tune_seconds']:.1f} s")
    host = f"; {len(stats['host_nodes'])} node(s) on the host" if stats["host_nodes"] else ""
    print(f"{path}: {stats['backend']}: {how}; ready in {stats['jit_seconds']:.2f} s, "
          f"{format_bytes(stats['device_bytes'])} on the device{host}")
