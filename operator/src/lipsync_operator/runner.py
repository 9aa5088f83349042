"""Start kopf in this process with the operator's handlers."""

from __future__ import annotations

import logging


def run_operator(
    *, namespaces: list[str], peering: str, standalone: bool, liveness: str | None
) -> None:
    """Block running the operator: cluster-wide, or only in ``namespaces``."""
    import kopf

    from lipsync_operator import handlers

    logging.getLogger(__name__).info(
        "starting the operator (%s handlers module, peering %s)",
        handlers.__name__,
        "off" if standalone else peering,
    )
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        peering_name=None if standalone else peering,
        liveness_endpoint=liveness,
    )
