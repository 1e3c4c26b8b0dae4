"""Interop: a fastnn model as an ONNX file (:func:`export_onnx`) and as a PyTorch module
(:func:`to_torch`, :func:`from_torch`). onnx and torch are optional: they are imported only when
these functions run (``pip install "fastnn[onnx]"``, ``pip install torch``)."""

from .onnx_export import export_onnx
from .torch_convert import from_torch, to_torch

__all__ = ["export_onnx", "from_torch", "to_torch"]
