"""RtxrtExecutionProvider as an ONNX Runtime plugin execution provider library.

onnxruntime (>= 1.24) loads a plugin provider as a shared library exporting
``CreateEpFactories``/``ReleaseEpFactory`` (``onnxruntime.register_execution_provider_library``).
rtxrt's is a small C trampoline (``trampoline.c``) that forwards those calls to this package
through ctypes, and ``tensors.c``, which moves a fused node's tensors without a Python call per
tensor; sessions then are onnxruntime's own, with rtxrt claiming the nodes it runs.

- ``capi``: the vendored, checked table of onnxruntime's C API slots;
- ``factory``: the ``OrtEpFactory`` (name, devices, one provider per session);
- ``provider``: the ``OrtEp`` (GetCapability with ``rtxrt_ep.partition``, Compile);
- ``graph``: an ``OrtGraph`` read back into ONNX; ``compute``: running a fused node;
- ``context``: EPContext nodes made for onnxruntime's compiler, and the ones a session loads;
- ``callbacks``: C function pointers for Python, and the struct-to-object table;
- ``build``: where the library comes from (installed, or compiled at first use)."""
from __future__ import annotations

import atexit
import ctypes as C
import threading

from ..options import PROVIDER
from . import callbacks, factory, provider
from .build import BuildError, library_path

P, SIZE = C.c_void_p, C.c_size_t
_lock = threading.Lock()
_registered: list[str] = []


def get_library_path() -> str:
    """The path of rtxrt's plugin library (compiled at first use in a source checkout)."""
    return str(library_path())


def register_library() -> None:
    """Load the library into this process, connect it to Python and register it with
    onnxruntime under the provider's name. Calling it again does nothing."""
    import onnxruntime

    with _lock:
        if _registered:
            return
        path = get_library_path()
        if "library" not in callbacks.loaded:
            library = C.CDLL(path)
            _attach(library)
            callbacks.loaded["library"] = library
            atexit.register(library.rtxrt_ep_detach)  # after this, the library never calls into Python
        onnxruntime.register_execution_provider_library(PROVIDER, path)
        _registered.append(path)


def unregister_library() -> None:
    import onnxruntime

    with _lock:
        if _registered:
            onnxruntime.unregister_execution_provider_library(PROVIDER)
            _registered.clear()


def is_library_registered() -> bool:
    return bool(_registered)


def _attach(library: C.CDLL) -> None:
    """Declare the library's functions and install Python's side of the trampoline."""
    library.rtxrt_ep_attach.restype = None
    library.rtxrt_ep_attach.argtypes = [P] * 6
    library.rtxrt_ep_bind_ort.restype = None
    library.rtxrt_ep_bind_ort.argtypes = [C.POINTER(P)]
    library.rtxrt_ep_write_outputs.restype = P  # OrtStatus*
    library.rtxrt_ep_write_outputs.argtypes = [P, P, SIZE]
    library.rtxrt_ep_attach(
        callbacks.pointer(P, factory.create_factories, C.c_char_p, P, P, C.POINTER(P), SIZE, C.POINTER(SIZE)),
        callbacks.value_callback(P, factory.release_factory, None, P),
        callbacks.value_callback(None, factory.release_ep, None, P, P),
        callbacks.value_callback(None, provider.RELEASE_COMPUTE_INFOS, None, P, C.POINTER(P), SIZE),
        callbacks.value_callback(None, provider.RELEASE_STATE, None, P, P),
        callbacks.status_callback(callbacks.current_api, provider.COMPUTE, P, P, P, SIZE),
    )


__all__ = ["BuildError", "get_library_path", "is_library_registered", "register_library", "unregister_library"]
