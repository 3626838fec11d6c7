"""Compile an ONNX model to a portable .rtxir once, then load and run it by input name.

    python examples/compile_and_run.py model.onnx        # your model, random inputs
    python examples/compile_and_run.py                   # the bundled default model
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

import rtxrt
from rtxrt.aot import build_rtxir
from rtxrt.samples import default_model


def main(argv: list[str]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="rtxrt-example-"))
    if argv:
        onnx_path = Path(argv[0])
    else:
        onnx_path = workdir / "default.onnx"
        onnx.save(default_model(), str(onnx_path))

    # Stage 1 (build machine, no GPU needed): ONNX -> .rtxir
    rtxir_path = workdir / (onnx_path.stem + ".rtxir")
    build_rtxir(onnx_path, rtxir_path)

    # Stage 2 (end user's machine): load and run
    session = rtxrt.Session(rtxir_path, fallback="cpu")
    print(f"backend: {session.backend}")
    rng = np.random.default_rng(0)
    feeds = {}
    for info in session.inputs:
        shape = [d if isinstance(d, int) else 1 for d in info.shape]
        feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
    for info, value in zip(session.outputs, session.run(None, feeds)):
        print(f"{info.name}: {value.dtype}{list(value.shape)}")


if __name__ == "__main__":
    main(sys.argv[1:])
