"""``InferenceSession``: a drop-in for ``onnxruntime.InferenceSession`` with RtxrtExecutionProvider.

Without "RtxrtExecutionProvider" in ``providers`` it is a plain onnxruntime session. So it is
when rtxrt's device probe finds no usable GPU ``device_id``: the provider claims no node, and
one onnxruntime session runs the whole model on the other listed providers (CPU at least), as
onnxruntime does with a provider it cannot use ($RTXRT_EP_CPU_DEVICE=1 opts out: rtxrt's
partitions then run on its numpy reference backend, slowly, for tests without a GPU).

With a GPU, the model is partitioned (``partition.py``); each rtxrt partition runs in an
``rtxrt.Session`` (JIT on GPU ``device_id``; with "CPUExecutionProvider" also listed, in
onnxruntime where rtxrt cannot build or run it), each other partition in an onnxruntime
session (CUDA provider where onnxruntime has it, else CPU). Partitions run in order; values
pass between them by name.

Tensors between partitions: an rtxrt partition on the GPU takes and returns CuPy arrays, so
values flowing from one GPU partition to the next stay on the device. An onnxruntime
partition on the CUDA provider gets device inputs bound by pointer (IOBinding) and its
outputs left on the device, wrapped as CuPy arrays without a copy. Everything else goes
through host numpy arrays. ``run`` returns numpy arrays, as onnxruntime does."""
from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

from .ep_context import OP_TYPE, has_ep_context, model_partitions, rtxrt_source
from .options import PROVIDER, ProviderOptions, parse_provider_options
from .partition import (
    ONNXRUNTIME,
    RTXRT,
    Partition,
    complete_input_types,
    external_data,
    onnxruntime_only,
    summary,
    value_types,
)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU_DEVICE_ENV = "RTXRT_EP_CPU_DEVICE"  # "1": without a GPU, rtxrt's partitions run on the reference backend
log = logging.getLogger("rtxrt_ep")


@dataclass(frozen=True)
class NodeArg:
    """What ``get_inputs()``/``get_outputs()`` list, as onnxruntime's NodeArg shows it."""

    name: str
    type: str
    shape: list[int | str | None]


class InferenceSession:
    def __init__(self, path_or_bytes: str | os.PathLike | bytes, sess_options: Any = None,
                 providers: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
                 provider_options: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any):
        names, per_provider = _normalize_providers(providers, provider_options)
        self._ort: Any = None
        self._partitions: list[Partition] = []
        if PROVIDER not in names:
            self._ort = ort.InferenceSession(path_or_bytes, sess_options, providers, provider_options, **kwargs)
            return
        self.options: ProviderOptions = parse_provider_options(per_provider[names.index(PROVIDER)])
        self._reference_backend = os.environ.get(CPU_DEVICE_ENV) == "1"
        no_gpu = None if self._reference_backend else _gpu_problem(self.options.device_id)
        if no_gpu:
            others = [(n, o) for n, o in zip(names, per_provider) if n != PROVIDER] or [(CPU, {})]
            self._leave_to_onnxruntime(path_or_bytes, others, no_gpu, sess_options, kwargs)
            return
        self._providers = [PROVIDER] + [p for p in names if p != PROVIDER and p in ort.get_available_providers()]
        if CPU not in self._providers:
            self._providers.append(CPU)  # onnxruntime always has it too
        self._cpu_fallback = CPU in names
        self._ort_args = (sess_options, kwargs)
        self.model = _load(path_or_bytes)
        self._partitions = model_partitions(self.model, self.options, path_or_bytes)
        self._log_partitioning()
        self._types = value_types(self.model)
        self._runners = []
        for part in self._partitions:
            part.model = complete_input_types(part.model, self._types)
            runner = self._runner(part)
            self._types.update(runner.output_types())
            self._runners.append(runner)
        graph = self.model.graph
        initializers = {t.name for t in graph.initializer}
        self._inputs = [_node_arg(vi) for vi in graph.input if vi.name not in initializers]
        # None where the input declares no shape (then any rank goes), else its rank
        self._ranks = {vi.name: len(vi.type.tensor_type.shape.dim) if vi.type.tensor_type.HasField("shape") else None
                       for vi in graph.input}
        self._outputs = [_node_arg(self._types.get(vi.name, vi), inferred=True) for vi in graph.output]

    # --- onnxruntime's API ---------------------------------------------------------------------

    def get_inputs(self) -> list[Any]:
        return self._ort.get_inputs() if self._ort else list(self._inputs)

    def get_outputs(self) -> list[Any]:
        return self._ort.get_outputs() if self._ort else list(self._outputs)

    def get_providers(self) -> list[str]:
        return self._ort.get_providers() if self._ort else list(self._providers)

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        if self._ort:
            return self._ort.get_provider_options()
        o = self.options
        shapes = {k: ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in getattr(o, f"profile_{k}_shapes").items())
                  for k in ("min", "opt", "max")}
        rtxrt = {
            "device_id": str(o.device_id), "precision": o.precision or "", "nv_runtime_cache_path": o.runtime_cache_path or "",
            "enable_cuda_graph": str(int(o.enable_cuda_graph)), "nv_profile_min_shapes": shapes["min"],
            "nv_profile_opt_shapes": shapes["opt"], "nv_profile_max_shapes": shapes["max"],
            "dynamic_shapes_specialization": o.dynamic_shapes_specialization,
            "min_subgraph_size": str(o.min_subgraph_size), "verbose": str(int(o.verbose)),
            "embedded_kernels": str(int(o.embedded_kernels)),
        }
        return {PROVIDER: rtxrt, **{p: {} for p in self._providers if p != PROVIDER}}

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any], run_options: Any = None) -> list[np.ndarray]:
        if self._ort:
            return self._ort.run(output_names, input_feed, run_options)
        return [_to_host(v) if _on_device(v) else v for v in self._run(output_names, input_feed)]

    def io_binding(self) -> Any:
        return self._ort.io_binding() if self._ort else IOBinding(self)

    def run_with_iobinding(self, iobinding: Any, run_options: Any = None) -> None:
        if self._ort:
            return self._ort.run_with_iobinding(iobinding, run_options)
        names = list(iobinding.outputs)
        values = self._run(names or None, iobinding.inputs)
        iobinding.results = [iobinding.place(name, value) for name, value in
                             zip(names or [o.name for o in self._outputs], values)]
        return None

    def partitions(self) -> list[Partition]:
        return list(self._partitions)

    def partition_summary(self) -> str:
        if self._ort is not None and not self._partitions:  # the provider was not named
            return "0 partition(s): onnxruntime runs the whole model"
        return summary(self._partitions)

    def __getattr__(self, name: str) -> Any:  # the rest of onnxruntime's API, when it runs the model
        if name != "_ort" and self.__dict__.get("_ort") is not None:
            return getattr(self._ort, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # --- building --------------------------------------------------------------------------------

    def _leave_to_onnxruntime(self, source: Any, providers: list[tuple[str, dict[str, Any]]], no_gpu: str,
                              sess_options: Any, kwargs: dict[str, Any]) -> None:
        """No usable GPU: claim no node; one onnxruntime session runs the whole model on
        ``providers`` (onnxruntime adds CPU), so the model runs as fast as in onnxruntime alone."""
        self.model = _load(source, weights=False)  # the graph only: onnxruntime reads the weights
        if has_ep_context(self.model):
            contexts = [n.name for n in self.model.graph.node if n.op_type == OP_TYPE]
            raise Fail(f"[ONNXRuntimeError] : 1 : FAIL : {PROVIDER}: no usable GPU ({no_gpu}), and the EPContext "
                       f"nodes {contexts} of this EP-context model run only on rtxrt: load the original ONNX model "
                       f"to run it on {CPU}, or set {CPU_DEVICE_ENV}=1 to run them on rtxrt's CPU reference "
                       f"backend (slow)")
        self._ort = ort.InferenceSession(_onnxruntime_source(source, self.model), sess_options,
                                         [name for name, _ in providers], [opts for _, opts in providers], **kwargs)
        self._partitions = onnxruntime_only(self.model)
        log.warning("%s: no usable GPU (%s); every node runs on %s", PROVIDER, no_gpu,
                    ", ".join(self._ort.get_providers()))
        self._log_partitioning()

    def _log_partitioning(self) -> None:
        (log.info if self.options.verbose else log.debug)("rtxrt_ep partitioning:\n%s", summary(self._partitions))

    # --- running -------------------------------------------------------------------------------

    def _run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[Any]:
        graph_outputs = [o.name for o in self._outputs]
        wanted = list(output_names) if output_names else graph_outputs
        for name in wanted:
            if name not in graph_outputs:
                raise InvalidArgument(f"[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid output name:{name}")
        values = self._check_feeds(input_feed)
        for index, runner in enumerate(self._runners):
            feeds = {name: values[name] for name in runner.part.inputs}
            try:
                outputs = runner.run(feeds)
            except Fail as exc:
                if not (self._cpu_fallback and isinstance(runner, _RtxrtRunner)):
                    raise
                runner = self._runners[index] = self._onnxruntime_runner(runner.part, exc)
                outputs = runner.run(feeds)
            values.update(outputs)
        return [values[name] for name in wanted]

    def _check_feeds(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """The feeds as arrays, checked as onnxruntime checks them (same exception classes)."""
        expected = {i.name: i for i in self._inputs}
        missing = [n for n in expected if n not in feed]
        if missing:
            raise ValueError(f"Required inputs ({missing}) are missing from input feed ({list(feed)}).")
        arrays = {}
        for name, value in feed.items():
            if name not in expected:
                raise InvalidArgument(f"[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid input name: {name}")
            if not expected[name].type.startswith("tensor("):  # sequences, optionals: onnxruntime checks them
                arrays[name] = value
                continue
            arrays[name] = array = _as_array(value, _numpy_dtype(expected[name].type))
            _check_array(name, array, expected[name], self._ranks[name])
        return arrays

    def _runner(self, part: Partition) -> _RtxrtRunner | _OrtRunner:
        if part.kind == RTXRT:
            from rtxrt.errors import RtxrtError

            try:
                return _RtxrtRunner(part, self.options, self._reference_backend, self._graph_profile(part))
            except RtxrtError as exc:
                if not self._cpu_fallback:
                    raise
                return self._onnxruntime_runner(part, exc)
        return _OrtRunner(part, self.options.device_id, *self._ort_args)

    def _onnxruntime_runner(self, part: Partition, reason: Exception) -> _OrtRunner:
        """Fallback (with "CPUExecutionProvider" listed): onnxruntime takes over an rtxrt
        partition that rtxrt failed to build or to run; ``partitions()`` shows the change."""
        log.warning("rtxrt_ep: partition %d now runs in onnxruntime; rtxrt failed on it: %s", part.index, reason)
        part = self._partitions[part.index] = replace(part, kind=ONNXRUNTIME)
        return _OrtRunner(part, self.options.device_id, *self._ort_args)

    def _graph_profile(self, part: Partition) -> dict[str, tuple[tuple[int, ...], ...]] | None:
        graph_inputs = {vi.name for vi in self.model.graph.input}
        profile = {k: v for k, v in self.options.profile().items() if k in part.inputs and k in graph_inputs}
        return profile or None


class IOBinding:
    """onnxruntime's IOBinding surface over an rtxrt_ep session: bind inputs (host arrays, or
    host/CUDA buffers by pointer), bind outputs to "cpu" or "cuda" (optionally a buffer of
    yours), run with ``session.run_with_iobinding``, read with ``get_outputs`` or
    ``copy_outputs_to_cpu``. CUDA outputs are CuPy arrays."""

    def __init__(self, session: InferenceSession):
        self._session = session
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, tuple[str, Any]] = {}  # name -> (device type, buffer of the caller or None)
        self.results: list[Any] = []

    def bind_cpu_input(self, name: str, arr_on_cpu: np.ndarray) -> None:
        self.inputs[name] = arr_on_cpu

    def bind_input(self, name: str, device_type: str, device_id: int, element_type: Any, shape: Sequence[int],
                   buffer_ptr: int) -> None:
        self.inputs[name] = _wrap_pointer(device_type, device_id, element_type, shape, buffer_ptr)

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0, element_type: Any = None,
                    shape: Sequence[int] | None = None, buffer_ptr: int | None = None) -> None:
        buffer = None if buffer_ptr is None else _wrap_pointer(device_type, device_id, element_type, shape, buffer_ptr)
        self.outputs[name] = (device_type.lower(), buffer)

    def clear_binding_inputs(self) -> None:
        self.inputs.clear()

    def clear_binding_outputs(self) -> None:
        self.outputs.clear()

    def synchronize_inputs(self) -> None:
        """Nothing to do: every run synchronizes before it returns."""

    def synchronize_outputs(self) -> None:
        """Nothing to do: every run synchronizes before it returns."""

    def get_outputs(self) -> list[Any]:
        return list(self.results)

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        return [_to_host(v) for v in self.results]

    def place(self, name: str, value: Any) -> Any:
        """``value`` where output ``name`` is bound: the caller's buffer, the GPU or the host."""
        device, buffer = self.outputs.get(name, ("cpu", None))
        if buffer is not None:
            buffer[...] = value if device == "cuda" else _to_host(value)
            return buffer
        if device == "cuda":
            import cupy

            return cupy.asarray(value)
        return _to_host(value)


# --- runners ---------------------------------------------------------------------------------------


class _RtxrtRunner:
    def __init__(self, part: Partition, options: ProviderOptions, reference_backend: bool,
                 profile: dict[str, tuple[tuple[int, ...], ...]] | None):
        """``reference_backend``: without a usable GPU, run on rtxrt's numpy reference backend
        (only when $RTXRT_EP_CPU_DEVICE opts in; otherwise that is an RtxrtError)."""
        import rtxrt

        self.part = part
        self.session = rtxrt.Session(
            rtxrt_source(part), device=options.device_id, cache_dir=options.runtime_cache_path,
            precision=options.precision, fallback="cpu" if reference_backend else None, progress=False,
            use_cuda_graph=options.enable_cuda_graph, profile=profile,
            specialization=options.dynamic_shapes_specialization, embedded_kernels=options.embedded_kernels)

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        from rtxrt.errors import RtxrtError

        if self.session.on_gpu:  # CuPy in, CuPy out: values stay on the device
            import cupy

            feeds = {k: cupy.asarray(v) for k, v in feeds.items()}
        else:
            feeds = {k: _to_host(v) for k, v in feeds.items()}
        try:
            outputs = self.session.run(self.part.outputs, feeds)
        except RtxrtError as exc:
            raise Fail(f"[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running rtxrt "
                       f"partition {self.part.index} (nodes {self.part.nodes}): {exc}") from exc
        return dict(zip(self.part.outputs, outputs))

    def output_types(self) -> dict[str, onnx.ValueInfoProto]:
        types = {}
        for info in self.session.outputs:
            if info.dtype == "unknown":
                continue
            elem = onnx.helper.np_dtype_to_tensor_dtype(_short_dtype(info.dtype))
            types[info.name] = onnx.helper.make_tensor_value_info(info.name, elem, info.shape)
        return types


class _OrtRunner:
    def __init__(self, part: Partition, device_id: int, sess_options: Any, kwargs: dict[str, Any]):
        self.part = part
        self.device_id = device_id
        self.on_cuda = CUDA in ort.get_available_providers()
        providers = [(CUDA, {"device_id": device_id}), CPU] if self.on_cuda else [CPU]
        self.session = ort.InferenceSession(part.model.SerializeToString(), sess_options, providers=providers, **kwargs)

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        if not (self.on_cuda and any(_on_device(v) for v in feeds.values())):
            host = {k: _to_host(v) if _on_device(v) else v for k, v in feeds.items()}  # sequences stay lists
            return dict(zip(self.part.outputs, self.session.run(self.part.outputs, host)))
        import cupy

        binding = self.session.io_binding()
        for name, value in feeds.items():
            if _on_device(value):
                if not value.flags.c_contiguous:  # (ascontiguousarray would make a scalar 1-D)
                    value = feeds[name] = cupy.ascontiguousarray(value)  # kept alive by feeds until the run ends
                binding.bind_input(name, "cuda", self.device_id, value.dtype, value.shape, value.data.ptr)
            else:
                binding.bind_cpu_input(name, np.require(value, requirements="C"))  # a scalar stays 0-D
        for name in self.part.outputs:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return {name: _cupy_view(value, self.device_id) for name, value in zip(self.part.outputs, binding.get_outputs())}

    def output_types(self) -> dict[str, onnx.ValueInfoProto]:
        types = {}
        for arg in self.session.get_outputs():
            elem = onnx.helper.np_dtype_to_tensor_dtype(_numpy_dtype(arg.type))
            types[arg.name] = onnx.helper.make_tensor_value_info(arg.name, elem, arg.shape or None)
        return types


# --- models and types ------------------------------------------------------------------------------


def _normalize_providers(providers: Any, provider_options: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Provider names and their options, from onnxruntime's two spellings (names plus a
    parallel list of option dicts, or (name, options) tuples)."""
    names, options = [], []
    for index, entry in enumerate(providers or []):
        if isinstance(entry, (tuple, list)):
            name, opts = entry
        else:
            name = entry
            opts = provider_options[index] if provider_options and index < len(provider_options) else {}
        names.append(name)
        options.append(dict(opts or {}))
    return names, options


def _gpu_problem(device_id: int) -> str | None:
    """Why rtxrt cannot use GPU ``device_id``, as rtxrt's device probe tells it, or None when it can."""
    from rtxrt.errors import RtxrtError
    from rtxrt.backends.cuda import device

    try:
        device.probe(device_id)
    except RtxrtError as exc:
        return str(exc)
    return None


def _load(path_or_bytes: Any, weights: bool = True) -> onnx.ModelProto:
    """The model, from a path (its external data read from beside it unless ``weights`` is
    False), from bytes or as given. A model in memory whose tensors keep their data in
    external files is refused: it has no folder to find them in, and the current directory is
    not one (onnxruntime would read from there)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        model = onnx.load_from_string(bytes(path_or_bytes))
    elif isinstance(path_or_bytes, onnx.ModelProto):
        model = path_or_bytes
    else:
        return onnx.load(os.fspath(path_or_bytes), load_external_data=weights)
    external = external_data(model)
    if external:
        files = sorted(set(external.values()))
        raise InvalidArgument(f"[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : {PROVIDER}: the model was given as bytes, "
                              f"but tensor(s) {sorted(external)} keep their data in external file(s) {files}, and "
                              f"bytes have no folder to find them in: pass the model's path instead")
    return model


def _onnxruntime_source(source: Any, model: onnx.ModelProto) -> str | bytes:
    """What onnxruntime.InferenceSession takes for ``source``: a path as it is, else bytes."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else model.SerializeToString()


def _node_arg(vi: onnx.ValueInfoProto, inferred: bool = False) -> NodeArg:
    """``inferred``: dims ONNX's shape inference names "unk__N" (it cannot relate them) are
    None, as onnxruntime's own inference reports them."""
    shape: list[int | str | None] = []
    if vi.type.WhichOneof("value") == "tensor_type":
        for d in vi.type.tensor_type.shape.dim:
            invented = inferred and d.dim_param.startswith("unk__")
            shape.append(d.dim_value if d.HasField("dim_value") else
                         d.dim_param if d.HasField("dim_param") and not invented else None)
    return NodeArg(vi.name, _type_string(vi.type), shape)


def _type_string(t: onnx.TypeProto) -> str:
    """The type as onnxruntime writes it: tensor(float), seq(tensor(int64)), optional(...)."""
    kind = t.WhichOneof("value")
    if kind == "sequence_type":
        return f"seq({_type_string(t.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_string(t.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(t.map_type.key_type).lower()
        return f"map({key},{_type_string(t.map_type.value_type)})"
    elem = t.tensor_type.elem_type
    return f"tensor({onnx.TensorProto.DataType.Name(elem).lower() if elem else 'undefined'})"


def _numpy_dtype(ort_type: str) -> np.dtype:
    """"tensor(float)" -> float32 (object for strings)."""
    elem = getattr(onnx.TensorProto, ort_type.removeprefix("tensor(").removesuffix(")").upper(), None)
    if elem is None or elem == onnx.TensorProto.STRING:
        return np.dtype(object)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))


def _short_dtype(short: str) -> np.dtype:
    from rtxrt.ir.dtypes import DType

    return next(np.dtype(d.numpy) for d in DType if d.short == short)


def _ort_type(array: Any) -> str:
    dtype = np.dtype(array.dtype)
    if dtype.kind in "OUS":
        return "tensor(string)"
    return f"tensor({onnx.TensorProto.DataType.Name(onnx.helper.np_dtype_to_tensor_dtype(dtype)).lower()})"


def _check_array(name: str, array: Any, expected: NodeArg, rank: int | None) -> None:
    prefix = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "
    got = _ort_type(array)
    if got != expected.type:
        raise InvalidArgument(f"{prefix}Unexpected input data type. Actual: ({got}) , expected: ({expected.type})")
    if rank is None:
        return
    if len(array.shape) != rank:
        raise InvalidArgument(f"{prefix}Invalid rank for input: {name} Got: {len(array.shape)} Expected: "
                              f"{rank} Please fix either the inputs/outputs or the model.")
    wrong = [(i, g, w) for i, (g, w) in enumerate(zip(array.shape, expected.shape)) if isinstance(w, int) and g != w]
    if wrong:
        lines = "".join(f"\n index: {i} Got: {g} Expected: {w}" for i, g, w in wrong)
        raise InvalidArgument(f"{prefix}Got invalid dimensions for input: {name} for the following indices{lines}\n"
                              f" Please fix either the inputs/outputs or the model.")


# --- arrays ----------------------------------------------------------------------------------------


def _as_array(value: Any, dtype: np.dtype) -> Any:
    """A feed as onnxruntime takes it: numpy arrays as they are, lists converted to the
    input's type, device arrays (CuPy, or anything with __cuda_array_interface__) kept."""
    if isinstance(value, np.ndarray) or _on_device(value):
        return value
    if isinstance(value, (list, tuple, np.generic)):
        return np.asarray(value, dtype=dtype)
    raise RuntimeError(f"Unable to handle object of type {type(value)}")


def _on_device(value: Any) -> bool:
    return hasattr(value, "__cuda_array_interface__")


def _to_host(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if _on_device(value):
        import cupy

        return cupy.asnumpy(cupy.asarray(value))
    return np.asarray(value)


def _wrap_pointer(device_type: str, device_id: int, element_type: Any, shape: Sequence[int] | None, ptr: int) -> Any:
    """An array over memory the caller owns (host or CUDA), without a copy."""
    dtype = np.dtype(element_type)
    shape = tuple(int(d) for d in shape or ())
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if device_type.lower() == "cpu":
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if device_type.lower() != "cuda":
        raise InvalidArgument(f"[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : device type {device_type!r} is not "
                              f"supported by RtxrtExecutionProvider (use 'cpu' or 'cuda')")
    import cupy

    memory = cupy.cuda.UnownedMemory(int(ptr), nbytes, None, device_id)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0))


def _cupy_view(value: Any, device_id: int) -> Any:
    """A CuPy array over an onnxruntime OrtValue on the GPU (the OrtValue stays alive with it)."""
    import cupy

    dtype = _numpy_dtype(value.data_type())
    shape = tuple(value.shape())
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    memory = cupy.cuda.UnownedMemory(value.data_ptr(), nbytes, value, device_id)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0))
