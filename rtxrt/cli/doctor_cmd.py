"""``rtxrt doctor [--json] [--cache-dir DIR]``: is this machine ready to run models on the GPU?

Checks Python, rtxrt, CuPy, the NVIDIA driver, NVRTC, the GPUs, cuBLAS and the runtime cache,
and prints every problem with the fix to apply; a check whose prerequisite failed (no CuPy: no
GPU, NVRTC or cuBLAS check) is shown as skipped, so one cause is one problem. Exit code 0 when
everything the GPU path needs is in place, 1 when a problem was found (without a GPU, that
includes saying what still works).
--json prints one JSON object with stable keys (see rtxrt.doctor.Report.to_json).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..doctor import Report, diagnose
from ..display import format_bytes, table
from ..backends.cuda.cache.runtime_cache import ENV_VAR

_MARK = {True: "ok", False: "FAIL", None: "--"}


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check GPU, driver, CUDA libraries and the runtime cache; print fixes",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--json", action="store_true", help="print one JSON object (for support tickets)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"the cache directory to check (default: ${ENV_VAR}, else the user cache directory)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = diagnose(args.cache_dir)
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1


def render(report: Report) -> str:
    """The human-readable report: one line per check, each problem followed by its fix."""
    width = max(len(c.name) for c in report.checks)
    lines = ["rtxrt doctor"]
    for check in report.checks:
        lines.append(f"  {_MARK[check.ok]:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.ok is not True:
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {check.fix}")
    entries = report.facts["cache"]["entries"]
    if entries:
        rows = [(e["model"][:12] if e["model"] else "?", e["gpu"] or "?", e["arch"] or "?", e["rtxrt_version"] or "?",
                 format_bytes(e["size_bytes"]), (e["last_used"] or "?")[:16].replace("T", " "),
                 "ok" if e["complete"] else "incomplete") for e in entries]
        lines += ["", "cached (last used in UTC):",
                  *("  " + line for line in table(rows, ("model", "gpu", "arch", "rtxrt", "size", "last used",
                                                         "state")).splitlines())]
    if not report.gpu_available:
        lines += ["", "No usable NVIDIA GPU on this machine, so models cannot run on the GPU here. What still works:",
                  *(f"  - {line}" for line in report.without_gpu())]
    lines += ["", "everything the GPU path needs is in place" if report.ok else _problems_line(report)]
    return "\n".join(lines)


def _problems_line(report: Report) -> str:
    problems = len(report.problems)
    skipped = sum(c.skipped for c in report.checks)
    waiting = f", {skipped} check{'s' if skipped != 1 else ''} skipped until they are fixed" if skipped else ""
    return f"{problems} problem{'s' if problems != 1 else ''} found{waiting}: apply the fixes above (exit code 1)"
