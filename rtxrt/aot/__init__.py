"""The AOT stage: ONNX → optimized, hardware-agnostic IR → .rtxir."""
from .compile import AotOptions, build_rtxir, compile_onnx

__all__ = ["AotOptions", "build_rtxir", "compile_onnx"]
