"""The AOT stage: ONNX → optimized, hardware-agnostic IR → .rtxir."""
from .compile import AotResult, aot_compile, build_rtxir, compile_onnx
from .options import AotOptions
from .report import AotReport

__all__ = ["AotOptions", "AotReport", "AotResult", "aot_compile", "build_rtxir", "compile_onnx"]
