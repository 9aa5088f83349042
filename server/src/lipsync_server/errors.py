"""Request errors of the data plane; the gRPC adapters map them to status codes."""

from __future__ import annotations

from lipsync_contract.errors import LipSyncError


class InvalidRequestError(LipSyncError):
    """The request is malformed (INVALID_ARGUMENT); ``str(exc)`` says what is wrong."""


class ShuttingDownError(LipSyncError):
    """The server is draining and takes no new work (UNAVAILABLE)."""


class NotConfiguredError(LipSyncError):
    """The request needs a part this server runs without (FAILED_PRECONDITION)."""


class QueueFullError(LipSyncError):
    """The batch queue is full (RESOURCE_EXHAUSTED)."""


class DeadlineExceededError(LipSyncError):
    """A request's deadline passed while it was queued (DEADLINE_EXCEEDED)."""


class StreamIdleError(DeadlineExceededError):
    """A stream sent no message and got no frame for the idle limit (DEADLINE_EXCEEDED)."""


class QuotaExceededError(LipSyncError):
    """One client has as many calls in progress as it may (RESOURCE_EXHAUSTED)."""
