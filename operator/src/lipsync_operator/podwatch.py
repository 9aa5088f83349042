"""Every namespace's pods, for an operator that watches only some namespaces.

GPU accounting needs the units other tenants' pods hold on shared nodes, but kopf watches one set
of namespaces for every kind. In namespaced mode a thread lists, then watches, bound unfinished
pods cluster-wide (read only: the chart's ClusterRole grants get/list/watch on pods) and keeps
what the pods index would hold (`clusterview.pod_entry`). `ClusterPods` has the shape of a kopf
index (node -> pods), so `indexes.view` puts it in place of the namespaced pods index.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch as _Watch
from urllib3.exceptions import HTTPError

from lipsync_operator.clusterview import PodUse, pod_entry

log = logging.getLogger(__name__)

Watch: Any = _Watch  # untyped in the kubernetes client

# Pods on a node that have not finished: the API server filters, and sends DELETED for a pod
# that stops matching (it finished), so the store never holds finished pods.
FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
PAGE_SIZE = 500
WATCH_SECONDS = 240  # the server ends each watch by then; the next one resumes from its version
RETRY_SECONDS = 5.0

Obj = Mapping[str, Any]


class ClusterPods(Mapping[str, tuple[PodUse, ...]]):
    """Pods that hold GPUs or serve a model, by node, from every namespace; thread-safe: the
    watch thread writes, reconciles read a copy (`ClusterView.snapshot`)."""

    def __init__(self, gpu_resource: str) -> None:
        self._gpu_resource = gpu_resource
        self._lock = threading.Lock()
        self._by_uid: dict[str, tuple[str, PodUse]] = {}
        self._by_node: dict[str, tuple[PodUse, ...]] | None = {}
        self.synced = threading.Event()  # set once the first list is in

    def _entry(self, pod: Obj) -> tuple[str, PodUse] | None:
        entry = pod_entry(pod, self._gpu_resource)
        return next(iter(entry.items())) if entry else None

    def replace(self, pods: Iterable[Obj]) -> None:
        """A full list: what it does not name is gone."""
        entries = {}
        for pod in pods:
            entry = self._entry(pod)
            if entry is not None:
                entries[_uid(pod)] = entry
        with self._lock:
            self._by_uid, self._by_node = entries, None
        self.synced.set()

    def update(self, kind: str, pod: Obj) -> None:
        """One watch event (ADDED, MODIFIED or DELETED)."""
        entry = None if kind == "DELETED" else self._entry(pod)
        uid = _uid(pod)
        with self._lock:
            if entry is None:
                if self._by_uid.pop(uid, None) is None:
                    return
            elif self._by_uid.get(uid) == entry:
                return
            else:
                self._by_uid[uid] = entry
            self._by_node = None

    def _view(self) -> dict[str, tuple[PodUse, ...]]:
        with self._lock:
            if self._by_node is None:
                grouped: dict[str, list[PodUse]] = {}
                for node, use in self._by_uid.values():
                    grouped.setdefault(node, []).append(use)
                self._by_node = {node: tuple(uses) for node, uses in grouped.items()}
            return self._by_node

    def __getitem__(self, node: str) -> tuple[PodUse, ...]:
        return self._view()[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def items(self) -> Any:  # one consistent copy, not a key-by-key walk of a changing store
        return self._view().items()


def _uid(pod: Obj) -> str:
    return str(pod["metadata"]["uid"])


def _list(core: Any, pods: ClusterPods) -> str:
    """Every matching pod, a page at a time; the list's resource version."""
    items: list[Obj] = []
    token = None
    while True:
        response = core.list_pod_for_all_namespaces(
            field_selector=FIELD_SELECTOR, limit=PAGE_SIZE, _continue=token,
            _preload_content=False,
        )  # fmt: skip
        page = json.loads(response.data)
        items.extend(page.get("items") or [])
        token = page["metadata"].get("continue")
        if not token:
            break
    pods.replace(items)
    return str(page["metadata"]["resourceVersion"])


def _watch(core: Any, pods: ClusterPods, version: str, stop: threading.Event) -> None:
    """Follow changes from ``version`` until stopped; raises when the watch breaks (410 Gone
    included: the caller lists again)."""
    stream = Watch()
    while not stop.is_set():
        events = stream.stream(
            core.list_pod_for_all_namespaces,
            field_selector=FIELD_SELECTOR,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 30,
        )
        for event in events:
            kind, pod = event["type"], event["raw_object"]
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                pods.update(kind, pod)
            version = pod.get("metadata", {}).get("resourceVersion") or version
            if stop.is_set():
                return


def follow(api: Any, pods: ClusterPods, stop: threading.Event) -> None:
    """List and watch until ``stop``; a broken watch lists again after a pause."""
    core = client.CoreV1Api(api)
    while not stop.is_set():
        try:
            _watch(core, pods, _list(core, pods), stop)
        except (ApiException, HTTPError, OSError, ValueError) as exc:
            gone = isinstance(exc, ApiException) and exc.status == 410
            if not gone:
                log.warning(
                    "cluster-wide pod watch: %s; listing again in %.0f s", exc, RETRY_SECONDS
                )
                stop.wait(RETRY_SECONDS)


def start(api: Any, gpu_resource: str, stop: threading.Event) -> ClusterPods:
    """A `ClusterPods` kept current by a daemon thread until ``stop``."""
    pods = ClusterPods(gpu_resource)
    threading.Thread(
        target=follow, args=(api, pods, stop), name="cluster-pods", daemon=True
    ).start()
    return pods
