"""Pure helpers shared by the TensorRT and TensorRT-RTX targets: batch profiles and flags."""

from __future__ import annotations

import re

from lipsync_core.backends.base import Precision
from lipsync_core.contract import IOContract
from lipsync_core.enginekey import BatchProfile

Shape = tuple[int, ...]


def profile_shapes(
    contract: IOContract, batch: BatchProfile
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Per input tensor: (min, opt, max) shapes of one optimization profile over the batch."""
    return {
        spec.name: (
            spec.batch_shape(batch.min),
            spec.batch_shape(batch.opt),
            spec.batch_shape(batch.max),
        )
        for spec in contract.inputs
    }


def shapes_option(contract: IOContract, batch_size: int) -> str:
    """``name:1x6x320x320,audio:1x32x16x16``: the shape syntax of ORT's TensorRT EPs."""
    return ",".join(
        f"{spec.name}:{'x'.join(str(d) for d in spec.batch_shape(batch_size))}"
        for spec in contract.inputs
    )


def tensorrt_flag_names(precision: Precision) -> list[str]:
    """``tensorrt.BuilderFlag`` names for a precision.

    fp16 lets TensorRT pick half-precision kernels. int8 is explicit quantization: the Q/DQ nodes
    in the ONNX decide what runs in int8; FP16 lets the layers between them run in half precision.
    """
    return {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]


def timing_cache_name(gpu_product: str, runtime: str) -> str:
    """File name of the TensorRT timing cache for one GPU product and TensorRT version."""
    raw = f"{gpu_product}__{runtime}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw) + ".timing-cache"
