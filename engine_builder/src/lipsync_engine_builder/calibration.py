"""Calibration and held-out inputs for int8 quantization and the accuracy gate.

A calibration set is a directory of ``.npz`` files (or one ``.npz``) whose arrays are named after
the contract's input tensors, with or without a leading batch dimension. Random inputs are used
only when explicitly allowed, with a warning: they calibrate ranges the real data may not have.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_contract.modelio import IOContract
from lipsync_core.samples import random_inputs
from lipsync_engine_builder.errors import BadInputError, one_line

log = logging.getLogger(__name__)

Sample = dict[str, np.ndarray]
CALIBRATION_SEED = 0
HELD_OUT_SEED = 1


@dataclass(frozen=True)
class CalibrationSet:
    samples: list[Sample]  # batch of one each
    source: str

    def __len__(self) -> int:
        return len(self.samples)


def random_samples(contract: IOContract, count: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [random_inputs(contract, 1, rng) for _ in range(count)]


def _split_npz(path: Path, contract: IOContract) -> Iterator[Sample]:
    try:
        with np.load(path) as archive:
            arrays = {
                spec.name: archive[spec.name] for spec in contract.inputs if spec.name in archive
            }
            names = list(archive.keys())
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"calibration file {path.name}: unreadable: {one_line(exc)}") from None
    missing = [spec.name for spec in contract.inputs if spec.name not in arrays]
    if missing:
        raise BadInputError(
            f"calibration file {path.name}: no array {missing[0]!r} (has {', '.join(names)})"
        )
    batched: dict[str, np.ndarray] = {}
    for spec in contract.inputs:
        array = arrays[spec.name].astype(np.float32, copy=False)
        if array.shape == spec.shape:
            array = array[np.newaxis]
        if array.shape[1:] != spec.shape:
            raise BadInputError(
                f"calibration file {path.name}: array {spec.name!r} has shape "
                f"{list(array.shape)}, expected [N,{','.join(str(d) for d in spec.shape)}]"
            )
        batched[spec.name] = array
    counts = {array.shape[0] for array in batched.values()}
    if len(counts) != 1:
        raise BadInputError(f"calibration file {path.name}: inputs have different sample counts")
    for index in range(counts.pop()):
        yield {name: array[index : index + 1] for name, array in batched.items()}


def load_npz_samples(location: Path, contract: IOContract, limit: int) -> list[Sample]:
    """Up to ``limit`` samples from a .npz file or a directory of them (sorted by name)."""
    files = [location] if location.is_file() else sorted(location.glob("*.npz"))
    if not files:
        raise BadInputError(f"calibration data {location}: no .npz files")
    samples: list[Sample] = []
    for path in files:
        for sample in _split_npz(path, contract):
            samples.append(sample)
            if len(samples) >= limit:
                return samples
    return samples


def load_calibration(
    local: Path | None, contract: IOContract, samples: int, allow_random: bool
) -> CalibrationSet:
    """The calibration set, plus up to ``samples`` more held out for the accuracy gate."""
    if local is None:
        if not allow_random:
            raise BadInputError(
                "int8 needs calibration data: --calibration URI (.npz samples), "
                "or --allow-random-calibration"
            )
        log.warning(
            "calibrating int8 on %d random samples: ranges may not match real data", samples
        )
        return CalibrationSet(random_samples(contract, samples, CALIBRATION_SEED), "random")
    loaded = load_npz_samples(local, contract, limit=2 * samples)
    if len(loaded) < samples:
        log.warning(
            "calibration data has %d samples, fewer than the %d asked", len(loaded), samples
        )
    return CalibrationSet(loaded, str(local))


def split_held_out(
    calibration: CalibrationSet | None, samples: int, held_out: int, contract: IOContract
) -> tuple[list[Sample], list[Sample]]:
    """(calibration samples, held-out verification samples) that never overlap.

    Real samples beyond the calibration count are held out; random inputs (another seed) fill up.
    """
    used = calibration.samples[:samples] if calibration else []
    spare = calibration.samples[samples : samples + held_out] if calibration else []
    fill = random_samples(contract, held_out - len(spare), HELD_OUT_SEED)
    return used, spare + fill


class SampleReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of samples."""

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples
        self._position = 0

    def get_next(self) -> Sample | None:
        if self._position >= len(self._samples):
            return None
        sample = self._samples[self._position]
        self._position += 1
        return sample

    def rewind(self) -> None:
        self._position = 0
