"""Start kopf in this process with the operator's handlers, alone or as the elected leader."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from lipsync_operator.health import waiting_health
from lipsync_operator.leader import ElectionSettings, lead

if TYPE_CHECKING:
    from lipsync_operator.podwatch import ClusterPods

log = logging.getLogger(__name__)


def _run_kopf(
    namespaces: list[str], liveness: str | None, stop: threading.Event | None = None
) -> None:
    asyncio.run(_operate(namespaces, liveness, stop))


async def _operate(
    namespaces: list[str], liveness: str | None, stop: threading.Event | None
) -> None:
    import kopf

    from lipsync_operator import handlers, indexes
    from lipsync_operator.config import OperatorConfig

    config = OperatorConfig.from_env()
    indexes.register_optional(config, kopf.get_default_registry())

    log.info(
        "starting kopf (%s, %s)",
        handlers.__name__,
        f"namespaces {', '.join(namespaces)}" if namespaces else "cluster-wide",
    )
    # kopf waits on a threading.Event (or a concurrent Future) in an executor thread, which
    # asyncio.run joins at exit: a SIGTERM that stops kopf would then hang. An asyncio.Event set
    # from the election's thread is awaited in the loop itself.
    stop_flag: asyncio.Event | None = None
    if stop is not None:
        flag = stop_flag = asyncio.Event()
        loop = asyncio.get_running_loop()

        def forward() -> None:
            stop.wait()
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(flag.set)

        threading.Thread(target=forward, name="kopf-stop", daemon=True).start()
    memo = kopf.Memo()
    pods_stop = threading.Event()
    if namespaces:
        memo["cluster_pods"] = await _cluster_pods(config.gpu_resource, pods_stop)
    # Standalone: exclusivity comes from the Lease (or from running one replica), never from
    # kopf's peering, which freezes every replica of equal priority.
    try:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            memo=memo,
        )
    finally:
        pods_stop.set()


async def _cluster_pods(gpu_resource: str, stop: threading.Event) -> ClusterPods:
    """Pods of every namespace, listed before kopf starts (its first reconciles plan with them)."""
    from lipsync_operator import podwatch
    from lipsync_operator.kube import BoundedApiClient, load_kube_config

    load_kube_config()
    pods = podwatch.start(BoundedApiClient(), gpu_resource, stop)
    log.info("listing pods in every namespace: the GPUs other namespaces hold on shared nodes")
    await asyncio.to_thread(pods.synced.wait)
    return pods


def run_operator(
    *, namespaces: list[str], election: ElectionSettings | None, liveness: str | None
) -> None:
    """Block running the operator: cluster-wide, or only in ``namespaces``."""
    from lipsync_operator.kube import load_kube_config

    if election is None:
        _run_kopf(namespaces, liveness)
        return
    load_kube_config()
    lead(election, lambda stop: _run_kopf(namespaces, liveness, stop), waiting_health(liveness))
