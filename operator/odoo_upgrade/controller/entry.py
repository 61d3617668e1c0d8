"""`odoo-upgrade operator`: run the kopf operator with our handlers, metrics and log redaction."""

from __future__ import annotations

import logging

import click
import kopf

from odoo_upgrade.controller import metrics
from odoo_upgrade.redact import install_log_redaction


@click.command("operator")
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Namespace (or glob pattern) to watch; repeat for several.",
)
@click.option(
    "--all-namespaces",
    "-A",
    "all_namespaces",
    is_flag=True,
    help="Watch OdooUpgrade resources in every namespace.",
)
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@click.option(
    "--liveness",
    "liveness",
    default=None,
    metavar="URL",
    help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=9090,
    show_default=True,
    help="Port of the Prometheus /metrics endpoint (0 disables it).",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option(
    "--standalone/--peering",
    default=True,
    show_default=True,
    help="Run without kopf peering (no peering CRD needed); use one replica.",
)
def operator_command(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    json_logs: bool,
    liveness: str | None,
    metrics_port: int,
    verbose: bool,
    standalone: bool,
) -> None:
    """Run the Kubernetes operator for OdooUpgrade resources."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either --namespace (one or more) or --all-namespaces")
    # The operator owns logging: one handler (kopf's), not also the CLI's default one.
    logging.getLogger().handlers.clear()
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL,
        log_prefix=not json_logs,  # "[namespace/name]" before each object's message
    )
    # After kopf.configure: the filter goes on the handlers it installed.
    install_log_redaction()
    for noisy in ("aiohttp.access", "kubernetes_asyncio", "httpx", "httpcore", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    metrics.serve(metrics_port)

    from odoo_upgrade.controller import handlers  # registers the handlers with kopf

    del handlers
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespaces,
        standalone=standalone,
        liveness_endpoint=liveness,
    )


if __name__ == "__main__":
    operator_command(prog_name="odoo-upgrade operator")
