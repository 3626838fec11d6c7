"""The ONNX backend API (``onnx.backend.base``) over rtxrt, so ONNX's backend test suite
runs against it. Models go the product's way: ONNX → IR → .rtxir bytes → IR → backend."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .aot import compile_onnx
from .backends.reference.executor import ReferenceExecutor
from .errors import InputError


class RtxrtBackendRep(BackendRep):
    def __init__(self, executor: ReferenceExecutor):
        self.executor = executor
        graph = executor.model.graph
        self.input_names = [n for n in graph.inputs if n not in graph.initializers]
        self.output_names = list(graph.outputs)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            if len(inputs) > len(self.input_names):
                raise InputError(f"got {len(inputs)} inputs, the model takes {len(self.input_names)}")
            feeds = dict(zip(self.input_names, inputs))
        outputs = self.executor.run(feeds)
        return namedtupledict("Outputs", self.output_names)(*[outputs[n] for n in self.output_names])


class RtxrtBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> RtxrtBackendRep:
        if not cls.supports_device(device):
            raise ValueError(f"rtxrt.backend does not run on device {device!r}")
        return RtxrtBackendRep(ReferenceExecutor(compile_onnx(model, round_trip=True)))

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
        return device.upper().startswith("CPU")


is_compatible = RtxrtBackend.is_compatible
prepare = RtxrtBackend.prepare
run_model = RtxrtBackend.run_model
run_node = RtxrtBackend.run_node
supports_device = RtxrtBackend.supports_device
