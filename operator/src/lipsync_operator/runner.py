"""Start kopf in this process with the operator's handlers, alone or as the elected leader."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from lipsync_operator.health import waiting_health
from lipsync_operator.leader import ElectionSettings, lead

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

    indexes.register_optional(OperatorConfig.from_env(), kopf.get_default_registry())

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
    # Standalone: exclusivity comes from the Lease (or from running one replica), never from
    # kopf's peering, which freezes every replica of equal priority.
    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
    )


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
