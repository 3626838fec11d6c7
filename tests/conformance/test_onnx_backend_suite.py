"""ONNX's backend test suite through ``rtxrt.onnx_backend``: the node tests, the ``light`` model zoo
(the ``real`` kind), and the pytorch-converted and pytorch-operator tests.

Each test prints its pass rate and holds the suite to a pinned list of the cases expected to
fail on the reference backend (expected_failures.py): one new failure fails CI, and a case that starts passing must
leave the list (so the list stays true). Why each fails is in README's Conformance section.
"""
from __future__ import annotations

import pytest

from tests.conformance.conftest import SUMMARIES
from tests.conformance.expected_failures import EXPECTED_FAILURES
from tests.conformance.onnx_suite import run_suite

LIGHT_MODELS = {
    "test_bvlc_alexnet", "test_densenet121", "test_inception_v1", "test_inception_v2", "test_resnet50",
    "test_shufflenet", "test_squeezenet", "test_vgg19", "test_zfnet512",
}


def _report(kind: str, record_property):
    report = run_suite(kind)
    print("\n" + report.summary())
    SUMMARIES.append(report.summary())
    for name, message in sorted(report.failed.items()):
        print(f"  FAIL {name}: {message}")
    record_property(f"{kind}_pass_rate", f"{report.pass_rate:.4f}")
    return report



def test_node_tests_fail_only_where_expected(record_property):
    report = _report("node", record_property)
    assert report.counted > 1700, "the node suite shrank: did collection break?"
    assert set(report.failed) == _expected(report, "node"), _surprises(report, "node")


def test_every_light_zoo_model_passes(record_property):
    report = _report("real", record_property)
    assert set(report.passed) == LIGHT_MODELS, report.failed


@pytest.mark.parametrize("kind", ["pytorch-converted", "pytorch-operator"])
def test_pytorch_suites_fail_only_where_expected(kind, record_property):
    report = _report(kind, record_property)
    assert set(report.failed) == _expected(report, kind), _surprises(report, kind)


def _expected(report, kind: str) -> set[str]:
    """The pinned failures among the cases this onnx version has."""
    return EXPECTED_FAILURES[kind] & (set(report.passed) | set(report.failed))


def _surprises(report, kind: str) -> str:
    new = sorted(set(report.failed) - EXPECTED_FAILURES[kind])
    fixed = sorted(_expected(report, kind) - set(report.failed))
    return (f"new failures: {', '.join(f'{n} ({report.failed[n]})' for n in new) or 'none'}; "
            f"expected to fail but passed (take them off the list): {', '.join(fixed) or 'none'}")
