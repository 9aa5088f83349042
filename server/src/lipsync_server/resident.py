"""Model inputs built on the model's device, outputs left there: the torch path end to end.

The avatar's uint8 model inputs go to the device once; a batch is gathered there by avatar frame
index and scaled to [0, 1], so only the audio windows travel per frame (raw images from KServe
calls go up as they come). The model's output stays on the device for the torch post-processing
path, which sends back only encoded frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from lipsync_server.avatar.store import AvatarStore


class ResidentBackend(Protocol):
    def run_resident(self, tensors: list[Any]) -> Any: ...


class ResidentInputs:
    def __init__(self, store: AvatarStore, device: str, cuda_graphs: bool = False) -> None:
        self._device = torch.device(device)
        self._avatar = torch.from_numpy(store.model_inputs).to(self._device)
        # A CUDA graph writes every batch into the same output tensor: rows still waiting for
        # post-processing need their own copy.
        self._copy_outputs = cuda_graphs

    @property
    def device(self) -> str:
        return str(self._device)

    def run(self, backend: ResidentBackend, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """One batch through ``backend``; its output rows, still on the device."""
        output = backend.run_resident(inputs)
        if self._copy_outputs:
            output = output.clone()
        if self._device.type == "cuda":
            # The batch is done when its output is: the batcher times it and hands the instance
            # its next batch only then (otherwise batches shrink and queued GPU work piles up).
            torch.cuda.current_stream(self._device).synchronize()
        return list(output)

    @torch.inference_mode()
    def assemble(
        self, images: Sequence[int | np.ndarray], audio: Sequence[np.ndarray]
    ) -> list[torch.Tensor]:
        """``[image, audio]`` float32 batches on the device, in the contract's input order."""
        indices = [image for image in images if isinstance(image, int)]
        if len(indices) == len(images):
            picked = torch.as_tensor(indices, device=self._device)
            image_batch = self._avatar.index_select(0, picked).float().mul_(1 / 255)
        else:
            image_batch = torch.stack([self._image(image) for image in images])
        audio_batch = torch.from_numpy(np.stack(audio).astype(np.float32, copy=False))
        return [image_batch, audio_batch.to(self._device, non_blocking=True)]

    def _image(self, image: int | np.ndarray) -> torch.Tensor:
        if isinstance(image, int):
            return self._avatar[image].float().mul_(1 / 255)
        return torch.from_numpy(np.asarray(image, np.float32)).to(self._device)


def to_host(output: object) -> np.ndarray:
    """A model output row as a host float32 array (a device tensor is copied back)."""
    if isinstance(output, torch.Tensor):
        return np.asarray(output.float().cpu().numpy())
    return np.asarray(output, np.float32)
