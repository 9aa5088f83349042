"""Who may call a model's servers (``spec.access``): the Secrets mounted into its server pods and
the server settings that point at them."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from lipsync_contract.api import Access
from lipsync_operator.manifests.common import Manifest

TLS_DIR = "/etc/lipsync/tls"
TOKEN_DIR = "/etc/lipsync/token"
TOKEN_KEY = "token"


@dataclass(frozen=True)
class ServerAccess:
    options: dict[str, object] = field(default_factory=dict)
    volumes: list[Manifest] = field(default_factory=list)
    mounts: list[Manifest] = field(default_factory=list)


def _secret(volume: str, secret: str, keys: list[str], path: str) -> tuple[Manifest, Manifest]:
    # Only the keys the server reads; a Secret without one of them keeps the pod from starting
    # (FailedMount) instead of serving plaintext.
    items = [{"key": key, "path": key} for key in keys]
    return (
        {"name": volume, "secret": {"secretName": secret, "items": items, "defaultMode": 0o440}},
        {"name": volume, "mountPath": path, "readOnly": True},
    )


def server_access(access: Access) -> ServerAccess:
    result = ServerAccess()
    if access.tls is not None:
        keys = ["tls.crt", "tls.key", *(["ca.crt"] if access.tls.client_auth else [])]
        volume, mount = _secret("tls", access.tls.secret_name, keys, TLS_DIR)
        result.volumes.append(volume)
        result.mounts.append(mount)
        result.options["tls_cert_file"] = posixpath.join(TLS_DIR, "tls.crt")
        result.options["tls_key_file"] = posixpath.join(TLS_DIR, "tls.key")
        if access.tls.client_auth:
            result.options["tls_client_ca_file"] = posixpath.join(TLS_DIR, "ca.crt")
    if access.token_secret is not None:
        volume, mount = _secret("auth-token", access.token_secret, [TOKEN_KEY], TOKEN_DIR)
        result.volumes.append(volume)
        result.mounts.append(mount)
        result.options["auth_token_file"] = posixpath.join(TOKEN_DIR, TOKEN_KEY)
    return result
