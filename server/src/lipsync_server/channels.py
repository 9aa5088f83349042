"""Client channels to a server that may need TLS, a client certificate (mutual TLS) or a bearer
token: one set of flags for every client command (bench, demo, the gateway)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc

__all__ = ["ChannelSecurity", "open_channel", "security_options"]

Option = tuple[str, Any]


@dataclass(frozen=True)
class ChannelSecurity:
    """How to reach a server. ``ca_file`` set: TLS, trusting those CAs; ``cert_file`` and
    ``key_file``: this client's certificate for mutual TLS; ``token_file``: a bearer token sent
    with every call; ``server_name``: the name to check the server's certificate against when it
    differs from the target's host."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both its file and its key file")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("a client certificate needs TLS: give the server's CA file too")

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )

    def options(self) -> list[Option]:
        if self.tls and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if self.token_file is None:
            return ()
        return (("authorization", f"Bearer {self.token_file.read_text().strip()}"),)


class _BearerToken:
    """Adds the token to a call's metadata (call credentials would need TLS). gRPC files an
    interceptor under one kind of call only, hence one subclass per kind."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._metadata)
        return await continuation(details._replace(metadata=metadata), request)


class _UnaryUnaryToken(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    intercept_unary_unary = _BearerToken._call  # type: ignore[assignment]


class _UnaryStreamToken(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    intercept_unary_stream = _BearerToken._call  # type: ignore[assignment]


class _StreamUnaryToken(_BearerToken, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    intercept_stream_unary = _BearerToken._call  # type: ignore[assignment]


class _StreamStreamToken(_BearerToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    intercept_stream_stream = _BearerToken._call  # type: ignore[assignment]


_TOKEN_INTERCEPTORS = (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)


def open_channel(
    target: str, security: ChannelSecurity | None = None, options: Sequence[Option] = ()
) -> grpc.aio.Channel:
    """An asyncio channel to ``target``, plaintext unless ``security`` says otherwise."""
    security = security or ChannelSecurity()
    metadata = security.metadata()
    interceptors: Any = [kind(metadata) for kind in _TOKEN_INTERCEPTORS] if metadata else None
    all_options = [*options, *security.options()]
    if security.tls:
        return grpc.aio.secure_channel(
            target, security.credentials(), options=all_options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)


Command = TypeVar("Command", bound=Callable[..., Any])

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def security_options(func: Command) -> Command:
    """``--tls-ca-file``, ``--tls-cert-file``, ``--tls-key-file``, ``--tls-server-name`` and
    ``--auth-token-file``; the command gets them as one ``security: ChannelSecurity``."""
    flags = [
        click.option("--tls-ca-file", type=_FILE, help="Speak TLS, trusting these CAs (PEM)."),
        click.option("--tls-cert-file", type=_FILE, help="Client certificate for mutual TLS."),
        click.option("--tls-key-file", type=_FILE, help="Private key of --tls-cert-file."),
        click.option("--tls-server-name", help="Name the server's certificate must carry."),
        click.option("--auth-token-file", type=_FILE, help="Send this file's bearer token."),
    ]

    @functools.wraps(func)  # keeps the options decorated before this one
    def wrapper(**kwargs: Any) -> Any:
        try:
            security = ChannelSecurity(
                ca_file=kwargs.pop("tls_ca_file"),
                cert_file=kwargs.pop("tls_cert_file"),
                key_file=kwargs.pop("tls_key_file"),
                token_file=kwargs.pop("auth_token_file"),
                server_name=kwargs.pop("tls_server_name"),
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return func(security=security, **kwargs)

    command: Any = wrapper
    for flag in reversed(flags):
        command = flag(command)
    return command  # type: ignore[no-any-return]
