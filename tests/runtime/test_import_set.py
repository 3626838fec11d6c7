"""``import rtxrt`` loads only what running a model needs: an app pays for onnx, the AOT stage
or CuPy only when it uses them (a warm start should take well under a second)."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("onnx", "onnxruntime", "onnxscript", "onnx_ir", "torch", "tqdm", "cupy", "rtxrt.aot", "rtxrt.frontend",
         "rtxrt.cli", "rtxrt.ir.onnx_codec", "rtxrt.ir.to_onnx")


def test_import_rtxrt_leaves_onnx_the_aot_stage_and_cupy_unimported():
    listed = subprocess.run([sys.executable, "-c", "import sys, rtxrt; print(*sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.split()
    loaded = sorted(m for m in listed if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY)))
    assert loaded == []
