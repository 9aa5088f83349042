"""The names of backends, precisions and devices, shared by every component."""

from __future__ import annotations

from typing import Literal

BackendKind = Literal[
    "auto", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt-rtx", "tensorrt", "torch", "torch-aoti"
]
Precision = Literal["fp32", "fp16", "int8"]
Device = Literal["auto", "cpu", "cuda"]
PostprocessChoice = Literal["auto", "numpy", "torch"]
