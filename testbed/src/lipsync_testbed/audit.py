"""The apiserver's audit log of LIST requests: who listed what, when.

``apiserver_request_total`` counts requests by verb and resource but not by client; an audit
log of list requests alone (Metadata level, nothing else logged) tells the operator's lists
from the controllers' at a cost the apiserver hardly notices.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

AUDIT_LOG = "audit.log"
LIST_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["list"]
- level: None
"""


def client_name(user_agent: str) -> str:
    """The program in a User-Agent: ``kopf/1.37.2`` -> ``kopf``."""
    return user_agent.split("/", 1)[0].strip() or "-"


def count_lists(lines: Iterable[str], since: float, until: float) -> Counter[tuple[str, str]]:
    """LIST requests received in [since, until] (Unix seconds) by (client program, resource).

    ``lines`` are the audit log's JSON events; lines that are not list events are skipped.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("verb") != "list":
            continue
        received = event.get("requestReceivedTimestamp")
        if not isinstance(received, str):
            continue
        at = datetime.fromisoformat(received.replace("Z", "+00:00")).timestamp()
        if since <= at <= until:
            resource = (event.get("objectRef") or {}).get("resource", "-")
            counts[(client_name(str(event.get("userAgent", ""))), str(resource))] += 1
    return counts
