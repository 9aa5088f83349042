"""``lipsync operator``: print the CRD, run the operator."""

from __future__ import annotations

import click


@click.group()
def operator() -> None:
    """The LipSyncModel operator and its CRD."""


@operator.command()
def crd() -> None:
    """Print the lipsyncmodels.lipsync.dev CRD (the file in crds/ is this output)."""
    from lipsync_contract.api.crd import crd_yaml

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
    "--leader-election-lease",
    "lease",
    default="",
    help="Lease that replicas compete for; only its holder acts. Empty: no election (one replica).",
)
@click.option(
    "--leader-election-namespace",
    "lease_namespace",
    envvar="POD_NAMESPACE",
    default="default",
    show_default=True,
    help="Namespace of the Lease (default: $POD_NAMESPACE).",
)
@click.option(
    "--identity",
    envvar="POD_NAME",
    default="",
    help="This replica's name in the Lease (default: $POD_NAME, else the host name).",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint URL ('' for none); served while waiting for the Lease too.",
)
def run(
    namespaces: tuple[str, ...], lease: str, lease_namespace: str, identity: str, liveness: str
) -> None:
    """Run the operator in this process (in-cluster or with the current kubeconfig)."""
    import socket

    from lipsync_operator.health import parse_endpoint
    from lipsync_operator.leader import ElectionSettings
    from lipsync_operator.runner import run_operator

    if liveness:
        try:
            parse_endpoint(liveness)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--liveness") from None
    election = None
    if lease:
        election = ElectionSettings(
            lease_name=lease, namespace=lease_namespace, identity=identity or socket.gethostname()
        )
    run_operator(namespaces=list(namespaces), election=election, liveness=liveness or None)
