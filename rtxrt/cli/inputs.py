"""Inputs for ``rtxrt run``/``jit``/``bench``: read from .npz/.npy or made up at random to fit
the model."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..display import format_bytes
from ..host_memory import available_memory
from ..ir.dtypes import DType
from ..runtime import IOInfo, Session


def load_inputs(path: Path, inputs: list[IOInfo]) -> dict[str, np.ndarray]:
    """``--inputs``: an .npz with one array per input name (a lone array of any name for a
    one-input model), or an .npy holding the only input's array."""
    arrays = _read_arrays(path)
    names = [info.name for info in inputs]
    if isinstance(arrays, np.ndarray):
        if len(inputs) != 1:
            raise InputError(f"{path}: an .npy file holds one array, but the model has {len(inputs)} inputs "
                             f"{names}; give an .npz file with one array per input name")
        return {names[0]: arrays}
    if len(inputs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        return {names[0]: next(iter(arrays.values()))}  # a lone unnamed array
    return arrays


def _read_arrays(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    """The arrays of an .npz (by name) or the array of an .npy; never unpickles anything."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except OSError:
        raise  # missing or unreadable: the message names the file
    except MemoryError:
        raise InputError(f"{path}: its arrays do not fit in memory") from None
    except Exception as exc:  # numpy raises many kinds of error on damaged or pickled data
        raise InputError(f"{path}: not a valid .npz or .npy file of numeric arrays "
                         "(pickled objects are never loaded)") from exc


def random_inputs(inputs: list[IOInfo], dims: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Fresh random values: floats ~ N(0, 1), integers in [0, 10), booleans half true.
    Symbolic dims take their size from ``dims`` (default 1); unknown dims are 1. Sizes and
    types are checked for every input before any is made."""
    check_dims(dims, inputs)
    planned = [(info, _shape(info, dims), _dtype(info)) for info in inputs]
    _check_memory(planned)
    rng = np.random.default_rng(seed)
    feeds = {}
    for info, shape, dtype in planned:
        try:
            feeds[info.name] = _random_array(rng, shape, dtype)
        except MemoryError:  # where the OS does not say how much memory is free
            raise InputError(_too_large(info, shape, math.prod(shape) * dtype.itemsize, None)) from None
    return feeds


def check_dims(dims: dict[str, int], inputs: list[IOInfo]) -> None:
    """Every ``--dim`` must name a symbolic dim of some input."""
    symbolic = sorted({d for info in inputs for d in info.shape or () if isinstance(d, str)})
    unknown = sorted(set(dims) - set(symbolic))
    if unknown:
        known = f"its symbolic dims are {', '.join(symbolic)}" if symbolic else "it has none (every input is static)"
        raise InputError(f"--dim {', '.join(unknown)}: the model has no symbolic dim of that name; {known}")


def _shape(info: IOInfo, dims: dict[str, int]) -> tuple[int, ...]:
    if info.shape is None:
        raise InputError(f"input {info.name!r} has unknown rank; give it in an .npz file with --inputs")
    return tuple(d if isinstance(d, int) else dims.get(d, 1) if isinstance(d, str) else 1 for d in info.shape)


def _dtype(info: IOInfo) -> DType:
    try:
        dtype = DType.from_name(info.dtype)
    except TypeError:
        dtype = None
    if dtype is None or not (dtype.is_float or dtype.is_integer or dtype == DType.BOOL):
        raise InputError(f"input {info.name!r} of type {info.dtype}: cannot make random values; use --inputs")
    return dtype


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
    """Values made in the input's own type (narrow types through float32 or int8), never in a
    wider temporary: a large input must not take twice its size or more while being made."""
    target = dtype.numpy
    if dtype.is_float:
        wide = np.float64 if target == np.float64 else np.float32
        return rng.standard_normal(shape, dtype=wide).astype(target, copy=False)
    if dtype == DType.BOOL:
        return rng.integers(0, 2, shape, dtype=np.bool_)
    native = target if target.kind in "iu" else np.int8  # int4 and other ml_dtypes
    return rng.integers(0, 10, shape, dtype=native).astype(target, copy=False)


def _check_memory(planned: list[tuple[IOInfo, tuple[int, ...], DType]]) -> None:
    """Refuse inputs that together exceed the memory free now, before allocating any."""
    free = available_memory()
    if free is None:
        return
    total = 0
    for info, shape, dtype in planned:
        size = math.prod(shape) * dtype.itemsize
        total += size
        if total > free:
            raise InputError(_too_large(info, shape, size, free))


def _too_large(info: IOInfo, shape: tuple[int, ...], size: int, free: int | None) -> str:
    room = f"this machine has {free} bytes ({format_bytes(free)}) free" if free is not None else "it does not fit"
    return (f"input {info.name!r}: random {info.dtype} values of shape {list(shape)} take {size} bytes "
            f"({format_bytes(size)}); {room}; choose smaller --dim/--shapes sizes or give --inputs")


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


def open_session(path: Path, *, embedded_kernels: bool = False) -> Session:
    """A Session on the GPU, or on the CPU reference backend when there is no usable GPU (the
    backend name says which; the reason is printed instead of warned)."""
    with warnings.catch_warnings():  # only the fallback's warning: other warnings still show
        warnings.filterwarnings("ignore", r".*running the CPU reference backend \(fallback='cpu'\)", RuntimeWarning)
        session = Session(path, fallback="cpu", embedded_kernels=embedded_kernels)
    if session.fallback_reason:
        print(f"no usable GPU ({session.fallback_reason}): running the {session.backend} backend")
    return session
