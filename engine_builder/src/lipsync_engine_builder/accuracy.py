"""The accuracy gate: the built artifact against the FP32 reference on held-out inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lipsync_contract.kinds import Precision
from lipsync_engine_builder.errors import AccuracyGateError

# Defaults per precision, in dB over the output range [0, 1]; see JOB_CONTRACT.md for how they
# were chosen from measurements on the reference model. Identical outputs report PSNR_CAP.
DEFAULT_MIN_PSNR_DB: dict[Precision, float] = {"fp32": 60.0, "fp16": 40.0, "int8": 30.0}
PSNR_CAP_DB = 100.0


@dataclass(frozen=True)
class AccuracyReport:
    psnr_db: float
    max_abs_error: float
    samples: int


def psnr_db(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, capped at PSNR_CAP_DB (identical outputs)."""
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range**2 / mse))


def compare(
    references: list[np.ndarray], candidates: list[np.ndarray], data_range: float = 1.0
) -> AccuracyReport:
    reference = np.concatenate([r.reshape(-1) for r in references])
    candidate = np.concatenate([c.reshape(-1) for c in candidates])
    if reference.shape != candidate.shape:
        raise AccuracyGateError(
            f"artifact output has {candidate.size} values, the reference {reference.size}"
        )
    return AccuracyReport(
        psnr_db=psnr_db(reference, candidate, data_range),
        max_abs_error=float(np.max(np.abs(reference - candidate))),
        samples=len(references),
    )


def min_psnr_for(precision: Precision, override: float | None) -> float:
    return DEFAULT_MIN_PSNR_DB[precision] if override is None else override


def check_gate(report: AccuracyReport, min_psnr: float, precision: Precision) -> None:
    if report.psnr_db < min_psnr:
        raise AccuracyGateError(
            f"{precision} artifact PSNR {report.psnr_db:.1f} dB is below the gate of "
            f"{min_psnr:.1f} dB (max abs error {report.max_abs_error:.4f})",
            psnr_db=report.psnr_db,
            max_abs_error=report.max_abs_error,
        )
