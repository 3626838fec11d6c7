"""Tensor data of an ONNX model, external data included. A model names its external files
itself, so it could name any file on the machine: rtxrt reads only regular files inside the
model's base directory (the folder of the .onnx file, or the one the caller names), and none
at all for a model given as bytes or a ModelProto without one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from ..ir.onnx_codec import TensorFromProto, tensor_to_numpy


def tensor_reader(base_dir: Path | None) -> TensorFromProto:
    """The one way the frontend turns a tensor of this model into an array: its data checked
    against its dims, external data read only from inside ``base_dir``."""
    def read(proto: onnx.TensorProto) -> np.ndarray:
        external = read_external(proto, base_dir) if uses_external_data(proto) else None
        return tensor_to_numpy(proto, external)

    return read


def read_external(proto: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    """The bytes (uint8) of a tensor kept in an external file; ValueError naming the file."""
    info = {entry.key: entry.value for entry in proto.external_data}
    location = info.get("location", "")
    if not location:
        raise ValueError("it is marked as external data but names no file (no 'location' entry)")
    if base_dir is None:
        raise ValueError(f"its data is in the external file {location!r}, and a model given as bytes or a "
                         f"ModelProto has no folder to find it in: pass base_dir, the folder that holds it")
    path = _inside(base_dir, location)
    size = path.stat().st_size
    offset = _entry(info, "offset", 0)
    length = _entry(info, "length", max(size - offset, 0))
    if offset + length > size:
        raise ValueError(f"its data lies at bytes {offset}..{offset + length} of the external file "
                         f"{location!r}, which has only {size} bytes")
    with open(path, "rb") as file:
        file.seek(offset)
        return np.fromfile(file, dtype=np.uint8, count=length)


def _inside(base_dir: Path, location: str) -> Path:
    """The regular file ``location`` names inside ``base_dir``: no absolute path, no '..',
    no symlink leading out of it."""
    where = f"the external file {location!r}"
    base = base_dir.resolve()
    relative = Path(location)
    if relative.is_absolute() or relative.anchor:
        raise ValueError(f"{where} is an absolute path; external data must lie inside the model's folder {base}")
    if ".." in relative.parts:
        raise ValueError(f"{where} climbs out with '..'; external data must lie inside the model's folder {base}")
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"{where} leads out of the model's folder {base} (a symlink to {path})")
    if not path.is_file():
        raise ValueError(f"{where} does not exist in the model's folder {base}")
    return path


def _entry(info: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(info[key]) if key in info else default
    except ValueError:
        raise ValueError(f"its external data {key} {info[key]!r} is not a number") from None
    if value < 0:
        raise ValueError(f"its external data {key} {value} is negative")
    return value
