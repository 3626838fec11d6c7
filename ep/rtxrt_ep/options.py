"""Provider options of RtxrtExecutionProvider, in ONNX Runtime's string form.

ONNX Runtime passes provider options as a dict of strings (``{"device_id": "0",
"enable_cuda_graph": "1"}``). The keys follow ONNX Runtime's NvTensorRtRtx provider where it
has one (``device_id``, ``enable_cuda_graph``, ``nv_runtime_cache_path``,
``nv_profile_min_shapes``/``_opt_``/``_max_``, ``nv_detailed_build_log``); every field name of
``ProviderOptions`` is accepted too. Python values (ints, bools) work as well as strings.

``dynamic_shapes_specialization`` defaults to "lazy": the NvTensorRtRtx provider leaves
TensorRT-RTX's ``DynamicShapesKernelSpecializationStrategy`` at its default, kLAZY (compile
shape-specialized kernels in the background, run generic ones meanwhile).

``embedded_kernels`` defaults to "0": machine code a .rtxir carries (``rtxrt aot --precompile``,
or an EP-context model's contexts) comes from whoever built the file, so it runs only when the
user opts in; otherwise the JIT compiles the kernels itself."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

PROVIDER = "RtxrtExecutionProvider"  # the name onnxruntime applications ask for

SPECIALIZATIONS = ("lazy", "eager", "none")
PRECISIONS = ("fp32",)

# ONNX Runtime's NvTensorRtRtx option names -> ProviderOptions fields.
ORT_KEYS = {
    "nv_runtime_cache_path": "runtime_cache_path",
    "nv_cuda_graph_enable": "enable_cuda_graph",  # the name before ONNX Runtime 1.23
    "nv_profile_min_shapes": "profile_min_shapes",
    "nv_profile_opt_shapes": "profile_opt_shapes",
    "nv_profile_max_shapes": "profile_max_shapes",
    "nv_detailed_build_log": "verbose",
}

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class ProviderOptions:
    device_id: int = 0
    precision: str | None = None  # None: as the model is annotated; "fp32": everything in float32
    runtime_cache_path: str | None = None  # None: rtxrt's cache in the user profile
    enable_cuda_graph: bool = True
    profile_min_shapes: Shapes = field(default_factory=dict)
    profile_opt_shapes: Shapes = field(default_factory=dict)
    profile_max_shapes: Shapes = field(default_factory=dict)
    dynamic_shapes_specialization: str = "lazy"
    min_subgraph_size: int = 1
    verbose: bool = False
    embedded_kernels: bool = False  # run the cubins a .rtxir carries (trust its builder)

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """``{input: (min, opt, max)}`` as ``rtxrt.Session(profile=...)`` takes it."""
        return {name: (shape, self.profile_opt_shapes[name], self.profile_max_shapes[name])
                for name, shape in self.profile_min_shapes.items()}


def known_keys() -> list[str]:
    return sorted({f.name for f in fields(ProviderOptions)} | set(ORT_KEYS))


def parse_provider_options(options: Mapping[str, Any] | None) -> ProviderOptions:
    """ProviderOptions from ONNX Runtime-style provider options (strings or Python values);
    ValueError for an unknown key or a bad value, naming it."""
    options = dict(options or {})
    unknown = sorted(k for k in options if k not in known_keys())
    if unknown:
        raise ValueError(f"RtxrtExecutionProvider: unknown provider option(s) {unknown}; "
                         f"known options are {known_keys()}")
    values: dict[str, Any] = {}
    for key, raw in options.items():
        name = ORT_KEYS.get(key, key)
        if name in values:
            raise ValueError(f"RtxrtExecutionProvider: option {name!r} given twice (as {key!r} and another name)")
        values[name] = _PARSERS[name](key, raw)
    parsed = ProviderOptions(**values)
    _check_profile(parsed)
    return parsed


def _integer(key: str, raw: Any, minimum: int) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"RtxrtExecutionProvider: {key} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"RtxrtExecutionProvider: {key} must be >= {minimum}, not {value}")
    return value


def _boolean(key: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError(f"RtxrtExecutionProvider: {key} must be 0/1 or true/false, not {raw!r}")


def _precision(key: str, raw: Any) -> str | None:
    text = "" if raw is None else str(raw).strip().lower()
    if not text:
        return None
    if text not in PRECISIONS:
        raise ValueError(f"RtxrtExecutionProvider: {key} must be empty or one of {list(PRECISIONS)}, not {raw!r}")
    return text


def _path(key: str, raw: Any) -> str | None:
    return str(raw) if raw not in (None, "") else None


def _specialization(key: str, raw: Any) -> str:
    text = str(raw).strip().lower()
    if text not in SPECIALIZATIONS:
        raise ValueError(f"RtxrtExecutionProvider: {key} must be one of {list(SPECIALIZATIONS)}, not {raw!r}")
    return text


def parse_shapes(key: str, raw: Any) -> Shapes:
    """``"x:1x3x224x224,mask:1x128"`` -> ``{"x": (1, 3, 224, 224), "mask": (1, 128)}``
    (a dict of shapes is taken as it is)."""
    if isinstance(raw, Mapping):
        return {str(k): tuple(_integer(f"{key} ({k})", d, 0) for d in v) for k, v in raw.items()}
    shapes: Shapes = {}
    for item in filter(None, (part.strip() for part in str(raw).split(","))):
        name, colon, dims = item.rpartition(":")
        if not colon or not name:
            raise ValueError(f"RtxrtExecutionProvider: {key} entry {item!r} is not of the form name:1x3x224x224")
        if name in shapes:
            raise ValueError(f"RtxrtExecutionProvider: {key} names input {name!r} twice")
        shapes[name] = tuple(_integer(f"{key} ({name})", d, 0) for d in dims.split("x"))
    return shapes


def _check_profile(options: ProviderOptions) -> None:
    """ONNX Runtime's rule: min, opt and max shapes come together, for the same inputs, with
    min <= opt <= max in every dim."""
    sets = {"min": options.profile_min_shapes, "opt": options.profile_opt_shapes, "max": options.profile_max_shapes}
    names = {k: set(v) for k, v in sets.items()}
    if len({frozenset(v) for v in names.values()}) > 1:
        raise ValueError(f"RtxrtExecutionProvider: nv_profile_min/opt/max_shapes must name the same inputs, got "
                         f"{ {k: sorted(v) for k, v in names.items()} }")
    for name, low in options.profile_min_shapes.items():
        opt, high = options.profile_opt_shapes[name], options.profile_max_shapes[name]
        if not len(low) == len(opt) == len(high):
            raise ValueError(f"RtxrtExecutionProvider: profile shapes of {name!r} differ in rank: {low}, {opt}, {high}")
        if any(not a <= b <= c for a, b, c in zip(low, opt, high)):
            raise ValueError(f"RtxrtExecutionProvider: profile shapes of {name!r} need min <= opt <= max, "
                             f"got {low}, {opt}, {high}")


_PARSERS = {
    "device_id": lambda key, raw: _integer(key, raw, 0),
    "precision": _precision,
    "runtime_cache_path": _path,
    "enable_cuda_graph": _boolean,
    "profile_min_shapes": parse_shapes,
    "profile_opt_shapes": parse_shapes,
    "profile_max_shapes": parse_shapes,
    "dynamic_shapes_specialization": _specialization,
    "min_subgraph_size": lambda key, raw: _integer(key, raw, 1),
    "verbose": _boolean,
    "embedded_kernels": _boolean,
}
