"""The H.264 encoder a stream uses: one access unit per frame, IDRs first and when asked, SPS and
PPS with every IDR (a viewer may start there), refused sizes and bitrates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lipsync_server.errors import InvalidRequestError
from lipsync_server.video import DEFAULT_BITRATE_KBPS, H264Decoder, H264Encoder, check_bitrate

pytestmark = pytest.mark.unit

SPS, PPS, IDR = 7, 8, 5


def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((96, 128, 3)) * 255).astype(np.uint8), (15, 15), 0)
    return [np.roll(base, 2 * i, axis=1) for i in range(count)]


def _nal_types(data: bytes) -> list[int]:
    """NAL unit types after each start code (three or four bytes)."""
    return [data[i + 3] & 0x1F for i in range(len(data) - 3) if data[i : i + 3] == b"\0\0\1"]


def test_each_frame_is_one_access_unit_and_idrs_come_first_and_on_request() -> None:
    encoder = H264Encoder(128, 96, 25.0, 500)
    units = [encoder.encode(frame, keyframe=(i == 5)) for i, frame in enumerate(_frames(8))]
    assert [u.keyframe for u in units] == [i in (0, 5) for i in range(8)]
    for unit in units:
        types = _nal_types(unit.data)
        assert (SPS in types and PPS in types and IDR in types) == unit.keyframe
    # A viewer joining at the second IDR decodes from there.
    late = H264Decoder()
    assert [len(late.decode(u.data)) for u in units[5:]] == [1, 1, 1]


def test_decoding_in_order_gives_back_every_frame() -> None:
    frames = _frames(6)
    encoder, decoder = H264Encoder(128, 96, 25.0, 2000), H264Decoder()
    for frame in frames:
        [picture] = decoder.decode(encoder.encode(frame).data)
        assert cv2.PSNR(picture, frame) > 30


def test_an_odd_frame_size_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="even frame size"):
        H264Encoder(127, 96, 25.0, 500)


def test_bitrates_default_and_stay_in_range() -> None:
    assert check_bitrate(0) == DEFAULT_BITRATE_KBPS
    assert check_bitrate(100) == 100
    for bad in (99, 50_001):
        with pytest.raises(InvalidRequestError, match=f"bitrate_kbps {bad} is outside"):
            check_bitrate(bad)
