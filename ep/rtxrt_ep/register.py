"""``register()``: let an unchanged onnxruntime application pick RtxrtExecutionProvider by name.

onnxruntime's Python package cannot load a provider written in Python, so the hook lives in
Python: it replaces ``InferenceSession``, ``get_available_providers`` and ``get_all_providers``
on the ``onnxruntime`` module (and ``InferenceSession`` on
``onnxruntime.capi.onnxruntime_inference_collection``, where it is defined) with wrappers.
A session whose ``providers`` name RtxrtExecutionProvider is built by
``rtxrt_ep.session.InferenceSession``; any other goes to the original class untouched.
``unregister()`` puts the originals back. See ep/README.md for what this cannot reach."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import onnxruntime
from onnxruntime.capi import onnxruntime_inference_collection as _collection

from .options import PROVIDER

_lock = threading.Lock()
_originals: dict[str, Any] = {}  # empty while unregistered


def register() -> None:
    """Route ``onnxruntime.InferenceSession(..., providers=[PROVIDER, ...])`` to rtxrt and list
    the provider first in ``onnxruntime.get_available_providers()``. Calling it again does nothing."""
    with _lock:
        if _originals:
            return
        original_session = onnxruntime.InferenceSession
        _originals.update(
            session=original_session,
            collection_session=_collection.InferenceSession,
            get_available_providers=onnxruntime.get_available_providers,
            get_all_providers=onnxruntime.get_all_providers,
        )
        hooked = _hooked_session_class(original_session)
        onnxruntime.InferenceSession = hooked
        _collection.InferenceSession = hooked
        onnxruntime.get_available_providers = _with_provider(_originals["get_available_providers"])
        onnxruntime.get_all_providers = _with_provider(_originals["get_all_providers"])


def unregister() -> None:
    """Restore onnxruntime's own ``InferenceSession`` and provider lists (no-op if not registered).
    Sessions already created through the hook keep working."""
    with _lock:
        if not _originals:
            return
        onnxruntime.InferenceSession = _originals["session"]
        _collection.InferenceSession = _originals["collection_session"]
        onnxruntime.get_available_providers = _originals["get_available_providers"]
        onnxruntime.get_all_providers = _originals["get_all_providers"]
        _originals.clear()


def is_registered() -> bool:
    return bool(_originals)


def names_provider(providers: Sequence[Any] | None) -> bool:
    """True when an onnxruntime ``providers`` argument (names, or (name, options) tuples)
    names RtxrtExecutionProvider."""
    if not providers or isinstance(providers, (str, bytes)):
        return False
    return any((p[0] if isinstance(p, (tuple, list)) and p else p) == PROVIDER for p in providers)


def _with_provider(original: Callable[[], list[str]]) -> Callable[[], list[str]]:
    def providers() -> list[str]:
        return [PROVIDER] + [p for p in original() if p != PROVIDER]

    providers.__name__ = original.__name__
    providers.__doc__ = original.__doc__
    return providers


class _HookMeta(type):
    """isinstance(session, onnxruntime.InferenceSession) stays True for rtxrt sessions made
    through the hook, as apps and libraries sometimes check it."""

    def __instancecheck__(cls, instance: Any) -> bool:
        from .session import InferenceSession as RtxrtSession

        return isinstance(instance, RtxrtSession) or super().__instancecheck__(instance)


def _hooked_session_class(original: type) -> type:
    def __new__(cls, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        if names_provider(providers):
            from .session import InferenceSession as RtxrtSession

            # Not an instance of cls, so Python does not call __init__ again.
            return RtxrtSession(path_or_bytes, sess_options, providers, provider_options, **kwargs)
        return original.__new__(cls)

    return _HookMeta(original.__name__, (original,), {
        "__new__": __new__,
        "__module__": original.__module__,
        "__qualname__": original.__qualname__,
        "__doc__": original.__doc__,
    })
