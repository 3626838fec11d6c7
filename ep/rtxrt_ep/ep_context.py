"""EP-context models: an ONNX file whose rtxrt partitions are ``com.microsoft::EPContext`` nodes
holding the compiled .rtxir, so loading it skips AOT (like ``ep.context_enable`` for ONNX
Runtime's TensorRT providers).

Attributes follow ONNX Runtime's EPContext contrib-op schema: ``main_context`` = 1 (each node
owns its context), ``embed_mode`` = 1 with the .rtxir bytes in ``ep_cache_context``, or 0 with
``ep_cache_context`` the path of a sidecar .rtxir relative to the ONNX file; ``source`` =
RtxrtExecutionProvider; ``ep_sdk_version``, ``partition_name``, ``onnx_model_filename`` and
``notes``. The .rtxir is hardware-agnostic, so one file serves every GPU (the JIT specializes
it at load, through the runtime cache), and ``hardware_architecture`` is left out."""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import helper

from .options import PROVIDER, ProviderOptions
from .partition import (
    ONNXRUNTIME,
    RTXRT,
    Partition,
    _reads,
    complete_input_types,
    external_data,
    node_names,
    partition,
    value_types,
)

OP_TYPE = "EPContext"
DOMAIN = "com.microsoft"
NOTES = "rtxrt portable IR (.rtxir); the rtxrt JIT specializes it to the GPU it runs on"


def compile_ep_context(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike, *,
                       options: ProviderOptions | None = None, embed: bool = True) -> onnx.ModelProto:
    """Partition ``model``, compile each rtxrt partition to .rtxir and write ``output``: the graph
    with one EPContext node per rtxrt partition (the .rtxir embedded, or beside ``output`` as
    ``{output stem}_{partition name}.rtxir`` when ``embed`` is False) and the onnxruntime
    partitions' nodes as they were. The graph keeps the model's inputs and outputs."""
    from rtxrt.aot import compile_onnx
    from rtxrt.format import to_bytes

    source_name = Path(model).name if isinstance(model, (str, os.PathLike)) else ""
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    else:
        _refuse_external_data(model)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    graph = model.graph
    types = value_types(model)
    nodes: list[onnx.NodeProto] = []
    initializers: dict[str, onnx.TensorProto] = {}
    for part in partition(model, options):
        # As the session does: inputs ONNX inference left untyped take the types the
        # partitions before them produce (AOT needs every input's type).
        part.model = complete_input_types(part.model, types)
        if part.kind == ONNXRUNTIME:
            nodes += part.model.graph.node
            initializers.update({t.name: t for t in part.model.graph.initializer})
            types.update(_ort_output_types(part.model))
            continue
        name = f"{graph.name or 'graph'}_rtxrt_{part.index}"
        ir = compile_onnx(part.model)
        types.update(_ir_output_types(ir))
        rtxir = to_bytes(ir)
        if embed:
            context: bytes | str = rtxir
        else:
            context = sidecar_name(output, name)
            (output.parent / context).write_bytes(rtxir)
        nodes.append(helper.make_node(OP_TYPE, part.inputs, part.outputs, name=name, domain=DOMAIN,
                                      **context_attributes(name, context, source_name)))
    graph_inputs = {vi.name for vi in graph.input}
    initializers.update({t.name: t for t in graph.initializer if t.name in graph_inputs})  # overridable ones
    # Types of the values between nodes, so a loader can type each partition's inputs.
    inner = {n for node in nodes for n in (*node.input, *node.output)} - graph_inputs - {vi.name for vi in graph.output}
    out_graph = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output),
                                  initializer=list(initializers.values()),
                                  value_info=[vi for name, vi in types.items() if name in inner and _typed(vi)])
    opsets = [o for o in model.opset_import if o.domain != DOMAIN]
    opsets.append(helper.make_opsetid(DOMAIN, 1))
    result = helper.make_model(out_graph, opset_imports=opsets, ir_version=model.ir_version,
                               producer_name="rtxrt_ep", producer_version=_sdk_version())
    result.functions.extend(model.functions)
    result.metadata_props.extend(model.metadata_props)
    onnx.save(result, os.fspath(output))
    return result


def context_attributes(name: str, context: bytes | str, source_name: str = "") -> dict[str, int | bytes | str]:
    """The attributes of rtxrt's EPContext node ``name``: ``context`` is the .rtxir (embed_mode 1)
    or the sidecar's path relative to the ONNX file (embed_mode 0); ``source_name`` the source
    ONNX file's name, where known. The plugin provider's EPContext nodes carry the same."""
    attributes = {"main_context": 1, "embed_mode": int(isinstance(context, bytes)), "ep_cache_context": context,
                  "source": PROVIDER, "ep_sdk_version": _sdk_version(), "partition_name": name, "notes": NOTES}
    if source_name:
        attributes["onnx_model_filename"] = source_name
    return attributes


def sidecar_name(output: Path, name: str) -> str:
    """Where the .rtxir of EPContext node ``name`` goes with embed_mode 0, relative to ``output``'s folder."""
    return f"{output.stem}_{name}.rtxir"


def has_ep_context(model: onnx.ModelProto) -> bool:
    """Whether the model holds EPContext nodes (then it must be loaded with load_ep_context_partitions)."""
    return any(is_context(node) for node in model.graph.node)


def load_ep_context_partitions(model: onnx.ModelProto, base_dir: str | os.PathLike | None = None) -> list[Partition]:
    """The partitions of an EP-context model, in the order they run: each EPContext node is an
    rtxrt partition whose model holds only that node, with its .rtxir embedded and checked
    (``base_dir``, the ONNX file's folder, resolves external ones); each run of other nodes is
    an onnxruntime partition. Nothing is compiled: ``rtxrt_source`` gives the .rtxir to run.
    Raises rtxrt.ModelError or rtxrt.FormatError naming the node for a context it cannot use."""
    graph = model.graph
    names = node_names(graph)
    runs: list[list[int]] = []
    for i, node in enumerate(graph.node):
        if is_context(node) or not runs or is_context(graph.node[runs[-1][-1]]):
            runs.append([])
        runs[-1].append(i)
    reads = [_reads(node) for node in graph.node]
    graph_outputs = [vi.name for vi in graph.output]
    initializers = {t.name: t for t in graph.initializer}
    types = {vi.name: vi for vi in [*graph.value_info, *graph.input, *graph.output]}
    parts = []
    for index, run in enumerate(runs):
        produced = [o for i in run for o in graph.node[i].output if o]
        later = {n for other in runs[index + 1:] for i in other for n in reads[i]}
        inputs = list(dict.fromkeys(n for i in run for n in reads[i] if n not in produced and n not in initializers))
        outputs = [o for o in produced if o in later or o in graph_outputs]
        used_initializers = [initializers[n] for i in run for n in dict.fromkeys(reads[i]) if n in initializers]
        nodes = [graph.node[i] for i in run]
        kind = RTXRT if is_context(nodes[0]) else ONNXRUNTIME
        if kind == RTXRT:
            nodes = [_embedded(nodes[0], names[run[0]], base_dir)]
            used_initializers = []
        sub = helper.make_graph(nodes, f"{graph.name or 'graph'}_{kind}_{index}",
                                [_info(types, n) for n in inputs], [_info(types, n) for n in outputs],
                                initializer=list({t.name: t for t in used_initializers}.values()),
                                value_info=[types[n] for n in produced if n in types and n not in outputs])
        part_model = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                                       producer_name="rtxrt_ep")
        part_model.functions.extend(model.functions)
        parts.append(Partition(index, kind, [names[i] for i in run], inputs, outputs, part_model))
    return parts


def model_partitions(model: onnx.ModelProto, options: ProviderOptions | None,
                     path_or_bytes: str | os.PathLike | bytes | onnx.ModelProto) -> list[Partition]:
    """What the session runs: an EP-context model's own partitions (external contexts found
    beside the file ``path_or_bytes`` names), else the model partitioned afresh."""
    if not has_ep_context(model):
        return partition(model, options)
    source_is_path = isinstance(path_or_bytes, (str, os.PathLike))
    return load_ep_context_partitions(model, Path(path_or_bytes).parent if source_is_path else None)


def rtxrt_source(part: Partition) -> bytes:
    """What rtxrt.Session loads for an rtxrt partition: the .rtxir of an EPContext partition
    (no AOT), else the partition's ONNX model (compiled on the fly)."""
    nodes = part.model.graph.node
    if len(nodes) == 1 and is_context(nodes[0]):
        return next(a.s for a in nodes[0].attribute if a.name == "ep_cache_context")
    return part.model.SerializeToString()


def _refuse_external_data(model: onnx.ModelProto) -> None:
    """A ModelProto whose external data was not loaded has no folder to read it from (the
    current directory is not one): rtxrt.ModelError naming the tensors."""
    from rtxrt.errors import ModelError

    external = external_data(model)
    if external:
        raise ModelError(f"tensor(s) {sorted(external)} of the model keep their data in external file(s) "
                         f"{sorted(set(external.values()))}, which a model in memory has no folder to find in: "
                         f"pass the model's path, or load it with onnx.load(path) (which reads that data)")


def is_context(node: onnx.NodeProto) -> bool:
    return node.op_type == OP_TYPE and node.domain == DOMAIN


def checked_context(node: onnx.NodeProto, name: str, base_dir: str | os.PathLike | None) -> bytes:
    """The .rtxir of EPContext node ``node`` (named ``name`` in errors), read from its sidecar
    where embed_mode is 0 and checked; rtxrt.ModelError or rtxrt.FormatError as
    load_ep_context_partitions raises them."""
    return next(a.s for a in _embedded(node, name, base_dir).attribute if a.name == "ep_cache_context")


def _sdk_version() -> str:
    import rtxrt
    from rtxrt.format import FORMAT_MAJOR, FORMAT_MINOR

    return f"rtxrt {rtxrt.__version__} (rtxir format {FORMAT_MAJOR}.{FORMAT_MINOR})"


def _embedded(node: onnx.NodeProto, name: str, base_dir: str | os.PathLike | None) -> onnx.NodeProto:
    """A copy of an EPContext node with its checked .rtxir in ep_cache_context (embed_mode 1)."""
    from rtxrt.errors import FormatError, ModelError
    from rtxrt.format import read_rtxir

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    where = f"EPContext node {name!r}"
    source = attrs.get("source", b"").decode()
    if source != PROVIDER:
        raise ModelError(f"{where} was made by {source or 'an unnamed provider'!r}, not {PROVIDER}; "
                         f"load the model with the provider that made it")
    if attrs.get("main_context", 1) != 1:
        raise ModelError(f"{where} has main_context=0 (a context shared with another node), "
                         f"which {PROVIDER} does not make or load")
    context = attrs.get("ep_cache_context")
    if not context:
        raise ModelError(f"{where} has no ep_cache_context")
    embed_mode = attrs.get("embed_mode", 1)
    if embed_mode == 0:
        context = _read_sidecar(context.decode(errors="replace"), where, base_dir)
    elif embed_mode != 1:
        raise ModelError(f"{where} has embed_mode={embed_mode}; it must be 0 (file) or 1 (embedded)")
    try:
        read_rtxir(context)  # the reader verifies checksums: a damaged context fails here, by name
    except FormatError as exc:
        raise FormatError(f"{where}: its ep_cache_context is not a usable .rtxir: {exc}") from None
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    del copy.attribute[:]
    copy.attribute.extend(a for a in node.attribute if a.name not in ("ep_cache_context", "embed_mode"))
    copy.attribute.extend([helper.make_attribute("ep_cache_context", context), helper.make_attribute("embed_mode", 1)])
    return copy


def _read_sidecar(relative: str, where: str, base_dir: str | os.PathLike | None) -> bytes:
    """An external context: a path relative to the ONNX file's folder that stays inside it (a
    model from elsewhere must not make us read arbitrary files)."""
    from rtxrt.errors import ModelError

    if base_dir is None:
        raise ModelError(f"{where} keeps its context in the file {relative!r} (embed_mode=0): load the model "
                         f"from its path, not from bytes, so the file can be found beside it")
    base = Path(base_dir).resolve()
    path = (base / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(base):
        raise ModelError(f"{where}: ep_cache_context {relative!r} must be a path inside the model's folder {base}")
    if not path.is_file():
        raise ModelError(f"{where}: its context file {path} does not exist")
    return path.read_bytes()


def _info(types: dict[str, onnx.ValueInfoProto], name: str) -> onnx.ValueInfoProto:
    return types.get(name) or helper.make_empty_tensor_value_info(name)


def _typed(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.WhichOneof("value") != "tensor_type" or bool(vi.type.tensor_type.elem_type)


def _ort_output_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """The output types onnxruntime gives a partition (it knows contrib ops ONNX inference does not)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    types = {}
    for arg in session.get_outputs():
        elem = getattr(onnx.TensorProto, arg.type.removeprefix("tensor(").removesuffix(")").upper(), None)
        if arg.type.startswith("tensor(") and elem is not None:
            types[arg.name] = helper.make_tensor_value_info(arg.name, elem, arg.shape or None)
    return types


def _ir_output_types(ir) -> dict[str, onnx.ValueInfoProto]:
    """The output types of a compiled rtxrt partition."""
    types = {}
    for name in ir.graph.outputs:
        t = ir.graph.types[name]
        elem = helper.np_dtype_to_tensor_dtype(t.dtype.numpy)
        types[name] = helper.make_tensor_value_info(name, elem, None if t.shape is None else list(t.shape))
    return types
