"""Models nobody here tuned for (tests/models/wild.py) on the GPU, next to onnxruntime on the
CPU: latency (median of one call plus a device synchronize, CuPy inputs for rtxrt, on the
engine specialized to the shape once it is hot; numpy for onnxruntime), the first run's time
(the generic engine's JIT), the nodes run on the host, and the error against the fp32
reference backend (||gpu - ref|| / ||ref||, and max |gpu - ref| / max |ref|).

Run from the repository root on a GPU machine:
    python benchmarks/wild_models.py --out wild.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(run, iterations: int, sync=lambda: None) -> float:
    for _ in range(3):
        run()
    sync()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def measure(name: str, folder: Path, iterations: int, precisions: list[str]) -> dict[str, Any]:
    import cupy
    import onnxruntime as ort

    import rtxrt
    from rtxrt.aot import compile_onnx
    from rtxrt.aot.options import AotOptions
    from rtxrt.backends.reference.executor import ReferenceExecutor
    from tests.models import wild

    exported = wild.export(name, folder / f"{name}.onnx")
    feeds = exported.make_inputs(7)
    device_feeds = {k: cupy.asarray(v) for k, v in feeds.items()}
    reference = ReferenceExecutor(compile_onnx(exported.onnx_path)).run(feeds)
    row: dict[str, Any] = {"model": name, "inputs": {k: list(v.shape) for k, v in feeds.items()}}
    cpu = ort.InferenceSession(exported.onnx_path, providers=["CPUExecutionProvider"])
    row["onnxruntime_cpu_ms"] = median_ms(lambda: cpu.run(None, feeds), iterations)
    sync = cupy.cuda.Device().synchronize
    for precision in precisions:
        started = time.perf_counter()
        session = rtxrt.Session(compile_onnx(exported.onnx_path, AotOptions(precision=precision)),
                                cache_dir=folder / "cache", progress=False)
        outputs = session.run(None, device_feeds)
        sync()
        first = time.perf_counter() - started
        errors = {}
        for out_name, value in zip(exported.outputs, outputs):
            want = np.asarray(reference[out_name], np.float64)
            got = np.asarray(value.get(), np.float64)
            errors[out_name] = {"norm": float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)),
                                "max": float(np.abs(got - want).max(initial=0) / max(np.abs(want).max(initial=0), 1e-30))} \
                if got.shape == want.shape else "shape differs"
        for _ in range(3):  # hot: its specialized engine is built in the background, then swapped in
            session.run(None, device_feeds)
        session.wait()
        row[precision] = {"ms": median_ms(lambda: session.run(None, device_feeds), iterations, sync),
                          "first_run_s": first, "host_nodes": session.stats["host_nodes"],
                          "engine": session.stats["engine"], "rel_error": errors}
    return row


def main() -> None:
    from tests.models import wild

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(wild.WILD_MODELS))
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--out", default="wild.json")
    parser.add_argument("--precisions", default="fp32,fp16")
    args = parser.parse_args()
    import cupy

    results = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            try:
                row = measure(name, Path(folder), args.iterations, args.precisions.split(","))
            except Exception as exc:  # one model's failure is a row, not the end of the run
                row = {"model": name, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            results["rows"].append(row)
            Path(args.out).write_text(json.dumps(results, indent=1))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
