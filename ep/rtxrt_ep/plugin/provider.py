"""The ``OrtEp``: what a session's RtxrtExecutionProvider claims (GetCapability) and how it
runs it (Compile).

GetCapability reads the graph back into ONNX and runs today's partitioner
(``rtxrt_ep.partition``) on it; each rtxrt region becomes one fused node
(``EpGraphSupportInfo_AddNodesToFuse``), everything else stays with onnxruntime's providers.
Nodes holding subgraphs (If, Loop, Scan) are left to onnxruntime: their graph attributes are
not read back. Compile rebuilds each fused region as its own ONNX model, with the fused
node's inputs and outputs in onnxruntime's order and the constant initializers inside
(onnxruntime is told not to feed them), and opens an ``rtxrt.Session`` on it."""
from __future__ import annotations

import ctypes as C
import logging
from typing import Any

import numpy as np
import onnx
from rtxrt.version import __version__

from ..options import PROVIDER, ProviderOptions
from ..partition import RTXRT, node_names, partition
from . import callbacks
from .capi import API_VERSION, Api, OrtEp, OrtNodeComputeInfo, OrtNodeFusionOptions
from .compute import Kernel, compute
from .graph import Reader, read_graph

P, SIZE = C.c_void_p, C.c_size_t
log = logging.getLogger("rtxrt_ep")
NAME = C.create_string_buffer(PROVIDER.encode())
VERSION = C.create_string_buffer(f"rtxrt {__version__}".encode())  # compatibility info of compiled models


class Provider:
    """One session's provider instance."""

    def __init__(self, api: Api, options: ProviderOptions, reference_backend: bool, library: Any):
        self.api = api
        self.options = options
        self.reference_backend = reference_backend  # run partitions on rtxrt's CPU reference backend
        self.release_state = C.cast(library.rtxrt_ep_release_state, P).value
        self.struct = OrtEp(ort_version_supported=API_VERSION, **_functions(library))
        self.address = callbacks.register(self.struct, self)

    # --- GetCapability ---------------------------------------------------------------------------

    def get_capability(self, graph: int, support_info: int) -> None:
        read = read_graph(self.api, graph, weights=False)
        if not read.nodes:
            return
        names = node_names(read.model.graph)
        index = {name: i for i, name in enumerate(names)}
        forced = {i for i, has in enumerate(read.has_subgraphs) if has}
        fusion = OrtNodeFusionOptions(ort_version_supported=API_VERSION, drop_constant_initializers=True)
        for part in partition(read.model, self.options, unsupported=forced):
            if part.kind != RTXRT:
                continue
            nodes = (C.c_void_p * len(part.nodes))(*(read.nodes[index[n]] for n in part.nodes))
            self.api.check(self.api.EpGraphSupportInfo_AddNodesToFuse(support_info, nodes, len(part.nodes),
                                                                      C.byref(fusion)))

    # --- Compile ---------------------------------------------------------------------------------

    def compile(self, graphs: Any, fused_nodes: Any, count: int, compute_infos: Any, context_nodes: Any) -> None:
        for i in range(count):
            kernel = self._kernel(graphs[i], fused_nodes[i])
            info = OrtNodeComputeInfo(ort_version_supported=API_VERSION, ReleaseState=self.release_state,
                                      **_COMPUTE_CALLBACKS)
            compute_infos[i] = callbacks.register(info, (self.api, kernel, info))

    def _kernel(self, graph: int, fused_node: int) -> Kernel:
        import rtxrt

        api = self.api
        model = read_graph(api, graph, weights=True).model
        reader = Reader(api)
        inputs = [reader.value_info(v) for v in api.handles("Node_GetNumInputs", "Node_GetInputs", fused_node) if v]
        outputs = [reader.value_info(v) for v in api.handles("Node_GetNumOutputs", "Node_GetOutputs", fused_node) if v]
        fed = {vi.name for vi in inputs}
        kept = [t for t in model.graph.initializer if t.name not in fed]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        for field, infos in ((model.graph.input, inputs), (model.graph.output, outputs)):
            del field[:]
            field.extend(infos)
        options = self.options
        session = rtxrt.Session(
            model.SerializeToString(), device=options.device_id, cache_dir=options.runtime_cache_path,
            precision=options.precision, fallback="cpu" if self.reference_backend else None, progress=False,
            use_cuda_graph=options.enable_cuda_graph, profile=options.profile() or None,
            specialization=options.dynamic_shapes_specialization, embedded_kernels=options.embedded_kernels)
        dtypes = [np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)) for vi in outputs]
        return Kernel(api.string("Node_GetName", fused_node), session, [vi.name for vi in inputs],
                      [vi.name for vi in outputs], dtypes)

    def release_compute_infos(self, infos: Any, count: int) -> None:
        for i in range(count):
            callbacks.unregister(infos[i])


# --- the C entry points ------------------------------------------------------------------------------


def _provider(address: int) -> Provider:
    return callbacks.owner(address)


def _api() -> Api | None:
    from .factory import current_api

    return current_api()


def _get_capability(this: int, graph: int, support_info: int) -> None:
    _provider(this).get_capability(graph, support_info)


def _compile(this: int, graphs: Any, fused_nodes: Any, count: int, compute_infos: Any, context_nodes: Any) -> None:
    _provider(this).compile(graphs, fused_nodes, count, compute_infos, context_nodes)


def _release_compute_infos(this: int, infos: Any, count: int) -> None:
    _provider(this).release_compute_infos(infos, count)


def _create_state(this: int, compute_context: int, state: Any) -> None:
    state[0] = this  # the kernel is found again by its compute info


def _compute(this: int, state: int, kernel_context: int) -> None:
    api, kernel, _ = callbacks.owner(this)
    compute(api, kernel, kernel_context)


def _release_state(this: int, state: int) -> None:
    """Nothing to free: the state is the compute info's own address."""


def _functions(library: Any) -> dict[str, int | None]:
    return {
        "GetName": _GET_NAME,
        "GetCapability": _GET_CAPABILITY,
        "Compile": _COMPILE,
        "ReleaseNodeComputeInfos": C.cast(library.rtxrt_ep_release_node_compute_infos, P).value,
        "GetCompiledModelCompatibilityInfo": _COMPATIBILITY_INFO,
    }


_GET_NAME = callbacks.value_callback(P, lambda this: C.addressof(NAME), None, P)
_COMPATIBILITY_INFO = callbacks.value_callback(P, lambda this, graph: C.addressof(VERSION), None, P, P)
_GET_CAPABILITY = callbacks.status_callback(_api, _get_capability, P, P, P)
_COMPILE = callbacks.status_callback(_api, _compile, P, C.POINTER(P), C.POINTER(P), SIZE, C.POINTER(P), C.POINTER(P))
_COMPUTE_CALLBACKS = {
    "CreateState": callbacks.status_callback(_api, _create_state, P, P, C.POINTER(P)),
    "Compute": callbacks.status_callback(_api, _compute, P, P, P),
}
RELEASE_COMPUTE_INFOS = _release_compute_infos  # installed in the trampoline by the factory
RELEASE_STATE = _release_state
