"""rtxrt as an ONNX Runtime–style execution provider: ``RtxrtExecutionProvider``.

``InferenceSession`` is a drop-in for ``onnxruntime.InferenceSession``: the graph is split
into the largest regions rtxrt supports (run by the rtxrt JIT) and the rest (run by a real
onnxruntime session). ``register()`` makes an unchanged onnxruntime application find the
provider by name."""
from __future__ import annotations

PROVIDER = "RtxrtExecutionProvider"
