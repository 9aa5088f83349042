"""``lipsync operator``: print the CRD, run the operator."""

from __future__ import annotations

import click


@click.group()
def operator() -> None:
    """The LipSyncModel operator and its CRD."""


@operator.command()
def crd() -> None:
    """Print the lipsyncmodels.lipsync.dev CRD (the file in crds/ is this output)."""
    from lipsync_core.api.crd import crd_yaml

    click.echo(crd_yaml(), nl=False)


@operator.command()
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable; globs allowed). Default: the whole cluster.",
)
@click.option(
    "--peering",
    default="lipsync-operator",
    show_default=True,
    help="Kopf peering name: replicas with one name never act at once.",
)
@click.option("--standalone", is_flag=True, help="No peering (single replica, or local runs).")
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint URL ('' for none).",
)
def run(namespaces: tuple[str, ...], peering: str, standalone: bool, liveness: str) -> None:
    """Run the operator in this process (in-cluster or with the current kubeconfig)."""
    from lipsync_operator.runner import run_operator

    run_operator(
        namespaces=list(namespaces),
        peering=peering,
        standalone=standalone,
        liveness=liveness or None,
    )
