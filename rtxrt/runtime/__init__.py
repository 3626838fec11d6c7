"""Sessions: load a model (.rtxir or .onnx) and run it."""
from .session import IOInfo, Session, is_cached

__all__ = ["IOInfo", "Session", "is_cached"]
