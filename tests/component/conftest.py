"""Fixtures the component tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsync_server.process import ServerProcess


@pytest.fixture(scope="module")
def speech_server(
    reference_model: Path,
    reference_encoder: Path,
    small_avatar: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A server that takes speech: the reference UNet and audio encoder, the small avatar."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(
        reference_model, small_avatar, log, audio_encoder=reference_encoder, max_batch_size=4
    ) as process:
        yield process
