"""Exceptions with one-line, user-facing reasons."""


class LipSyncError(Exception):
    """Base class: ``str(exc)`` is a one-line reason that names the file or tensor at fault."""


class ModelFileError(LipSyncError):
    """A model file is missing, truncated or not ONNX."""


class ContractError(LipSyncError):
    """A model or a request does not match the model I/O contract."""


class BackendError(LipSyncError):
    """A backend cannot be loaded or cannot run here."""
