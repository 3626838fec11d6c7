"""ONNX's backend test suite through ``rtxrt.backend``: the node tests, the ``light`` model zoo
(the ``real`` kind), and the pytorch-converted and pytorch-operator tests.

Each test prints its pass rate; the thresholds are the foundation issue's bar (node tests
>= 85%, onnxruntime 1.32 CPU passes 84.9% on the same count; every light model passes)
and, for the pytorch kinds, the rate reached when the suite was last widened.
"""
from __future__ import annotations

import pytest

from tests.conformance.conftest import SUMMARIES
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


def test_node_tests_pass_rate_is_at_least_85_percent(record_property):
    report = _report("node", record_property)
    assert report.counted > 1700, "the node suite shrank: did collection break?"
    assert report.pass_rate >= 0.85, report.summary()


def test_every_light_zoo_model_passes(record_property):
    report = _report("real", record_property)
    assert set(report.passed) == LIGHT_MODELS, report.failed


@pytest.mark.parametrize("kind, minimum", [("pytorch-converted", 0.95), ("pytorch-operator", 0.90)])
def test_pytorch_suites(kind, minimum, record_property):
    report = _report(kind, record_property)
    assert report.pass_rate >= minimum, report.summary()
