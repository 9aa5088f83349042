"""Who may call the gRPC port: TLS or mTLS from files re-read when they change (a rotated
Secret takes effect on the next connection, no restart), and an optional bearer token."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from lipsync_contract.server_options import ServerOptions

log = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

# Open on every port: it says only whether the server serves, and load balancers and kubelets
# ask it without credentials.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class WatchedFiles:
    """Files whose contents are read again when one's size or modification time changes."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._stamps = self._stamp()
        self.contents = self._read()

    def _stamp(self) -> list[tuple[int, int]]:
        stamps = []
        for path in self.paths:
            stat = path.stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        return stamps

    def _read(self) -> list[bytes]:
        return [path.read_bytes() for path in self.paths]

    def refresh(self) -> bool:
        """Read the files again if any changed; True when the contents did. A file that cannot
        be read (mid-rotation) keeps the last contents until the next call."""
        try:
            stamps = self._stamp()
            if stamps == self._stamps:
                return False
            contents = self._read()
        except OSError as exc:
            log.warning("keeping the last credentials: %s", exc)
            return False
        self._stamps = stamps
        changed = contents != self.contents
        self.contents = contents
        return changed


class CertificateFiles:
    """The server's certificate chain and key, and the CAs its clients' certificates must chain
    to (mTLS), as gRPC's certificate configuration."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.require_client_certificate = client_ca is not None
        self._files = WatchedFiles(cert, key, *([client_ca] if client_ca else []))

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, *client_ca = self._files.contents
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=client_ca[0] if client_ca else None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks before each handshake; None keeps the configuration it has."""
        if not self._files.refresh():
            return None
        log.info("TLS certificate files changed: new connections use them")
        return self.configuration()


def server_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext."""
    if options.tls_cert_file is None or options.tls_key_file is None:
        return None
    files = CertificateFiles(
        options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file
    )
    fetch: Any = files.fetch  # gRPC's stub misses that None means "unchanged"
    return grpc.dynamic_ssl_server_credentials(
        files.configuration(),
        fetch,
        require_client_authentication=files.require_client_certificate,
    )


def _bearer(metadata: Any) -> bytes:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip().encode()
    return b""


def _denied(handler: Handler, message: str) -> Handler:
    """A handler of the same kind as ``handler`` that ends every call with UNAUTHENTICATED."""

    async def deny(_request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        factory: Callable[..., Handler] = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.unary_unary_rpc_method_handler
    return factory(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Every call but health checks must carry ``authorization: Bearer <token>``; the token file
    is read again when it changes."""

    def __init__(self, token_file: Path) -> None:
        self._file = WatchedFiles(token_file)
        if not self._token():
            raise ValueError(f"{token_file}: the auth token file is empty")

    def _token(self) -> bytes:
        return self._file.contents[0].strip()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        self._file.refresh()
        given = _bearer(handler_call_details.invocation_metadata)
        if not given:
            return _denied(handler, "this server needs 'authorization: Bearer <token>' metadata")
        if not hmac.compare_digest(given, self._token()):
            return _denied(handler, "the bearer token is not valid")
        return handler
