"""Runs an IR model node by node with the numpy reference kernels."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import ExecutionError, InputError, ModelError, RtxrtError, UnsupportedOpError
from ...ir.dtypes import DType
from ...ir.graph import Graph, Model, TensorType
from .kernel import OpRun, find_kernel, refuse_over_limit


class ReferenceExecutor:
    """Prepares one kernel per node once; ``run`` may then be called many times."""

    def __init__(self, model: Model):
        self.model = model
        self._kernels: dict[int, OpRun] = {}
        refuse_weightless(model.graph)
        refuse_oversized(model.graph)
        missing = []
        for node in model.graph.walk():
            if find_kernel(node.op_type, node.domain) is None:
                missing.append((node.domain, node.op_type, node.name))
        if missing:
            raise UnsupportedOpError(missing)
        self._last_use = _last_uses(model.graph)

    def run(self, feeds: Mapping[str, Any], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        graph = self.model.graph
        wanted = list(output_names) if output_names else list(graph.outputs)
        for name in wanted:
            if name not in graph.outputs:
                raise InputError(f"unknown output {name!r}; the model's outputs are {graph.outputs}")
        values = check_feeds(graph, feeds)
        with np.errstate(all="ignore"):  # NaN and inf propagate silently, as in onnxruntime
            results = self._run_graph(graph, values, {}, keep=set(wanted), last_use=self._last_use)
        for name in wanted:
            check_output(name, results[name], graph.types.get(name))
        return {name: results[name] for name in wanted}

    def _run_graph(
        self,
        graph: Graph,
        values: dict[str, Any],
        outer: Mapping[str, Any],
        keep: set[str],
        last_use: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        env: dict[str, Any] = dict(outer)
        env.update(graph.initializers)
        env.update(values)
        for index, node in enumerate(graph.nodes):
            kernel = self._kernel(node)
            args = []
            for name in _without_trailing_omitted(node.inputs):
                if not name:
                    args.append(None)
                elif name in env:
                    args.append(env[name])
                else:
                    raise ExecutionError(f"{node.label}: input {name!r} has no value")
            if kernel.has_subgraphs:
                kernel.scope = env
            try:
                result = kernel.run(*args)
            except RtxrtError:
                raise
            except Exception as exc:  # the kernel's own error type stays in the chain
                raise ExecutionError(f"{node.label} {_failure(exc)}") from exc
            results = result if isinstance(result, (tuple, list)) else (result,)
            for name, value in zip(node.outputs, results):
                if name:
                    env[name] = value
            if last_use is not None:  # free intermediates as soon as nothing reads them
                for name in node.inputs:
                    if name and last_use.get(name) == index and name not in keep and name not in graph.initializers:
                        env.pop(name, None)
        missing = [o for o in graph.outputs if o not in env]
        if missing:
            raise ExecutionError(f"graph {graph.name!r}: outputs {missing} were not computed")
        return {o: env[o] for o in graph.outputs}

    def _kernel(self, node) -> OpRun:
        kernel = self._kernels.get(id(node))
        if kernel is None:
            cls = find_kernel(node.op_type, node.domain)
            kernel = cls(node, self.model.opset, self._subgraph_runner)
            self._kernels[id(node)] = kernel
        return kernel

    def _subgraph_runner(self, graph: Graph, feeds: dict[str, Any], outer: Mapping[str, Any]) -> list[Any]:
        results = self._run_graph(graph, dict(feeds), outer, keep=set(graph.outputs))
        return [results[o] for o in graph.outputs]


def _without_trailing_omitted(names: list[str]) -> list[str]:
    """Omitted optional inputs at the end are as if not there (the checker counts them so too)."""
    end = len(names)
    while end and not names[end - 1]:
        end -= 1
    return names[:end]


def _failure(exc: Exception) -> str:
    """What went wrong in a kernel, as a plain sentence ending a message that names the node."""
    detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError's str is a repr
    what = "ran out of memory" if isinstance(exc, MemoryError) else "failed"
    return f"{what}: {detail}" if detail else what


def refuse_weightless(graph: Graph) -> None:
    if graph.stripped:
        name, more = next(iter(graph.stripped)), len(graph.stripped) - 1
        raise ModelError(f"this is a weightless model: it lacks weight {name!r}{f' and {more} more' if more else ''}; "
                         "attach them first with `rtxrt refit MODEL.rtxir --weights ORIGINAL.onnx|"
                         "WEIGHTS.safetensors -o FULL.rtxir` (or rtxrt.refit)")
    for node in graph.nodes:
        for sub in node.subgraphs():
            refuse_weightless(sub)


def refuse_oversized(graph: Graph) -> None:
    """Refuse before running a model with a value too large for this machine's memory whatever
    the inputs (a dim known only at run time counts as 1): attributes and constant tensors,
    which a file may set to anything, fix such sizes."""
    producers = graph.producers()
    for name, t in graph.types.items():
        if t.shape is not None:
            nbytes = math.prod(d if isinstance(d, int) else 1 for d in t.shape) * t.dtype.itemsize
            where = producers[name].label if name in producers else f"graph {graph.name!r}"
            refuse_over_limit(nbytes, f"{where}: value {name!r} ({t})")
    for node in graph.nodes:
        for sub in node.subgraphs():
            refuse_oversized(sub)


def check_feeds(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate names, dtypes and shapes of the inputs; symbolic dims must agree."""
    runtime_inputs = [n for n in graph.inputs if n not in graph.initializers]
    unknown = sorted(set(feeds) - set(graph.inputs))
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; the model's inputs are {runtime_inputs}")
    missing = [n for n in runtime_inputs if n not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}")
    symbols: dict[str, tuple[int, str]] = {}
    values: dict[str, np.ndarray] = {}
    for name, value in feeds.items():
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        declared = graph.types.get(name)
        if declared is not None:
            check_input(name, array, declared, symbols)
        values[name] = array
    return values


def check_input(name: str, array: np.ndarray, declared: TensorType, symbols: dict[str, tuple[int, str]]) -> None:
    expected = declared.dtype.numpy
    if declared.dtype == DType.STRING:
        if array.dtype.kind not in "OUS":
            raise InputError(f"input {name!r}: expected strings, got {array.dtype}")
    elif array.dtype != expected:
        raise InputError(f"input {name!r}: expected dtype {declared.dtype.short}, got {array.dtype}")
    if declared.shape is None:
        return
    if array.ndim != len(declared.shape):
        raise InputError(f"input {name!r}: expected shape {declared}, got rank {array.ndim} {tuple(array.shape)}")
    for axis, (want, got) in enumerate(zip(declared.shape, array.shape)):
        if isinstance(want, int) and want != got:
            raise InputError(f"input {name!r}: dim {axis} must be {want}, got {got} (shape {tuple(array.shape)})")
        if isinstance(want, str):
            seen = symbols.setdefault(want, (got, name))
            if seen[0] != got:
                raise InputError(
                    f"input {name!r}: dim {axis} ({want!r}) is {got} but {seen[1]!r} gave {want!r} = {seen[0]}"
                )


def check_output(name: str, value: Any, declared: TensorType | None) -> None:
    """An output must have the declared element type, rank and fixed dims: a model whose
    declarations do not hold for what it computed (a damaged file, say) fails here instead of
    handing the caller something else."""
    if not isinstance(value, np.ndarray):
        raise ExecutionError(f"output {name!r} is a {type(value).__name__}, not a tensor")
    if declared is None:
        return
    matches = value.dtype == declared.dtype.numpy or (declared.dtype == DType.STRING and value.dtype.kind in "OUS")
    if declared.shape is not None:
        matches = matches and value.ndim == len(declared.shape) and all(
            not isinstance(want, int) or want == got for want, got in zip(declared.shape, value.shape))
    if not matches:
        raise ExecutionError(f"output {name!r} came out as {value.dtype}{list(value.shape)} but the model declares "
                             f"it {declared}")


def _last_uses(graph: Graph) -> dict[str, int]:
    """The index of the last node of ``graph`` that reads each value, its subgraphs included."""
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            last[name] = index
        for sub in node.subgraphs():  # values a subgraph reads or returns from this scope stay alive
            for inner in sub.graphs():
                for name in inner.outputs:
                    last[name] = index
                for inner_node in inner.nodes:
                    for name in inner_node.inputs:
                        last[name] = index
    last.pop("", None)
    return last
