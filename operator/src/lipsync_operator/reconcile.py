"""One reconciliation of one LipSyncModel: read, compute, apply, delete, record status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lipsync_core.api import LipSyncModelSpec, LipSyncModelStatus
from lipsync_core.errors import LipSyncError
from lipsync_operator.config import OperatorConfig
from lipsync_operator.desired import ChildRef, DesiredState, desired_state
from lipsync_operator.engines import published_engines
from lipsync_operator.kube import Kube
from lipsync_operator.manifests.common import Owner
from lipsync_operator.status import EventNote, invalid_spec_status, transition_events

log = logging.getLogger(__name__)

AUTOSCALER_KINDS = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})


class InvalidSpecError(LipSyncError):
    """The spec passed the API server's schema but cannot be acted on."""


def spec_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"spec.{where}: {first['msg']}" if where else f"spec: {first['msg']}"


def parse_spec(spec: Mapping[str, Any]) -> LipSyncModelSpec:
    try:
        return LipSyncModelSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise InvalidSpecError(spec_error(exc)) from None


def parse_status(status: Mapping[str, Any] | None) -> LipSyncModelStatus | None:
    if not status:
        return None
    try:
        return LipSyncModelStatus.model_validate(dict(status))
    except ValidationError:
        log.warning("ignoring an unreadable status; it will be rewritten")
        return None


@dataclass
class Reconciler:
    """Holds the API connection and settings; serializes work per model across handler threads."""

    kube: Kube
    config: OperatorConfig
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def reconcile(self, body: Mapping[str, Any]) -> list[EventNote]:
        """Converge one model; returns the events to post. Raises InvalidSpecError."""
        meta = body["metadata"]
        owner = Owner(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
        )
        previous = parse_status(body.get("status"))
        with self._lock(owner.uid):
            try:
                spec = parse_spec(body.get("spec") or {})
                observed = replace(
                    self.kube.observed(owner.namespace, owner.name, owner.uid, self.config),
                    published=published_engines(previous),
                )
                desired = desired_state(
                    owner, spec, observed, self.config, previous=previous, now=datetime.now(UTC)
                )
            except LipSyncError as exc:
                self._record_invalid(owner, previous, str(exc))
                raise InvalidSpecError(str(exc)) from None
            self._apply(owner, desired)
        return list(desired.events)

    def _apply(self, owner: Owner, desired: DesiredState) -> None:
        for plan in desired.plans:
            if plan.replica_handover is not None and plan.deployment is not None:
                self.kube.hand_over_replicas(plan.deployment, plan.replica_handover)
        # An autoscaler of the other kind goes first: KEDA refuses a ScaledObject for a
        # Deployment that another HPA scales.
        early = [ref for ref in desired.stale if ref.kind in AUTOSCALER_KINDS]
        for ref in early:
            self._delete(owner, ref)
        for manifest in desired.applies():
            self.kube.apply(manifest)
        for ref in desired.stale:
            if ref not in early:
                self._delete(owner, ref)
        self.kube.patch_status(owner.namespace, owner.name, desired.status.to_api())

    def _delete(self, owner: Owner, ref: ChildRef) -> None:
        log.info("deleting %s %s (no longer desired)", ref.kind, ref.name)
        self.kube.delete(ref, owner.namespace)

    def _record_invalid(
        self, owner: Owner, previous: LipSyncModelStatus | None, message: str
    ) -> None:
        status = invalid_spec_status(message, owner.generation, previous, datetime.now(UTC))
        self.kube.patch_status(owner.namespace, owner.name, status.to_api())


def invalid_spec_events(previous: LipSyncModelStatus | None, message: str) -> list[EventNote]:
    """The Warning for an invalid spec, once per distinct message."""
    degraded = previous.condition("Degraded") if previous is not None else None
    if degraded is not None and degraded.reason == "InvalidSpec" and degraded.message == message:
        return []
    return [EventNote("Warning", "InvalidSpec", message)]


__all__ = ["InvalidSpecError", "Reconciler", "invalid_spec_events", "transition_events"]
