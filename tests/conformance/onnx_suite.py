"""Runs ONNX's backend test suite against ``rtxrt.backend`` and reports the pass rate.

    python -m tests.conformance.onnx_suite [--kind node|real|pytorch-converted|pytorch-operator|simple]
                                           [--include REGEX] [--failures]

Node tests are collected in-process from the installed onnx (``collect_testcases``); the
``real`` kind is the ``light`` model zoo shipped inside the onnx wheel.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
import time
import unittest
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.backend.test

import rtxrt.backend

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


@dataclass
class SuiteReport:
    kind: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def counted(self) -> int:
        return len(self.passed) + len(self.failed)

    @property
    def pass_rate(self) -> float:
        return len(self.passed) / self.counted if self.counted else 0.0

    def summary(self) -> str:
        return (
            f"ONNX backend suite [{self.kind}] through rtxrt.backend: {len(self.passed)}/{self.counted} "
            f"passed = {100 * self.pass_rate:.1f}% ({len(self.excluded)} excluded, {self.seconds:.0f} s)"
        )


class _Collector(unittest.TestResult):
    def __init__(self, report: SuiteReport, models: dict[str, onnx.ModelProto]):
        super().__init__()
        self.report = report
        self.models = models

    def addSuccess(self, test):
        self.report.passed.append(_name(test))

    def addFailure(self, test, err):
        self.report.failed[_name(test)] = _message(err)

    def addError(self, test, err):
        self.report.failed[_name(test)] = _message(err)

    def addSkip(self, test, reason):
        self.report.excluded[_name(test)] = reason


def _name(test) -> str:
    return test._testMethodName.removesuffix("_cpu")


def _message(err) -> str:
    exc = err[1]
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


@functools.cache
def _backend_test() -> onnx.backend.test.BackendTest:
    # Collecting the node cases runs their generators, which warn on purpose (inf, nan).
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return onnx.backend.test.BackendTest(rtxrt.backend, __name__)


@functools.cache
def _cases(kind: str) -> list:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return onnx.backend.test.loader.load_model_tests(kind=kind)


def run_suite(kind: str = "node", include: str | None = None) -> SuiteReport:
    report = SuiteReport(kind)
    start = time.perf_counter()
    cases = _cases(kind)
    backend_test = _backend_test()
    kind_pattern = {"node": "Node", "real": "Real", "simple": "Simple",
                    "pytorch-converted": "PyTorchConverted", "pytorch-operator": "PyTorchOperator"}[kind]
    names = {c.name for c in cases}
    if kind == "node":
        for case in cases:
            reason = excluded_reason(case.model)
            if reason:
                report.excluded[case.name] = reason
    selected = re.compile(include) if include else None
    suite = unittest.TestSuite()
    for cls in backend_test.test_cases.values():
        if kind_pattern not in cls.__name__ or "Model" not in cls.__name__:
            continue
        for test_name in unittest.TestLoader().getTestCaseNames(cls):
            base = test_name.removesuffix("_cpu")
            if not test_name.endswith("_cpu") or base not in names or base in report.excluded:
                continue
            if selected and not selected.search(base):
                continue
            suite.addTest(cls(test_name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite.run(_Collector(report, {}))
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="node")
    parser.add_argument("--include", help="regular expression on test names")
    parser.add_argument("--failures", action="store_true", help="list every failing test with its error")
    args = parser.parse_args(argv)
    report = run_suite(args.kind, args.include)
    if args.failures:
        for name, message in sorted(report.failed.items()):
            print(f"FAIL {name}: {message}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
