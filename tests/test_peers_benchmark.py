"""benchmarks/peers.py: the harness that compares rtxrt with PyTorch, torch.compile and
onnxruntime on one GPU, over the model matrix of issue 15 (benchmarks/matrix_models.py).

CPU tests (CI): timing statistics, the error measure, the matrix's models (each builds, stays
alive, exports to ONNX and agrees with onnxruntime at its tiny size; its PyTorch peers' variant
agrees with it and makes every tensor on the input's device and in its dtype), which peers run
where and in which order, the tables (the fastest peer in bold, geometric means), a failing peer
becoming a row, the time limit, merging runs, and one small end-to-end run with the CPU-capable
peers. The GPU test runs the command line on a small model with every GPU peer but
torch.compile (minutes of compiling) and checks each row's numbers.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the benchmark builds torch models (pip install rtxrt[test])")
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
MATRIX = peers.MATRIX


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


def test_measure_warms_up_at_least_once_and_no_longer_than_max_seconds():
    calls = []
    peers.measure(lambda: calls.append(1), lambda call: call() or 1.0, warmup=100, iterations=3, max_seconds=0)
    assert len(calls) == 1 + 3  # one warm-up (a slow host peer must not spend its budget there)


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


def test_liveness_names_zero_constant_and_non_finite_outputs():
    alive = np.random.default_rng(0).standard_normal((2, 5))
    assert peers.liveness_problem([alive]) is None
    assert "all zeros" in peers.liveness_problem([alive, np.zeros((2, 3))])
    assert "constant" in peers.liveness_problem([np.full((4,), 0.5) + 1e-9 * alive[0, :4]])
    assert "non-finite" in peers.liveness_problem([np.array([1.0, np.inf])])


# ---------------------------------------------------------------------------------------------
# The matrix: which models, at which sizes
# ---------------------------------------------------------------------------------------------


def test_the_matrix_covers_the_families_of_issue_15():
    families = {f: [n for n, s in MATRIX.items() if s.family == f] for f in ("CNN", "transformer", "audio")}
    assert len(MATRIX) >= 12 and sum(map(len, families.values())) == len(MATRIX)
    assert {"resnet50", "convnext_t", "unet", "yolov8"} <= set(families["CNN"]) and len(families["CNN"]) >= 6
    assert {"bert_base", "vit_b16", "gpt2_small", "whisper_encoder"} <= set(families["transformer"])
    assert len(families["transformer"]) >= 5 and len(families["audio"]) >= 1
    for spec in MATRIX.values():
        assert spec.default_batches[0] == 1 and spec.default_batches[-1] in (16, 32), spec.name
        assert spec.precisions[0] == "fp16", spec.name
    assert [n for n, s in MATRIX.items() if {"fp32", "tf32"} <= set(s.precisions)] == ["resnet50", "bert_base"]
    labels = [s.label for s in MATRIX.values()] + [s.at_tiny_size().label for s in MATRIX.values()]
    assert len(set(labels)) == len(labels)


def test_inputs_are_realistic_sizes_and_fresh_random_never_zeros():
    shapes = {name: {k: v.shape for k, v in MATRIX[name].make_inputs(7, 4).items()}
              for name in ("resnet50", "unet", "yolov8", "vit_b16", "whisper_encoder", "vad", "gpt2_small")}
    assert shapes["resnet50"] == {"input": (4, 3, 224, 224)} and shapes["vit_b16"] == {"input": (4, 3, 224, 224)}
    assert shapes["unet"] == {"input": (4, 3, 256, 256)} and shapes["yolov8"] == {"input": (4, 3, 640, 640)}
    assert shapes["whisper_encoder"] == {"mel": (4, 80, 3000)}  # whisper-base: 80 mel x 30 s
    assert shapes["vad"] == {"audio": (4, 16000)}  # 1 s at 16 kHz
    assert shapes["gpt2_small"] == {"input_ids": (4, 512), "attention_mask": (4, 512)}
    bert = MATRIX["bert_base"].make_inputs(7, 4)
    assert bert["input_ids"].shape == (4, 128) and len(np.unique(bert["input_ids"])) > 100
    assert bert["input_ids"].max() >= zoo.BERT_VOCAB  # BERT-base's vocabulary, not the zoo's small one
    assert bert["attention_mask"].min() == 0 and bert["attention_mask"].max() == 1
    image = MATRIX["resnet50"].make_inputs(7, 1)["input"]
    assert image.std() == pytest.approx(1.0, abs=0.01)
    assert not np.array_equal(image, MATRIX["resnet50"].make_inputs(8, 1)["input"])


def test_whisper_encoder_and_vad_are_built_at_realistic_size():
    whisper = MATRIX["whisper_encoder"].build_model()
    assert (whisper.conv1.in_channels, whisper.width, len(whisper.blocks), whisper.blocks[0].heads) == (80, 512, 6, 8)
    vad = MATRIX["vad"].build_model()
    assert (vad.stft.kernel_size[0], vad.stft.stride[0], vad.lstm.hidden_size) == (256, 128, 128)


def test_model_spec_batches_and_zoo_models():
    assert peers.model_spec("resnet50").label == "ResNet-50 224x224"
    assert peers.model_spec("resnet50").batches() == [1, 32]
    assert peers.model_spec("vit_b16").batches() == [1, 16]
    assert peers.model_spec("vit_b16").batches([1]) == [1]  # --batches: exactly those
    assert peers.model_spec("unet").batches([1, 8]) == [1, 8]
    assert dataclasses.replace(peers.model_spec("unet"), max_batch=8).batches([1, 8, 32]) == [1, 8]
    zoo_model = peers.model_spec("resnet18")  # other zoo models at the zoo's size, fp16 and fp32
    assert (zoo_model.label, zoo_model.precisions) == ("resnet18 64x64", ("fp16", "fp32"))
    assert peers.model_spec("bert").make_inputs(1, 2)["input_ids"].shape == (2, 128)
    with pytest.raises(SystemExit, match="unknown model"):
        peers.model_spec("resnet1000")


def _torch_args(feeds, device="cpu", dtype=None):
    tensors = [torch.from_numpy(v).to(device) for v in feeds.values()]
    return [t.to(dtype) if dtype is not None and t.is_floating_point() else t for t in tensors]


@pytest.mark.parametrize("name", list(MATRIX))
def test_matrix_model_builds_lives_and_exports_at_tiny_size(name, tmp_path):
    """At the tiny size (the architecture with fewer, narrower layers and small inputs): the
    outputs are finite, not zero, not constant, and move with the input (so a wrong kernel shows in
    the error); the PyTorch peers' variant (SDPA attention) gives the same outputs, and in fp16 on
    the meta device it makes every tensor on the input's device (a tensor made on the CPU would
    fail on the GPU; transformers' models are left to transformers); the ONNX export runs in
    onnxruntime and agrees (a dynamic one at another batch too)."""
    import onnxruntime as ort

    spec = MATRIX[name].at_tiny_size()
    if spec.missing_library():
        pytest.skip(f"{name} {spec.missing_library()}")
    model = spec.build_model()
    peer_model = spec.peer_model(model)
    feeds, other = spec.make_inputs(3, 2), spec.make_inputs(4, 2)
    with torch.inference_mode():
        outputs = peers.to_numpy(model(*_torch_args(feeds)))
        moved = peers.to_numpy(model(*_torch_args(other)))
        variant = peers.to_numpy(peer_model(*_torch_args(feeds)))
    assert peers.liveness_problem(outputs) is None
    for y, y_other in zip(outputs, moved):
        assert np.abs(y - y_other).max() > 1e-2 * np.abs(y).max()
    assert peers.relative_error(variant, outputs) < 1e-5

    if spec.library != "transformers":  # (its masks branch on values, which meta tensors do not have)
        meta = copy.deepcopy(peer_model).to("meta", torch.float16)
        with torch.inference_mode():
            meta_out = meta(*_torch_args(feeds, "meta", torch.float16))
        assert all(t.device.type == "meta" for t in (meta_out if isinstance(meta_out, tuple) else (meta_out,)))

    path = peers.export_onnx(spec, model, 2, tmp_path / f"{name}.onnx", dynamic=bool(spec.dynamic_axes))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(spec.outputs)
    assert peers.relative_error(session.run(None, feeds), outputs) < 1e-4
    if spec.dynamic_axes:
        three = spec.make_inputs(5, 3)
        with torch.inference_mode():
            expected = peers.to_numpy(model(*_torch_args(three)))
        assert peers.relative_error(session.run(None, three), expected) < 1e-4


def test_revive_gives_zero_heads_and_tiny_layer_scales_real_values():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)
            self.scale = torch.nn.Parameter(torch.full((4, 1, 1), 1e-6))
            self.head = torch.nn.Linear(4, 3)
            torch.nn.init.zeros_(self.head.weight)

        def forward(self, x):
            return self.head((self.bn(self.conv(x)) * self.scale).mean((2, 3)))

    net = peers.matrix_models.revive(Net(), (1, 3, 8, 8))
    assert net.head.weight.abs().min() > 0 and 0.1 <= net.scale.min() and net.scale.max() <= 0.3
    assert not torch.equal(net.bn.running_var, torch.ones(4))  # measured on random batches
    assert not net.training


# ---------------------------------------------------------------------------------------------
# What runs where, and in which order
# ---------------------------------------------------------------------------------------------


def test_plan_runs_the_cpu_provider_at_batch_1_only_beside_a_gpu():
    specs = [peers.model_spec("resnet50")]
    providers = ["CPUExecutionProvider", "AzureExecutionProvider"]
    with_gpu = peers.plan(specs, None, peers.Settings(), True, providers)
    assert [(c.spec.name, c.batch) for c in with_gpu] == [("resnet50", 1), ("resnet50", 32)]
    assert _labels(with_gpu[0].peers) == [
        "PyTorch eager fp16", "rtxrt fp16", "torch.compile fp16", "torch.compile reduce-overhead fp16",
        "onnxruntime CPU fp32",
        "PyTorch eager fp32", "rtxrt fp32", "torch.compile reduce-overhead fp32",
        "PyTorch eager tf32", "rtxrt tf32", "torch.compile reduce-overhead tf32"]
    assert "onnxruntime CPU fp32" not in _labels(with_gpu[1].peers)
    without_gpu = peers.plan(specs, [1, 32], peers.Settings(), False, providers)
    assert "onnxruntime CPU fp32" in _labels(without_gpu[1].peers)


def test_plan_adds_gpu_providers_and_quick_drops_the_extra_rows():
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    [case] = peers.plan([peers.model_spec("vit_b16")], [1], peers.Settings(quick=True), True, providers)
    assert _labels(case.peers) == ["PyTorch eager fp16", "rtxrt fp16", "torch.compile fp16",
                                   "onnxruntime Tensorrt fp16", "onnxruntime CUDA fp16", "onnxruntime CPU fp32"]
    [bert] = peers.plan([peers.model_spec("bert_base")], [1], peers.Settings(quick=True, torch_compile=False),
                        True, providers)
    assert _labels(bert.peers) == ["PyTorch eager fp16", "rtxrt fp16", "onnxruntime Tensorrt fp16",
                                   "onnxruntime CUDA fp16", "onnxruntime CPU fp32", "PyTorch eager fp32",
                                   "onnxruntime Tensorrt fp32", "onnxruntime CUDA fp32", "PyTorch eager tf32"]


def test_schedule_runs_the_headline_first_and_fp32_tf32_last():
    specs = [peers.model_spec("resnet50"), peers.model_spec("vit_b16")]
    cases = peers.plan(specs, None, peers.Settings(), True, ["CPUExecutionProvider"])
    order = [(cases[i].spec.name, cases[i].batch, p.label) for i, p in peers.schedule(cases)]
    assert order[:8] == [("resnet50", 1, "PyTorch eager fp16"), ("resnet50", 1, "rtxrt fp16"),
                         ("resnet50", 32, "PyTorch eager fp16"), ("resnet50", 32, "rtxrt fp16"),
                         ("vit_b16", 1, "PyTorch eager fp16"), ("vit_b16", 1, "rtxrt fp16"),
                         ("vit_b16", 16, "PyTorch eager fp16"), ("vit_b16", 16, "rtxrt fp16")]
    phases = [label for _, _, label in order]
    ro, compiled, cpu = (phases.index("torch.compile reduce-overhead fp16"), phases.index("torch.compile fp16"),
                         phases.index("onnxruntime CPU fp32"))
    assert 8 == ro < compiled < cpu < phases.index("PyTorch eager fp32")
    assert order[8:10] == [("resnet50", 1, "torch.compile reduce-overhead fp16"),
                           ("vit_b16", 1, "torch.compile reduce-overhead fp16")]  # small batches first
    assert order[-1] == ("resnet50", 32, "torch.compile reduce-overhead tf32")


def test_command_line_selects_models_parts_and_tiny_sizes():
    args = peers.parse_args(["--matrix"])
    assert [s.name for s in peers.selected_specs(args)] == list(MATRIX)
    parts = [[s.name for s in peers.selected_specs(peers.parse_args(["--matrix", "--part", f"{k}/3"]))]
             for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(MATRIX) and parts[0][:2] == list(MATRIX)[0:4:3]
    with pytest.raises(SystemExit, match="--part"):
        peers.selected_specs(peers.parse_args(["--matrix", "--part", "4/3"]))
    args = peers.parse_args(["--models", "vad,resnet18", "--tiny"])
    assert [(s.name, s.tiny) for s in peers.selected_specs(args)] == [("vad", True), ("resnet18", True)]
    assert [s.name for s in peers.selected_specs(peers.parse_args([]))] == list(peers.DEFAULT_MODELS)


# ---------------------------------------------------------------------------------------------
# Rows and the tables
# ---------------------------------------------------------------------------------------------


def test_markdown_table_has_every_column_speedups_and_errors():
    rows = [
        peers.Row("resnet50 224x224", 1, "PyTorch eager fp16", 2.0, 2.2, 50, peak_bytes=200 * 2**20, rel_err=1.5e-3),
        peers.Row("resnet50 224x224", 1, "rtxrt fp16", 0.5, 0.6, 50, compile_s=12.345, warm_s=0.25,
                  peak_bytes=100 * 2**20, rel_err=2e-3, note="cold: 40 kernels", warm_process_s=0.75),
        peers.Row("resnet50 224x224", 1, "torch.compile fp16", error="RuntimeError: a | b"),
        peers.Row("resnet50 224x224", 32, "rtxrt fp16", 8.0, 9.0, 20),  # no baseline at batch 32
    ]
    lines = peers.markdown_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[:1] + lines[2:])
    assert all(line.count("|") == len(peers.HEADERS) + 1 for line in lines)
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == ["resnet50 224x224", "1", "rtxrt fp16", "0.500", "0.600", "2,000", "12.35 / 0.25", "0.75",
                     "100", "2.0e-03", "4.00x", "cold: 40 kernels"]
    assert "ERROR RuntimeError: a / b" in lines[4]
    assert lines[5].split("|")[11].strip() == "-"
    assert rows[3].items_per_s == pytest.approx(4000)


def _synthetic_rows():
    """Model A: at batch 1 reduce-overhead beats rtxrt, at batch 32 rtxrt is fastest and eager
    beats it nowhere; an fp32 line; model B: eager beats rtxrt, compile failed, a skipped cell."""
    R = peers.Row
    return [
        R("A", 1, "PyTorch eager fp16", 2.0, family="CNN"),
        R("A", 1, "rtxrt fp16", 0.5, compile_s=6.0, warm_s=0.3, warm_process_s=0.9, peak_bytes=50 * 2**20,
          rel_err=1e-3, family="CNN"),
        R("A", 1, "torch.compile reduce-overhead fp16", 0.35, family="CNN"),
        R("A", 1, "onnxruntime CPU fp32", 10.0, family="CNN"),
        R("A", 32, "PyTorch eager fp16", 4.0, family="CNN"),
        R("A", 32, "rtxrt fp16", 2.0, family="CNN"),
        R("A", 32, "torch.compile reduce-overhead fp16", 2.5, family="CNN"),
        R("A", 1, "PyTorch eager fp32", 1.5, family="CNN"),
        R("A", 1, "rtxrt fp32", 1.0, family="CNN"),
        R("B", 1, "(setup)", note="warning: something", family="audio"),
        R("B", 1, "PyTorch eager fp16", 0.8, family="audio"),
        R("B", 1, "rtxrt fp16", 1.0, family="audio"),
        R("B", 1, "torch.compile fp16", error="RuntimeError: boom", family="audio"),
        R("B", 1, "torch.compile reduce-overhead fp16", note="skipped: --time-limit 1 s reached", family="audio"),
    ]


def _matrix_cells(table: str) -> list[dict[str, str]]:
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_matrix_table_bolds_the_fastest_peer_of_each_line_whoever_it_is():
    lines = _matrix_cells(peers.matrix_table(_synthetic_rows()))
    assert [(ln["model"], ln["batch"], ln["precision"]) for ln in lines] == [
        ("A", "1", "fp16"), ("A", "32", "fp16"), ("A", "1", "fp32"), ("B", "1", "fp16")]
    a1, a32, a1_fp32, b1 = lines
    assert (a1["rtxrt ms"], a1["compile RO ms"], a1["eager ms"]) == ("0.500", "**0.350**", "2.000")
    assert a1["ORT CPU (fp32) ms"] == "10.0" and a1["rtxrt vs compile RO"] == "0.70x"
    rtxrt_columns = ("rtxrt cold JIT / warm process s", "rtxrt peak MiB", "rtxrt rel err")
    assert [a1[c] for c in rtxrt_columns] == ["6.0 / 0.90", "50", "1.0e-03"]
    assert (a32["rtxrt ms"], a32["compile RO ms"], a32["rtxrt vs compile RO"]) == ("**2.000**", "2.500", "1.25x")
    assert (a1_fp32["rtxrt ms"], a1_fp32["eager ms"], a1_fp32["compile RO ms"]) == ("**1.000**", "1.500", "-")
    assert [b1[c] for c in ("eager ms", "rtxrt ms", "compile ms", "compile RO ms")] == [
        "**0.800**", "1.000", "error", "skipped"]
    assert b1["family"] == "audio" and a1["family"] == "CNN"


def test_geometric_means_of_rtxrt_against_each_peer():
    lines = peers.matrix_lines(_synthetic_rows())
    groups = peers.speedup_groups(lines)
    eager, ro = groups["fp16 batch 1"]["PyTorch eager"], groups["fp16 batch 1"][peers.RO]
    assert eager["speedup"] == pytest.approx(math.sqrt(4.0 * 0.8)) and eager["cells"] == 2  # A: 2/0.5, B: 0.8/1
    assert ro["speedup"] == pytest.approx(0.7) and ro["cells"] == 1
    assert groups["fp16 batch > 1"]["PyTorch eager"]["speedup"] == pytest.approx(2.0)
    assert groups["fp16 all"]["PyTorch eager"]["speedup"] == pytest.approx((4.0 * 0.8 * 2.0) ** (1 / 3))
    assert groups["fp16 all"][peers.RO]["speedup"] == pytest.approx(math.sqrt(0.7 * 1.25))
    assert groups["fp16 all"]["onnxruntime CPU"]["speedup"] == pytest.approx(20.0)
    assert groups["fp32/tf32 all"] == {"PyTorch eager": {"speedup": pytest.approx(1.5), "cells": 1}}
    assert "torch.compile" not in groups["fp16 all"]  # no line has it timed
    text = peers.summary_text(lines)
    assert "vs eager 1.79x / 2.00x / 1.86x (2 / 1 / 3 cells)" in text
    assert "vs compile RO 0.70x / 1.25x / 0.94x (1 / 1 / 2 cells)" in text
    assert "vs eager 1.50x (1 cells)" in text  # the fp32/tf32 line
    assert "Cells below 0.8x of compile RO: 1 (A b1 fp16 (0.70x))" in text
    assert "slower than eager: 1 (B b1 fp16 (0.80x))" in text


def test_markdown_document_names_card_driver_versions_and_every_cell():
    report = {"card": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda": "12.8", "date": "2026-12-07 10:00:00",
              "command": "python benchmarks/peers.py --matrix", "seconds": 400.0,
              "versions": {"torch": "2.11.0", "rtxrt": "0.1.0"},
              "rows": [dataclasses.asdict(r) for r in _synthetic_rows()]}
    text = peers.markdown_document(report)
    assert text.startswith("## Benchmark matrix: NVIDIA H100 80GB HBM3, driver 580.159.04, 2026-12-07")
    assert "`python benchmarks/peers.py --matrix`" in text and "torch 2.11.0, rtxrt 0.1.0" in text
    assert "**Geometric-mean speedup of rtxrt fp16**" in text
    assert "| A | CNN | 1 | fp16 | 0.500 |" in text and "### Every cell" in text
    assert "| B | 1 | torch.compile fp16 |" in text and "B: warning: something" in text


def test_reports_of_several_runs_merge_into_one_table(tmp_path):
    rows = [dataclasses.asdict(r) for r in _synthetic_rows()]
    skipped = {**rows[2], "median_ms": None, "note": "skipped: --time-limit 1 s reached"}
    first = {"card": "H100", "driver": "580", "seconds": 10, "command": "one", "rows": [rows[0], rows[1], skipped]}
    second = {"card": "H100", "driver": "580", "seconds": 20, "command": "two", "rows": [rows[2], rows[3]]}
    third = {"card": "H200", "driver": "580", "seconds": 1, "command": "three", "rows": [skipped]}
    merged = peers.merge_reports([first, second, third])
    assert [(r["peer"], r["median_ms"]) for r in merged["rows"]] == [
        ("PyTorch eager fp16", 2.0), ("rtxrt fp16", 0.5), ("torch.compile reduce-overhead fp16", 0.35),
        ("onnxruntime CPU fp32", 10.0)]  # the measured row kept over later skipped ones
    assert (merged["card"], merged["driver"], merged["seconds"]) == ("H100 + H200", "580", 31.0)
    assert merged["summary"]["below_0.8x_of_reduce_overhead"] == ["A b1 fp16 (0.70x)"]
    paths = []
    for i, part in enumerate((first, second)):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps(part))
    md = tmp_path / "matrix.md"
    assert peers.main(["--from-json", *map(str, paths), "--markdown", str(md)]) == 0
    assert "| A | CNN | 1 | fp16 | 0.500 | 2.000 | **0.350** | 10.0 | 0.70x |" in md.read_text()


def test_a_failing_peer_becomes_a_row_with_its_error():
    def broken(case):
        raise RuntimeError("no kernel for\nnode conv_7")

    case = _tiny_case(device="cpu", reference=None)
    row = peers.run_peer(case, peers.Peer("broken", broken, needs_gpu=False))
    assert row.error == "RuntimeError: no kernel for node conv_7"
    assert row.median_ms is None
    skipped = peers.run_peer(case, peers.Peer("gpu only", broken))
    assert skipped.error is None and skipped.note == "skipped: needs a CUDA GPU"


def test_a_failing_warm_process_is_a_note_not_an_error(tmp_path):
    seconds, note = peers.warm_process(tmp_path / "missing.rtxir", {"x": np.ones(3, np.float32)},
                                       str(tmp_path / "cache"))
    assert seconds is None and note.startswith("warm process failed: ") and "missing.rtxir" in note
    assert (tmp_path / "cache-feeds.npz").exists() and not (tmp_path / "cache").exists()  # beside, not in it


def test_onnxruntime_gpu_peers_get_a_float16_conversion_with_float32_inputs_and_outputs(tmp_path):
    import onnx

    spec = MATRIX["vad"].at_tiny_size()
    path = peers.export_onnx(spec, spec.build_model(), 1, tmp_path / "vad.onnx", dynamic=False)
    converted = onnx.load(str(peers.float16_onnx(path)))
    onnx.checker.check_model(converted)
    assert {i.type.tensor_type.elem_type for i in [*converted.graph.input, *converted.graph.output]} == {
        onnx.TensorProto.FLOAT}
    assert {t.data_type for t in converted.graph.initializer if t.data_type in (1, 10)} == {onnx.TensorProto.FLOAT16}
    assert peers.float16_onnx(path) == tmp_path / "vad.fp16.onnx"  # once per file


def _tiny_case(device: str, reference):
    spec = peers.model_spec("resnet18")
    inputs = {"input": np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)}
    return peers.Case(spec, 1, Path("tiny.onnx"), ["input"], inputs, None, peers.Settings(), device, reference)


# ---------------------------------------------------------------------------------------------
# The time limit and missing libraries
# ---------------------------------------------------------------------------------------------


def test_past_the_time_limit_nothing_is_exported_or_run(tmp_path):
    settings = peers.Settings(time_limit=0.0, quick=True)
    rows = peers.run([peers.model_spec("resnet18")], [1], settings, tmp_path, tmp_path / "out.json",
                     log=lambda line: None, device="cpu", providers=["CPUExecutionProvider"],
                     clock=iter(range(100)).__next__)
    assert rows and all(r.note.startswith("skipped: --time-limit") for r in rows)
    assert not list(tmp_path.glob("*.onnx"))
    assert len(json.loads((tmp_path / "out.json").read_text())["rows"]) == len(rows)


def test_the_time_limit_marks_every_row_not_reached_as_skipped(tmp_path):
    """A clock that moves 10 s per row and a 25 s limit: three rows are done, every later one
    is skipped and says why, in the JSON and in the Markdown table alike; while the run is on,
    the JSON already lists every row not reached yet (a run killed at its budget says so)."""
    now = [0.0]
    midway = []

    def log(line):
        now[0] += 10
        if now[0] == 20:  # the JSON as the first row left it
            midway.extend(r["note"] for r in json.loads((tmp_path / "out.json").read_text())["rows"])

    spec = dataclasses.replace(MATRIX["vad"].at_tiny_size(), precisions=("fp16", "fp32"))
    settings = peers.Settings(iterations=3, max_seconds=0.5, time_limit=25, quick=True, torch_compile=False)
    rows = peers.run([spec], [1, 2], settings, tmp_path, tmp_path / "out.json", log=log, device="cpu",
                     markdown=tmp_path / "out.md", providers=["CPUExecutionProvider"], clock=lambda: now[0])
    ran = [("PyTorch eager fp16", 1), ("rtxrt fp16", 1), ("PyTorch eager fp16", 2)]  # the headline comes first
    assert {(r.peer, r.batch) for r in rows if not r.note.startswith("skipped: --time-limit")} == set(ran)
    assert len(rows) == 8 and sum(r.note == "skipped: --time-limit 25 s reached" for r in rows) == 5
    saved = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [(r["peer"], r["batch"], r["note"][:22]) for r in saved] == [(r.peer, r.batch, r.note[:22]) for r in rows]
    assert "| 1 | fp32 | - | skipped |" in (tmp_path / "out.md").read_text()
    assert len(midway) == 8 and sum(n.startswith("skipped: not reached") for n in midway) == 7


def test_a_model_whose_library_is_missing_is_a_row_that_says_so(tmp_path):
    missing = dataclasses.replace(MATRIX["convnext_t"], library="no_such_library_here").at_tiny_size()
    settings = peers.Settings(iterations=3, max_seconds=0.5, quick=True, torch_compile=False)
    rows = peers.run([missing], [1], settings, tmp_path, None, log=lambda line: None, device="cpu",
                     providers=["CPUExecutionProvider"])
    assert rows[0].peer == "(setup)" and rows[0].note == "skipped: needs no_such_library_here, which is not installed"
    assert all(r.error is None and r.note.startswith("skipped") for r in rows)
    assert "no_such_library_here" in peers.markdown_document(peers.report(rows, settings, 1.0))


# ---------------------------------------------------------------------------------------------
# End to end on the CPU
# ---------------------------------------------------------------------------------------------


def test_cpu_run_exports_times_and_checks_the_cpu_peers(tmp_path):
    """The UNet at its tiny size, 1x3x64x64 (BatchNorm, GroupNorm, ConvTranspose, Resize): the
    reference is PyTorch fp32 on the CPU; onnxruntime CPU agrees with it to float32 rounding
    (~1e-6; 1e-4 leaves headroom, a wrong op gives errors near 1)."""
    settings = peers.Settings(iterations=3, max_seconds=1.0, quick=True, torch_compile=False)
    out, md = tmp_path / "peers.json", tmp_path / "peers.md"
    lines: list[str] = []
    spec = dataclasses.replace(MATRIX["unet"].at_tiny_size(), precisions=("fp16", "fp32"))
    rows = peers.run([spec], [1], settings, tmp_path, out, log=lines.append, device="cpu", markdown=md)
    by_peer = {r.peer: r for r in rows}
    assert list(by_peer) == ["PyTorch eager fp16", "rtxrt fp16", "onnxruntime CPU fp32", "PyTorch eager fp32"]
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
    label = "UNet (base 8) 64x64 (tiny)"
    assert f"| {label} | 1 | onnxruntime CPU fp32 |" in peers.markdown_table(rows)
    assert f"| {label} | CNN | 1 | fp16 | skipped | skipped | **" in md.read_text()


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
    run. fp16 (torch or rtxrt) and TF32 keep ~11 bits of mantissa: the logits' relative L2 error
    against fp32 is ~1e-3 over 20 layers; 2e-2 bounds it, while a wrong kernel gives errors near
    1."""
    out, md = tmp_path / "peers.json", tmp_path / "peers.md"
    assert peers.main(["--models", "resnet18", "--batches", "1,2", "--quick", "--skip-torch-compile",
                       "--out", str(out), "--markdown", str(md), "--workdir", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["card"] in printed and "| resnet18 64x64 | 2 | rtxrt fp16 |" in printed
    assert md.read_text().startswith(f"## Benchmark matrix: {saved['card']}, driver {saved['driver']}")
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
    assert all(r["compile_s"] > 0 and r["warm_s"] > 0 and r["warm_process_s"] > 0 for r in rtxrt)
    assert all(r["extra"]["warm_stats"]["from_cache"] is True for r in rtxrt)
    assert saved["summary"]["geometric_mean_speedup_of_rtxrt"]["fp16 all"]["PyTorch eager"]["cells"] == 2
