"""PyTorch artifacts, told apart without importing torch.

Both are ``.pt2`` zip archives: a ``torch.export`` program (``lipsync model export --format pt2``;
run eagerly or through ``torch.compile``) and an AOTInductor package (compiled ahead of time by
the engine builder's ``torch-aoti`` target), whose archive holds ``data/aotinductor/``. The
builder stores its settings in the program's extra file ``lipsync.json``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

from lipsync_contract.errors import ModelFileError

TORCH_SUFFIX = ".pt2"
SETTINGS_FILE = "lipsync.json"  # a torch.export extra file: {"precision": "fp16", ...}
TorchArtifactKind = Literal["torch", "torch-aoti"]


def archive_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: not a PyTorch .pt2 archive ({exc})") from None


def kind_of_names(names: list[str]) -> TorchArtifactKind:
    """``torch-aoti`` for an AOTInductor package, ``torch`` for an exported program."""
    if any("/data/aotinductor/" in name for name in names):
        return "torch-aoti"
    return "torch"


def torch_artifact_kind(path: Path) -> TorchArtifactKind:
    return kind_of_names(archive_names(path))
