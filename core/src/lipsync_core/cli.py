"""The ``lipsync`` command. Each installed component adds subcommands through the
``lipsync.commands`` entry-point group, so one image carries only the commands it needs."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Real-time lip-sync serving: reference model, engine builder, server, benchmarks."""
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register_components() -> None:
    for entry in sorted(entry_points(group="lipsync.commands"), key=lambda e: e.name):
        try:
            command = entry.load()
        except ImportError as exc:  # a broken optional component must not take the CLI down
            logging.getLogger(__name__).warning("lipsync %s unavailable: %s", entry.name, exc)
            continue
        if isinstance(command, click.Command):
            cli.add_command(command, entry.name)


def main() -> None:
    _register_components()
    cli()
