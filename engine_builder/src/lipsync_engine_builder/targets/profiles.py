"""Pure helpers shared by the TensorRT and TensorRT-RTX targets: batch profiles, version-dependent
build settings and timing-cache names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.kinds import Precision
from lipsync_contract.modelio import IOContract
from lipsync_engine_builder.errors import BuildFailedError

Shape = tuple[int, ...]
ProfileSet = dict[str, tuple[Shape, Shape, Shape]]
OLDEST_TENSORRT = 10


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


def optimization_profiles(batch: BatchProfile) -> list[BatchProfile]:
    """A latency profile (batch 1, kernels tuned for one frame) and, when the spec batches, a
    throughput profile up to ``batch.max`` tuned at ``batch.opt`` (at ``max`` when opt is 1).
    The runtime picks, per batch size, the accepting profile whose optimum is closest."""
    latency = BatchProfile(min=1, opt=1, max=1)
    if batch.max <= 1:
        return [latency]
    opt = batch.opt if batch.opt > 1 else batch.max
    return [latency, BatchProfile(min=max(batch.min, 1), opt=opt, max=batch.max)]


def profile_sets(contract: IOContract, batch: BatchProfile) -> list[ProfileSet]:
    """Per optimization profile, the (min, opt, max) shapes of every input."""
    return [profile_shapes(contract, profile) for profile in optimization_profiles(batch)]


def shapes_option(contract: IOContract, batch_size: int) -> str:
    """``name:1x6x320x320,audio:1x32x16x16``: the shape syntax of ORT's TensorRT EPs."""
    return ",".join(
        f"{spec.name}:{'x'.join(str(d) for d in spec.batch_shape(batch_size))}"
        for spec in contract.inputs
    )


def tensorrt_major(version: str) -> int:
    """The major version of a TensorRT version string (``10.13.0.35``, ``tensorrt 11.4.0``);
    BuildFailedError for versions this builder does not support or cannot read."""
    number = version.rsplit(" ", 1)[-1]
    head = number.split(".", 1)[0]
    if not head.isdigit():
        raise BuildFailedError(f"cannot read a TensorRT version from {version!r}")
    major = int(head)
    if major < OLDEST_TENSORRT:
        raise BuildFailedError(
            f"TensorRT {number} is too old: this builder supports TensorRT 10 and 11 "
            "(named tensors, execute_async_v3)"
        )
    return major


@dataclass(frozen=True)
class TensorRTTyping:
    """How a TensorRT version takes a precision.

    TensorRT 10 is weakly typed: the ONNX stays fp32 and builder flags allow reduced-precision
    kernels (FP16; INT8 + FP16 for a Q/DQ model). TensorRT 11 removed those flags: every network
    is strongly typed, so the ONNX itself carries the precision (an fp16 model, or a Q/DQ model).
    """

    major: int
    builder_flags: tuple[str, ...]  # ``tensorrt.BuilderFlag`` member names (TensorRT 10 only)
    onnx_precision: Precision  # the precision the ONNX handed to the parser must have

    @property
    def strongly_typed(self) -> bool:
        return self.major >= 11


def tensorrt_typing(major: int, precision: Precision) -> TensorRTTyping:
    if major >= 11:
        return TensorRTTyping(major, (), precision)
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
    return TensorRTTyping(major, flags, "fp32" if precision == "fp16" else precision)


def timing_cache_name(gpu_product: str, runtime: str) -> str:
    """File name of the TensorRT timing cache for one GPU product and TensorRT version."""
    raw = f"{gpu_product}__{runtime}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw) + ".timing-cache"
