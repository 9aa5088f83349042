"""Mapping data-plane exceptions to gRPC status codes, and counting RPCs by method and code."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from lipsync_contract.errors import ContractError
from lipsync_server.dataplane import DataPlane
from lipsync_server.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    NotConfiguredError,
    QueueFullError,
    QuotaExceededError,
    ShuttingDownError,
)
from lipsync_server.metrics import ServerMetrics

log = logging.getLogger(__name__)

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ContractError, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (NotConfiguredError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def first_error(exc: Exception) -> Exception:
    """The first error of an ExceptionGroup (frames of one call run in a TaskGroup)."""
    while isinstance(exc, ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def status_for(exc: Exception) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def deadline_of(context: grpc.aio.ServicerContext[object, object]) -> float | None:
    """The client's deadline as ``time.monotonic()`` seconds, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def client_identity(context: grpc.aio.ServicerContext[object, object]) -> str:
    """Whom a call counts against: the subject of a verified client certificate (mutual TLS),
    else the peer's address without its port."""
    names = list(context.auth_context().get("x509_common_name", ()))
    if names:
        return "cn:" + bytes(names[0]).decode(errors="replace")
    peer = context.peer() or ""  # "ipv4:10.0.0.7:51234", "ipv6:[::1]:51234", "unix:..."
    kind, _, address = peer.partition(":")
    host = address.rpartition(":")[0] if kind in ("ipv4", "ipv6") else address
    return f"{kind}:{host}"


def check_size(message: Message, limit: int) -> None:
    size = message.ByteSize()
    if size > limit:
        raise InvalidRequestError(f"message of {size} bytes exceeds the {limit}-byte limit")


@contextlib.asynccontextmanager
async def rpc_status(
    metrics: ServerMetrics, method: str, context: grpc.aio.ServicerContext[object, object]
) -> AsyncIterator[None]:
    """Abort with the mapped status code on a data-plane error; count the call's outcome."""
    code = grpc.StatusCode.OK
    try:
        yield
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except grpc.aio.AbortError:
        code = context.code() or grpc.StatusCode.UNKNOWN
        raise
    except Exception as raised:
        exc = first_error(raised)
        code = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("%s failed", method)
        await context.abort(code, str(exc) or type(exc).__name__)
    finally:
        metrics.requests.labels(method, code.name).inc()


class PlaneServicer(Protocol):
    """A servicer over one data plane."""

    plane: DataPlane


Servicer = TypeVar("Servicer", bound=PlaneServicer)
Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Context = grpc.aio.ServicerContext[object, object]
UnaryHandler = Callable[[Servicer, Request, Context], Awaitable[Response]]


def unary_rpc(
    *, inference: bool = False
) -> Callable[
    [UnaryHandler[Servicer, Request, Response]], UnaryHandler[Servicer, Request, Response]
]:
    """A unary servicer method under `rpc_status`, counted under its own name (the RPC's);
    ``inference``: a call `DataPlane.drain` waits for and refuses while draining."""

    def wrap(
        handler: UnaryHandler[Servicer, Request, Response],
    ) -> UnaryHandler[Servicer, Request, Response]:
        @functools.wraps(handler)
        async def run(self: Servicer, request: Request, context: Context) -> Response:
            plane = self.plane
            scope = plane.call(client_identity(context)) if inference else contextlib.nullcontext()
            async with rpc_status(plane.metrics, handler.__name__, context), scope:
                return await handler(self, request, context)
            raise AssertionError("unreachable")  # rpc_status aborts on every error

        return run

    return wrap
