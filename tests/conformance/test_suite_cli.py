"""The ONNX suite's command line for GPU runs: shards split the suite, results files merge
into pass rates (overall, GPU-only, host fallback), a worker that dies in a test is replaced
by one that resumes after it, and rtxrt.onnx_backend on "CUDA" says clearly when there is no GPU."""
from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rtxrt.onnx_backend
from rtxrt.backends.cuda.device import NoGpuError
from rtxrt.backends.cuda.device import find_gpu
from tests.conformance.onnx_suite import (
    Merged,
    SuiteReport,
    main,
    op_of,
    parse_shard,
    select_tests,
    shard,
    supervise,
)

no_gpu_here = pytest.mark.skipif(find_gpu() is not None, reason="this machine has a GPU")


def add_relu_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "add_relu",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_lines(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def header(planned: list[str], excluded: dict | None = None, shard: str = "0/2") -> dict:
    return {"type": "header", "kind": "node", "device": "CUDA", "shard": shard, "gpu": "NVIDIA H100 (sm_90)",
            "planned": planned, "excluded": excluded or {}}


def result(name: str, op: str, passed: bool, host_nodes: list[str] | None, error: str | None = None,
           seconds: float = 1.0) -> dict:
    return {"type": "result", "name": name, "op": op, "passed": passed, "error": error,
            "host_nodes": host_nodes, "seconds": seconds}


# --- shards ------------------------------------------------------------------------------------


def test_shards_are_disjoint_cover_everything_and_balance():
    names = [f"test_{c}{i}" for c in "zyxabc" for i in range(7)]  # 42, unsorted
    shards = [shard(names, k, 8) for k in range(8)]
    assert sorted(n for s in shards for n in s) == sorted(names)
    assert sum(len(s) for s in shards) == len({n for s in shards for n in s})
    assert {len(s) for s in shards} == {5, 6}
    in_order = sorted(names)
    assert shards[3][:2] == [in_order[3], in_order[11]]  # every 8th from the 3rd


def test_shard_arguments_are_checked():
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/8", "3", "a/b"):
        with pytest.raises(Exception, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="0 <= K < N"):
        shard(["test_a"], 2, 2)


def test_shards_of_the_node_suite_split_its_tests_and_exclusions():
    whole = SuiteReport("node")
    everything = {t._testMethodName for t in select_tests(whole)}
    parts = [SuiteReport("node") for _ in range(3)]
    picked = [{t._testMethodName for t in select_tests(p, shard_of=(k, 3))} for k, p in enumerate(parts)]
    assert set().union(*picked) == everything and sum(map(len, picked)) == len(everything)
    assert {n: r for p in parts for n, r in p.excluded.items()} == whole.excluded
    assert sum(len(p.excluded) for p in parts) == len(whole.excluded)


# --- ops of tests ------------------------------------------------------------------------------


def test_a_test_is_grouped_under_its_op():
    assert op_of("test_add_relu", add_relu_model()) == "Add"  # named after an op of the model
    single = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [], []))
    assert op_of("test_relu_example", single) == "Relu"
    assert op_of("test_softmax_axis_0_expanded", add_relu_model()) == "Softmax (expanded)"
    assert op_of("test_reduce_log_sum_exp_keepdims_expanded", add_relu_model()) == "ReduceLogSumExp (expanded)"
    assert op_of("test_my_model", add_relu_model()) == "Add+Relu"
    assert op_of("test_my_model", None) == "?"


# --- merging -----------------------------------------------------------------------------------


@pytest.fixture
def two_shards(tmp_path) -> list[Path]:
    first = write_lines(
        tmp_path / "s0.jsonl",
        header(["test_conv_a", "test_conv_b", "test_relu", "test_cumsum"], {"test_adam": "domain training"}),
        {"type": "running", "name": "test_conv_a", "op": "Conv", "time": 0.0},
        result("test_conv_a", "Conv", False, [], "AssertionError: Not equal to tolerance rtol=0.001", 2.0),
        result("test_conv_b", "Conv", False, [], "AssertionError: Mismatched elements: 3 / 8", 3.0),
        result("test_relu", "Relu", True, [], seconds=0.25),
        result("test_cumsum", "CumSum", True, ["CumSum node 'CumSum_0'"]),
    )
    second = write_lines(
        tmp_path / "s1.jsonl",
        header(["test_add", "test_einsum", "test_gemm", "test_mul", "test_pow"], shard="1/2"),
        result("test_add", "Add", True, []),
        result("test_einsum", "Einsum", False, ["Einsum node 'Einsum_0'"], "AssertionError: shapes"),
        result("test_gemm", "Gemm", False, None, "CodegenError: Gemm node 'Gemm_0': bad tile"),
        {"type": "excluded", "name": "test_mul", "reason": "Backend doesn't support device CUDA"},
        {"type": "running", "name": "test_pow", "op": "Pow", "time": 0.0},  # the shard was cut short here
    )
    return [first, second]


def test_merge_counts_pass_rates_by_where_the_nodes_ran(two_shards):
    merged = Merged.load(two_shards)
    assert [len(merged.results), sum(r.passed for r in merged.results)] == [7, 3]
    assert [r.name for r in merged.where("gpu")] == ["test_add", "test_conv_a", "test_conv_b", "test_relu"]
    assert [r.name for r in merged.where("fallback")] == ["test_cumsum", "test_einsum"]
    assert [r.name for r in merged.where("unknown")] == ["test_gemm"]
    assert merged.excluded == {"test_adam": "domain training", "test_mul": "Backend doesn't support device CUDA"}
    assert merged.missing == ["test_pow"]
    assert {op: [r.name for r in rs] for op, rs in merged.failures_by_op("gpu").items()} == {
        "Conv": ["test_conv_a", "test_conv_b"]}


def test_merge_report_reads_as_the_lead_reports_it(two_shards):
    text = Merged.load(two_shards).text()
    lines = text.splitlines()
    assert lines[0] == ("ONNX backend suite [node] on CUDA (NVIDIA H100 (sm_90)), 2 file(s): 3/7 passed = 42.9% "
                        "(2 excluded; the slowest file's tests took 6 s)")  # 2 + 3 + 0.25 + 1
    assert "NOT RUN: 1 planned test(s) have no result (a shard was cut short): test_pow" in lines[1]
    assert "  GPU-only (every node on the GPU): 2/4 passed = 50.0%" in lines
    assert "  host fallback (some nodes on the reference backend): 1/2 passed = 50.0%" in lines
    assert "  failed before an engine was built (host nodes unknown): 0/1 passed = 0.0%" in lines
    gpu_failures = lines.index("Failures of GPU-only tests, by op (2 test(s), 1 op(s)):")
    assert lines[gpu_failures + 1] == "  Conv: 2 -- test_conv_a: AssertionError: Not equal to tolerance rtol=0.001"
    assert lines[gpu_failures + 2] == "      also: test_conv_b"
    assert "  Gemm: 1 -- test_gemm: CodegenError: Gemm node 'Gemm_0': bad tile" in lines
    assert "Einsum" not in text  # a fallback failure is not a GPU-only failure


def test_merge_refuses_overlapping_shards_and_foreign_files(tmp_path, two_shards):
    with pytest.raises(ValueError, match="test_conv_a has a result in two files"):
        Merged.load([two_shards[0], two_shards[0]])
    with pytest.raises(ValueError, match="no header line"):
        Merged.load([write_lines(tmp_path / "x.jsonl", result("test_a", "A", True, []))])


def test_merge_from_the_command_line(two_shards, capsys):
    assert main(["--merge", *map(str, two_shards), "--failures"]) == 0
    out = capsys.readouterr().out
    assert "3/7 passed = 42.9%" in out
    assert "FAIL test_gemm [Gemm]: CodegenError: Gemm node 'Gemm_0': bad tile" in out


# --- workers -----------------------------------------------------------------------------------

# A stand-in worker: the first run records test_a, then dies in test_b; the next resumes.
FAKE_WORKER = textwrap.dedent("""
    import json, sys, time
    path = sys.argv[1]
    def put(record):
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\\n")
    records = [json.loads(line) for line in open(path)]
    done = {r["name"] for r in records if r["type"] == "result"}
    if not records:
        put({"type": "header", "kind": "node", "device": "CUDA", "shard": None, "gpu": None,
             "planned": ["test_a", "test_b", "test_c"], "excluded": {}})
    for name in ["test_a", "test_b", "test_c"]:
        if name in done:
            continue
        put({"type": "running", "name": name, "op": name[-1].upper(), "time": time.time() - float(sys.argv[2])})
        if name == "test_b":
            sys.exit(1)
        put({"type": "result", "name": name, "op": name[-1].upper(), "passed": True, "error": None,
             "host_nodes": [], "seconds": 0.1})
""")


@pytest.mark.parametrize("age, error", [
    (0.0, "ProcessDied: the test process died (exit code 1)"),
    (500.0, "ProcessDied: over the 120 s watchdog"),
])
def test_a_worker_that_dies_in_a_test_is_replaced_after_it(tmp_path, age, error):
    path = tmp_path / "results.jsonl"
    path.write_text("stale results of an earlier run\n")
    assert supervise([sys.executable, "-c", FAKE_WORKER, str(path), str(age)], path, timeout=120) == 0
    merged = Merged.load([path])
    assert [(r.name, r.op, r.passed, r.error) for r in merged.results] == [
        ("test_a", "A", True, None), ("test_b", "B", False, error), ("test_c", "C", True, None)]
    assert merged.missing == []


def test_a_worker_that_fails_before_any_test_is_not_restarted(tmp_path, capsys):
    started = time.perf_counter()
    code = supervise([sys.executable, "-c", "import sys; sys.exit(7)"], tmp_path / "r.jsonl", timeout=120)
    assert code == 7 and time.perf_counter() - started < 10
    assert "before running a test" in capsys.readouterr().err


def test_the_cpu_suite_runs_in_a_worker_into_a_results_file(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    assert main(["--include", "^test_(abs|relu)$", "--json", str(path)]) == 0
    merged = Merged.load([path])
    assert [(r.name, r.op, r.passed, r.host_nodes) for r in merged.results] == [
        ("test_abs", "Abs", True, None), ("test_relu", "Relu", True, None)]
    assert "2/2 passed = 100.0%" in capsys.readouterr().out


# --- rtxrt.onnx_backend on CUDA ---------------------------------------------------------------------


def test_cpu_stays_supported_and_unknown_devices_are_named():
    assert rtxrt.onnx_backend.supports_device("CPU")
    assert not rtxrt.onnx_backend.supports_device("TPU")
    assert "'TPU'" in rtxrt.onnx_backend.device_problem("TPU")
    with pytest.raises(ValueError, match="does not run on device 'TPU'"):
        rtxrt.onnx_backend.prepare(add_relu_model(), "TPU")


@no_gpu_here
def test_without_a_gpu_cuda_is_unsupported_and_prepare_says_why():
    assert not rtxrt.onnx_backend.supports_device("CUDA")
    assert not rtxrt.onnx_backend.supports_device("CUDA:0")
    with pytest.raises(NoGpuError, match="cannot prepare a model for device 'CUDA': .*(driver|CuPy|GPU)"):
        rtxrt.onnx_backend.prepare(add_relu_model(), "CUDA")


@no_gpu_here
def test_without_a_gpu_the_suite_refuses_cuda_at_once(capsys):
    started = time.perf_counter()
    assert main(["--device", "CUDA", "--shard", "0/8"]) == 2
    assert time.perf_counter() - started < 5
    assert "--device CUDA: " in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_rep_runs_on_the_gpu_and_returns_numpy():
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    assert rtxrt.onnx_backend.supports_device("CUDA")
    rep = rtxrt.onnx_backend.prepare(add_relu_model(), "CUDA")
    (y,) = rep.run([a, b])
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (3, 4)
    # One fp32 add and a max: the GPU rounds exactly as numpy does.
    np.testing.assert_allclose(y.astype(np.float64), np.maximum(a + b, 0).astype(np.float64), rtol=0, atol=1e-6)
    assert rep.session.on_gpu and rep.host_nodes == []


@pytest.mark.gpu
def test_the_suite_runs_on_cuda_and_records_where_nodes_ran(tmp_path):
    path = tmp_path / "r.jsonl"
    assert main(["--device", "CUDA", "--include", "^test_(abs|relu)$", "--json", str(path)]) == 0
    merged = Merged.load([path])
    assert merged.headers[0]["gpu"] == find_gpu()
    assert [(r.name, r.passed, r.host_nodes) for r in merged.results] == [("test_abs", True, []), ("test_relu", True, [])]
