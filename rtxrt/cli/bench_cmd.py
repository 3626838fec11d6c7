"""``rtxrt bench MODEL``: latency percentiles, throughput and GPU time of a model on this GPU,
like trtexec. Inputs are random (never zeros) and live on the device; each iteration is one
``run`` (a CUDA graph replay unless ``--no-graph``), timed on the host with the stream
synchronized and on the GPU with CUDA events."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..display import format_bytes, table
from ..runtime import Session
from .arguments import non_negative_int, positive_int
from .inputs import shaped_random_inputs
from .jit_cmd import _common


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure latency and throughput of a model on this GPU (like trtexec)")
    p.add_argument("model", type=Path, help="the .rtxir (or .onnx) file to measure")
    _common(p)
    p.add_argument("--iterations", type=positive_int, default=200, help="timed runs (default 200)")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed runs before them (default 20)")
    p.add_argument("--no-graph", action="store_true", help="launch kernels one by one instead of replaying a CUDA graph")
    p.add_argument("--profile", action="store_true", help="also time every step (node) on its own")
    p.add_argument("--top", type=positive_int, default=15, help="steps listed by --profile (slowest first; default 15)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # The Session first: without a usable GPU it says what is missing (CuPy, driver, device).
    session = Session(args.model, device=args.device, cache_dir=args.cache_dir, precision=args.precision,
                      progress=True, use_cuda_graph=not args.no_graph, embedded_kernels=args.trust_embedded_kernels)
    import cupy

    host = shaped_random_inputs(session.inputs, args.shapes, 0)
    for value in host.values():
        if value.dtype.kind == "f":
            value[value == 0] = 0.5
    feeds = {k: cupy.asarray(v) for k, v in host.items()}
    engine = session.engine({k: v.shape for k, v in feeds.items()})
    stream = session.stream
    for _ in range(args.warmup):
        session.run(None, feeds)
    wall, gpu = [], []
    for _ in range(args.iterations):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        t0 = time.perf_counter()
        start.record(stream)
        session.run(None, feeds)  # synchronizes the stream before returning
        end.record(stream)
        end.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3)
        gpu.append(cupy.cuda.get_elapsed_time(start, end))
    batch = max((v.shape[0] for v in host.values() if v.ndim), default=1)
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in host.items())
    print(f"{args.model}: {session.backend}, {shapes}, {'no CUDA graph' if args.no_graph else 'CUDA graph'}")
    print(f"JIT: {session.stats['jit_seconds']:.2f} s ({'cache' if session.stats['from_cache'] else 'compiled'}), "
          f"device memory {format_bytes(engine.device_bytes)}")
    w, g = np.array(wall), np.array(gpu)
    rows = [(name, f"{np.percentile(v, 50):.3f}", f"{np.percentile(v, 90):.3f}", f"{np.percentile(v, 99):.3f}",
             f"{v.min():.3f}", f"{v.mean():.3f}") for name, v in (("latency (host)", w), ("GPU time (events)", g))]
    print(table(rows, ("ms", "median", "p90", "p99", "min", "mean")))
    print(f"throughput: {1e3 * batch * len(w) / w.sum():.1f} items/s (batch {batch}, {args.iterations} iterations)")
    if args.profile:
        steps = sorted(session.profile(feeds), key=lambda s: -s[1])
        total = sum(t for _, t in steps)
        print(f"per step (each replayed on its own as a CUDA graph; sum {total:.3f} ms):")
        print(table([(label[:90], f"{t:.4f}", f"{100 * t / total:.1f}%") for label, t in steps[: args.top]],
                    ("step", "ms", "share")))
    return 0
