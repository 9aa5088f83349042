"""Server configuration: one set of names for flags, environment variables and the config file.

Every setting below can be given as (highest precedence first):

1. a ``lipsync serve`` flag: ``--max-batch-size 8`` (the field name with dashes);
2. an environment variable: ``LIPSYNC_MAX_BATCH_SIZE=8`` (``LIPSYNC_`` + the name, upper case);
3. a YAML or JSON config file given with ``--config FILE`` or ``LIPSYNC_CONFIG``, with the field
   names as keys: ``max_batch_size: 8``;
4. the default.

The names follow Triton's vocabulary where one exists (``max_batch_size``,
``max_queue_delay_microseconds``, ``preferred_batch_size``, ``instances`` for an instance group's
count, ``max_queue_size`` of the default queue policy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, SettingsConfigDict

from lipsync_contract.server_options import ServerOptions

__all__ = ["ServerOptions", "ServerSettings", "load_config_file", "load_settings"]


class ServerSettings(BaseSettings, ServerOptions):
    """Settings of ``lipsync serve`` (see the module docstring for how to set them)."""

    # Values arrive as text (``LIPSYNC_PREFERRED_BATCH_SIZE=2,4``); the fields' own validators
    # parse them, so pydantic-settings must not try JSON first.
    model_config = SettingsConfigDict(
        env_prefix="LIPSYNC_", extra="forbid", frozen=True, enable_decoding=False
    )


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into field values."""
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of setting names to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> ServerSettings:
    """Defaults < config file < environment < flags (``overrides``, unset flags left out)."""
    file_values = load_config_file(config_file) if config_file else {}
    # pydantic-settings ranks init arguments above the environment; file values must rank below
    # it, so they are applied only for names the environment does not set.
    from_file = {
        key: value
        for key, value in file_values.items()
        if f"LIPSYNC_{key.upper()}" not in os.environ
    }
    return ServerSettings(**{**from_file, **overrides})
