"""Ingest for the PyTorch targets: the model is a ``torch.export`` program (``.pt2``, written by
``lipsync model export -o model.pt2``); it must load and map the contract's inputs, at the
smallest batch of the profile, to the contract's output (the largest is checked by the target,
which exports over the whole range)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipsync_contract.errors import LipSyncError
from lipsync_contract.modelio import IOContract
from lipsync_core.backends.torch_backend import import_torch, program_settings
from lipsync_core.backends.torch_files import torch_artifact_kind
from lipsync_core.samples import random_inputs
from lipsync_engine_builder.errors import BadInputError, one_line
from lipsync_engine_builder.ingest import IngestedModel, fetch_pinned


def ingest_program(
    uri: str, pinned_sha256: str, contract: IOContract, workdir: Path, batch: int
) -> IngestedModel:
    path, digest = fetch_pinned(uri, pinned_sha256, workdir)
    try:
        if torch_artifact_kind(path) != "torch":
            raise BadInputError(f"model {uri}: an AOTInductor package, not a torch.export program")
        torch = import_torch()
        program, _ = program_settings(torch, path)
    except BadInputError:
        raise
    except LipSyncError as exc:
        raise BadInputError(f"model {uri}: {exc}") from None
    inputs = random_inputs(contract, batch, np.random.default_rng(0))
    try:
        with torch.no_grad():
            output = program.module()(*(torch.from_numpy(inputs[s.name]) for s in contract.inputs))
    except Exception as exc:  # the program's own shape guards raise many kinds of errors
        raise BadInputError(
            f"model {uri}: the program does not take the contract's inputs "
            f"({', '.join(s.describe() for s in contract.inputs)}) at batch {batch}: "
            f"{one_line(exc)}"
        ) from None
    want = contract.output.batch_shape(batch)
    if tuple(output.shape) != want:
        raise BadInputError(
            f"model {uri}: output shape {list(output.shape)}, the contract needs {list(want)}"
        )
    nodes = len(program.graph.nodes)
    return IngestedModel(path=path, sha256=digest, nodes=nodes)
