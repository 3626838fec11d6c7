"""Runs ONNX's backend test suite against ``rtxrt.onnx_backend`` and reports the pass rate.

    python -m tests.conformance.onnx_suite [--kind node|real|pytorch-converted|pytorch-operator|simple]
                                           [--include REGEX] [--failures]
                                           [--device CPU|CUDA] [--shard K/N] [--json PATH]
    python -m tests.conformance.onnx_suite --merge PATH [PATH ...]

Node tests are collected in-process from the installed onnx (``collect_testcases``); the
``real`` kind is the ``light`` model zoo shipped inside the onnx wheel.

``--device CUDA`` prepares every test as an ``rtxrt.Session`` on GPU 0 (JIT included) and
records the nodes that ran on the host. ``--shard K/N`` runs every N-th case from the K-th
(0 <= K < N), so N processes share the suite. With ``--json PATH`` (and always on CUDA) the
tests run in a child process that appends each result to PATH as it ends (JSON Lines); a
child that crashes, loses its CUDA context or runs one test past ``--test-timeout`` is
replaced by one that resumes after that test, which is recorded as failed. ``--merge``
reads such files (one per shard) and reports the pass rate overall, among tests that ran
every node on the GPU and among tests that used host fallback, and the failures of the
GPU-only tests by op.
"""
from __future__ import annotations

import argparse
import faulthandler
import functools
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx.backend.test

import rtxrt.onnx_backend
from rtxrt.backends.cuda.device import find_gpu

# Node tests left out of the count, decided from each test's model. These are features
# outside an inference runtime for tensors, the same categories ONNX Runtime's GPU
# providers leave out:
EXCLUDED_DOMAINS = {
    "ai.onnx.ml",                 # classic-ML operators (trees, label encoders, ...)
    "ai.onnx.preview.training",   # training operators (Adam, Adagrad, Momentum, Gradient)
}
EXCLUDED_OPS = {
    # sequences
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence",
    # optional types
    "Optional", "OptionalHasElement", "OptionalGetElement",
    # strings
    "StringNormalizer", "StringSplit", "StringConcat", "RegexFullMatch",
}
KIND_CLASSES = {"node": "Node", "real": "Real", "simple": "Simple",
                "pytorch-converted": "PyTorchConverted", "pytorch-operator": "PyTorchOperator"}
EXIT_CONTEXT_LOST = 3  # a worker whose CUDA context broke; the supervisor starts another


def excluded_reason(model: onnx.ModelProto) -> str | None:
    """Why a node test does not count, or None when it counts."""
    for node in _all_nodes(model.graph):
        if node.domain in EXCLUDED_DOMAINS:
            return f"domain {node.domain}"
        if node.op_type in EXCLUDED_OPS:
            return f"op {node.op_type}"
    for vi in list(model.graph.input) + list(model.graph.output):
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{kind} value {vi.name}"  # sequences, maps, optionals
        if vi.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            return f"string tensor {vi.name}"
    return None


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def op_of(name: str, model: onnx.ModelProto | None) -> str:
    """The operator a test exercises, to group failures by: the model's only op type; for a
    model of several (an op expanded into its function body) the op the test is named after,
    marked "(expanded)" ("test_softmax_axis_0_expanded": "Softmax (expanded)")."""
    ops = list(dict.fromkeys(n.op_type for n in model.graph.node)) if model is not None else []
    if len(ops) == 1:
        return ops[0]
    letters = name.removeprefix("test_").replace("_", "").lower()
    named = [op for key, op in _default_domain_ops().items() if letters.startswith(key)]
    op = max(named, key=len) if named else "+".join(ops) or "?"
    return f"{op} (expanded)" if "_expanded" in name else op


@functools.cache
def _default_domain_ops() -> dict[str, str]:
    """ONNX's op names keyed by their lowercase letters ("averagepool": "AveragePool")."""
    return {s.name.lower(): s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""}


# --- shards ------------------------------------------------------------------------------------


def shard(names: Iterable[str], index: int, count: int) -> list[str]:
    """Every ``count``-th of the sorted names from the ``index``-th: shards 0 to count-1 are
    disjoint, cover every name and differ in size by one at most."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= K < N")
    return sorted(names)[index::count]


def parse_shard(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 0/8")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= K < N")
    return index, count


# --- results -----------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One test as it ran. ``host_nodes``: on the GPU path, the nodes that ran on the host
    ([] when every node ran on the GPU); None on the CPU, or when the test failed before an
    engine was built (the plan was never known)."""

    name: str
    op: str
    passed: bool
    error: str | None
    host_nodes: list[str] | None
    seconds: float


@dataclass
class SuiteReport:
    kind: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "CPU"
    results: list[CaseResult] = field(default_factory=list)

    @property
    def counted(self) -> int:
        return len(self.passed) + len(self.failed)

    @property
    def pass_rate(self) -> float:
        return len(self.passed) / self.counted if self.counted else 0.0

    def add(self, result: CaseResult) -> None:
        self.results.append(result)
        if result.passed:
            self.passed.append(result.name)
        else:
            self.failed[result.name] = result.error or ""

    def summary(self) -> str:
        where = "" if self.device == "CPU" else f" on {self.device}"
        return (
            f"ONNX backend suite [{self.kind}]{where} through rtxrt.onnx_backend: {len(self.passed)}/{self.counted} "
            f"passed = {100 * self.pass_rate:.1f}% ({len(self.excluded)} excluded, {self.seconds:.0f} s)"
        )


class CudaContextLost(RuntimeError):
    """A test left the CUDA context broken (an illegal address is sticky): every later test
    in this process would fail for it."""


# --- running -----------------------------------------------------------------------------------


class _RecordingBackend(rtxrt.onnx_backend.RtxrtBackend):
    """rtxrt.onnx_backend, keeping what the running test prepared (the model names its op; the
    rep says which nodes ran on the host)."""

    models: ClassVar[list[onnx.ModelProto]] = []
    reps: ClassVar[list[Any]] = []

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> Any:
        cls.models.append(model)
        rep = super().prepare(model, device, **kwargs)
        cls.reps.append(rep)
        return rep

    @classmethod
    def take(cls) -> tuple[onnx.ModelProto | None, list[Any]]:
        model, reps = (cls.models[0] if cls.models else None), list(cls.reps)
        cls.models.clear()
        cls.reps.clear()
        return model, reps


class _Collector(unittest.TestResult):
    """The outcome of one test: (True, None), (False, error) or (None, skip reason)."""

    def __init__(self):
        super().__init__()
        self.outcome: tuple[bool | None, str | None] = (False, "the test reported no outcome")

    def addSuccess(self, test):
        self.outcome = (True, None)

    def addFailure(self, test, err):
        self.outcome = (False, _message(err))

    def addError(self, test, err):
        self.outcome = (False, _message(err))

    def addSkip(self, test, reason):
        self.outcome = (None, reason)


def _name(test: unittest.TestCase, device: str) -> str:
    return test._testMethodName.removesuffix(f"_{device.lower()}")


def _message(err) -> str:
    exc = err[1]
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


@functools.cache
def _backend_test() -> onnx.backend.test.BackendTest:
    # Collecting the node cases runs their generators, which warn on purpose (inf, nan).
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return onnx.backend.test.BackendTest(_RecordingBackend, __name__)


@functools.cache
def _cases(kind: str) -> list:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return onnx.backend.test.loader.load_model_tests(kind=kind)


def select_tests(report: SuiteReport, include: str | None = None,
                 shard_of: tuple[int, int] | None = None) -> list[unittest.TestCase]:
    """The tests of ``report.kind`` on ``report.device`` to run (sorted by name), noting the
    node tests left out in ``report.excluded``."""
    names = {c.name for c in _cases(report.kind)}
    if shard_of is not None:
        names = set(shard(names, *shard_of))
    if report.kind == "node":
        for case in _cases(report.kind):
            reason = excluded_reason(case.model) if case.name in names else None
            if reason:
                report.excluded[case.name] = reason
    selected = re.compile(include) if include else None
    suffix = f"_{report.device.lower()}"
    tests = []
    for cls in _backend_test().test_cases.values():
        if KIND_CLASSES[report.kind] not in cls.__name__ or "Model" not in cls.__name__:
            continue
        for test_name in unittest.TestLoader().getTestCaseNames(cls):
            base = test_name.removesuffix(suffix)
            if not test_name.endswith(suffix) or base not in names or base in report.excluded:
                continue
            if selected and not selected.search(base):
                continue
            tests.append(cls(test_name))
    return sorted(tests, key=lambda t: t._testMethodName)


def run_tests(tests: Iterable[unittest.TestCase], report: SuiteReport, *,
              on_start: Callable[[str], None] | None = None,
              on_result: Callable[[CaseResult | tuple[str, str]], None] | None = None,
              timeout: float | None = None) -> None:
    """Run ``tests`` one by one into ``report``. ``on_start(name)`` before each test;
    ``on_result`` after it, with its CaseResult or (name, skip reason). ``timeout``: a test
    running longer ends the process (faulthandler's watchdog, which also stops a hung
    kernel). On CUDA a broken context raises CudaContextLost after that test's result."""
    cuda = report.device != "CPU"
    if cuda:
        gc.freeze()  # the collected cases stay; a gc.collect() after each test is then cheap
    for test in tests:
        name = _name(test, report.device)
        if on_start:
            on_start(name)
        result = _run_one(test, name, timeout)
        problem = None
        if cuda:
            gc.collect()  # sessions free their engine, stream and cuBLAS workspace now
            problem = _cuda_context_error()
            if problem and isinstance(result, CaseResult) and result.passed:
                result = replace(result, passed=False, error=f"CudaContextLost: {problem}")
        if isinstance(result, tuple):
            report.excluded[name] = result[1]
        else:
            report.add(result)
        if on_result:
            on_result(result)
        if problem:
            raise CudaContextLost(f"the CUDA context broke in {name}: {problem}")


def _run_one(test: unittest.TestCase, name: str, timeout: float | None) -> CaseResult | tuple[str, str]:
    collector = _Collector()
    _RecordingBackend.take()
    if timeout:
        faulthandler.dump_traceback_later(timeout, exit=True)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            test.run(collector)
    finally:
        if timeout:
            faulthandler.cancel_dump_traceback_later()
    seconds = time.perf_counter() - started
    model, reps = _RecordingBackend.take()
    passed, message = collector.outcome
    if passed is None:
        return name, message or "skipped"
    return CaseResult(name, op_of(name, model), passed, message, _host_nodes(reps), round(seconds, 3))


def _host_nodes(reps: list[Any]) -> list[str] | None:
    known = [getattr(rep, "host_nodes", None) for rep in reps]
    if not known or any(k is None for k in known):
        return None
    return [label for labels in known for label in labels]


def _cuda_context_error() -> str | None:
    import cupy

    try:
        cupy.cuda.runtime.deviceSynchronize()  # returns a sticky error if a kernel left one
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_suite(kind: str = "node", include: str | None = None, *, device: str = "CPU",
              shard_of: tuple[int, int] | None = None) -> SuiteReport:
    """Run the suite in this process (``main`` runs CUDA in restartable child processes)."""
    report = SuiteReport(kind, device=device)
    start = time.perf_counter()
    run_tests(select_tests(report, include, shard_of), report)
    report.seconds = time.perf_counter() - start
    return report


# --- the results file (JSON Lines) and its worker ----------------------------------------------


def read_lines(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a results file; a last line cut short by a crash is dropped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _append(path: str | os.PathLike, record: dict[str, Any]) -> None:
    with open(path, "a") as f:  # closed at once: what a crash or the watchdog ends survives
        f.write(json.dumps(record) + "\n")


def work(args: argparse.Namespace) -> int:
    """A worker: run the tests of the shard that ``args.json`` has no result for yet,
    appending a "running" record before each and a "result" record after it."""
    path = args.json
    records = read_lines(path) if Path(path).exists() else []
    done = {r["name"] for r in records if r["type"] in ("result", "excluded")}
    report = SuiteReport(args.kind, device=args.device)
    tests = select_tests(report, args.include, args.shard)
    if not records:
        _append(path, {"type": "header", "kind": args.kind, "device": args.device,
                       "shard": "{}/{}".format(*args.shard) if args.shard else None,
                       "gpu": find_gpu() if args.device != "CPU" else None,
                       "planned": sorted(_name(t, args.device) for t in tests), "excluded": report.excluded})

    models = {c.name: c.model for c in _cases(args.kind)}

    def on_start(name: str) -> None:
        _append(path, {"type": "running", "name": name, "op": op_of(name, models.get(name)), "time": time.time()})

    def on_result(result: CaseResult | tuple[str, str]) -> None:
        if isinstance(result, tuple):
            _append(path, {"type": "excluded", "name": result[0], "reason": result[1]})
        else:
            _append(path, {"type": "result", **asdict(result)})

    todo = [t for t in tests if _name(t, args.device) not in done]
    try:
        run_tests(todo, report, on_start=on_start, on_result=on_result, timeout=args.test_timeout)
    except CudaContextLost as exc:
        print(f"onnx_suite: {exc}; going on in a fresh process", file=sys.stderr)
        return EXIT_CONTEXT_LOST
    return 0


def supervise(command: list[str], path: str | os.PathLike, timeout: float) -> int:
    """Run ``command`` (a worker) again and again until it exits 0, so that each test of the
    shard gets a result in ``path``. A worker that dies in a test (a crash, or the
    ``timeout`` watchdog) leaves that test "running"; it is recorded as failed here and the
    next worker resumes after it. Stops with the worker's exit code when a worker records
    nothing (it fails before running a test: restarting cannot help)."""
    Path(path).write_text("")
    recorded = 0
    while True:
        code = subprocess.call(command)
        if code == 0:
            return 0
        records = read_lines(path)
        ended = {r["name"] for r in records if r["type"] in ("result", "excluded")}
        running = [r for r in records if r["type"] == "running" and r["name"] not in ended]
        if running:
            seconds = time.time() - running[-1]["time"]
            why = (f"over the {timeout:g} s watchdog" if seconds >= timeout
                   else f"the test process died (exit code {code})")
            _append(path, {"type": "result", **asdict(CaseResult(
                running[-1]["name"], running[-1]["op"], False, f"ProcessDied: {why}", None, round(seconds, 3)))})
        now = len(ended) + bool(running)
        if now == recorded:
            print(f"onnx_suite: the worker exits with code {code} before running a test", file=sys.stderr)
            return code
        recorded = now


# --- merging results files ---------------------------------------------------------------------


@dataclass
class Merged:
    """The results files of one run (one per shard) put together."""

    headers: list[dict[str, Any]]
    results: list[CaseResult]
    excluded: dict[str, str]
    missing: list[str]  # planned tests without a result: a shard was cut short

    @classmethod
    def load(cls, paths: Iterable[str | os.PathLike]) -> Merged:
        headers, results, excluded, planned = [], {}, {}, set()
        for path in paths:
            records = read_lines(path)
            if not records or records[0]["type"] != "header":
                raise ValueError(f"{path}: not an onnx_suite results file (no header line)")
            headers.append(records[0])
            excluded.update(records[0]["excluded"])
            planned.update(records[0]["planned"])
            for r in records[1:]:
                if r["type"] == "excluded":
                    excluded[r["name"]] = r["reason"]
                elif r["type"] == "result":
                    fields = {k: v for k, v in r.items() if k != "type"}
                    if fields["name"] in results:
                        raise ValueError(f"{path}: {fields['name']} has a result in two files (overlapping shards?)")
                    results[fields["name"]] = CaseResult(**fields)
        missing = sorted(planned - set(results) - set(excluded))
        return cls(headers, sorted(results.values(), key=lambda r: r.name), excluded, missing)

    def where(self, host: str) -> list[CaseResult]:
        """Results by where the nodes ran: "gpu" (every node on the GPU), "fallback" (some
        on the host) or "unknown" (failed before an engine was built, or the CPU)."""
        test = {"gpu": lambda h: h == [], "fallback": lambda h: bool(h), "unknown": lambda h: h is None}[host]
        return [r for r in self.results if test(r.host_nodes)]

    def failures_by_op(self, host: str) -> dict[str, list[CaseResult]]:
        groups: dict[str, list[CaseResult]] = defaultdict(list)
        for r in self.where(host):
            if not r.passed:
                groups[r.op].append(r)
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))

    def text(self, failures: bool = False) -> str:
        first = self.headers[0]
        devices = sorted({h["device"] for h in self.headers})
        gpus = sorted({h["gpu"] for h in self.headers if h.get("gpu")})
        on = f" on {'/'.join(devices)}" + (f" ({', '.join(gpus)})" if gpus else "")
        passed = sum(r.passed for r in self.results)
        seconds = {r.name: r.seconds for r in self.results}
        slowest = max(sum(seconds.get(name, 0.0) for name in h["planned"]) for h in self.headers)
        lines = [(f"ONNX backend suite [{first['kind']}]{on}, {len(self.headers)} file(s): "
                  f"{_rate(passed, len(self.results))} ({len(self.excluded)} excluded; "
                  f"the slowest file's tests took {slowest:.0f} s)")]
        if self.missing:
            lines.append(f"  NOT RUN: {len(self.missing)} planned test(s) have no result (a shard was cut short): "
                         + ", ".join(self.missing[:20]) + (" ..." if len(self.missing) > 20 else ""))
        if devices != ["CPU"]:
            for host, label in (("gpu", "GPU-only (every node on the GPU)"),
                                ("fallback", "host fallback (some nodes on the reference backend)"),
                                ("unknown", "failed before an engine was built (host nodes unknown)")):
                group = self.where(host)
                lines.append(f"  {label}: {_rate(sum(r.passed for r in group), len(group))}")
            for host, label in (("gpu", "Failures of GPU-only tests"),
                                ("unknown", "Failures before an engine was built")):
                lines += _failure_lines(self.failures_by_op(host), label)
        if failures:
            lines += [f"FAIL {r.name} [{r.op}]: {r.error}" for r in self.results if not r.passed]
        return "\n".join(lines)


def _rate(passed: int, total: int) -> str:
    return f"{passed}/{total} passed = {100 * passed / total if total else 0.0:.1f}%"


def _failure_lines(groups: dict[str, list[CaseResult]], label: str) -> list[str]:
    if not groups:
        return []
    count = sum(len(g) for g in groups.values())
    lines = [f"{label}, by op ({count} test(s), {len(groups)} op(s)):"]
    for op, group in groups.items():
        lines.append(f"  {op}: {len(group)} -- {group[0].name}: {group[0].error}")
        if len(group) > 1:
            lines.append("      also: " + ", ".join(r.name for r in group[1:]))
    return lines


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="node", choices=sorted(KIND_CLASSES))
    parser.add_argument("--include", help="regular expression on test names")
    parser.add_argument("--failures", action="store_true", help="list every failing test with its error")
    parser.add_argument("--device", default="CPU", type=str.upper, choices=["CPU", "CUDA"])
    parser.add_argument("--shard", type=parse_shard, metavar="K/N", help="run every N-th case from the K-th")
    parser.add_argument("--json", metavar="PATH", help="record each test's result in PATH (JSON Lines)")
    parser.add_argument("--test-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="with --json or on CUDA: a test running longer is recorded as failed (default 120)")
    parser.add_argument("--merge", nargs="+", metavar="PATH", help="report on results files written by --json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merge:
        print(Merged.load(args.merge).text(args.failures))
        return 0
    if args.device != "CPU" and not rtxrt.onnx_backend.supports_device(args.device):
        print(f"onnx_suite: --device {args.device}: {rtxrt.onnx_backend.device_problem(args.device)}", file=sys.stderr)
        return 2
    if args.worker:
        return work(args)
    if args.json or args.device != "CPU":
        path = args.json or os.path.join(tempfile.mkdtemp(prefix="onnx-suite-"), "results.jsonl")
        if not args.json:
            argv += ["--json", path]
        worker = [sys.executable, "-m", "tests.conformance.onnx_suite", *argv, "--worker"]
        code = supervise(worker, path, args.test_timeout)
        print(Merged.load([path]).text(args.failures))
        return code
    report = run_suite(args.kind, args.include, shard_of=args.shard)
    if args.failures:
        for name, message in sorted(report.failed.items()):
            print(f"FAIL {name}: {message}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
