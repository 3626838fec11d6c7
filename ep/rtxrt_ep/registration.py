"""``rtxrt_ep.register()``: make RtxrtExecutionProvider selectable in onnxruntime.

Where onnxruntime loads plugin execution provider libraries and selects them by name
(``providers=[...]``, from onnxruntime 1.25; tested with 1.31 and 1.32) and the plugin
library is installed or can be compiled here, ``register()`` registers that library
(``onnxruntime.register_execution_provider_library``, as NVIDIA's TensorRT-RTX provider
package does): sessions are then onnxruntime's own, with every method it has. Otherwise it
falls back to the Python hook (``rtxrt_ep.register``'s module), which swaps
``onnxruntime.InferenceSession`` for a wrapper; see ep/README.md for what that cannot reach."""
from __future__ import annotations

import logging

from .register import is_registered as hook_is_registered
from .register import register as hook_register
from .register import unregister as hook_unregister

PLUGIN_MIN_ONNXRUNTIME = (1, 25)
log = logging.getLogger("rtxrt_ep")


def register() -> None:
    """Register the plugin library with onnxruntime, or install the hook where it cannot be
    used. Calling it again does nothing."""
    problem = plugin_problem()
    if problem is None:
        from . import plugin

        plugin.register_library()
        return
    log.debug("rtxrt_ep: %s; using the Python hook", problem)
    hook_register()


def unregister() -> None:
    """Undo ``register()`` (either kind). Sessions already made keep working."""
    from . import plugin

    plugin.unregister_library()
    hook_unregister()


def is_registered() -> bool:
    from . import plugin

    return plugin.is_library_registered() or hook_is_registered()


def get_library_path() -> str:
    """The plugin library's path, for ``onnxruntime.register_execution_provider_library``
    (compiled at first use in a source checkout; ``plugin.BuildError`` without a C compiler)."""
    from . import plugin

    return plugin.get_library_path()


def plugin_problem() -> str | None:
    """Why the plugin library cannot be used here, or None when it can."""
    import onnxruntime

    version = tuple(int(p) for p in onnxruntime.__version__.split(".")[:2] if p.isdigit())
    if version < PLUGIN_MIN_ONNXRUNTIME:
        return f"onnxruntime {onnxruntime.__version__} does not select plugin providers by name"
    from .plugin import BuildError

    try:
        get_library_path()
    except BuildError as exc:
        return str(exc)
    return None
