"""Frontends turn model files into the IR."""
from .onnx_import import load_onnx

__all__ = ["load_onnx"]
