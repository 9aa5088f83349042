"""The torch post-processing path: the avatar resident on the model's device, the face pasted and
the frame JPEG-encoded there, only the encoded bytes copied back.

The same code runs on CPU (tests, the CPU benchmark) and on CUDA, where TorchCodec encodes with
nvJPEG. TorchCodec has no subsampling setting: its CPU encoder writes 4:2:0, its CUDA encoder
4:4:4. Which one the device writes is read from a first frame; a stream that asks for the other
(or for raw frames) gets the frame composited on the device and encoded on the host.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torchcodec.encoders import JpegEncoder  # type: ignore[attr-defined]  # no __all__

from lipsync_server.avatar.store import BORDER, INNER, AvatarStore
from lipsync_server.compositor import FrameEncoding, JpegSubsampling, encode, jpeg_subsampling
from lipsync_server.postprocess import PostprocessKind, Postprocessor


def _rgb_channel_first(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``[N, H, W, 3]`` BGR uint8 -> ``[N, 3, H, W]`` RGB uint8 on ``device``: the layout the
    JPEG encoder takes, made once when the avatar is loaded."""
    rgb = np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2))
    return torch.from_numpy(rgb).to(device)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a ``[3, h, w]`` uint8 image (half-pixel centres, no antialiasing: what
    OpenCV's INTER_LINEAR does)."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    resized = F.interpolate(
        image[None].float(), size=(height, width), mode="bilinear", align_corners=False
    )
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


class TorchPostprocessor(Postprocessor[torch.Tensor]):
    """Composite and JPEG on ``device``. On CUDA the composite's kernels run asynchronously:
    their time shows in ``encode_s``, which waits for the bytes."""

    kind: PostprocessKind = "torch"

    def __init__(self, store: AvatarStore, device: str) -> None:
        self._device = torch.device(device)
        self._frames = _rgb_channel_first(store.frames, self._device)
        self._crops = _rgb_channel_first(store.crops, self._device)
        self._boxes = [tuple(int(v) for v in box) for box in store.boxes]
        self.device_subsampling = jpeg_subsampling(self._jpeg(self._frames[0], 85))

    def _jpeg(self, frame: torch.Tensor, quality: int) -> bytes:
        return bytes(JpegEncoder(frame).to_tensor(quality=quality).cpu().numpy().tobytes())

    @property
    def device(self) -> str:
        return str(self._device)

    @torch.inference_mode()
    def composite(self, avatar_frame: int, output: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The avatar frame with the generated face pasted, ``[3, H, W]`` RGB uint8 on the
        device; ``output`` is the model's ``[3, h, w]`` BGR face in [0, 1]."""
        face = torch.as_tensor(output, device=self._device).flip(0).float()
        face_u8 = face.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
        crop = self._crops[avatar_frame].clone()
        crop[:, BORDER : BORDER + INNER, BORDER : BORDER + INNER] = _resize(face_u8, INNER, INNER)
        x1, y1, x2, y2 = self._boxes[avatar_frame]
        frame = self._frames[avatar_frame].clone()
        frame[:, y1:y2, x1:x2] = _resize(crop, y2 - y1, x2 - x1)
        return frame

    @torch.inference_mode()
    def encode(
        self,
        frame: torch.Tensor,
        encoding: FrameEncoding,
        quality: int,
        subsampling: JpegSubsampling,
    ) -> bytes:
        if encoding == "jpeg" and subsampling == self.device_subsampling:
            return self._jpeg(frame, quality)
        bgr = frame.flip(0).permute(1, 2, 0).contiguous().cpu().numpy()
        return encode(bgr, encoding, quality, subsampling)
