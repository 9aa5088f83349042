"""Post-processing: a model output to an encoded avatar frame.

Two paths give the same frames (within the bound ``tests/component/test_server_postprocess.py``
states): ``numpy`` composites and encodes on the host (OpenCV, simplejpeg); ``torch`` keeps the
avatar on the model's device and composites and JPEG-encodes there (TorchCodec: nvJPEG on CUDA),
so only the encoded bytes come back to the host.
"""

from __future__ import annotations

import importlib.util
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from lipsync_contract.kinds import PostprocessChoice
from lipsync_server.avatar.store import AvatarStore
from lipsync_server.compositor import FrameEncoding, JpegSubsampling, composite, encode
from lipsync_server.errors import NotConfiguredError

PostprocessKind = Literal["numpy", "torch"]
Frame = TypeVar("Frame")  # a composited frame: a host array, or a tensor on the device


@dataclass(frozen=True)
class Postprocessed:
    data: bytes
    composite_s: float
    encode_s: float


class Postprocessor(ABC, Generic[Frame]):
    """``(avatar frame, model output [3, H, W] in [0, 1], output options) -> encoded frame``:
    the face composited into its avatar frame, then the frame encoded, each step timed."""

    kind: PostprocessKind

    @property
    @abstractmethod
    def device(self) -> str: ...

    @abstractmethod
    def composite(self, avatar_frame: int, output: Any) -> Frame: ...

    @abstractmethod
    def encode(
        self, frame: Frame, encoding: FrameEncoding, quality: int, subsampling: JpegSubsampling
    ) -> bytes: ...

    def __call__(
        self,
        avatar_frame: int,
        output: Any,
        encoding: FrameEncoding,
        quality: int,
        subsampling: JpegSubsampling,
    ) -> Postprocessed:
        started = time.perf_counter()
        frame = self.composite(avatar_frame, output)
        composed = time.perf_counter()
        data = self.encode(frame, encoding, quality, subsampling)
        return Postprocessed(data, composed - started, time.perf_counter() - composed)


class NumpyPostprocessor(Postprocessor[np.ndarray]):
    """Composite with OpenCV and encode with simplejpeg, on the host."""

    kind: PostprocessKind = "numpy"

    def __init__(self, store: AvatarStore) -> None:
        self._store = store

    @property
    def device(self) -> str:
        return "cpu"

    def composite(self, avatar_frame: int, output: Any) -> np.ndarray:
        return composite(self._store, avatar_frame, output)

    def encode(
        self,
        frame: np.ndarray,
        encoding: FrameEncoding,
        quality: int,
        subsampling: JpegSubsampling,
    ) -> bytes:
        return encode(frame, encoding, quality, subsampling)


def torch_available(device: str) -> bool:
    """torch and TorchCodec installed, and torch able to use ``device`` (a CPU-only torch
    beside an ONNX Runtime CUDA backend is not)."""
    if any(importlib.util.find_spec(name) is None for name in ("torch", "torchcodec")):
        return False
    if not device.startswith("cuda"):
        return True
    import torch

    return bool(torch.cuda.is_available())


def choose_postprocess(
    requested: PostprocessChoice, model_device: str, have_torch: bool
) -> tuple[PostprocessKind, str]:
    """The path to run and the device it runs on, for the model's device (``cpu``, ``cuda:0``)."""
    if requested == "numpy":
        return "numpy", "cpu"
    if requested == "torch":
        if not have_torch:
            raise NotConfiguredError(
                "--postprocess torch needs torch and torchcodec (install the [torch] extra)"
            )
        return "torch", model_device
    if model_device.startswith("cuda") and have_torch:
        return "torch", model_device
    return "numpy", "cpu"


def load_postprocessor(
    requested: PostprocessChoice, store: AvatarStore, model_device: str
) -> Postprocessor[Any]:
    kind, device = choose_postprocess(requested, model_device, torch_available(model_device))
    if kind == "numpy":
        return NumpyPostprocessor(store)
    from lipsync_server.postprocess_torch import TorchPostprocessor

    return TorchPostprocessor(store, device)
