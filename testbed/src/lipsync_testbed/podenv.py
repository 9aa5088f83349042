"""Pure helpers a kubelet applies to a container before it starts: `$(VAR)` expansion,
downward-API field values, and the mapping of in-pod paths to host directories."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

from kubernetes import client


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`,
    and any other `$` (including `$(UNDEFINED)`) is left as written."""
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "$" or i + 1 >= len(value):
            out.append(char)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "(":
            close = value.find(")", i + 2)
            if close != -1:
                name = value[i + 2 : close]
                if name in env:
                    out.append(env[name])
                else:
                    out.append(value[i : close + 1])
                i = close + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


def field_value(pod: client.V1Pod, field_path: str) -> str:
    """A downward-API fieldRef such as metadata.name, status.podIP or metadata.labels['app']."""
    meta = pod.metadata or client.V1ObjectMeta()
    spec = pod.spec or client.V1PodSpec(containers=[])
    status = pod.status or client.V1PodStatus()
    if field_path.startswith(("metadata.labels[", "metadata.annotations[")):
        source = meta.labels if field_path.startswith("metadata.labels") else meta.annotations
        key = field_path.split("[", 1)[1].rstrip("]").strip("'\"")
        return (source or {}).get(key, "")
    simple: dict[str, str | None] = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": spec.node_name,
        "spec.serviceAccountName": spec.service_account_name,
        "status.podIP": status.pod_ip,
        "status.hostIP": status.host_ip,
        "status.podIPs": ",".join(p.ip for p in status.pod_ips or [] if p.ip),
        "status.hostIPs": ",".join(p.ip for p in status.host_ips or [] if p.ip),
    }
    if field_path not in simple:
        raise ValueError(f"unsupported fieldRef {field_path!r}")
    return simple[field_path] or ""


def _path_pattern(pod_path: str) -> re.Pattern[str]:
    # A mount path counts where a path starts (start of the value, or after `=`, `:`, `,`,
    # whitespace or a quote, as in `--model=/models/x`, `PATH=/a:/b` or `open("/data/x")`)
    # and ends at a path boundary.
    return re.compile(
        r"(?:^|(?<=[=:,\s\"']))" + re.escape(pod_path.rstrip("/")) + r"(?=/|$|[:,\s\"')])"
    )


def parent_mounts(mounts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Parents of mount paths that stand for one host directory, so they can be rewritten too.

    A pod that mounts claims at `/mnt/pvc/<claim>` and names `/mnt/pvc` as the root to look
    under works here when the host directories are `<X>/<claim>`: `/mnt/pvc` maps to `<X>`.
    A parent qualifies when every mount under it ends, on the host, with the same relative
    path as in the pod, all below one directory; `/` and the mounts themselves never do.
    """
    candidates: dict[str, set[str | None]] = {}
    for pod_path, host_path in mounts:
        pod, host = PurePosixPath(pod_path), PurePosixPath(host_path)
        for depth in range(2, len(pod.parts)):
            parent = PurePosixPath(*pod.parts[:depth])
            rest = pod.parts[depth:]
            same = len(host.parts) > len(rest) and host.parts[-len(rest) :] == rest
            base = str(PurePosixPath(*host.parts[: -len(rest)])) if same else None
            candidates.setdefault(str(parent), set()).add(base)
    own = {str(PurePosixPath(p)) for p, _ in mounts}
    found: list[tuple[str, str]] = []
    for path, bases in candidates.items():
        (base,) = bases if len(bases) == 1 else (None,)
        if path not in own and base is not None:
            found.append((path, base))
    return sorted(found)


def rewrite_paths(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Replace in-pod paths by host paths, longest mount path first.

    `mounts` pairs a container path (e.g. `/models`) with the host directory that
    backs it; parents of mount paths are mapped too where `parent_mounts` finds one host
    directory for them. `/modelsx` is not under `/models`; `pvc://claim/x` is not a path.
    """
    ordered = sorted([*mounts, *parent_mounts(mounts)], key=lambda m: len(m[0]), reverse=True)
    marks: list[tuple[int, int, str]] = []
    for pod_path, host_path in ordered:
        if not pod_path.strip("/"):
            continue
        for match in _path_pattern(pod_path).finditer(value):
            start, end = match.span()
            if any(s <= start < e for s, e, _ in marks):
                continue
            marks.append((start, end, host_path.rstrip("/")))
    for start, end, host_path in sorted(marks, reverse=True):
        value = value[:start] + host_path + value[end:]
    return value
