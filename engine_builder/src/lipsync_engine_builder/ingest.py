"""Ingest: fetch the model, check its digest, run the ONNX checker and the I/O contract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lipsync_contract.digest import sha256_file
from lipsync_contract.modelio import IOContract
from lipsync_core.contract_checks import check_onnx
from lipsync_core.onnxfile import check_model
from lipsync_engine_builder.errors import BadInputError
from lipsync_engine_builder.sources import fetch


@dataclass(frozen=True)
class IngestedModel:
    path: Path
    sha256: str
    nodes: int


def fetch_pinned(uri: str, pinned_sha256: str, workdir: Path) -> tuple[Path, str]:
    """The local model file and its sha256, checked against the pinned digest when given."""
    path = fetch(uri, workdir)
    if not path.is_file():
        raise BadInputError(f"model {uri}: not a file")
    digest = sha256_file(path)
    if pinned_sha256 and digest != pinned_sha256:
        raise BadInputError(
            f"model {uri}: sha256 {digest[:16]}... does not match the pinned "
            f"{pinned_sha256[:16]}..."
        )
    return path, digest


def ingest(uri: str, pinned_sha256: str, contract: IOContract, workdir: Path) -> IngestedModel:
    path, digest = fetch_pinned(uri, pinned_sha256, workdir)
    model = check_model(path)
    check_onnx(contract, path)
    return IngestedModel(path=path, sha256=digest, nodes=len(model.graph.node))
