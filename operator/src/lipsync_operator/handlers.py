"""Kopf handlers: thin. They find which LipSyncModel to converge and hand it to the Reconciler.

Importing this module registers the handlers with kopf's default registry (kopf's convention);
nothing else happens at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lipsync_contract.api import GROUP, PLURAL, VERSION
from lipsync_contract.api import KIND as MODEL_KIND
from lipsync_operator import naming
from lipsync_operator.builds import waits_for
from lipsync_operator.config import OperatorConfig
from lipsync_operator.kube import Kube
from lipsync_operator.observed import GFD_PRODUCT, gpu_node
from lipsync_operator.reconcile import (
    InvalidSpecError,
    Reconciler,
    invalid_spec_events,
    parse_status,
)
from lipsync_operator.status import EventNote

log = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0
RETRY_SECONDS = 15.0
OWNED = {naming.LABEL_MANAGED_BY: naming.MANAGER}


@kopf.on.startup()
def on_operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: the status schema is ours and prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    memo["reconciler"] = Reconciler(Kube.connect(), OperatorConfig.from_env())
    memo["node_facts"] = {}


def _post(body: Mapping[str, Any], events: list[EventNote]) -> None:
    for event in events:
        target: Any = body  # kopf only reads apiVersion, kind and metadata from it
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)


def _converge(reconciler: Reconciler, body: Mapping[str, Any], *, permanent: bool) -> None:
    """Reconcile; an invalid spec is recorded once and never retried; API trouble is retried."""
    try:
        _post(body, reconciler.reconcile(body))
    except InvalidSpecError as exc:
        _post(body, invalid_spec_events(parse_status(body.get("status")), str(exc)))
        if permanent:
            raise kopf.PermanentError(str(exc)) from None
        log.warning("%s: %s", body["metadata"]["name"], exc)
    except ApiException as exc:
        raise kopf.TemporaryError(
            f"API error {exc.status}: {exc.reason}", delay=RETRY_SECONDS
        ) from None
    except HTTPError as exc:
        raise kopf.TemporaryError(f"API unreachable: {exc}", delay=RETRY_SECONDS) from None


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
def on_lipsyncmodel_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _converge(memo["reconciler"], body, permanent=True)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def on_lipsyncmodel_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-triggered safety net: converge even when no watch event arrived."""
    _converge(memo["reconciler"], body, permanent=False)


def _gpu_facts(body: Mapping[str, Any], gpu_resource: str) -> tuple[object, ...] | None:
    node = gpu_node(body, gpu_resource)
    if node is None:
        return None
    return (
        node.product_label,
        node.gpus,
        node.compute_capability,
        node.allocatable,
        node.sharing_strategy,
        node.sharing_replicas,
        node.ready,
        node.cordoned,
    )


@kopf.on.event("", "v1", "nodes")
def on_node_gpu_change(
    body: kopf.Body, event: Mapping[str, Any], memo: kopf.Memo, **_: Any
) -> None:
    """A node joined, left, or changed its GPU labels or readiness: every model recomputes."""
    reconciler: Reconciler = memo["reconciler"]
    name = body["metadata"]["name"]
    known: dict[str, tuple[object, ...] | None] = memo["node_facts"]
    facts = (
        None if event.get("type") == "DELETED" else _gpu_facts(body, reconciler.config.gpu_resource)
    )
    if known.get(name) == facts and name in known:
        return  # heartbeats and unrelated changes
    had_gpus = known.get(name) is not None
    known[name] = facts
    if facts is None and not had_gpus:
        return
    log.info("node %s GPU facts changed (%s=%s)", name, GFD_PRODUCT, facts[0] if facts else "-")
    for model in reconciler.kube.models():
        _converge(reconciler, model, permanent=False)


def _owner_model(reconciler: Reconciler, body: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == MODEL_KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
            return reconciler.kube.model(body["metadata"]["namespace"], ref["name"])
    return None


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
def on_owned_child_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A build finished or a rollout moved: the owner's status and next step follow."""
    reconciler: Reconciler = memo["reconciler"]
    model = _owner_model(reconciler, body)
    if model is not None and model["metadata"].get("deletionTimestamp") is None:
        _converge(reconciler, model, permanent=False)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
def on_build_job_change(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A build moved: its owner follows, and so does every model waiting for the same key (the
    build finished, or went with its deleted owner and a waiting model must start its own)."""
    on_owned_child_change(body=body, memo=memo, **kwargs)
    key = (body["metadata"].get("annotations") or {}).get(naming.ANNOTATION_ENGINE_KEY, "")
    if not key:
        return
    reconciler: Reconciler = memo["reconciler"]
    owners = {ref.get("uid") for ref in body["metadata"].get("ownerReferences") or []}
    for model in reconciler.kube.models():
        if model["metadata"]["uid"] not in owners and waits_for(model, key):
            _converge(reconciler, model, permanent=False)
