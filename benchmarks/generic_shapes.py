"""Shape-generic engines: one JIT serves every shape of a profile (issue 13).

For each model (zoo, seeded random weights, fp16): a Session with a profile and
``specialization="none"`` builds the generic engine (the one JIT), then runs N random in-range
shapes in random order and records, per shape, the kernels compiled and the wall time of its
first run (one ``Session.run`` on CuPy inputs plus a device synchronize). Then, at the opt shape
and two others, the latency of the generic engine against a fully specialized engine of that
shape (median of ``--iterations`` runs, each one call plus a synchronize), the relative error
between them, and the device memory of the profile's engines against a specialized engine at
the max shapes. Last, a second process with the same cache runs shapes of the profile: it must
compile nothing.

Models: bert (BERT-base, batch 1..8 x sequence 1..512), cnn (ResNet-50, batch 1..4 x
224..1024 square), yolo (the zoo's YOLO-style detector, whose anchor grid follows the input
size; batch 1..4 x 224..1024, multiples of 32).

Run from the repository root on a GPU machine:
    python benchmarks/generic_shapes.py --models bert,cnn,yolo --shapes 50 --out generic.json
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
CASES: dict[str, dict[str, Any]] = {
    "bert": {"zoo": "bert_base", "inputs": BERT_INPUTS,
             "range": ((1, 1), (4, 128), (8, 512)), "others": [(1, 384), (8, 64)]},
    "cnn": {"zoo": "resnet50", "inputs": ["input"],
            "range": ((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 1024, 1024)), "others": [(2, 3, 512, 512), (4, 3, 320, 320)]},
    "yolo": {"zoo": "yolo_tiny", "inputs": ["input"],
             "range": ((1, 3, 224, 224), (1, 3, 640, 640), (4, 3, 1024, 1024)), "others": [(1, 3, 320, 320), (4, 3, 960, 960)]},
}


def random_shapes(case: dict[str, Any], count: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    low, _, high = case["range"]
    shapes = []
    while len(shapes) < count:
        if case["zoo"] == "bert_base":
            shape = (int(rng.integers(low[0], high[0] + 1)), int(rng.integers(low[1], high[1] + 1)))
        else:
            step = 32 if case["zoo"] == "yolo_tiny" else 1
            size = int(rng.integers(low[2] // step, high[2] // step + 1)) * step
            shape = (int(rng.integers(low[0], high[0] + 1)), 3, size, size)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def feeds_for(case: dict[str, Any], shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    import cupy

    from tests.models import zoo

    if case["zoo"] == "bert_base":
        host = zoo.TEXT_MODELS["bert_base"].make_inputs(seed, batch=shape[0], seq=shape[1])
    else:
        host = {"input": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    return {k: cupy.asarray(v) for k, v in host.items()}


def profile_of(case: dict[str, Any]) -> dict[str, Any]:
    return {n: [list(s) for s in case["range"]] for n in case["inputs"]}


def build_model(name: str, folder: Path) -> Path:
    from rtxrt.aot import build_rtxir
    from rtxrt.aot.options import AotOptions
    from tests.models import zoo

    case = CASES[name]
    onnx_path = folder / f"{name}.onnx"
    if case["zoo"] in zoo.TEXT_MODELS:
        zoo.export(case["zoo"], onnx_path)
    else:
        zoo.export(case["zoo"], onnx_path, dynamic_size=True)
    path = folder / f"{name}.rtxir"
    build_rtxir(onnx_path, path, AotOptions(precision="fp16"))
    return path


def latency_ms(run, iterations: int) -> float:
    import cupy

    for _ in range(3):
        run()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        cupy.cuda.Device().synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def relative_error(a: Any, b: Any) -> float:
    a, b = np.asarray(a.get(), np.float64), np.asarray(b.get(), np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def measure(name: str, path: Path, cache: Path, count: int, iterations: int, seed: int,
            compare_specialized: bool = True) -> dict[str, Any]:
    import cupy

    import rtxrt
    from rtxrt.backends.cuda.jit import shape_signature, specialize
    from rtxrt.backends.cuda.plan.builder import build_plan, finalize

    case = CASES[name]
    row: dict[str, Any] = {"model": name, "profile": case["range"]}
    started = time.perf_counter()
    session = rtxrt.Session(path, cache_dir=cache, progress=False, profile=profile_of(case), specialization="none")
    row["load_seconds"] = time.perf_counter() - started
    row["load_kernels_compiled"] = session.kernels_compiled_total
    progress(f"{name}: loaded in {row['load_seconds']:.1f} s, {session.kernels_compiled_total} kernels compiled")
    generic = session._generic
    rng = np.random.default_rng(seed)
    shapes = random_shapes(case, count, rng)
    firsts = []
    before = session.kernels_compiled_total
    pauses: list[float] = []  # the garbage collector's pauses during the current first run

    def collector(phase: str, info: dict) -> None:
        pauses.append(time.perf_counter() if phase == "start" else time.perf_counter() - pauses.pop())

    gc.callbacks.append(collector)
    for i, shape in enumerate(shapes):
        feeds = feeds_for(case, shape, i)
        cupy.cuda.Device().synchronize()
        pauses.clear()
        t0 = time.perf_counter()
        session.run(None, feeds)
        cupy.cuda.Device().synchronize()
        first = {"shape": list(shape), "first_run_ms": (time.perf_counter() - t0) * 1e3,
                 "engine": session.stats["engine"], "gc_ms": sum(pauses) * 1e3}
        stats = generic.stats.get(shape_signature({n: shape for n in case["inputs"]}))
        if stats is not None:  # where the first run's time went: planning, then loading the engine
            first.update(plan_ms=stats.plan_seconds * 1e3, engine_ms=stats.jit_seconds * 1e3)
        firsts.append(first)
    gc.callbacks.remove(collector)
    progress(f"{name}: {len(firsts)} first runs done")
    row["shapes"] = firsts
    row["kernels_compiled_after_load"] = session.kernels_compiled_total - before
    ms = [f["first_run_ms"] for f in firsts]
    row["first_run_ms"] = {"median": float(np.median(ms)), "max": float(np.max(ms)),
                           "under_50ms": int(sum(m < 50 for m in ms)), "count": len(ms)}
    for part in ("plan_ms", "engine_ms", "gc_ms"):
        values = [f[part] for f in firsts if part in f]
        if values:
            row["first_run_ms"][part + "_median"] = float(np.median(values))
    row["engines"] = sorted({f["engine"] for f in firsts})
    if not compare_specialized:
        return row
    # generic against specialized, at the opt shape and two others
    compare = []
    opt = case["range"][1]
    for shape in [opt, *case["others"]]:
        shapes_map = {n: tuple(shape) for n in case["inputs"]}
        feeds = feeds_for(case, tuple(shape), 99)
        engine, _ = generic.engine(shapes_map)
        made = specialize(session._model, session.cache_key, session.cache, session._gpu, shapes_map)
        progress(f"{name}: specialized at {list(shape)}, {made.stats.kernels_compiled} kernels compiled")
        special = made.load(session._gpu)
        with session._gpu.device:
            g_out = engine.run(feeds)
            s_out = special.run(feeds)
            session._gpu.stream.synchronize()
            error = max(relative_error(g_out[k], s_out[k]) for k in g_out)
            g_ms = latency_ms(lambda: engine.run(feeds), iterations)
            s_ms = latency_ms(lambda: special.run(feeds), iterations)
        compare.append({"shape": list(shape), "generic_ms": g_ms, "specialized_ms": s_ms, "ratio": g_ms / s_ms,
                        "rel_error": error, "specialized_compiled": made.stats.kernels_compiled})
    row["generic_vs_specialized"] = compare
    # memory: every engine of the profile together against one specialized engine at the max
    # shapes (its plan with each node's first tactic: the layout, without compiling it)
    max_shapes = {n: tuple(case["range"][2]) for n in case["inputs"]}
    info = session._gpu.info
    layout = finalize(build_plan(session._model, max_shapes, arch=info.arch, sm_count=info.sm_count, tune=False)).layout
    row["memory"] = {"profile_engines_bytes": generic.device_bytes,
                     "generic_engines": len(generic.engines),
                     "specialized_at_max_bytes": layout.arena_bytes + layout.weights_bytes + layout.shape_bytes}
    return row


def progress(line: str) -> None:
    """Where a long run is, on stderr, so that a run cut short still says how far it got."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def second_process(name: str, path: Path, cache: Path, count: int, seed: int) -> dict[str, Any]:
    """In this process (the parent runs it as a child): load from the cache, run shapes."""
    import cupy

    import rtxrt

    case = CASES[name]
    started = time.perf_counter()
    session = rtxrt.Session(path, cache_dir=cache, progress=False, profile=profile_of(case), specialization="none")
    load = time.perf_counter() - started
    shapes = random_shapes(case, count, np.random.default_rng(seed + 1))
    for i, shape in enumerate(shapes):
        session.run(None, feeds_for(case, shape, i))
    cupy.cuda.Device().synchronize()
    return {"load_seconds": load, "shapes": len(shapes), "kernels_compiled": session.kernels_compiled_total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="bert,cnn,yolo")
    parser.add_argument("--shapes", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="generic.json")
    parser.add_argument("--first-runs-only", action="store_true",
                        help="skip the specialized engines (latency and memory comparisons): first runs only")
    parser.add_argument("--second", nargs=3, metavar=("MODEL", "PATH", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.second:
        name, path, cache = args.second
        print(json.dumps(second_process(name, Path(path), Path(cache), 10, args.seed)))
        return
    import cupy

    results = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            path = build_model(name, Path(folder))
            progress(f"{name}: exported")
            cache = Path(folder) / f"cache-{name}"
            row = measure(name, path, cache, args.shapes, args.iterations, args.seed, not args.first_runs_only)
            child = subprocess.run([sys.executable, __file__, "--second", name, str(path), str(cache),
                                    "--seed", str(args.seed)], capture_output=True, text=True, check=False)
            row["second_process"] = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 \
                else {"error": child.stderr[-2000:]}
            results["rows"].append(row)
            Path(args.out).write_text(json.dumps(results, indent=1))
            summary = {k: row[k] for k in ("load_seconds", "load_kernels_compiled", "kernels_compiled_after_load",
                                           "first_run_ms", "engines", "memory", "second_process") if k in row}
            print(name, json.dumps(summary), flush=True)
            for c in row.get("generic_vs_specialized", []):
                print("  ", json.dumps(c), flush=True)


if __name__ == "__main__":
    main()
