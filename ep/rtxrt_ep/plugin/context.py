"""EPContext nodes through the plugin provider.

Making them: with the session option ``ep.context_enable=1`` (``onnxruntime.ModelCompiler`` sets
it) Compile hands onnxruntime one EPContext node per fused node, and onnxruntime writes the
compiled model. Loading them: GetCapability claims every EPContext node whose ``source`` is
RtxrtExecutionProvider, each as its own fused node, and Compile runs its .rtxir without AOT.
Attributes, sidecar names and checks are ``rtxrt_ep.ep_context``'s, so files from
``compile_ep_context`` and from onnxruntime's compiler load either way."""
from __future__ import annotations

import ctypes as C
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..ep_context import DOMAIN, OP_TYPE, context_attributes, is_context, sidecar_name
from ..options import PROVIDER
from .capi import ATTR_INT, ATTR_STRING, Api

ENABLE = "ep.context_enable"
FILE_PATH = "ep.context_file_path"
EMBED_MODE = "ep.context_embed_mode"


@dataclass(frozen=True)
class ContextOutput:
    """How onnxruntime asked for the compiled model's contexts (session config entries)."""

    embed: bool
    model_path: Path | None  # the compiled model's file, where onnxruntime writes one

    @classmethod
    def from_config(cls, entries: dict[str, str]) -> ContextOutput | None:
        if entries.get(ENABLE) != "1":
            return None
        path = entries.get(FILE_PATH)
        return cls(entries.get(EMBED_MODE, "0") == "1", Path(path) if path else None)

    def context(self, name: str, rtxir: bytes) -> bytes | str:
        """``ep_cache_context`` for node ``name``: the .rtxir itself, or the path of a sidecar
        file written beside the compiled model (embed mode 0)."""
        if self.embed:
            return rtxir
        if self.model_path is None:
            raise ValueError(f"{PROVIDER} keeps an EPContext's .rtxir beside the compiled model "
                             f"(ep.context_embed_mode=0), which needs the model's file path: compile to a "
                             f"file, or embed the contexts (ep.context_embed_mode=1)")
        relative = sidecar_name(self.model_path, name)
        (self.model_path.parent / relative).write_bytes(rtxir)
        return relative


def is_rtxrt_context(node: onnx.NodeProto) -> bool:
    """An EPContext node this provider made (and so runs)."""
    return is_context(node) and any(a.name == "source" and a.s == PROVIDER.encode() for a in node.attribute)


def create_node(api: Api, name: str, inputs: list[str], outputs: list[str], context: bytes | str,
                source_name: str) -> int:
    """A new OrtNode for onnxruntime (which owns it): rtxrt's EPContext node ``name``."""
    attributes = [_op_attr(api, key, value) for key, value in context_attributes(name, context, source_name).items()]
    array = (C.c_void_p * len(attributes))(*attributes)
    node = C.c_void_p()
    try:
        api.check(api.CreateNode(OP_TYPE.encode(), DOMAIN.encode(), name.encode(), _names(inputs), len(inputs),
                                 _names(outputs), len(outputs), array, len(attributes), C.byref(node)))
    finally:
        for attribute in array:  # CreateNode takes (and clears) the ones it used: release any left
            if attribute:
                api.ReleaseOpAttr(attribute)
    return node.value


def _op_attr(api: Api, name: str, value: int | bytes | str) -> int:
    attribute = C.c_void_p()
    if isinstance(value, int):
        number = C.c_int64(value)
        api.check(api.CreateOpAttr(name.encode(), C.byref(number), 1, ATTR_INT, C.byref(attribute)))
    else:
        raw = value if isinstance(value, bytes) else value.encode()
        api.check(api.CreateOpAttr(name.encode(), raw, len(raw), ATTR_STRING, C.byref(attribute)))
    return attribute.value


def _names(names: list[str]) -> C.Array:
    return (C.c_char_p * len(names))(*(n.encode() for n in names))
