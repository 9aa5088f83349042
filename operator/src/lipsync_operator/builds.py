"""One build per engine key, cluster-wide: which build Job a model follows, and which it drops.

Models with the same key (two avatars of one UNet at one precision) need the same engine. The
first model to start a build owns its Job; every other model waits for that Job, takes the
engine from its result, and rolls out its own servers. When two models start a build at the same
moment, every reconcile picks the same Job (the oldest; namespace and name break a tie), and the
model whose Job lost deletes it. When the owner is deleted mid-build, the garbage collector
deletes its Job too, and a waiting model starts its own on its next reconcile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lipsync_operator.observed import BuildJob, Observed


def shared_build(candidates: Iterable[BuildJob], key: str) -> BuildJob | None:
    """The one build of ``key`` to follow: a Job that succeeded with a Ready result, else the
    oldest running one, else the newest finished one. Jobs being deleted, and Jobs the
    operator's signature does not verify, do not count."""
    unique = {(job.namespace, job.name): job for job in candidates if job.key == key}
    ordered = sorted(
        (job for job in unique.values() if job.signed and not job.deleting),
        key=lambda job: (job.created, job.namespace, job.name),
    )
    ready = [job for job in ordered if job.ready_result is not None]
    if ready:
        return ready[0]
    running = [job for job in ordered if job.phase == "Active"]
    if running:
        return running[0]
    return ordered[-1] if ordered else None


def followed_build(observed: Observed, key: str) -> BuildJob | None:
    """The build this model follows for ``key``: its own Job or any other model's."""
    return shared_build((*observed.jobs, *observed.builds.get(key, ())), key)


def is_own(observed: Observed, job: BuildJob) -> bool:
    return any((own.namespace, own.name) == (job.namespace, job.name) for own in observed.jobs)


def superseded_jobs(observed: Observed, keys: Iterable[str]) -> list[BuildJob]:
    """This model's running Jobs of ``keys`` that another model's build of the same key beat."""
    wanted = set(keys)
    superseded = []
    for job in observed.jobs:
        if job.key not in wanted or job.phase != "Active":
            continue
        followed = followed_build(observed, job.key)
        if followed is not None and (followed.namespace, followed.name) != (
            job.namespace,
            job.name,
        ):
            superseded.append(job)
    return superseded


def waits_for(model: Mapping[str, Any], key: str) -> bool:
    """The model's status says one of its engines is building ``key`` (maybe in another's Job)."""
    engines: Sequence[Mapping[str, Any]] = (model.get("status") or {}).get("engines") or []
    return any(e.get("key") == key and e.get("state") == "Building" for e in engines)
