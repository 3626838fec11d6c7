"""``rtxrt jit``, ``prewarm`` and ``bench``: on a machine without a GPU they say so in one
line (exit 1); on a GPU jit fills the cache that the next start reads, and bench reports
latency percentiles and per-step times."""
from __future__ import annotations

import argparse

import onnx
import pytest

from rtxrt.cli import main
from rtxrt.cli.arguments import shapes
from rtxrt.backends.cuda.device import find_gpu
from rtxrt.samples import default_model

no_gpu = pytest.mark.skipif(find_gpu() is not None, reason="checks the behaviour without a GPU")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_cli")
    onnx.save(default_model(), str(folder / "m.onnx"))
    assert main(["aot", str(folder / "m.onnx"), "-o", str(folder / "m.rtxir")]) == 0
    return folder / "m.rtxir"


@no_gpu
@pytest.mark.parametrize("command", [["jit"], ["bench"], ["prewarm"]])
def test_without_a_gpu_each_command_says_so(model, tmp_path, command, capsys):
    code = main([*command, str(model), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and ("GPU" in err or "driver" in err or "CuPy" in err), err
    assert "Traceback" not in err


@pytest.mark.parametrize("spec", ["image", "image:4xAx64", ":4x3", "image:4x-3"])
def test_bad_shapes_are_named(spec):
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME:DxDxD"):
        shapes(spec)


def test_shapes_parse_as_trtexec_writes_them():
    assert shapes("input:1x3x224x224,mask:1x128") == {"input": (1, 3, 224, 224), "mask": (1, 128)}
    assert shapes("") == {}


@pytest.mark.gpu
def test_jit_fills_the_cache_and_bench_reports(model, tmp_path, capsys):
    assert main(["jit", str(model), "--shapes", "image:4x3x64x64", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "compiled" in out and "kernels" in out
    assert main(["jit", str(model), "--shapes", "image:4x3x64x64", "--cache-dir", str(tmp_path)]) == 0
    assert "loaded from the runtime cache" in capsys.readouterr().out
    assert main(["bench", str(model), "--shapes", "image:4x3x64x64", "--cache-dir", str(tmp_path),
                 "--iterations", "20", "--profile"]) == 0
    out = capsys.readouterr().out
    for expected in ("latency (host)", "GPU time (events)", "p99", "throughput", "per step"):
        assert expected in out, out


@pytest.mark.gpu
def test_embedded_kernels_run_only_with_the_trust_flag(tmp_path, capsys):
    """A file precompiled for this GPU's arch: `jit` compiles every kernel anyway, unless the
    user trusts the file's builder with --trust-embedded-kernels (then it compiles none)."""
    from rtxrt.backends.cuda.device import SUPPORTED_ARCHS, probe

    arch = probe().arch
    if arch not in SUPPORTED_ARCHS:
        pytest.skip(f"{arch} is not an arch --precompile offers")
    onnx.save(default_model(), str(tmp_path / "m.onnx"))
    path = tmp_path / "m.rtxir"
    assert main(["aot", str(tmp_path / "m.onnx"), "-o", str(path), "--precompile", arch,
                 "--shapes", "image:2x3x64x64"]) == 0
    capsys.readouterr()
    assert main(["jit", str(path), "--shapes", "image:2x3x64x64", "--cache-dir", str(tmp_path / "a")]) == 0
    compiled = capsys.readouterr().out
    assert "compiled" in compiled and "compiled 0 kernels" not in compiled
    assert main(["jit", str(path), "--shapes", "image:2x3x64x64", "--cache-dir", str(tmp_path / "b"),
                 "--trust-embedded-kernels"]) == 0
    assert "compiled 0 kernels" in capsys.readouterr().out
