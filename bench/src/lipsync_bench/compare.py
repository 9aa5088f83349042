"""``lipsync compare``: bench result files in, a report directory out (Markdown + PNG charts)."""

from __future__ import annotations

import logging
from pathlib import Path

from lipsync_bench.charts import write_charts
from lipsync_bench.markdown import render_report
from lipsync_bench.result import BenchResult
from lipsync_bench.summary import CostOptions, summary_rows

log = logging.getLogger(__name__)

REPORT_NAME = "report.md"


def write_comparison(
    result_files: list[Path], out: Path, baseline: str | None, options: CostOptions
) -> Path:
    """Write ``out/report.md`` and the charts; returns the report's path."""
    results = [BenchResult.read(path) for path in result_files]
    rows = summary_rows(results, baseline, options)
    out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(results, rows, out)
    report = out / REPORT_NAME
    report.write_text(render_report(results, rows, options, charts))
    log.info("wrote %s and %d charts", report, len(charts))
    return report
