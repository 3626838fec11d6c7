"""Compare rtxrt outputs with onnxruntime (CPU) on the same inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import RtxrtError


@dataclass(frozen=True)
class Difference:
    name: str
    max_abs: float
    max_rel: float


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RtxrtError("onnxruntime is not installed: pip install 'rtxrt[ort]'") from None

    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RtxrtError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def differences(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> list[Difference]:
    """Max absolute and max relative (|a-b| / max(|b|, 1e-6)) error per output."""
    result = []
    for name, a in ours.items():
        b = theirs[name]
        if a.shape != b.shape:
            raise RtxrtError(f"output {name!r}: shape {a.shape} differs from onnxruntime's {b.shape}")
        if a.size == 0:
            result.append(Difference(name, 0.0, 0.0))
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        err = np.abs(a64 - b64)
        err[np.isnan(a64) & np.isnan(b64)] = 0.0
        rel = err / np.maximum(np.abs(b64), 1e-6)  # values below 1e-6 count as 1e-6
        result.append(Difference(name, float(err.max()), float(rel.max())))
    return result
