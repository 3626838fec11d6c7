"""The numpy reference backend: exact ONNX semantics, the oracle for every other backend."""
from .executor import ReferenceExecutor

__all__ = ["ReferenceExecutor"]
