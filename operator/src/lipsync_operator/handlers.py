"""Kopf handlers: thin. They find which LipSyncModel to converge and hand it to the Reconciler.

Creates, spec updates and operator starts converge the model in the handler (kopf retries it).
Everything else only marks models for reconcile: a node event marks the models on the GPU
products it touches, a child's event marks its owner, and each model's worker daemon converges
it once per burst of marks (debounced), at least every resync period, with kopf's retries.
Reads come from the watch-fed indexes (``indexes``); nothing here lists the API.

Importing this module registers the handlers with kopf's default registry (kopf's convention);
nothing else happens at import time.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lipsync_contract.api import GROUP, PLURAL, VERSION
from lipsync_operator import indexes, naming
from lipsync_operator.clusterview import ClusterView, owner_uids
from lipsync_operator.config import OperatorConfig
from lipsync_operator.kube import API_TIMEOUT_SECONDS, Kube, api_message
from lipsync_operator.liveness import ReconcileHealth
from lipsync_operator.marks import Marks, NodeFacts, freed_gpu_node, node_facts, products_touched
from lipsync_operator.observed import gpu_node
from lipsync_operator.podhealth import PodProblem, pod_problem
from lipsync_operator.reconcile import (
    ChildrenRefusedError,
    InvalidSpecError,
    Reconciler,
    invalid_spec_events,
    parse_status,
)
from lipsync_operator.signing import BuildSigner
from lipsync_operator.status import EventNote

log = logging.getLogger(__name__)

RETRY_SECONDS = 15.0
DEBOUNCE_SECONDS = 0.2  # marks closer than this converge once


@kopf.on.startup()
def on_operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: the status schema is ours and prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # kopf's own calls (status patches, events, its bookkeeping) are bounded like the operator's.
    settings.networking.request_timeout = API_TIMEOUT_SECONDS
    settings.networking.connect_timeout = API_TIMEOUT_SECONDS / 3
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    config = OperatorConfig.from_env()
    memo["config"] = config
    memo["signer"] = signer = BuildSigner.from_file(config.build_signing_key_file)
    memo["reconciler"] = Reconciler(Kube.connect(), config, signer)
    memo["marks"] = Marks()
    memo["node_facts"] = {}
    memo["pod_problems"] = {}
    memo["reconcile_health"] = ReconcileHealth(config.reconcile_stall_seconds)


@kopf.on.probe(id="reconciles")
def reconciles_are_live(memo: kopf.Memo, **_: Any) -> str:
    """Fails /healthz (HTTP 500) while reconciles hang or cannot reach the API server."""
    problem = memo["reconcile_health"].problem()
    if problem is not None:
        # Permanent: kopf would retry a temporary failure inside the probe request.
        raise kopf.PermanentError(problem)
    return "ok"


def snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a model's body, taken on the event loop: kopf swaps a live body's contents on
    every event, so a reconcile in a thread could otherwise pair one generation's metadata with
    the next one's spec."""
    return copy.deepcopy(dict(body))


def _post(body: Mapping[str, Any], events: list[EventNote]) -> None:
    for event in events:
        target: Any = body  # kopf only reads apiVersion, kind and metadata from it
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)


def _converge(
    memo: kopf.Memo, body: Mapping[str, Any], view: ClusterView, *, permanent: bool
) -> None:
    """Reconcile; an invalid spec is recorded once and never retried; a refused child is on
    the status and retried with a growing delay; other API trouble is retried."""
    reconciler: Reconciler = memo["reconciler"]
    try:
        with memo["reconcile_health"].reconciling():
            events = reconciler.reconcile(body, view)
        _post(body, events)
    except InvalidSpecError as exc:
        _post(body, invalid_spec_events(parse_status(body.get("status")), str(exc)))
        if permanent:
            raise kopf.PermanentError(str(exc)) from None
        log.warning("%s: %s", body["metadata"]["name"], exc)
    except ChildrenRefusedError as exc:
        _post(body, exc.events)
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    except ApiException as exc:
        raise kopf.TemporaryError(
            f"API error {exc.status}: {api_message(exc)}", delay=RETRY_SECONDS
        ) from None
    except HTTPError as exc:
        raise kopf.TemporaryError(f"API unreachable: {exc}", delay=RETRY_SECONDS) from None


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def on_lipsyncmodel_change(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    view = indexes.view(kwargs, memo.get("cluster_pods")).snapshot()
    await asyncio.to_thread(_converge, memo, snapshot(body), view, permanent=True)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def lipsyncmodel_worker(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """Converge the model when it is marked (debounced), and every resync period anyway.

    A failed converge raises out of the daemon with its mark kept, so kopf calls it again after
    the error's delay and it converges at once.
    """
    marks: Marks = memo["marks"]
    uid = body["metadata"]["uid"]
    view = indexes.view(kwargs, memo.get("cluster_pods"))  # live: converges read a snapshot
    try:
        while not stopped:  # kopf cancels the wait when the model goes away
            if await marks.wait(uid, memo["config"].resync_seconds):
                await asyncio.sleep(DEBOUNCE_SECONDS)
            if body["metadata"].get("deletionTimestamp"):
                break
            marks.clear(uid)
            try:
                await asyncio.to_thread(
                    _converge,
                    memo,
                    snapshot(body),
                    view.snapshot(),
                    permanent=False,
                )
            except kopf.TemporaryError:
                marks.mark(uid)
                raise
    finally:
        if not marks.marked(uid):  # a kept mark is the retry kopf will call this daemon for
            marks.forget(uid)


@kopf.on.event("", "v1", "nodes")
async def on_node_gpu_change(
    body: kopf.Body, event: Mapping[str, Any], memo: kopf.Memo, **kwargs: Any
) -> None:
    """A node joined, left, or changed its GPU labels or readiness: the models on its GPU
    products (before and after) are marked."""
    config: OperatorConfig = memo["config"]
    name = body["metadata"]["name"]
    known: dict[str, NodeFacts | None] = memo["node_facts"]
    facts = (
        None if event.get("type") == "DELETED" else node_facts(gpu_node(body, config.gpu_resource))
    )
    listing = event.get("type") is None  # kopf's initial listing: resume handlers cover it
    seen = name in known
    before = known.get(name)
    known[name] = facts
    if listing and not seen:
        return
    products = products_touched(before, facts)
    if not products:
        return  # heartbeats and unrelated changes
    log.info("node %s GPU facts changed: %s", name, ", ".join(sorted(products)))
    marks: Marks = memo["marks"]
    for model in indexes.view(kwargs).models_on(products):
        marks.mark(model.uid)


@kopf.on.event("", "v1", "pods")
async def on_gpu_pod_gone(
    body: kopf.Body, event: Mapping[str, Any], memo: kopf.Memo, **kwargs: Any
) -> None:
    """A pod that held GPUs went or finished: the models on its node's product are marked."""
    config: OperatorConfig = memo["config"]
    node = freed_gpu_node(event.get("type"), body, config.gpu_resource)
    facts: NodeFacts | None = memo["node_facts"].get(node) if node else None
    if facts is None:
        return
    marks: Marks = memo["marks"]
    for model in indexes.view(kwargs).models_on({facts.product}):
        marks.mark(model.uid)


@kopf.on.event("apps", "v1", "deployments", labels=indexes.OWNED)
async def on_owned_child_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A rollout moved: the owner's status and next step follow."""
    marks: Marks = memo["marks"]
    for uid in owner_uids(body, "LipSyncModel"):
        marks.mark(uid)


@kopf.on.event("", "v1", "pods", labels=indexes.OWNED)
async def on_owned_pod_change(
    body: kopf.Body, event: Mapping[str, Any], memo: kopf.Memo, **kwargs: Any
) -> None:
    """One of a model's pods started or stopped failing to start: its model's status follows."""
    known: dict[str, PodProblem | None] = memo["pod_problems"]
    meta = body["metadata"]
    deleted = event.get("type") == "DELETED"
    problem = None if deleted else pod_problem(body)
    before = known.pop(meta["uid"], None) if deleted else known.get(meta["uid"])
    if not deleted:
        known[meta["uid"]] = problem
    if before == problem:
        return  # most pod updates: probes, readiness, restarts of a pod that stays healthy
    label = (meta.get("labels") or {}).get(naming.LABEL_MODEL, "")
    marks: Marks = memo["marks"]
    for model in indexes.view(kwargs).models_labelled(meta.get("namespace", ""), label):
        marks.mark(model.uid)


@kopf.on.event("batch", "v1", "jobs", labels=indexes.OWNED)
async def on_build_job_change(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A build moved: its owner follows, and so does every model waiting for the same key (the
    build finished, or went with its deleted owner and a waiting model must start its own)."""
    marks: Marks = memo["marks"]
    for uid in owner_uids(body, "LipSyncModel"):
        marks.mark(uid)
    key = (body["metadata"].get("annotations") or {}).get(naming.ANNOTATION_ENGINE_KEY, "")
    if key:
        for model in indexes.view(kwargs).waiting_for(key):
            marks.mark(model.uid)
