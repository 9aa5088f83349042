"""Optimize: graph simplification and constant folding with onnxslim."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from lipsync_contract.modelio import IOContract
from lipsync_core.contract_checks import check_onnx
from lipsync_engine_builder.errors import BuildFailedError, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizeReport:
    nodes_before: int
    nodes_after: int

    def as_dict(self) -> dict[str, int]:
        return {"nodes_before": self.nodes_before, "nodes_after": self.nodes_after}


def optimize(source: Path, target: Path, contract: IOContract) -> OptimizeReport:
    """Write a simplified copy of ``source``; the result must still match the contract."""
    import onnxslim

    model = onnx.load(str(source))
    before = len(model.graph.node)
    try:
        slimmed = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises whatever its passes raise
        raise BuildFailedError(f"graph optimization failed: {one_line(exc)}") from None
    onnx.save(slimmed, str(target))
    check_onnx(contract, target)
    report = OptimizeReport(nodes_before=before, nodes_after=len(slimmed.graph.node))
    log.info("optimized graph: %d -> %d nodes", report.nodes_before, report.nodes_after)
    return report
