"""benchmarks/peers.py: the harness that compares rtxrt with PyTorch, torch.compile and
onnxruntime on one GPU.

CPU tests (CI): timing statistics, the error measure, which peers run where, the table, a
failing peer becoming a row, the time limit, and one small end-to-end run with the CPU-capable
peers (the zoo UNet at 64x64: PyTorch fp32 on the CPU and onnxruntime CPU) in a few seconds.
The GPU test runs the command line on the same small model with every GPU peer but
torch.compile (minutes of compiling) and checks each row's numbers.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the benchmark builds torch models (pip install rtxrt[test])")
pytest.importorskip("onnxruntime", reason="the benchmark compares with onnxruntime (pip install rtxrt[test])")

from tests.models import zoo

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("peers_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


peers = _load_script()


def _labels(peer_list) -> list[str]:
    return [p.label for p in peer_list]


# ---------------------------------------------------------------------------------------------
# Timing and error
# ---------------------------------------------------------------------------------------------


def test_measure_warms_up_then_reports_median_and_p90_of_the_timed_calls():
    calls = []
    samples = iter([100.0, 100.0, *range(1, 11)])  # two warm-up calls, then 1..10 ms

    def timer(call):
        call()
        return float(next(samples))

    timing = peers.measure(lambda: calls.append(1), timer, warmup=2, iterations=10, max_seconds=60)
    assert len(calls) == 12
    assert (timing.median_ms, timing.iterations) == (5.5, 10)
    assert timing.p90_ms == pytest.approx(9.1)  # numpy's linear interpolation


def test_measure_stops_after_max_seconds_but_times_at_least_three_calls():
    timing = peers.measure(lambda: None, lambda call: 1.0, warmup=0, iterations=1000, max_seconds=0)
    assert timing.iterations == 3


def test_iterations_are_fewer_at_large_batches():
    s = peers.Settings(iterations=50)
    assert (s.iterations_for(1), s.iterations_for(32), s.warmup_for(1), s.warmup_for(32)) == (50, 20, 10, 4)
    assert peers.Settings(iterations=5).iterations_for(32) == 5
    assert peers.Settings(iterations=3).iterations_for(32) == 3  # never more than at batch 1


def test_relative_error_is_the_worst_output_in_l2():
    ref = [np.array([3.0, 4.0], np.float32), np.array([1.0], np.float32)]
    got = [np.array([3.0, 4.5], np.float16), np.array([1.01], np.float32)]
    assert peers.relative_error(got, ref) == pytest.approx(0.1, rel=1e-3)  # 0.5 / 5 beats 0.01 / 1
    with pytest.raises(ValueError, match="shape"):
        peers.relative_error([np.zeros(3)], [np.ones(2)])
    with pytest.raises(ValueError, match="outputs"):
        peers.relative_error([np.ones(2)], ref)


# ---------------------------------------------------------------------------------------------
# What runs where
# ---------------------------------------------------------------------------------------------


def test_full_size_models_and_their_batches():
    assert peers.model_spec("resnet50").label == "resnet50 224x224"
    assert peers.model_spec("bert_base").label == "bert_base seq 128"
    assert peers.model_spec("unet").batches([1, 8, 32]) == [1, 8]  # UNet and ViT: batch 1, optionally 8
    assert peers.model_spec("vit_b16").batches([1, 32]) == [1]
    assert peers.model_spec("bert_base").batches([1, 32]) == [1, 32]
    assert peers.model_spec("resnet18").label == "resnet18 64x64"  # other zoo models at the zoo's size
    with pytest.raises(SystemExit, match="unknown model"):
        peers.model_spec("resnet1000")


def test_plan_runs_the_cpu_provider_at_batch_1_only_beside_a_gpu():
    specs = [peers.model_spec("resnet50")]
    providers = ["CPUExecutionProvider", "AzureExecutionProvider"]
    with_gpu = peers.plan(specs, [1, 32], peers.Settings(), True, providers)
    assert _labels(with_gpu[0][2]) == ["PyTorch eager fp32", "PyTorch eager fp16", "rtxrt fp16", "rtxrt fp32",
                                       "onnxruntime CPU fp32"]
    assert "onnxruntime CPU fp32" not in _labels(with_gpu[1][2])
    assert _labels(with_gpu[1][3]) == ["torch.compile fp16", "torch.compile reduce-overhead fp16"]
    without_gpu = peers.plan(specs, [1, 32], peers.Settings(), False, providers)
    assert "onnxruntime CPU fp32" in _labels(without_gpu[1][2])


def test_plan_adds_gpu_providers_and_quick_drops_the_extra_rows():
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    [(_, _, first, later)] = peers.plan([peers.model_spec("vit_b16")], [1], peers.Settings(quick=True), True, providers)
    assert _labels(first) == ["PyTorch eager fp32", "PyTorch eager fp16", "rtxrt fp16",
                              "onnxruntime Tensorrt fp32", "onnxruntime CUDA fp32", "onnxruntime CPU fp32"]
    assert _labels(later) == ["torch.compile fp16"]
    [(_, _, _, none)] = peers.plan([peers.model_spec("vit_b16")], [1], peers.Settings(torch_compile=False), True, providers)
    assert none == []


# ---------------------------------------------------------------------------------------------
# Rows and the table
# ---------------------------------------------------------------------------------------------


def test_markdown_table_has_every_column_speedups_and_errors():
    rows = [
        peers.Row("resnet50 224x224", 1, "PyTorch eager fp16", 2.0, 2.2, 50, peak_bytes=200 * 2**20, rel_err=1.5e-3),
        peers.Row("resnet50 224x224", 1, "rtxrt fp16", 0.5, 0.6, 50, compile_s=12.345, warm_s=0.25,
                  peak_bytes=100 * 2**20, rel_err=2e-3, note="cold: 40 kernels"),
        peers.Row("resnet50 224x224", 1, "torch.compile fp16", error="RuntimeError: a | b"),
        peers.Row("resnet50 224x224", 32, "rtxrt fp16", 8.0, 9.0, 20),  # no baseline at batch 32
    ]
    lines = peers.markdown_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[:1] + lines[2:])
    assert all(line.count("|") == len(peers.HEADERS) + 1 for line in lines)
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == ["resnet50 224x224", "1", "rtxrt fp16", "0.500", "0.600", "2,000", "12.35 / 0.25", "100",
                     "2.0e-03", "4.00x", "cold: 40 kernels"]
    assert "ERROR RuntimeError: a / b" in lines[4]
    assert lines[5].split("|")[10].strip() == "-"
    assert rows[3].items_per_s == pytest.approx(4000)


def test_a_failing_peer_becomes_a_row_with_its_error():
    def broken(case):
        raise RuntimeError("no kernel for\nnode conv_7")

    case = _tiny_case(device="cpu", reference=None)
    row = peers.run_peer(case, peers.Peer("broken", broken, needs_gpu=False))
    assert row.error == "RuntimeError: no kernel for node conv_7"
    assert row.median_ms is None
    skipped = peers.run_peer(case, peers.Peer("gpu only", broken))
    assert skipped.error is None and skipped.note == "skipped: needs a CUDA GPU"


def _tiny_case(device: str, reference):
    spec = peers.ModelSpec("resnet18")
    inputs = {"input": np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)}
    return peers.Case(spec, 1, Path("tiny.onnx"), ["input"], inputs, None, peers.Settings(), device, reference)


def test_past_the_time_limit_nothing_is_exported_or_run(tmp_path):
    settings = peers.Settings(time_limit=0.0, quick=True)
    rows = peers.run([peers.model_spec("resnet18")], [1], settings, tmp_path, tmp_path / "out.json",
                     log=lambda line: None, device="cpu")
    assert rows and all(r.note.startswith("skipped: --time-limit") for r in rows)
    assert not list(tmp_path.glob("*.onnx"))
    assert len(json.loads((tmp_path / "out.json").read_text())["rows"]) == len(rows)


# ---------------------------------------------------------------------------------------------
# End to end on the CPU
# ---------------------------------------------------------------------------------------------


def test_cpu_run_exports_times_and_checks_the_cpu_peers(tmp_path):
    """The zoo UNet at 1x3x64x64 (BatchNorm, GroupNorm, ConvTranspose, Resize): the reference is
    PyTorch fp32 on the CPU; onnxruntime CPU agrees with it to float32 rounding (~1e-6; 1e-4
    leaves headroom, a wrong op gives errors near 1)."""
    settings = peers.Settings(iterations=3, max_seconds=1.0, quick=True, torch_compile=False)
    out = tmp_path / "peers.json"
    lines: list[str] = []
    rows = peers.run([peers.ModelSpec("unet")], [1], settings, tmp_path, out, log=lines.append, device="cpu")
    by_peer = {r.peer: r for r in rows}
    assert list(by_peer) == ["PyTorch eager fp32", "PyTorch eager fp16", "rtxrt fp16", "onnxruntime CPU fp32"]
    ort, eager = by_peer["onnxruntime CPU fp32"], by_peer["PyTorch eager fp32"]
    for row in (ort, eager):
        assert row.error is None
        assert row.iterations >= 3 and 0 < row.median_ms <= row.p90_ms
    assert ort.rel_err < 1e-4 and ort.compile_s > 0 and ort.peak_bytes is None
    assert eager.rel_err == 0.0  # the reference itself, same CPU kernels
    assert by_peer["rtxrt fp16"].note == "skipped: needs a CUDA GPU"
    assert len(lines) == len(rows)

    saved = json.loads(out.read_text())
    assert saved["card"] and saved["settings"]["iterations"] == 3
    assert [r["peer"] for r in saved["rows"]] == list(by_peer)
    assert "| unet 64x64 | 1 | onnxruntime CPU fp32 |" in peers.markdown_table(rows)


def test_inputs_are_fresh_random_never_zeros(tmp_path):
    spec = peers.model_spec("bert")
    exported = zoo.ExportedModel("bert", str(tmp_path / "unused.onnx"), zoo.TEXT_MODELS["bert"].make_inputs,
                                 list(zoo.TEXT_MODELS["bert"].inputs))
    case = peers.make_case(spec, 4, exported, None, tmp_path, peers.Settings(seed=7), "cpu")
    ids = case.inputs["input_ids"]
    assert ids.shape == (4, 128) and len(np.unique(ids)) > 100
    assert case.inputs["attention_mask"].min() == 0 and case.inputs["attention_mask"].max() == 1


# ---------------------------------------------------------------------------------------------
# zoo: BERT-base
# ---------------------------------------------------------------------------------------------


def test_bert_base_is_full_size_and_kept_out_of_the_cpu_model_tests():
    pytest.importorskip("transformers")
    c = zoo.bert_base_config()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 3072)
    assert (c.vocab_size, c.max_position_embeddings) == (30522, 512)
    assert "bert_base" in zoo.TEXT_MODELS and "bert_base" not in zoo.MODEL_NAMES
    inputs = zoo.TEXT_MODELS["bert_base"].make_inputs(3, batch=2, seq=128)
    assert inputs["input_ids"].shape == (2, 128) and inputs["input_ids"].max() >= zoo.BERT_VOCAB


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_command_line_times_every_peer(tmp_path, capsys):
    """ResNet-18 at 64x64, batches 1 and 2, --quick without torch.compile. Every row must have
    run. fp16 (torch or rtxrt) and TF32 (torch's fp32 convolutions) keep ~11 bits of mantissa:
    the logits' relative L2 error against fp32 is ~1e-3 over 20 layers; 2e-2 bounds it, while a
    wrong kernel gives errors near 1."""
    out = tmp_path / "peers.json"
    assert peers.main(["--models", "resnet18", "--batches", "1,2", "--quick", "--skip-torch-compile",
                       "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["card"] in printed and "| resnet18 64x64 | 2 | rtxrt fp16 |" in printed
    rows = saved["rows"]
    assert {(r["batch"], r["peer"]) for r in rows} >= {
        (b, p) for b in (1, 2) for p in ("PyTorch eager fp32", "PyTorch eager fp16", "rtxrt fp16")}
    for r in rows:
        assert r["error"] is None, (r["peer"], r["batch"], r["error"])
        assert 0 < r["median_ms"] <= r["p90_ms"], r
        assert r["rel_err"] < 2e-2, r
        if r["peer"] != "onnxruntime CPU fp32":
            assert r["peak_bytes"] > 0, r
            assert r["speedup_vs_eager_fp16"] > 0, r
    rtxrt = [r for r in rows if r["peer"] == "rtxrt fp16"]
    assert all(r["compile_s"] > 0 and r["warm_s"] > 0 for r in rtxrt)
    assert all(r["extra"]["warm_stats"]["from_cache"] is True for r in rtxrt)
