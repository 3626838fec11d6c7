"""The ONNX backend API (``onnx.backend.base``) over rtxrt, so ONNX's backend test suite
runs against it. Models go the product's way: ONNX → IR → .rtxir bytes → IR → backend.

Device "CPU" runs the numpy reference backend; "CUDA" (or "CUDA:N") runs ``rtxrt.Session``
on that GPU, JIT and all, with a runtime cache in one temporary directory per process (the
suite's thousands of tiny models stay out of the user's cache)."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .aot import compile_onnx
from .backends.reference.executor import ReferenceExecutor
from .errors import InputError, RtxrtError


class _Rep(BackendRep):
    """Runs a prepared model with inputs by position (or by name) and returns its outputs
    as a named tuple of numpy arrays."""

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        outputs = self._run(_feeds(inputs, self.input_names))
        return namedtupledict("Outputs", self.output_names)(*outputs)

    def _run(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        raise NotImplementedError


class RtxrtBackendRep(_Rep):
    """A model prepared for the CPU: the numpy reference backend runs it."""

    def __init__(self, executor: ReferenceExecutor):
        self.executor = executor
        graph = executor.model.graph
        self.input_names = [n for n in graph.inputs if n not in graph.initializers]
        self.output_names = list(graph.outputs)

    def _run(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        outputs = self.executor.run(feeds)
        return [outputs[n] for n in self.output_names]


class RtxrtGpuBackendRep(_Rep):
    """A model prepared for a GPU: an ``rtxrt.Session`` runs it and returns numpy arrays.

    ``host_nodes``: labels of the nodes that ran on the host (no GPU lowering) at any input
    shape so far, in plan order; empty when every node ran on the GPU, None while no engine
    has been built yet (a model with symbolic input dims is specialized at its first run)."""

    def __init__(self, session: Any):
        self.session = session
        self.input_names = [i.name for i in session.inputs]
        self.output_names = [o.name for o in session.outputs]
        self.host_nodes: list[str] | None = None
        self._note_host_nodes()

    def _run(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        finally:
            self._note_host_nodes()

    def _note_host_nodes(self) -> None:
        labels = self.session.stats.get("host_nodes")
        if labels is None:
            return
        known = self.host_nodes or []
        self.host_nodes = known + [label for label in labels if label not in known]


def _feeds(inputs: Any, input_names: list[str]) -> dict[str, Any]:
    if isinstance(inputs, dict):
        return dict(inputs)
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if len(inputs) > len(input_names):
        raise InputError(f"got {len(inputs)} inputs, the model takes {len(input_names)}")
    return dict(zip(input_names, inputs))


class RtxrtBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU",
                **kwargs: Any) -> RtxrtBackendRep | RtxrtGpuBackendRep:
        gpu = _gpu_index(device)
        if gpu is None:
            if not cls.supports_device(device):
                raise ValueError(f"rtxrt.onnx_backend does not run on device {device!r}")
            return RtxrtBackendRep(ReferenceExecutor(compile_onnx(model, round_trip=True)))
        problem = _gpu_problem(gpu)
        if problem is not None:  # NoGpuError, UnsupportedGpuError, ...: the probe's own type
            raise type(problem)(f"rtxrt.onnx_backend cannot prepare a model for device {device!r}: {problem}")
        from .format import to_bytes
        from .runtime import Session

        session = Session(to_bytes(compile_onnx(model)), device=gpu, cache_dir=_cache_dir(), progress=False)
        return RtxrtGpuBackendRep(session)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
        outputs_info: Sequence[tuple[Any, tuple]] | None = None, **kwargs: Any,
    ) -> tuple:
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        graph_inputs = [
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for name, x in zip(node.input, inputs) if name
        ]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return cls.run_model(model, [x for name, x in zip(node.input, inputs) if name], device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device_problem(device) is None


def device_problem(device: str) -> str | None:
    """Why rtxrt.onnx_backend cannot run on ``device`` ("CPU", "CUDA" or "CUDA:N"), or None."""
    gpu = _gpu_index(device)
    if gpu is not None:
        problem = _gpu_problem(gpu)
        return None if problem is None else str(problem)
    if device.upper().startswith("CPU"):
        return None
    return f"rtxrt.onnx_backend does not run on device {device!r} (it runs on 'CPU' and 'CUDA')"


def _gpu_index(device: str) -> int | None:
    """N for "CUDA:N" (0 for "CUDA"), None for any other device string."""
    kind, colon, index = device.upper().partition(":")
    if kind != "CUDA" or (colon and not index.isdigit()):
        return None
    return int(index) if colon else 0


@functools.cache
def _gpu_problem(index: int) -> RtxrtError | None:
    """Why GPU ``index`` cannot run models (no CuPy, driver or device; too old), or None."""
    from .backends.cuda.device import probe

    try:
        probe(index)
    except RtxrtError as exc:
        return exc
    return None


@functools.cache
def _cache_dir() -> str:
    path = tempfile.mkdtemp(prefix="rtxrt-backend-cache-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


is_compatible = RtxrtBackend.is_compatible
prepare = RtxrtBackend.prepare
run_model = RtxrtBackend.run_model
run_node = RtxrtBackend.run_node
supports_device = RtxrtBackend.supports_device
