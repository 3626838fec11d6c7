"""Sessions: load a model (.rtxir or .onnx) and run it."""
from .session import IOInfo, Session

__all__ = ["IOInfo", "Session"]
