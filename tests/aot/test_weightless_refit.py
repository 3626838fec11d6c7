"""Weightless .rtxir files (`rtxrt aot --weightless`) and refit (`rtxrt refit`, `rtxrt.refit`).

A weightless file keeps the optimized graph and a replay recipe but no weights; refit attaches
weights from the original ONNX or a safetensors file and must give exactly the file a full
build from those weights gives, or refuse with an error naming what is wrong.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rtxrt
from rtxrt.aot import AotOptions, build_rtxir
from rtxrt.cli.main import main
from rtxrt.errors import FormatError, ModelError
from rtxrt.format import layout, read_refit_recipe, read_rtxir, to_bytes
from rtxrt.format.writer import canonical_json, pack_sections
from rtxrt.ir.graph import TensorType
from rtxrt.runtime import Session
from tests.helpers import make_model

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="refit from safetensors (pip install rtxrt[refit])")

X = np.random.default_rng(7).standard_normal((1, 3, 8, 8)).astype(np.float32)


def net_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(16).astype(np.float32),
        "bn.weight": rng.uniform(0.5, 1.5, 16).astype(np.float32),
        "bn.bias": rng.standard_normal(16).astype(np.float32),
        "bn.running_mean": rng.standard_normal(16).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 1.5, 16).astype(np.float32),
        "tokens": np.array([1, 16, 64], np.int64),  # a shape tensor, not a weight
        **{f"{p}.weight": rng.standard_normal((64, 256)).astype(np.float32) / 8 for p in ("q", "k", "v")},
        "out.weight": rng.standard_normal((256, 10)).astype(np.float32) / 16,
    }


def net(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Conv+BN+Relu (BN folds into the conv's weights), then three projections of the same
    input (fused side by side: their weights are concatenated) and an output projection."""
    return make_model(
        [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                          ["n"], name="bn"),
         helper.make_node("Relu", ["n"], ["r"], name="relu"),
         helper.make_node("Reshape", ["r", "tokens"], ["t"], name="tokens"),
         helper.make_node("MatMul", ["t", "q.weight"], ["q"], name="q"),
         helper.make_node("MatMul", ["t", "k.weight"], ["k"], name="k"),
         helper.make_node("MatMul", ["t", "v.weight"], ["v"], name="v"),
         helper.make_node("Mul", ["q", "k"], ["qk"], name="qk"),
         helper.make_node("Add", ["qk", "v"], ["h"], name="h"),
         helper.make_node("MatMul", ["h", "out.weight"], ["y"], name="out")],
        [("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [("y", TensorProto.FLOAT, [1, 16, 10])],
        weights,
    )


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture
def built(tmp_path):
    """The net's ONNX, its full build and its weightless build (default options)."""
    source = save(net(net_weights()), tmp_path / "net.onnx")
    build_rtxir(source, tmp_path / "full.rtxir")
    build_rtxir(source, tmp_path / "weightless.rtxir", AotOptions(weightless=True))
    return source, tmp_path / "full.rtxir", tmp_path / "weightless.rtxir"


def run(model) -> np.ndarray:
    return Session(model, fallback="cpu").run(None, {"x": X})[0]


# --- the weightless file -------------------------------------------------------------------

def test_a_weightless_file_holds_no_weight_bytes(built):
    _, full, weightless = built
    assert weightless.stat().st_size < full.stat().st_size / 10
    optimized, stored = read_rtxir(full).graph, read_rtxir(weightless).graph
    assert stored.initializers == {}
    assert list(stored.stripped.items()) == [(n, TensorType.of(a)) for n, a in optimized.initializers.items()]
    assert [n.op_type for n in stored.nodes] == [n.op_type for n in optimized.nodes]


def test_a_weightless_file_reads_and_rewrites_byte_for_byte(built):
    _, _, weightless = built
    recipe = read_refit_recipe(weightless)
    assert recipe.source is not None and recipe.options["weightless"] is True
    assert "conv.weight" in recipe.source.model.graph.stripped
    assert "bn.running_var" in recipe.source.model.graph.initializers  # small: kept
    rewritten = to_bytes(recipe.model, options=recipe.options, source=recipe.source)
    assert rewritten == weightless.read_bytes()


def test_running_a_weightless_file_names_a_missing_weight_and_says_to_refit(built, capsys):
    _, _, weightless = built
    with pytest.raises(ModelError, match=r"weightless model: it lacks weight '.+' and \d+ more; .*rtxrt refit"):
        Session(weightless, fallback="cpu")
    assert main(["run", str(weightless)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rtxrt refit" in err


def test_inspect_says_the_file_is_weightless(built, capsys):
    _, full, weightless = built
    assert main(["inspect", str(weightless)]) == 0
    assert re.search(r"weightless: \d+ initializers \(.+\) left out; attach them with `rtxrt refit`",
                     capsys.readouterr().out)
    assert main(["inspect", str(full)]) == 0
    assert "left out" not in capsys.readouterr().out


# --- refit gives the full build ------------------------------------------------------------

@pytest.mark.parametrize("options", [AotOptions(), AotOptions(precision="fp16", keep_fp32=("out",)),
                                     AotOptions(optimize=False)], ids=["default", "fp16", "no-optimize"])
def test_refit_from_the_original_onnx_is_byte_identical_to_a_full_build(tmp_path, options):
    source = save(net(net_weights()), tmp_path / "net.onnx")
    build_rtxir(source, tmp_path / "full.rtxir", options)
    build_rtxir(source, tmp_path / "weightless.rtxir", replace(options, weightless=True))
    rtxrt.refit(tmp_path / "weightless.rtxir", source, tmp_path / "refit.rtxir")
    assert (tmp_path / "refit.rtxir").read_bytes() == (tmp_path / "full.rtxir").read_bytes()


def test_refit_returns_the_model_ready_to_run(built):
    source, full, weightless = built
    model = rtxrt.refit(weightless, source)
    np.testing.assert_array_equal(run(model), run(full))


def test_refit_from_safetensors_with_new_weights_equals_a_build_from_those_weights(built, tmp_path):
    _, full, weightless = built
    new = net_weights(seed=1)
    safetensors_numpy.save_file({n: a for n, a in new.items() if n != "tokens"}, tmp_path / "new.safetensors")
    rtxrt.refit(weightless, tmp_path / "new.safetensors", tmp_path / "refit.rtxir")
    build_rtxir(save(net(new), tmp_path / "new.onnx"), tmp_path / "new.rtxir")
    assert (tmp_path / "refit.rtxir").read_bytes() == (tmp_path / "new.rtxir").read_bytes()
    assert not np.allclose(run(tmp_path / "refit.rtxir"), run(full))


def test_refit_needs_only_the_weights_the_file_left_out(built, tmp_path):
    """Initializers of at most 1 KiB (the BN statistics, the shape tensor) stay in the file."""
    source, full, weightless = built
    big = {n: a for n, a in net_weights().items() if a.nbytes > 1024}
    assert sorted(big) == ["conv.weight", "k.weight", "out.weight", "q.weight", "v.weight"]
    safetensors_numpy.save_file(big, tmp_path / "big.safetensors")
    rtxrt.refit(weightless, tmp_path / "big.safetensors", tmp_path / "refit.rtxir")
    assert (tmp_path / "refit.rtxir").read_bytes() == full.read_bytes()


# --- refit refuses weights that do not fit -------------------------------------------------

def refit_with(weightless: Path, tmp_path: Path, weights: dict[str, np.ndarray], **kwargs):
    safetensors_numpy.save_file(weights, tmp_path / "w.safetensors")
    return rtxrt.refit(weightless, tmp_path / "w.safetensors", **kwargs)


def test_a_missing_weight_is_named(built, tmp_path):
    weights = net_weights()
    del weights["q.weight"]
    with pytest.raises(ModelError, match=r"missing weight 'q.weight' \(float32\[64,256\]\)"):
        refit_with(built[2], tmp_path, weights)


def test_a_weight_of_the_wrong_shape_is_named(built, tmp_path):
    weights = {**net_weights(), "k.weight": np.zeros((256, 64), np.float32)}
    with pytest.raises(ModelError, match=r"weight 'k.weight' has shape \[256, 64\], expected \[64, 256\]"):
        refit_with(built[2], tmp_path, weights)


def test_a_weight_of_the_wrong_dtype_is_named(built, tmp_path):
    weights = {**net_weights(), "conv.weight": net_weights()["conv.weight"].astype(np.float16)}
    with pytest.raises(ModelError, match=r"weight 'conv.weight' has dtype float16, expected float32"):
        refit_with(built[2], tmp_path, weights)


def test_a_small_weight_that_is_given_is_checked_too(built, tmp_path):
    weights = {**net_weights(), "bn.weight": np.ones(8, np.float32)}
    with pytest.raises(ModelError, match=r"weight 'bn.weight' has shape \[8\], expected \[16\]"):
        refit_with(built[2], tmp_path, weights)


def test_an_unknown_weight_is_an_error_unless_allowed(built, tmp_path):
    """Usually the wrong file or a renamed weight; with allow_unused it is only a warning."""
    weights = {**net_weights(), "head.weight": np.zeros(4, np.float32)}
    with pytest.raises(ModelError, match=r"unexpected weight 'head.weight'"):
        refit_with(built[2], tmp_path, weights)
    with pytest.warns(UserWarning, match=r"ignoring 1 weight\(s\) the model does not have: 'head.weight'"):
        refit_with(built[2], tmp_path, weights, allow_unused=True, output=tmp_path / "refit.rtxir")
    assert (tmp_path / "refit.rtxir").read_bytes() == built[1].read_bytes()


def test_every_problem_is_reported_at_once(built, tmp_path):
    weights = net_weights()
    del weights["q.weight"], weights["v.weight"]
    with pytest.raises(ModelError, match=r"missing weight 'q.weight'.*; missing weight 'v.weight'"):
        refit_with(built[2], tmp_path, weights)


def test_weights_that_change_the_optimized_graph_are_refused(tmp_path):
    """Equal scalars are merged into one by CSE; weights where they differ need another graph,
    so refit refuses rather than give a file unlike a full build."""
    weights = {"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32),
               "a": np.array(2.0, np.float32), "b": np.array(2.0, np.float32)}
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "a"], ["p"]),
         helper.make_node("Mul", ["h", "b"], ["q"]), helper.make_node("Sub", ["p", "q"], ["y"])],
        [("x", TensorProto.FLOAT, [2, 64])], [("y", TensorProto.FLOAT, [2, 64])], weights)
    build_rtxir(save(model, tmp_path / "m.onnx"), tmp_path / "w.rtxir", AotOptions(weightless=True))
    with pytest.raises(ModelError, match="do not reproduce the file's optimized graph"):
        refit_with(tmp_path / "w.rtxir", tmp_path, {**weights, "b": np.array(3.0, np.float32)})


def test_a_file_with_its_weights_is_not_refitted(built):
    source, full, _ = built
    with pytest.raises(ModelError, match="not a weightless file"):
        rtxrt.refit(full, source)


def test_weights_must_be_onnx_or_safetensors(built, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match=r"must be an \.onnx or a \.safetensors file"):
        rtxrt.refit(built[2], tmp_path / "w.bin")
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        rtxrt.refit(built[2], tmp_path / "w.safetensors")


# --- a damaged recipe ----------------------------------------------------------------------

def rewrite_graph_json(path: Path, edit) -> bytes:
    """The file with its GRAPH JSON edited and every checksum recomputed: damage that only
    the recipe's own checks can catch."""
    buf = path.read_bytes()
    _, sections = layout.read_table(memoryview(buf), str(path))
    parts = {s.kind: buf[s.offset:s.end] for s in sections}
    graph = json.loads(parts[layout.GRAPH])
    edit(graph)
    parts[layout.GRAPH] = canonical_json(graph, "GRAPH")
    path = path.with_suffix(".damaged.rtxir")
    with open(path, "wb") as f:
        pack_sections(f, [(kind, [data]) for kind, data in parts.items()])
    return path


def test_a_recipe_that_replays_to_another_graph_is_refused(built):
    source, _, weightless = built

    def relu_to_sigmoid(graph):
        for node in graph["source"]["graph"]["nodes"]:
            if node["op_type"] == "Relu":
                node["op_type"] = "Sigmoid"

    with pytest.raises(ModelError, match=r"do not reproduce the file's optimized graph \(node \d+ \(.+\) differs"):
        rtxrt.refit(rewrite_graph_json(weightless, relu_to_sigmoid), source)


def test_a_recipe_that_is_not_a_valid_graph_is_refused(built):
    source, _, weightless = built

    def drop_conv(graph):
        graph["source"]["graph"]["nodes"].pop(0)

    with pytest.raises(FormatError, match="refit recipe is damaged .*nothing defines"):
        rtxrt.refit(rewrite_graph_json(weightless, drop_conv), source)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["source"]["graph"]["initializers"][0].update(stripped=False), "'stripped' must be true"),
    (lambda g: g["source"]["graph"]["initializers"][0].update(shape=[-1, 3]), "non-negative integers"),
    (lambda g: g["source"]["graph"]["initializers"].append(g["source"]["graph"]["initializers"][0]), "appears twice"),
    (lambda g: g["source"].pop("opsets"), "GRAPH source: missing key 'opsets'"),
], ids=["stripped-false", "negative-dim", "twice", "no-opsets"])
def test_the_reader_checks_the_recipe(built, edit, message):
    source, _, weightless = built
    with pytest.raises(FormatError, match=message):
        rtxrt.refit(rewrite_graph_json(weightless, edit), source)


def test_unknown_build_options_are_refused(built, tmp_path):
    source, _, weightless = built
    buf = weightless.read_bytes()
    _, sections = layout.read_table(memoryview(buf), "w")
    parts = {s.kind: buf[s.offset:s.end] for s in sections}
    meta = json.loads(parts[layout.META])
    meta["options"]["turbo"] = True
    parts[layout.META] = canonical_json(meta, "META")
    with open(tmp_path / "m.rtxir", "wb") as f:
        pack_sections(f, [(kind, [data]) for kind, data in parts.items()])
    with pytest.raises(FormatError, match="unknown option 'turbo'"):
        rtxrt.refit(tmp_path / "m.rtxir", source)


# --- the command line ----------------------------------------------------------------------

def test_cli_aot_weightless_then_refit(tmp_path, capsys):
    source = save(net(net_weights()), tmp_path / "net.onnx")
    assert main(["aot", str(source), "-o", str(tmp_path / "full.rtxir")]) == 0
    assert main(["aot", str(source), "--weightless", "-o", str(tmp_path / "w.rtxir")]) == 0
    assert main(["refit", str(tmp_path / "w.rtxir"), "--weights", str(source), "-o", str(tmp_path / "r.rtxir")]) == 0
    assert "initializers rebuilt from" in capsys.readouterr().out
    assert (tmp_path / "r.rtxir").read_bytes() == (tmp_path / "full.rtxir").read_bytes()


def test_cli_refit_errors(built, tmp_path, capsys):
    source, _, weightless = built
    weights = net_weights()
    del weights["q.weight"]
    safetensors_numpy.save_file(weights, tmp_path / "w.safetensors")
    out = str(tmp_path / "r.rtxir")
    assert main(["refit", str(weightless), "--weights", str(tmp_path / "w.safetensors"), "-o", out]) == 1
    assert "missing weight 'q.weight'" in capsys.readouterr().err
    assert not Path(out).exists()
    assert main(["refit", str(weightless), "--weights", str(tmp_path / "absent.onnx"), "-o", out]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["refit", str(weightless), "-o", out])  # --weights is required
    assert exc.value.code == 2
