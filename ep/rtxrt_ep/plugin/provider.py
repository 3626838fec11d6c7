"""The ``OrtEp``: what a session's RtxrtExecutionProvider claims (GetCapability) and how it
runs it (Compile).

GetCapability reads the graph back into ONNX and runs today's partitioner
(``rtxrt_ep.partition``) on it; each rtxrt region becomes one fused node
(``EpGraphSupportInfo_AddNodesToFuse``), everything else stays with onnxruntime's providers.
Nodes holding subgraphs (If, Loop, Scan) are left to onnxruntime: their graph attributes are
not read back. An EPContext node rtxrt made is claimed alone. Compile rebuilds each fused
region as its own ONNX model, with the fused node's inputs and outputs in onnxruntime's order
and the constant initializers inside (onnxruntime is told not to feed them), and opens an
``rtxrt.Session`` on it; an EPContext node's session opens its .rtxir instead (no AOT). When
onnxruntime makes a compiled model (``ep.context_enable=1``), the region is compiled to .rtxir
first and Compile also returns its EPContext node (``context.py``)."""
from __future__ import annotations

import ctypes as C
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rtxrt.version import __version__

from ..ep_context import checked_context
from ..options import PROVIDER, ProviderOptions
from ..partition import RTXRT, node_names, partition
from . import callbacks
from .capi import STRUCT_VERSION, Api, OrtEp, OrtNodeComputeInfo, OrtNodeFusionOptions
from .compute import Kernel
from .context import ContextOutput, create_node, is_rtxrt_context
from .graph import Reader, read_graph

P, SIZE = C.c_void_p, C.c_size_t
log = logging.getLogger("rtxrt_ep")
NAME = C.create_string_buffer(PROVIDER.encode())
VERSION = C.create_string_buffer(f"rtxrt {__version__}".encode())  # compatibility info of compiled models


class Provider:
    """One session's provider instance."""

    def __init__(self, api: Api, options: ProviderOptions, reference_backend: bool, library: Any,
                 context_output: ContextOutput | None):
        self.api = api
        self.options = options
        self.reference_backend = reference_backend  # run partitions on rtxrt's CPU reference backend
        self.context_output = context_output  # where onnxruntime makes a compiled (EPContext) model
        self.library = library
        self.release_state = C.cast(library.rtxrt_ep_release_state, P).value
        self.compute = C.cast(library.rtxrt_ep_compute, P).value
        self.struct = OrtEp(ort_version_supported=STRUCT_VERSION, **_functions(library))
        self.address = callbacks.register(self.struct, self)

    # --- GetCapability ---------------------------------------------------------------------------

    def get_capability(self, graph: int, support_info: int) -> None:
        read = read_graph(self.api, graph, weights=False)
        if not read.nodes:
            return
        names = node_names(read.model.graph)
        index = {name: i for i, name in enumerate(names)}
        contexts = [i for i, node in enumerate(read.model.graph.node) if is_rtxrt_context(node)]
        for i in contexts:
            self._fuse(support_info, [read.nodes[i]])
        forced = {i for i, has in enumerate(read.has_subgraphs) if has} | set(contexts)
        for part in partition(read.model, self.options, unsupported=forced):
            if part.kind == RTXRT:
                self._fuse(support_info, [read.nodes[index[n]] for n in part.nodes])

    def _fuse(self, support_info: int, nodes: list[int]) -> None:
        fusion = OrtNodeFusionOptions(ort_version_supported=STRUCT_VERSION, drop_constant_initializers=True)
        array = (C.c_void_p * len(nodes))(*nodes)
        self.api.check(self.api.EpGraphSupportInfo_AddNodesToFuse(support_info, array, len(nodes), C.byref(fusion)))

    # --- Compile ---------------------------------------------------------------------------------

    def compile(self, graphs: Any, fused_nodes: Any, count: int, compute_infos: Any, context_nodes: Any) -> None:
        for i in range(count):
            kernel, context_node = self._kernel(graphs[i], fused_nodes[i])
            kernel.struct = OrtNodeComputeInfo(ort_version_supported=STRUCT_VERSION, CreateState=_CREATE_STATE,
                                               Compute=self.compute, ReleaseState=self.release_state)
            compute_infos[i] = callbacks.register(kernel.struct, kernel)
            if context_node:
                context_nodes[i] = context_node

    def _kernel(self, graph: int, fused_node: int) -> tuple[Kernel, int | None]:
        """The fused node's kernel, and the EPContext node to hand onnxruntime (when it asked)."""
        import rtxrt

        api = self.api
        name = api.string("Node_GetName", fused_node)
        model = read_graph(api, graph, weights=True).model
        reader = Reader(api)
        inputs = [reader.value_info(v) for v in api.handles("Node_GetNumInputs", "Node_GetInputs", fused_node) if v]
        outputs = [reader.value_info(v) for v in api.handles("Node_GetNumOutputs", "Node_GetOutputs", fused_node) if v]
        model_path = _model_path(api, graph)
        source = self._source(model, name, inputs, outputs, model_path)
        options = self.options
        session = rtxrt.Session(
            source, device=options.device_id, cache_dir=options.runtime_cache_path,
            precision=options.precision, fallback="cpu" if self.reference_backend else None, progress=False,
            use_cuda_graph=options.enable_cuda_graph, profile=options.profile() or None,
            specialization=options.dynamic_shapes_specialization, embedded_kernels=options.embedded_kernels)
        dtypes = [np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)) for vi in outputs]
        input_names, output_names = [vi.name for vi in inputs], [vi.name for vi in outputs]
        kernel = Kernel(api, self.library, session, input_names, output_names, dtypes)
        context_node = None
        if self.context_output:  # last: onnxruntime owns the node only once Compile succeeds
            context = self.context_output.context(name, source)
            context_node = create_node(api, name, input_names, output_names, context,
                                       model_path.name if model_path else "")
        return kernel, context_node

    def _source(self, model: onnx.ModelProto, name: str, inputs: list[onnx.ValueInfoProto],
                outputs: list[onnx.ValueInfoProto], model_path: Path | None) -> bytes:
        """What the fused node's rtxrt.Session opens: an EPContext node's .rtxir, the region
        compiled to .rtxir where onnxruntime makes a compiled model, else the region's ONNX."""
        from rtxrt.aot import compile_onnx
        from rtxrt.format import to_bytes

        nodes = model.graph.node
        if len(nodes) == 1 and is_rtxrt_context(nodes[0]):
            if self.context_output:
                raise ValueError(f"the model is already compiled (it holds {PROVIDER}'s EPContext node "
                                 f"{nodes[0].name!r}): compile the original model instead")
            return checked_context(nodes[0], nodes[0].name or name, model_path.parent if model_path else None)
        fed = {vi.name for vi in inputs}
        kept = [t for t in model.graph.initializer if t.name not in fed]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        for field, infos in ((model.graph.input, inputs), (model.graph.output, outputs)):
            del field[:]
            field.extend(infos)
        return to_bytes(compile_onnx(model)) if self.context_output else model.SerializeToString()

    def release_compute_infos(self, infos: Any, count: int) -> None:
        for i in range(count):
            callbacks.unregister(infos[i])


# --- the C entry points ------------------------------------------------------------------------------


def _provider(address: int) -> Provider:
    return callbacks.owner(address)




def _get_capability(this: int, graph: int, support_info: int) -> None:
    _provider(this).get_capability(graph, support_info)


def _compile(this: int, graphs: Any, fused_nodes: Any, count: int, compute_infos: Any, context_nodes: Any) -> None:
    _provider(this).compile(graphs, fused_nodes, count, compute_infos, context_nodes)


def _release_compute_infos(this: int, infos: Any, count: int) -> None:
    _provider(this).release_compute_infos(infos, count)


def _create_state(this: int, compute_context: int, state: Any) -> None:
    state[0] = this  # the kernel is found again by its compute info


def _compute(this: int, kernel_context: int, packed_inputs: int, words: int) -> None:
    """Called by rtxrt_ep_compute (the fused node's Compute) with the inputs gathered."""
    callbacks.owner(this).run(kernel_context, packed_inputs, words)


def _release_state(this: int, state: int) -> None:
    """Nothing to free: the state is the compute info's own address."""


def _model_path(api: Api, graph: int) -> Path | None:
    """The model file onnxruntime loaded (None for a model given as bytes)."""
    path = C.c_char_p()
    api.check(api.Graph_GetModelPath(graph, C.byref(path)))
    return Path(path.value.decode()) if path.value else None


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
_GET_CAPABILITY = callbacks.status_callback(callbacks.current_api, _get_capability, P, P, P)
_COMPILE = callbacks.status_callback(callbacks.current_api, _compile, P, C.POINTER(P), C.POINTER(P), SIZE, C.POINTER(P), C.POINTER(P))
_CREATE_STATE = callbacks.status_callback(callbacks.current_api, _create_state, P, P, C.POINTER(P))
RELEASE_COMPUTE_INFOS = _release_compute_infos  # installed in the trampoline when the library is loaded
RELEASE_STATE = _release_state
COMPUTE = _compute
