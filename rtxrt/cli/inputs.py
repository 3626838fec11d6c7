"""Inputs for ``rtxrt run``/``demo``: read from .npz or made up at random to fit the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ir.dtypes import DType
from ..runtime import IOInfo


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
