"""The ``lipsync`` command. Each installed component adds subcommands through the
``lipsync.commands`` entry-point group, so one image carries only the commands it needs."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

import click


class _ComponentGroup(click.Group):
    """Loads a component's command only when it is invoked (or listed by ``--help``), so one
    command does not pay for importing every other component."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_component_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        entry = _component_entry_points().get(cmd_name)
        if command is not None or entry is None:
            return command
        try:
            loaded = entry.load()
        except ImportError as exc:  # a broken optional component must not take the CLI down
            logging.getLogger(__name__).warning("lipsync %s unavailable: %s", cmd_name, exc)
            return None
        if not isinstance(loaded, click.Command):
            return None
        self.add_command(loaded, cmd_name)
        return loaded


def _component_entry_points() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group="lipsync.commands")}


@click.group(
    cls=_ComponentGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="lipsync-contract", prog_name="lipsync")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Real-time lip-sync serving: reference model, engine builder, server, benchmarks."""
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli()
