"""rtxrt as an ONNX Runtime–style execution provider: ``RtxrtExecutionProvider``.

``InferenceSession`` is a drop-in for ``onnxruntime.InferenceSession``: the graph is split
into the largest regions rtxrt supports (run by the rtxrt JIT) and the rest (run by a real
onnxruntime session). ``register()`` makes an unchanged onnxruntime application find the
provider by name."""
from __future__ import annotations

PROVIDER = "RtxrtExecutionProvider"

from .ep_context import compile_ep_context  # noqa: E402  (PROVIDER first: the modules import it)
from .options import ProviderOptions, parse_provider_options  # noqa: E402
from .partition import Partition, partition, summary, supported_nodes  # noqa: E402
from .register import is_registered, register, unregister  # noqa: E402
from .session import InferenceSession, IOBinding, NodeArg  # noqa: E402

__all__ = [
    "PROVIDER", "InferenceSession", "IOBinding", "NodeArg", "Partition", "ProviderOptions", "compile_ep_context",
    "is_registered", "parse_provider_options", "partition", "register", "summary", "supported_nodes", "unregister",
]
