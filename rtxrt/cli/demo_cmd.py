"""``rtxrt demo``: the whole path on the bundled default model — build the ONNX model, compile
it to .rtxir, load it, run it, and check the result against onnxruntime."""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from ..aot import AotOptions, build_rtxir
from ..display import format_bytes
from ..runtime import Session
from ..samples import DEFAULT_MODEL_NAME, default_model
from .arguments import positive_int
from .compare import differences, onnxruntime_available, run_onnxruntime

TOLERANCE = 1e-4  # both sides compute in float32; only summation order differs (GPU: ~1e-6)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="compile and run the bundled default model end to end")
    p.add_argument("--workdir", type=Path, help="where to write the .onnx and .rtxir (default: a temp dir)")
    p.add_argument("--batch", type=positive_int, default=4, help="images per run (default 4)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return _demo(args.workdir, args.batch)
    with tempfile.TemporaryDirectory(prefix="rtxrt-demo-") as tmp:
        return _demo(Path(tmp), args.batch)


def _demo(workdir: Path, batch: int) -> int:
    onnx_path, rtxir_path = workdir / f"{DEFAULT_MODEL_NAME}.onnx", workdir / f"{DEFAULT_MODEL_NAME}.rtxir"
    proto = default_model()
    onnx.save(proto, str(onnx_path))
    print(f"1. default model {DEFAULT_MODEL_NAME}: {len(proto.graph.node)} ONNX nodes -> {onnx_path}")

    start = time.perf_counter()
    model = build_rtxir(onnx_path, rtxir_path, AotOptions()).model
    print(f"2. rtxrt aot: {rtxir_path.name} ({format_bytes(rtxir_path.stat().st_size)}, "
          f"{len(model.graph.nodes)} nodes) in {time.perf_counter() - start:.2f} s")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        session = Session(rtxir_path, fallback="cpu")
    if not session.on_gpu:
        print(f"3. no usable NVIDIA GPU ({session.fallback_reason}): running the {session.backend} backend")

    images = np.random.default_rng(1).random((batch, 3, 64, 64), dtype=np.float32)
    if session.on_gpu:  # the JIT: specialize to this GPU at this batch (or load that from the cache)
        session.engine({"image": images.shape})
        stats = session.stats
        how = ("loaded from the runtime cache" if stats["from_cache"] else
               f"compiled {stats['kernels_compiled']} kernels and tuned them")
        print(f"3. {session.backend}: {how} in {stats['jit_seconds']:.2f} s ({session.cache.root})")
    start = time.perf_counter()
    (probabilities,) = session.run(None, {"image": images})
    print(f"4. ran batch {batch} in {1000 * (time.perf_counter() - start):.1f} ms; "
          f"top-1 classes {probabilities.argmax(axis=1).tolist()}")

    if not onnxruntime_available():
        print("5. onnxruntime is not installed (pip install 'rtxrt[ort]'): skipped the comparison")
        return 0
    (diff,) = differences({"probabilities": probabilities}, run_onnxruntime(proto, {"image": images}))
    ok = diff.max_abs <= TOLERANCE
    print(f"5. vs onnxruntime (CPU): max abs error {diff.max_abs:.2e} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1
