"""`odoo-upgrade operator`: run the kopf operator with our handlers, metrics and log redaction."""

from __future__ import annotations

import logging

import click
import kopf

from odoo_upgrade.controller import metrics, settings
from odoo_upgrade.redact import install_log_redaction
from odoo_upgrade.request.allowlist import check_allowed_url
from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL


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
@click.option(
    "--allowed-platform-url",
    "allowed_platform_urls",
    multiple=True,
    default=(DEFAULT_PLATFORM_URL,),
    show_default=True,
    metavar="URL",
    help="A platform URL this operator may contact (scheme, host and port exactly; path "
    "prefix); repeat for several. Resources naming another URL wait, uncontacted.",
)
@click.option(
    "--max-mover-retries",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Transient mover failures retried (with growing delays) before an upgrade fails.",
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
    allowed_platform_urls: tuple[str, ...],
    max_mover_retries: int,
    verbose: bool,
    standalone: bool,
) -> None:
    """Run the Kubernetes operator for OdooUpgrade resources."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either --namespace (one or more) or --all-namespaces")
    try:
        allowed = tuple(check_allowed_url(url) for url in allowed_platform_urls)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--allowed-platform-url") from None
    settings.configure(
        settings.OperatorSettings(
            allowed_platform_urls=allowed, max_mover_retries=max_mover_retries
        )
    )
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
