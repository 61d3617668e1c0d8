"""Drives one upgrade pass after pass until it is final or the operator stops driving it.

A pass is shielded from cancellation: a `create` answer must reach the Secret even when the
operator is asked to stop at that moment. Transient errors (platform or API server) are
retried here with bounded, jittered backoff; permanent platform failures fail the upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import kopf

from odoo_upgrade.controller.flow import reconcile
from odoo_upgrade.controller.outcomes import Finished
from odoo_upgrade.controller.reporting import fail
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.wakeups import sleep_or_wake
from odoo_upgrade.platform import PlatformError, PlatformFailure, RetryPolicy
from odoo_upgrade.redact import redact, secrets_owned_by

logger = logging.getLogger("odoo_upgrade.controller.flow")

# Backoff of passes that failed in a row (platform away, API server away): up to 5 minutes.
PASS_RETRY = RetryPolicy(attempts=1_000_000, base_delay=1.0, max_delay=300.0)


async def run(
    upgrade: Upgrade, stopped: Callable[[], bool], wake: asyncio.Event | None = None
) -> None:
    """Run passes of the flow; every secret registered meanwhile belongs to this resource.

    `wake` cuts a wait short (a mover Job of this resource changed)."""
    with secrets_owned_by(upgrade.uid):
        await _run(upgrade, stopped, wake)


async def _run(upgrade: Upgrade, stopped: Callable[[], bool], wake: asyncio.Event | None) -> None:
    troubles = 0  # consecutive passes that failed, for the backoff only
    while not stopped():
        try:
            result = await asyncio.shield(reconcile(upgrade))
            troubles = 0
            if isinstance(result, Finished):
                return
            delay = result.after
        except kopf.TemporaryError as waiting:  # `Waiting`: something outside must change
            delay = waiting.delay if waiting.delay is not None else upgrade.waiting_interval()
        except PlatformError as error:
            if not error.transient:
                failures = error.failures if isinstance(error, PlatformFailure) else None
                await fail(upgrade, "PlatformError", str(error), failures=failures)
                return
            troubles += 1
            delay = PASS_RETRY.delay_before(troubles + 1)
            upgrade.event("Warning", "PlatformUnavailable", f"{error}; retrying in {delay:.0f}s")
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as error:  # API server away, conflicts...: the next pass starts afresh
            troubles += 1
            delay = PASS_RETRY.delay_before(troubles + 1)
            logger.warning(
                "%s/%s: pass failed, retrying in %.0fs: %s",
                upgrade.namespace,
                upgrade.name,
                delay,
                redact(f"{type(error).__name__}: {error}"),
            )
        await sleep_or_wake(max(0.0, delay), wake)
