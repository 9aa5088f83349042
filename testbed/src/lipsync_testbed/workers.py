"""The cluster tier in several pytest workers (`pytest -n N --dist loadscope
--no-loadscope-reorder`, hack/test-cluster.sh), each with its own test beds.

A worker runs each module whole (its module-scoped chart install happens once), and every module
on the autoscaling test bed (Karpenter, KEDA, Prometheus) in the same worker: a second such test
bed costs more than it saves on two cores. Those take longest, so they go first. The controller
that hands out the work sees only node ids, hence a rule on the module's name (`*autoscaling*`).

Load it from the top-level conftest (`from lipsync_testbed.workers import ...`): the controller
reads `pytest_xdist_make_scheduler` there, the workers `pytest_collection_modifyitems`.
"""

from __future__ import annotations

from typing import Any

import pytest

AUTOSCALING_SCOPE = "autoscaling"


def worker_scope(nodeid: str) -> str:
    """The unit one worker runs whole: the test's module, or the autoscaling unit."""
    module = nodeid.split("::", maxsplit=1)[0]
    return AUTOSCALING_SCOPE if "autoscaling" in module.rsplit("/", 1)[-1] else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` with `worker_scope` as the scope (other modes: xdist's own)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByTestBed(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return worker_scope(nodeid)

    return ByTestBed(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The autoscaling unit first: with `--no-loadscope-reorder`, the order workers get."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("cluster") is None
            or worker_scope(item.nodeid) != AUTOSCALING_SCOPE
        )
    )
