"""Signal processing: DFT, STFT, the window generators and MelWeightMatrix. Their output
shapes depend on scalar inputs (lengths, axes), so ONNX's inference, which reads them when
they are constants, serves."""
from __future__ import annotations

from dataclasses import replace

from ..graph import TensorType
from .onnx_fallback import onnx_inference
from .facts import PLAIN, WIDE
from .registry import InferenceContext, register


def _stft_inference(ctx: InferenceContext) -> list[TensorType | None]:
    """ONNX's shape inference reads a left-out onesided as 0; its schema, onnxruntime and the
    reference backend as 1: infer with the default written out."""
    return onnx_inference(replace(ctx, node=replace(ctx.node, attrs={"onesided": 1, **ctx.node.attrs})))


register("DFT", onnx_inference, inputs=(1, 3), facts=WIDE)
register("STFT", _stft_inference, inputs=(2, 4), facts=WIDE)
for _window in ("HannWindow", "HammingWindow", "BlackmanWindow"):
    register(_window, onnx_inference, facts=PLAIN)
register("MelWeightMatrix", onnx_inference, inputs=5, facts=WIDE.but(exact_inputs=(3, 4)))
