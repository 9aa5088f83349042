"""Builder errors, by exit code: bad input (2) versus a build that failed (1)."""

from __future__ import annotations

from lipsync_contract.errors import ContractError, LipSyncError, ModelFileError

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2


class BadInputError(LipSyncError):
    """The request cannot be built as given: bad URI, digest mismatch, missing calibration data,
    an unwritable cache. Retrying the same request will not help."""


class BuildFailedError(LipSyncError):
    """The build itself failed (backend refused, runtime error)."""


class AccuracyGateError(BuildFailedError):
    """The built artifact is too far from the FP32 reference to be published."""

    def __init__(
        self, message: str, psnr_db: float | None = None, max_abs_error: float | None = None
    ):
        super().__init__(message)
        self.psnr_db = psnr_db
        self.max_abs_error = max_abs_error


def exit_code_for(exc: BaseException) -> int:
    """2 for input the user must fix, 1 for everything else."""
    if isinstance(exc, BadInputError | ModelFileError | ContractError):
        return EXIT_BAD_INPUT
    return EXIT_BUILD_FAILED


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, with its type when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
