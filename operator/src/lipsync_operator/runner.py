"""Start kopf in this process with the operator's handlers, alone or as the elected leader."""

from __future__ import annotations

import logging
import threading

from lipsync_operator.health import waiting_health
from lipsync_operator.leader import ElectionSettings, lead

log = logging.getLogger(__name__)


def _run_kopf(
    namespaces: list[str], liveness: str | None, stop: threading.Event | None = None
) -> None:
    import kopf

    from lipsync_operator import handlers

    log.info(
        "starting kopf (%s, %s)",
        handlers.__name__,
        f"namespaces {', '.join(namespaces)}" if namespaces else "cluster-wide",
    )
    # Standalone: exclusivity comes from the Lease (or from running one replica), never from
    # kopf's peering, which freezes every replica of equal priority.
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=liveness,
        stop_flag=stop,
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
