"""Inputs for ``rtxrt run``/``demo``: read from .npz or made up at random to fit the model."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ir.dtypes import DType
from ..runtime import IOInfo, Session


def parse_dims(specs: list[str] | None) -> dict[str, int]:
    """``["batch=4", "seq=128"]`` → {"batch": 4, "seq": 128}."""
    dims = {}
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        if not sep or not value.isdigit():
            raise InputError(f"--dim {spec!r}: expected NAME=SIZE, e.g. batch=4")
        dims[name] = int(value)
    return dims


def load_npz(path: Path, inputs: list[IOInfo]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read inputs ({exc})") from None
    if len(inputs) == 1 and len(feeds) == 1 and inputs[0].name not in feeds:
        feeds = {inputs[0].name: next(iter(feeds.values()))}  # a lone unnamed array
    return feeds


def random_inputs(inputs: list[IOInfo], dims: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Fresh random values: floats ~ N(0, 1), integers in [0, 10), booleans half true.
    Symbolic dims take their size from ``dims`` (default 1); unknown dims are 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        if info.shape is None:
            raise InputError(f"input {info.name!r} has unknown rank; give it in an .npz file with --inputs")
        shape = tuple(d if isinstance(d, int) else dims.get(d, 1) if isinstance(d, str) else 1 for d in info.shape)
        dtype = DType.from_name(info.dtype)
        if dtype.is_float:
            feeds[info.name] = rng.standard_normal(shape).astype(dtype.numpy)
        elif dtype == DType.BOOL:
            feeds[info.name] = rng.random(shape) < 0.5
        elif dtype.is_integer:
            feeds[info.name] = rng.integers(0, 10, shape).astype(dtype.numpy)
        else:
            raise InputError(f"input {info.name!r} of type {info.dtype}: cannot make random values; use --inputs")
    return feeds


def parse_shapes(spec: str | None) -> dict[str, tuple[int, ...]]:
    """``"input:1x3x224x224,mask:1x128"`` (trtexec's form) → {"input": (1, 3, 224, 224), ...}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in filter(None, (spec or "").split(",")):
        name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            shape = None
        if not sep or not name or shape is None or any(d < 0 for d in shape):
            raise InputError(f"--shapes {item!r}: expected NAME:DxDxD, e.g. input:1x3x224x224")
        shapes[name] = shape
    return shapes


def shaped_random_inputs(inputs: list[IOInfo], shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Random inputs of the given shapes (inputs not named keep their static shape)."""
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise InputError(f"--shapes names unknown input(s) {unknown}; the model's inputs are {[i.name for i in inputs]}")
    dims: dict[str, int] = {}
    for info in inputs:
        if info.name in shapes and info.shape is not None:
            if len(shapes[info.name]) != len(info.shape):
                raise InputError(f"--shapes {info.name}: rank {len(shapes[info.name])}, the model says {info.shape}")
            dims.update({d: s for d, s in zip(info.shape, shapes[info.name]) if isinstance(d, str)})
    return random_inputs(inputs, dims, seed)


def open_session(path: Path) -> Session:
    """A Session on the GPU, or on the CPU reference backend when there is no usable GPU (the
    backend name says which; the reason is printed instead of warned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        session = Session(path, fallback="cpu")
    if session.fallback_reason:
        print(f"no usable GPU ({session.fallback_reason}): running the {session.backend} backend")
    return session
