"""Compositing a generated face into its avatar frame, and encoding the frame."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import simplejpeg

from lipsync_server.avatar.store import BORDER, INNER, AvatarStore

FrameEncoding = Literal["jpeg", "raw-bgr", "h264"]
JpegSubsampling = Literal["444", "420"]


def face_to_uint8(output: np.ndarray) -> np.ndarray:
    """Model output ``[3, H, W]`` float in [0, 1] (BGR) -> ``[320, 320, 3]`` uint8 BGR."""
    face = np.clip(output, 0.0, 1.0).transpose(1, 2, 0) * 255.0
    # C order: the transposed view would otherwise be pasted pixel by pixel through strides.
    face_u8: np.ndarray = np.rint(face).astype(np.uint8, order="C")
    if face_u8.shape[:2] != (INNER, INNER):
        face_u8 = cv2.resize(face_u8, (INNER, INNER), interpolation=cv2.INTER_LINEAR)
    return face_u8


def composite(store: AvatarStore, avatar_index: int, output: np.ndarray) -> np.ndarray:
    """The full avatar frame with the generated face pasted at its face box (BGR uint8)."""
    crop = store.crops[avatar_index].copy()
    crop[BORDER : BORDER + INNER, BORDER : BORDER + INNER] = face_to_uint8(output)
    x1, y1, x2, y2 = (int(v) for v in store.boxes[avatar_index])
    frame: np.ndarray = store.frames[avatar_index].copy()
    frame[y1:y2, x1:x2] = cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return frame


def encode(
    frame: np.ndarray,
    encoding: FrameEncoding,
    jpeg_quality: int,
    jpeg_subsampling: JpegSubsampling = "444",
) -> bytes:
    """One frame on its own: JPEG, else raw BGR (also what a stream's H.264 encoder takes:
    ``videoframes`` encodes each stream's frames in order)."""
    if encoding != "jpeg":
        return frame.tobytes()
    return bytes(
        simplejpeg.encode_jpeg(
            frame, quality=jpeg_quality, colorspace="BGR", colorsubsampling=jpeg_subsampling
        )
    )


def decode(data: bytes, encoding: FrameEncoding, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`encode` (clients, tests): a BGR uint8 ``[height, width, 3]`` image;
    H.264 frames need a stream's decoder (``video.H264Decoder``)."""
    if encoding == "h264":
        raise ValueError("an H.264 frame decodes only in its stream: use video.H264Decoder")
    if encoding == "raw-bgr":
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    return np.asarray(simplejpeg.decode_jpeg(data, colorspace="BGR"))


def jpeg_subsampling(data: bytes) -> JpegSubsampling | None:
    """The chroma subsampling a colour JPEG's frame header declares (None: neither 4:4:4 nor
    4:2:0, or not a colour JPEG)."""
    at = 2  # after SOI
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # start of frame: baseline, extended, progressive
            components, luma = data[at + 9], data[at + 11]
            if components == 3 and luma == 0x11:
                return "444"
            if components == 3 and luma == 0x22:
                return "420"
            return None
        at += 2 + length
    return None
