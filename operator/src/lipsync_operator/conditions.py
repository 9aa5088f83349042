"""Standard conditions: a new status keeps lastTransitionTime unless the status flips."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lipsync_contract.api import Condition, ConditionStatus


def condition(
    previous: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    *,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> Condition:
    old = next((c for c in previous if c.type == type_), None)
    changed = old is None or old.status != status
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
