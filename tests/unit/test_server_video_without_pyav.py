"""A server without PyAV (the device run's wheels leave it out) still answers GetInfo: it names
no H.264 encoder, and a stream that asks for H.264 gets FAILED_PRECONDITION, not a crash."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from lipsync_server.errors import NotConfiguredError
from lipsync_server.video import H264Encoder, h264_codec

pytestmark = pytest.mark.unit


@pytest.fixture
def without_pyav(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    h264_codec.cache_clear()
    yield
    h264_codec.cache_clear()


@pytest.mark.usefixtures("without_pyav")
def test_no_pyav_means_no_h264_encoder_and_a_clear_refusal() -> None:
    assert h264_codec() == ""
    with pytest.raises(NotConfiguredError, match="needs PyAV"):
        H264Encoder(64, 64, 25.0, 1500)
