"""The ``OrtEpFactory`` onnxruntime gets from ``CreateEpFactories``: it names the provider,
says which devices it runs on, and makes one ``Provider`` (``OrtEp``) per session.

Devices: one ``OrtEpDevice`` per NVIDIA GPU onnxruntime lists that rtxrt's device probe can
use (the k-th NVIDIA GPU is CUDA device k; its ``device_id`` goes in the device's options),
none without one, so onnxruntime runs everything itself. With $RTXRT_EP_CPU_DEVICE=1 the
provider claims the CPU instead and runs its partitions on rtxrt's CPU reference backend
(for testing the whole path on machines without a GPU)."""
from __future__ import annotations

import ctypes as C
import os
from typing import Any

from rtxrt.version import __version__

from ..options import PROVIDER, parse_provider_options
from . import callbacks, provider
from .compute import bind_tensors
from .context import ContextOutput
from .capi import HARDWARE_CPU, HARDWARE_GPU, NVIDIA_VENDOR_ID, STRUCT_VERSION, Api, OrtEpFactory

P, SIZE = C.c_void_p, C.c_size_t
CPU_DEVICE_ENV = "RTXRT_EP_CPU_DEVICE"
VENDOR = C.create_string_buffer(b"rtxrt")
EP_OPTION_PREFIX = f"ep.{PROVIDER.lower()}."  # how onnxruntime files provider options in session config

class Factory:
    def __init__(self, api: Api, library: Any):
        self.api = api
        self.library = library
        self.version = C.create_string_buffer(__version__.encode())
        self.struct = OrtEpFactory(
            ort_version_supported=STRUCT_VERSION, GetName=_GET_NAME, GetVendor=_GET_VENDOR,
            GetSupportedDevices=_GET_SUPPORTED_DEVICES, CreateEp=_CREATE_EP,
            ReleaseEp=C.cast(library.rtxrt_ep_release_ep, P).value, GetVendorId=_GET_VENDOR_ID,
            GetVersion=_GET_VERSION, ValidateCompiledModelCompatibilityInfo=_VALIDATE_COMPATIBILITY,
            CreateAllocator=_CREATE_NOTHING_3, ReleaseAllocator=_RELEASE_ALLOCATOR,
            CreateDataTransfer=_CREATE_NOTHING_1, IsStreamAware=_IS_STREAM_AWARE,
            CreateSyncStreamForDevice=_CREATE_NOTHING_3)
        self.address = callbacks.register(self.struct, self)

    def supported_devices(self, devices: Any, count: int, ep_devices: Any, capacity: int, found: Any) -> None:
        api = self.api
        found[0] = 0
        chosen: list[tuple[int, dict[str, str]]] = []
        if os.environ.get(CPU_DEVICE_ENV) == "1":
            chosen = [(d, {}) for d in devices[:count] if api.HardwareDevice_Type(d) == HARDWARE_CPU][:1]
        else:
            nvidia = [d for d in devices[:count] if api.HardwareDevice_Type(d) == HARDWARE_GPU
                      and api.HardwareDevice_VendorId(d) == NVIDIA_VENDOR_ID]
            chosen = [(d, {"device_id": str(k)}) for k, d in enumerate(nvidia) if _usable_gpu(k)]
        for device, options in chosen[:capacity]:
            kvps = api.key_value_pairs(options)
            try:
                ep_device = C.c_void_p()
                api.check(api.CreateEpDevice(self.address, device, None, kvps, C.byref(ep_device)))
            finally:
                api.ReleaseKeyValuePairs(kvps)
            ep_devices[found[0]] = ep_device.value
            found[0] += 1

    def create_ep(self, devices: Any, metadata: Any, count: int, session_options: int, logger: int, out: Any) -> None:
        entries = self.api.config_entries(session_options)
        options = {k[len(EP_OPTION_PREFIX):]: v for k, v in entries.items() if k.lower().startswith(EP_OPTION_PREFIX)}
        instance = provider.Provider(self.api, parse_provider_options(options),
                                     os.environ.get(CPU_DEVICE_ENV) == "1", self.library,
                                     ContextOutput.from_config(entries))
        out[0] = instance.address


def _usable_gpu(index: int) -> bool:
    from rtxrt.backends.cuda import device
    from rtxrt.errors import RtxrtError

    try:
        device.probe(index)
    except RtxrtError:
        return False
    return True


# --- the C entry points ------------------------------------------------------------------------------


def create_factories(name: bytes, api_base: int, logger: int, factories: Any, capacity: int, count: Any) -> int | None:
    """CreateEpFactories, forwarded by the trampoline."""
    count[0] = 0
    try:
        api = callbacks.loaded["api"] = Api.load(api_base)
        bind_tensors(callbacks.loaded["library"], api)
        factory = callbacks.loaded.setdefault("factory", Factory(api, callbacks.loaded["library"]))
        factories[0] = factory.address
        count[0] = 1
        return None
    except BaseException as exc:  # noqa: BLE001 -- becomes onnxruntime's error
        return _fail(api_base, f"RtxrtExecutionProvider could not start: {exc}")


def release_factory(address: int) -> None:
    """ReleaseEpFactory: the factory is kept for the process (registering again reuses it)."""


def release_ep(this: int, ep: int) -> None:
    callbacks.unregister(ep)


def _fail(api_base: int, message: str) -> int:
    """An OrtStatus through API version 1, which every onnxruntime has (slot 0: CreateStatus)."""
    get_api = C.CFUNCTYPE(P, C.c_uint32)(C.cast(api_base, C.POINTER(P))[0])
    create = C.CFUNCTYPE(P, C.c_int, C.c_char_p)(C.cast(get_api(1), C.POINTER(P))[0])
    return create(1, message.encode(errors="replace"))


def _factory(address: int) -> Factory:
    return callbacks.owner(address)


_GET_NAME = callbacks.value_callback(P, lambda this: C.addressof(provider.NAME), None, P)
_GET_VENDOR = callbacks.value_callback(P, lambda this: C.addressof(VENDOR), None, P)
_GET_VENDOR_ID = callbacks.value_callback(C.c_uint32, lambda this: 0, 0, P)
_GET_VERSION = callbacks.value_callback(P, lambda this: C.addressof(_factory(this).version), None, P)
_IS_STREAM_AWARE = callbacks.value_callback(C.c_bool, lambda this: False, False, P)
_RELEASE_ALLOCATOR = callbacks.value_callback(None, lambda this, allocator: None, None, P, P)
_GET_SUPPORTED_DEVICES = callbacks.status_callback(
    callbacks.current_api, lambda this, *args: _factory(this).supported_devices(*args),
    P, C.POINTER(P), SIZE, C.POINTER(P), SIZE, C.POINTER(SIZE))
_CREATE_EP = callbacks.status_callback(
    callbacks.current_api, lambda this, *args: _factory(this).create_ep(*args),
    P, C.POINTER(P), C.POINTER(P), SIZE, P, P, C.POINTER(P))


def _set_null(this: int, *args: Any) -> None:
    args[-1][0] = None  # "no allocator / data transfer / stream of its own": onnxruntime's defaults


def _not_applicable(this: int, devices: Any, count: int, info: bytes, out: Any) -> None:
    out[0] = 0  # OrtCompiledModelCompatibility_EP_NOT_APPLICABLE


_CREATE_NOTHING_1 = callbacks.status_callback(callbacks.current_api, _set_null, P, C.POINTER(P))
_CREATE_NOTHING_3 = callbacks.status_callback(callbacks.current_api, _set_null, P, P, P, C.POINTER(P))
_VALIDATE_COMPATIBILITY = callbacks.status_callback(callbacks.current_api, _not_applicable, P, C.POINTER(P), SIZE, C.c_char_p,
                                                    C.POINTER(C.c_int))
