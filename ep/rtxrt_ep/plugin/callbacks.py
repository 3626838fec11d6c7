"""C function pointers for Python methods, and the table from struct address to Python object.

onnxruntime calls a provider through structs of function pointers, passing the struct's own
address (``this_ptr``) first. Each struct the provider hands out is registered here under its
address, so a callback finds its Python object. A Python exception never crosses into C: a
status-returning callback turns it into an OrtStatus (ORT_EP_FAIL with the message), any
other logs it and returns its fallback value."""
from __future__ import annotations

import ctypes as C
import logging
from collections.abc import Callable
from typing import Any

from .capi import Api

log = logging.getLogger("rtxrt_ep")
STATUS = C.c_void_p

_objects: dict[int, Any] = {}
_keep: list[Any] = []  # the CFUNCTYPE thunks: onnxruntime may call them until the process ends
# "api": the Api of the onnxruntime that loaded the library; "library": the library; "factory"
loaded: dict[str, Any] = {}


def current_api() -> Api | None:
    return loaded.get("api")


def register(struct: C.Structure, owner: Any) -> int:
    address = C.addressof(struct)
    _objects[address] = owner
    return address


def unregister(address: int | None) -> Any:
    return _objects.pop(address, None) if address else None


def owner(address: int | None) -> Any:
    return _objects[address]


def status_callback(api: Callable[[], Api | None], function: Callable[..., None], *argtypes: Any) -> Any:
    """A C function returning OrtStatus* (NULL for success) that calls ``function(*args)``."""

    def call(*args: Any) -> int | None:
        try:
            function(*args)
            return None
        except BaseException as exc:  # noqa: BLE001 -- reported to onnxruntime, which raises it in the app
            log.debug("RtxrtExecutionProvider: %s failed", function.__name__, exc_info=True)
            bound = api()
            return bound.status(exc) if bound else None

    return pointer(STATUS, call, *argtypes)


def value_callback(restype: Any, function: Callable[..., Any], fallback: Any, *argtypes: Any) -> Any:
    """A C function returning a value (a name, a flag); ``fallback`` where Python raised."""

    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except BaseException:  # noqa: BLE001 -- nothing in C could take it
            log.exception("RtxrtExecutionProvider: %s failed", function.__name__)
            return fallback

    return pointer(restype, call, *argtypes)


def pointer(restype: Any, function: Callable[..., Any], *argtypes: Any) -> int:
    thunk = C.CFUNCTYPE(restype, *argtypes)(function)
    _keep.append(thunk)
    return C.cast(thunk, C.c_void_p).value
