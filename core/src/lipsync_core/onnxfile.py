"""Loading ONNX files with one-line errors instead of protobuf tracebacks."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from lipsync_contract.errors import ModelFileError


def load_model_proto(path: Path, *, load_weights: bool = False) -> onnx.ModelProto:
    """Parse an ONNX file; raise ModelFileError with the file name and the reason."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: not a valid ONNX model ({exc.__class__.__name__})") from None
    if not model.graph.node or not model.opset_import:
        raise ModelFileError(f"{path}: not a valid ONNX model (no graph or no opset)")
    return model


def check_model(path: Path) -> onnx.ModelProto:
    """Load, run onnx.checker and shape inference; raise ModelFileError on failure."""
    model = load_model_proto(path, load_weights=True)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ModelFileError(f"{path}: ONNX check failed: {first_line}") from None
    return model
