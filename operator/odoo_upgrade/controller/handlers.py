"""kopf handlers for `OdooUpgrade`: thin wrappers around `controller.driver` and cleanup.

One daemon per resource drives the flow from its status (kopf restarts it after an operator
restart: that is the "resume"); the other handlers log in, configure kopf and clean up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from odoo_upgrade.controller import driver, metrics
from odoo_upgrade.controller.jobs import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    UID_LABEL,
    Owner,
    job_outcome,
)
from odoo_upgrade.controller.kube import ClusterApi, KubeApi, load_credentials
from odoo_upgrade.controller.loop_lag import sample_loop_lag
from odoo_upgrade.controller.movers import MoverJobs
from odoo_upgrade.controller.resource import EventSink, Upgrade
from odoo_upgrade.controller.secret_store import RequestSecretStore
from odoo_upgrade.controller.spec import GROUP, PLURAL, VERSION
from odoo_upgrade.controller.wakeups import Wakeups
from odoo_upgrade.platform.pool import PlatformPool
from odoo_upgrade.redact import forget_secrets, redact

FINALIZER = f"{GROUP}/finalizer"
WORKER_LIMIT = 32
# kopf posts each object's Events from a worker of its own, by default as many at once as
# objects have Events waiting, each on a TLS connection of kopf's unbounded pool: a batch of
# resources moving at once left dozens of idle connections (~128 KiB of buffers each).
EVENT_POSTERS = 8


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """kopf's bookkeeping under our own domain; watches that never hang silently."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Resources applied by the hundred at once (an Argo CD sync) would each get a worker and
    # an API connection of their own at the same moment; a bounded pool keeps the operator's
    # memory flat in their number (each TLS connection holds ~256 KiB of buffers).
    settings.batching.worker_limit = WORKER_LIMIT
    settings.posting.worker_limit = EVENT_POSTERS  # Events of one object stay in order
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "odoo-upgrade-operator"
    settings.posting.event_name_prefix = "odoo-upgrade-"


@kopf.on.login()
async def log_in(**_: Any) -> kopf.ConnectionInfo:
    """kopf and our client use one set of credentials (in-cluster, else KUBECONFIG)."""
    found = await load_credentials()
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=found.ca_path,
        insecure=found.insecure,
        scheme="Bearer" if found.token else None,
        token=found.token,
        certificate_path=found.certificate_path,
        private_key_path=found.private_key_path,
        proxy_url=found.proxy_url,
    )


@kopf.on.startup()
async def start_operator(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_settings(settings)
    await load_credentials()
    memo["kube"] = KubeApi()
    memo["platforms"] = PlatformPool()
    memo["wakeups"] = Wakeups()
    memo["loop_lag"] = asyncio.create_task(sample_loop_lag(), name="event loop lag")


@kopf.on.cleanup()
async def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    sampler = memo.get("loop_lag")
    if isinstance(sampler, asyncio.Task):
        sampler.cancel()
    kube = memo.get("kube")
    if isinstance(kube, KubeApi):
        await kube.close()
    platforms = memo.get("platforms")
    if isinstance(platforms, PlatformPool):
        await platforms.aclose()


def event_sink(body: kopf.Body) -> EventSink:
    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=redact(message))

    return post


@kopf.daemon(GROUP, VERSION, PLURAL, id="flow", backoff=10, cancellation_timeout=10.0)
async def drive_upgrade(
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """Run the flow of one OdooUpgrade until it is Succeeded or Failed."""
    upgrade = Upgrade(
        memo["kube"],
        namespace or "",
        name,
        uid,
        event_sink(body),
        platforms=memo["platforms"],
        live=body,
    )
    wakeups: Wakeups = memo["wakeups"]
    # Errors are retried inside the driver with backoff; the daemon ends only when the
    # upgrade is final or kopf stops it (deletion, shutdown).
    try:
        await driver.run(upgrade, stopped=lambda: bool(stopped), wake=wakeups.event_for(uid))
    finally:
        wakeups.forget(uid)


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY_LABEL: MANAGED_BY}, id="mover-jobs")
async def mover_job_changed(
    type: str | None, body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A mover Job ended or went away: its resource's flow looks at once (the many status
    updates of a running Job wake nobody: the flow looks at those on its own, now and then)."""
    uid = labels.get(UID_LABEL)
    wakeups = memo.get("wakeups")
    if not uid or not isinstance(wakeups, Wakeups):
        return
    if type == "DELETED" or job_outcome(body).finished:
        wakeups.wake(uid)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="children")
async def remove_children(
    name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """Remove the mover Jobs and the request Secret now (garbage collection would, later).

    Dumps on volumes are never touched: they belong to the user.
    """
    await delete_children(memo["kube"], Owner(name, namespace or "", uid))
    metrics.record_phase(uid, None)
    forget_secrets(uid)


async def delete_children(kube: ClusterApi, owner: Owner) -> None:
    """Delete this resource's mover Jobs and request Secret (only if they are its own)."""
    await MoverJobs(kube, owner).delete_all()
    await RequestSecretStore(kube, owner).delete()
