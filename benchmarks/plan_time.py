"""Host planning of a generic engine's new shapes (issue 13), no GPU needed.

Most of a shape's first run on a generic engine is planning it on the host. For each model of
generic_shapes.py (zoo, seeded random weights, fp16, the same profiles), this plans as
GenericEngines does for a GPU of ``--arch``: the opt shapes with every tactic (the first
taken as the tuned one), the max shapes and the template check shapes with that tactic
preferred, then N random in-range shapes in turn, each planned and finalized as GenericEngines
does (the profile's lowering templates, plan/lowering_templates.py, and the memory plan of the
max shapes where its values fit it) and again without them (every node lowered, the arena
planned anew). It reports the median and max milliseconds of both and how many nodes came from a
template.

    python benchmarks/plan_time.py --models bert,cnn,yolo --shapes 30
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generic_shapes import CASES, build_model, random_shapes  # noqa: E402


def measure(name: str, path: Path, arch: str, sm_count: int, count: int, seed: int) -> dict[str, Any]:
    from rtxrt.backends.cuda.generic import check_shapes
    from rtxrt.backends.cuda.plan.builder import build_plan, finalize
    from rtxrt.backends.cuda.plan.dim_ranges import dim_ranges, sample_shapes
    from rtxrt.backends.cuda.plan.lowering_templates import LoweringTemplates
    from rtxrt.backends.cuda.target import compute_capability, runtime_model
    from rtxrt.format.reader import read_rtxir

    case = CASES[name]
    model = runtime_model(read_rtxir(path), None, compute_capability(arch))
    ranges = {n: case["range"] for n in case["inputs"]}
    dims, constants, templates = dim_ranges(model, sample_shapes(ranges)), {}, LoweringTemplates()
    kw: dict[str, Any] = dict(arch=arch, sm_count=sm_count, dims=dims, constants=constants)

    def at(shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {n: shape for n in case["inputs"]}

    opt = build_plan(model, at(case["range"][1]), **kw)
    prefer = {s.label: s.candidates[0].label for s in opt.steps if s.node is not None}
    started = time.perf_counter()
    largest = finalize(build_plan(model, at(case["range"][2]), **kw, tune=False, prefer=prefer, templates=templates))
    for shapes in check_shapes(ranges, True):  # as GenericEngines.build
        build_plan(model, shapes, **kw, tune=False, prefer=prefer, templates=templates)
    build_ms = (time.perf_counter() - started) * 1e3
    rows = []
    for shape in random_shapes(case, count, np.random.default_rng(seed)):
        replayed, lowered = templates.replayed, templates.lowered
        started = time.perf_counter()
        finalize(build_plan(model, at(shape), **kw, tune=False, prefer=prefer, templates=templates),
                 reference=largest.memory)
        templated = (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        finalize(build_plan(model, at(shape), **kw, tune=False, prefer=prefer))
        fresh = (time.perf_counter() - started) * 1e3
        rows.append({"shape": list(shape), "templated_ms": templated, "fresh_ms": fresh,
                     "replayed": templates.replayed - replayed, "lowered": templates.lowered - lowered})

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in rows]
        return {"median": statistics.median(values), "max": max(values)}

    return {"model": name, "arch": arch, "shapes": count, "checks_ms": build_ms,
            "templated_ms": summary("templated_ms"), "fresh_ms": summary("fresh_ms"),
            "nodes_replayed": sum(r["replayed"] for r in rows), "nodes_lowered": sum(r["lowered"] for r in rows),
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="bert,cnn,yolo", help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--shapes", type=int, default=30, help="random in-range shapes per model")
    parser.add_argument("--arch", default="sm_86", help="the GPU planned for (default: %(default)s)")
    parser.add_argument("--sm-count", type=int, default=46)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write every shape's numbers as JSON here")
    parser.add_argument("--build", metavar="FOLDER", type=Path, help=argparse.SUPPRESS)  # (the child's job)
    args = parser.parse_args(argv)
    if args.build:
        for name in args.models.split(","):
            build_model(name, args.build)
        return 0
    results = []
    with tempfile.TemporaryDirectory() as folder:
        # Exported in a child process: torch's objects would make this one's garbage collections
        # slower than an app's that runs rtxrt alone.
        subprocess.run([sys.executable, __file__, "--models", args.models, "--build", folder], check=True)
        for name in args.models.split(","):
            result = measure(name, Path(folder) / f"{name}.rtxir", args.arch, args.sm_count, args.shapes, args.seed)
            results.append(result)
            print(f"{name}: new shape planned in {result['templated_ms']['median']:.1f} ms median, "
                  f"{result['templated_ms']['max']:.1f} max with templates ({result['nodes_replayed']} nodes "
                  f"replayed, {result['nodes_lowered']} lowered); {result['fresh_ms']['median']:.1f} / "
                  f"{result['fresh_ms']['max']:.1f} ms lowering every node; checks at build "
                  f"{result['checks_ms']:.0f} ms", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
