"""Settings: flags over environment over config file over defaults, one set of names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lipsync_server.config import load_settings

pytestmark = pytest.mark.unit


def test_precedence_flag_env_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        "model: m.onnx\navatar: a\nmax_batch_size: 4\nmax_queue_size: 10\ninstances: 3\n"
    )
    monkeypatch.setenv("LIPSYNC_MAX_QUEUE_SIZE", "20")
    monkeypatch.setenv("LIPSYNC_INSTANCES", "2")
    settings = load_settings(config, {"instances": 5})
    assert settings.max_batch_size == 4  # file
    assert settings.max_queue_size == 20  # environment over file
    assert settings.instances == 5  # flag over environment
    assert settings.grpc_port == 8001  # default
    assert settings.metrics_port == 8002
    assert settings.model == Path("m.onnx")


def test_preferred_sizes_parse_from_a_string_and_must_fit_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIPSYNC_PREFERRED_BATCH_SIZE", "2,4")
    settings = load_settings(None, {"model": "m", "avatar": "a"})
    assert settings.preferred_batch_size == (2, 4)
    with pytest.raises(ValidationError, match="preferred_batch_size 16"):
        load_settings(None, {"model": "m", "avatar": "a", "preferred_batch_size": "16"})


def test_unknown_setting_names_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "server.json"
    config.write_text('{"model": "m", "avatar": "a", "max_batch": 4}')
    with pytest.raises(ValidationError, match="max_batch"):
        load_settings(config, {})


def test_every_setting_is_documented() -> None:
    from lipsync_server.config import ServerSettings

    doc = (Path(__file__).resolve().parents[2] / "server/CONFIG.md").read_text()
    missing = [name for name in ServerSettings.model_fields if f"`{name}`" not in doc]
    assert not missing, f"add to server/CONFIG.md: {missing}"
