"""``lipsync gateway``: a WebRTC front for a lip-sync server or Service."""

from __future__ import annotations

import click

from lipsync_gateway import DEFAULT_LATENCY_BUDGET_MS
from lipsync_server.channels import ChannelSecurity, security_options


@click.command()
@click.option("--target", required=True, help="HOST:PORT of the server or Service (gRPC).")
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--latency-budget-ms",
    default=DEFAULT_LATENCY_BUDGET_MS,
    show_default=True,
    type=click.IntRange(0, 60_000),
    help="A frame not ready this long after its speech is skipped (0: never skip).",
)
@security_options
def gateway(
    *, target: str, http_port: int, host: str, latency_budget_ms: int, security: ChannelSecurity
) -> None:
    """Serve the page and WebRTC sessions: a microphone in, the avatar's video and voice out."""
    from aiohttp import web

    from lipsync_gateway.app import make_app

    click.echo(f"gateway for {target} on http://{host}:{http_port}/")
    app = make_app(target, security, latency_budget_ms)
    web.run_app(app, host=host, port=http_port, print=None)
