"""One reconciliation of one LipSyncModel: read, compute, apply, delete, record status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from lipsync_contract.api import LipSyncModelSpec, LipSyncModelStatus
from lipsync_contract.errors import LipSyncError
from lipsync_operator.applied import RecentApplies
from lipsync_operator.clusterview import ClusterView
from lipsync_operator.config import OperatorConfig
from lipsync_operator.desired import ChildRef, DesiredState, desired_state, engine_keys
from lipsync_operator.engines import published_engines, published_results
from lipsync_operator.kube import Kube, api_message
from lipsync_operator.manifests.common import Owner
from lipsync_operator.observed import Observed
from lipsync_operator.signing import BuildSigner
from lipsync_operator.status import (
    CHILD_FAILED,
    EventNote,
    child_failure_status,
    invalid_spec_status,
    once_per_message,
    transition_events,
)
from lipsync_operator.validation import spec_problem

log = logging.getLogger(__name__)

AUTOSCALER_KINDS = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})


class InvalidSpecError(LipSyncError):
    """The spec passed the API server's schema but cannot be acted on."""


class ChildrenRefusedError(LipSyncError):
    """The API server refused to apply or delete children; the status says so already."""

    def __init__(self, message: str, events: list[EventNote], delay: float) -> None:
        super().__init__(message)
        self.events = events
        self.delay = delay


@dataclass(frozen=True)
class ChildFailure:
    """One refused call: what was asked and the API server's answer."""

    verb: str
    kind: str
    name: str
    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.verb} {self.kind} {self.name}: {self.code} {self.message}"


INDEXED_KINDS = frozenset({"Job", "Deployment", "HorizontalPodAutoscaler", "ScaledObject"})
# How `_apply` calls the API: verb, kind, name, the call (a refusal is recorded, not raised).
Attempt = Callable[[str, str, str, Callable[[], None]], None]


def present_children(observed: Observed) -> set[tuple[str, str]]:
    """(kind, name) of the children the indexes see."""
    return {
        *(("Job", job.name) for job in observed.jobs),
        *(("Deployment", d.name) for d in observed.deployments),
        *(("HorizontalPodAutoscaler", name) for name in observed.hpas),
        *(("ScaledObject", name) for name in observed.scaled_objects),
    }


def failures_message(failures: list[ChildFailure]) -> str:
    return "; ".join(str(f) for f in failures)


def retry_delay(failures: int, base: float = 5.0, cap: float = 300.0) -> float:
    """Seconds before the next try after ``failures`` refused reconciles in a row (doubling)."""
    return min(cap, base * 2.0 ** max(0, failures - 1))


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
    signer: BuildSigner
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _refused: dict[str, int] = field(default_factory=dict)  # refused reconciles in a row
    _recent: RecentApplies = field(default_factory=RecentApplies)

    def _lock(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def reconcile(self, body: Mapping[str, Any], view: ClusterView) -> list[EventNote]:
        """Converge one model from what ``view`` shows; returns the events to post.

        Raises InvalidSpecError, or ChildrenRefusedError after recording the refusal on status.
        """
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
                problem = spec_problem(owner.name, spec)
                if problem is not None:
                    raise InvalidSpecError(problem)
                now = datetime.now(UTC)
                observed = view.observed(owner.namespace, owner.name, owner.uid)
                keys = engine_keys(owner, spec, observed, self.config, now=now, previous=previous)
                mount = self.config.cache.mount_path
                observed = replace(
                    observed,
                    published={
                        **published_results(view.published_engines(keys, owner.namespace), mount),
                        **published_engines(previous, mount),
                    },
                    builds=view.builds_by_key(keys),
                )
                desired = desired_state(
                    owner, spec, observed, self.config, previous=previous, now=now
                )
            except LipSyncError as exc:
                self._record_invalid(owner, previous, str(exc))
                raise InvalidSpecError(str(exc)) from None
            failures = self._apply(owner, desired, present_children(observed))
            if not failures:
                self._refused.pop(owner.uid, None)
                if desired.status != previous:  # an unchanged status is not sent again
                    self.kube.patch_status(owner.namespace, owner.name, desired.status.to_api())
                return list(desired.events)
            message = failures_message(failures)
            status = child_failure_status(desired.status, message, previous, datetime.now(UTC))
            self.kube.patch_status(owner.namespace, owner.name, status.to_api())
            refused = self._refused[owner.uid] = self._refused.get(owner.uid, 0) + 1
        events = [*transition_events(previous, status), *once_per_message(
            previous, CHILD_FAILED, message
        )]  # fmt: skip
        raise ChildrenRefusedError(message, events, retry_delay(refused))

    def _apply(
        self, owner: Owner, desired: DesiredState, present: set[tuple[str, str]]
    ) -> list[ChildFailure]:
        """Apply and delete every child; what the API server refused, it returns.

        A child applied unchanged a moment ago is not applied again, unless it is one the
        indexes see (``present``: kind, name) and it has gone.
        """
        failures: list[ChildFailure] = []

        def attempt(verb: str, kind: str, name: str, call: Callable[[], None]) -> None:
            try:
                call()
            except ApiException as exc:
                failure = ChildFailure(verb, kind, name, int(exc.status or 0), api_message(exc))
                log.warning("%s/%s: %s", owner.namespace, owner.name, failure)
                failures.append(failure)

        for plan in desired.plans:
            if plan.replica_handover is not None and plan.deployment is not None:
                handover = partial(
                    self.kube.hand_over_replicas, plan.deployment, plan.replica_handover
                )
                attempt("apply", "Deployment", plan.deployment["metadata"]["name"], handover)
        # An autoscaler of the other kind goes first: KEDA refuses a ScaledObject for a
        # Deployment that another HPA scales.
        early = [ref for ref in desired.stale if ref.kind in AUTOSCALER_KINDS]
        for ref in early:
            self._delete(owner, ref, attempt)
        for unsigned in desired.applies():
            manifest = self.signer.signed(unsigned) if unsigned["kind"] == "Job" else unsigned
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            gone = kind in INDEXED_KINDS and (kind, name) not in present
            if self._recent.fresh(manifest) and not gone:
                continue
            before = len(failures)
            attempt("apply", kind, name, partial(self.kube.apply, manifest))
            if len(failures) == before:
                self._recent.record(manifest)
        for ref in desired.stale:
            if ref not in early:
                self._delete(owner, ref, attempt)
        return failures

    def _delete(self, owner: Owner, ref: ChildRef, attempt: Attempt) -> None:
        log.info("deleting %s %s (no longer desired)", ref.kind, ref.name)
        self._recent.forget(owner.namespace, ref.kind, ref.name)
        attempt("delete", ref.kind, ref.name, partial(self.kube.delete, ref, owner.namespace))

    def _record_invalid(
        self, owner: Owner, previous: LipSyncModelStatus | None, message: str
    ) -> None:
        status = invalid_spec_status(message, owner.generation, previous, datetime.now(UTC))
        self.kube.patch_status(owner.namespace, owner.name, status.to_api())


def invalid_spec_events(previous: LipSyncModelStatus | None, message: str) -> list[EventNote]:
    """The Warning for an invalid spec, once per distinct message."""
    return once_per_message(previous, "InvalidSpec", message)


__all__ = [
    "ChildrenRefusedError",
    "InvalidSpecError",
    "Reconciler",
    "invalid_spec_events",
    "retry_delay",
    "transition_events",
]
