"""The intermediate representation: typed graphs of ONNX-style operators."""
from .dtypes import DType
from .graph import Dim, Graph, Model, Node, Shape, TensorType

__all__ = ["DType", "Dim", "Graph", "Model", "Node", "Shape", "TensorType"]
