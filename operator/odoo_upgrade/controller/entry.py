"""`odoo-upgrade operator`: run the kopf operator with our handlers, metrics and log redaction.

With `--leader-elect`, kopf starts only once this process holds the Lease (controller/
leadership.py); the other flags become the process's `OperatorSettings` (controller/settings.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import click
import kopf

from odoo_upgrade.controller import leadership, metrics, settings
from odoo_upgrade.controller.kube import load_credentials
from odoo_upgrade.redact import install_log_redaction
from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL

# kopf's Event poster: a logging handler on this logger (handler failures become Events).
KOPF_EVENTS_LOGGER = "kopf.objects"


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
    help="Run without kopf peering (no peering CRD needed); use one replica or --leader-elect.",
)
@click.option(
    "--cluster-scan/--no-cluster-scan",
    default=True,
    show_default=True,
    help="Watch CRDs and namespaces. --no-cluster-scan: take each --namespace as an exact name "
    "and find the CRD once at start, so that RoleBindings in the watched namespaces are all "
    "the operator needs (deploy/namespaced).",
)
@click.option(
    "--leader-elect",
    is_flag=True,
    help=f"Run handlers only while holding the Lease {leadership.LEASE_NAME!r}; run several "
    "replicas, one leads.",
)
@click.option(
    "--leader-election-namespace",
    default=None,
    metavar="NAMESPACE",
    help="Namespace of the Lease (default: the operator's, from its ServiceAccount or "
    "POD_NAMESPACE).",
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
    default=settings.DEFAULT_MAX_MOVER_RETRIES,
    show_default=True,
    help="Transient mover failures retried (with growing delays) before an upgrade fails.",
)
@click.option(
    "--mover-active-deadline-seconds",
    type=int,
    default=settings.DEFAULT_MOVER_ACTIVE_DEADLINE_SECONDS,
    show_default=True,
    help="activeDeadlineSeconds of mover Jobs.",
)
@click.option(
    "--mover-cpu-request",
    default=settings.DEFAULT_MOVER_CPU_REQUEST,
    show_default=True,
    metavar="QUANTITY",
    help="CPU request of the mover container.",
)
@click.option(
    "--mover-memory-request",
    default=settings.DEFAULT_MOVER_MEMORY_REQUEST,
    show_default=True,
    metavar="QUANTITY",
    help="Memory request of the mover container.",
)
@click.option(
    "--mover-cpu-limit",
    default=settings.DEFAULT_MOVER_CPU_LIMIT,
    show_default=True,
    metavar="QUANTITY",
    help="CPU limit of the mover container.",
)
@click.option(
    "--mover-memory-limit",
    default=settings.DEFAULT_MOVER_MEMORY_LIMIT,
    show_default=True,
    metavar="QUANTITY",
    help="Memory limit of the mover container.",
)
@click.option(
    "--database-image",
    default=None,
    metavar="IMAGE",
    help="Image of the dump/restore Jobs (default: the mover image).",
)
def operator_command(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    json_logs: bool,
    liveness: str | None,
    metrics_port: int,
    verbose: bool,
    standalone: bool,
    cluster_scan: bool,
    leader_elect: bool,
    leader_election_namespace: str | None,
    allowed_platform_urls: tuple[str, ...],
    max_mover_retries: int,
    mover_active_deadline_seconds: int,
    mover_cpu_request: str,
    mover_memory_request: str,
    mover_cpu_limit: str,
    mover_memory_limit: str,
    database_image: str | None,
) -> None:
    """Run the Kubernetes operator for OdooUpgrade resources."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either --namespace (one or more) or --all-namespaces")
    if leader_elect and not standalone:
        raise click.UsageError("--leader-elect elects one leader itself: drop --peering")
    try:
        settings.configure(
            settings.OperatorSettings(
                allowed_platform_urls=settings.allowed_urls(allowed_platform_urls),
                max_mover_retries=max_mover_retries,
                mover_active_deadline_seconds=mover_active_deadline_seconds,
                mover_resources=settings.MoverResources(
                    cpu_request=mover_cpu_request,
                    memory_request=mover_memory_request,
                    cpu_limit=mover_cpu_limit,
                    memory_limit=mover_memory_limit,
                ),
                database_image=database_image,
            )
        )
    except settings.SettingError as error:
        raise click.UsageError(str(error)) from None
    lease_namespace = leader_election_namespace or leadership.own_namespace()
    if leader_elect and not lease_namespace:
        raise click.UsageError(
            "--leader-election-namespace is required outside a pod (no ServiceAccount "
            "namespace file, no POD_NAMESPACE)"
        )

    configure_logging(json_logs=json_logs, verbose=verbose)
    metrics.serve(metrics_port)

    from odoo_upgrade.controller import handlers  # registers the handlers with kopf

    del handlers
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.scanning.disabled = not cluster_scan

    async def run_kopf() -> None:
        await kopf.operator(
            clusterwide=all_namespaces,
            namespaces=namespaces,
            standalone=standalone,
            liveness_endpoint=liveness,
            settings=kopf_settings,
        )

    # As kopf.run: a cancelled operator (its signal handling) is a clean exit.
    with contextlib.suppress(asyncio.CancelledError):
        if leader_elect and lease_namespace:
            asyncio.run(lead_then(run_kopf, lease_namespace, liveness))
        else:
            asyncio.run(run_kopf())


async def lead_then(
    run: Callable[[], Awaitable[None]], lease_namespace: str, liveness: str | None
) -> None:
    """Campaign for the Lease with the operator's credentials; `run()` once leading."""
    await load_credentials()
    await leadership.run_as_leader(
        run,
        namespace=lease_namespace,
        identity=leadership.own_identity(),
        liveness_endpoint=liveness,
    )


def configure_logging(*, json_logs: bool, verbose: bool) -> None:
    """kopf's log handler in text or JSON, redacted; kopf's Event poster redacted too."""
    # The operator owns logging: one handler (kopf's), not also the CLI's default one.
    logging.getLogger().handlers.clear()
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL,
        log_prefix=not json_logs,  # "[namespace/name]" before each object's message
    )
    # After kopf.configure: the filter goes on the handlers it installed.
    install_log_redaction()
    install_log_redaction(logging.getLogger(KOPF_EVENTS_LOGGER))
    for noisy in ("aiohttp.access", "kubernetes_asyncio", "httpx", "httpcore", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    operator_command(prog_name="odoo-upgrade operator")
