"""rtxrt as an ONNX Runtime–style execution provider: ``RtxrtExecutionProvider``.

``InferenceSession`` is a drop-in for ``onnxruntime.InferenceSession``: the graph is split
into the largest regions rtxrt supports (run by the rtxrt JIT) and the rest (run by a real
onnxruntime session). ``register()`` makes an unchanged onnxruntime application find the
provider by name: as a plugin provider library (``get_library_path()``) where onnxruntime
supports that, else through a Python hook."""
from __future__ import annotations

from .ep_context import compile_ep_context
from .options import PROVIDER, ProviderOptions, parse_provider_options
from .partition import Partition, partition, summary, supported_nodes
from .registration import get_library_path, is_registered, register, unregister
from .session import InferenceSession, IOBinding, NodeArg

__all__ = [
    "PROVIDER", "InferenceSession", "IOBinding", "NodeArg", "Partition", "ProviderOptions", "compile_ep_context",
    "get_library_path", "is_registered", "parse_provider_options", "partition", "register", "summary", "supported_nodes", "unregister",
]
