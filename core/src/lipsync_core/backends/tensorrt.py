"""TensorRT 10 backend (placeholder for the availability probe; the engine runner follows)."""

from __future__ import annotations

import importlib.util


def is_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None
