"""ONNX's node test suite through rtxrt.Session on the GPU (JIT, generated kernels, CUDA
graphs), held to a pinned list of the cases expected to fail there (expected_failures.py): one
new failure of a GPU kernel fails the run. Four shards run in parallel worker processes, each
resuming after a test that crashes its process."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conformance.conftest import SUMMARIES
from tests.conformance.expected_failures import CUDA_NODE
from tests.conformance.onnx_suite import Merged

pytestmark = pytest.mark.gpu
SHARDS = 4


def test_cuda_node_tests_fail_only_where_expected(tmp_path):
    paths = [tmp_path / f"shard{k}.jsonl" for k in range(SHARDS)]
    workers = [subprocess.Popen([sys.executable, "-m", "tests.conformance.onnx_suite", "--device", "CUDA",
                                 "--shard", f"{k}/{SHARDS}", "--json", str(path)],
                                stdout=subprocess.DEVNULL) for k, path in enumerate(paths)]
    assert [w.wait(timeout=1200) for w in workers] == [0] * SHARDS
    merged = Merged.load(paths)
    SUMMARIES.append(merged.text().splitlines()[0])
    assert not merged.missing, f"tests without a result: {merged.missing}"
    assert len(merged.results) > 1700, "the node suite shrank: did collection break?"
    failed = {r.name: r.error for r in merged.results if not r.passed}
    expected = CUDA_NODE & {r.name for r in merged.results}
    new = sorted(set(failed) - CUDA_NODE)
    fixed = sorted(expected - set(failed))
    assert set(failed) == expected, (
        f"new failures: {', '.join(f'{n} ({failed[n]})' for n in new) or 'none'}; "
        f"expected to fail but passed (take them off the list): {', '.join(fixed) or 'none'}")
