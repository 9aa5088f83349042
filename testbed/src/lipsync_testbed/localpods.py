"""Which pods on fake nodes run as local processes, and how their images start.

A pod runs for real (instead of being faked Running by KWOK) when it carries the
annotation `testbed.lipsync.dev/run: local`, or when any of its containers'
images starts with one of the rule's image prefixes (default: the project's own
images, `ghcr.io/lipsync/`; `$LIPSYNC_TESTBED_LOCAL_IMAGES` replaces the list,
comma-separated, empty for none). The KWOK stages generated from the same rule
skip exactly these pods, so KWOK never writes their status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml
from kubernetes import client

LOCAL_ANNOTATION = "testbed.lipsync.dev/run"
LOCAL_ANNOTATION_VALUE = "local"
LOCAL_IMAGES_ENV = "LIPSYNC_TESTBED_LOCAL_IMAGES"
DEFAULT_IMAGE_PREFIXES = ("ghcr.io/lipsync/",)
# A pod condition a PodRunner keeps True on the pods it runs (False once it stops).
MANAGED_CONDITION = "testbed.lipsync.dev/LocalKubelet"


@dataclass(frozen=True)
class ImageEntrypoint:
    """What an image brings to its containers: the program run when a container gives no
    `command` (Docker's ENTRYPOINT and CMD) and the image's environment (ENV; a container's
    own `env` overrides it; PATH is this environment's)."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def default_image_entrypoints() -> dict[str, ImageEntrypoint]:
    """The project's images (images/*.Dockerfile), keyed by repository without tag."""
    env = (("PYTHONUNBUFFERED", "1"),)
    return {
        "ghcr.io/lipsync/runtime": ImageEntrypoint(("lipsync",), ("serve", "--help"), env),
        "ghcr.io/lipsync/operator": ImageEntrypoint(("lipsync",), ("operator", "run"), env),
    }


def _prefixes_from_env() -> tuple[str, ...]:
    raw = os.environ.get(LOCAL_IMAGES_ENV)
    if raw is None:
        return DEFAULT_IMAGE_PREFIXES
    return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class LocalPodRule:
    """Selects the pods that run as local processes; the KWOK stages skip the same pods."""

    image_prefixes: tuple[str, ...] = field(default_factory=_prefixes_from_env)

    def matches(self, pod: client.V1Pod) -> bool:
        meta = pod.metadata
        annotations = (meta.annotations if meta else None) or {}
        if annotations.get(LOCAL_ANNOTATION) == LOCAL_ANNOTATION_VALUE:
            return True
        spec = pod.spec
        containers = [*(spec.containers or []), *(spec.init_containers or [])] if spec else []
        return any(
            (c.image or "").startswith(prefix) for c in containers for prefix in self.image_prefixes
        )

    def jq_expression(self) -> str:
        """A gojq query that is `true` for the pods this rule selects (KWOK Stage selectors)."""
        annotation = json.dumps(LOCAL_ANNOTATION)
        value = json.dumps(LOCAL_ANNOTATION_VALUE)
        parts = [f"((.metadata.annotations // {{}})[{annotation}] == {value})"]
        if self.image_prefixes:
            tests = " or ".join(f"startswith({json.dumps(p)})" for p in self.image_prefixes)
            parts.append(
                "([(.spec.containers // [])[], (.spec.initContainers // [])[]"
                f' | (.image // "") | ({tests})] | any)'
            )
        return " or ".join(parts)


def image_repository(image: str) -> str:
    """`registry/repo:tag@digest` -> `registry/repo` (a registry port's colon is kept)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def container_argv(
    container: client.V1Container, entrypoints: Mapping[str, ImageEntrypoint]
) -> list[str]:
    """The argv a container runtime would exec, as the pod says it (before `$(VAR)`
    expansion and path mapping).

    `command` replaces the image's ENTRYPOINT and `args` its CMD, as in Kubernetes;
    without `command` the image must be in `entrypoints`. Raises ValueError when
    nothing says what to run.
    """
    command = list(container.command or [])
    args = list(container.args or [])
    if not command:
        entry = entrypoints.get(image_repository(container.image or ""))
        if entry is None:
            raise ValueError(
                f"container {container.name}: no command and image {container.image!r} has no "
                "known entrypoint (set `command`, or map the image in image_entrypoints)"
            )
        command = list(entry.entrypoint)
        if container.args is None:
            args = list(entry.cmd)
    return [*command, *args]


def local_program(argv: Sequence[str], command_map: Mapping[str, Sequence[str]]) -> list[str]:
    """argv with its program replaced by this environment's (`lipsync` -> the venv's script).
    Applied last: the mapped program is a host path, never rewritten as an in-pod one."""
    if argv and argv[0] in command_map:
        return [*command_map[argv[0]], *argv[1:]]
    return list(argv)


def kwok_stages(base: str, rule: LocalPodRule) -> str:
    """The KWOK stage documents with every Pod stage told to skip the rule's pods; the
    deleting stage skips only those a running PodRunner manages (MANAGED_CONDITION True),
    so the pods of a stopped runner, or of none, are still removed when deleted."""
    documents = [d for d in yaml.safe_load_all(base) if d]
    local = rule.jq_expression()
    managed = (
        f"({local}) and ((.status.conditions // []) | "
        f'any(.type == {json.dumps(MANAGED_CONDITION)} and .status == "True"))'
    )
    for document in documents:
        spec = document.get("spec", {})
        if spec.get("resourceRef", {}).get("kind") != "Pod":
            continue
        deletes = bool(spec.get("next", {}).get("delete"))
        skip = {"key": managed if deletes else local, "operator": "NotIn", "values": ["true"]}
        spec.setdefault("selector", {}).setdefault("matchExpressions", []).append(skip)
    return yaml.dump_all(documents, Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the stages' Go templates) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)
