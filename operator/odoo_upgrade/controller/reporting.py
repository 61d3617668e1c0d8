"""How the flow reports a final failure or a wait: conditions, phase, message, an Event."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller.outcomes import FINISHED, Finished, Waiting
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.status import failures_status, platform_text
from odoo_upgrade.platform import Failure, PlatformFailure
from odoo_upgrade.redact import forget_secrets

logger = logging.getLogger("odoo_upgrade.controller.flow")


async def fail(
    upgrade: Upgrade,
    reason: str,
    message: str,
    *,
    condition_type: str | None = None,
    failures: list[Failure] | list[dict[str, Any]] | None = None,
) -> Finished:
    """Failed for good: Ready=False with the reason, the step's condition too, an Event."""
    message = platform_text(message)
    changes = [(cond.READY, cond.FALSE, reason, message)]
    if condition_type and condition_type != cond.READY:
        changes.insert(0, (condition_type, cond.FALSE, reason, message))
    extra: dict[str, Any] = {"progress": None, "message": message}
    if failures is not None:
        extra["failures"] = failures_status(failures)
    await upgrade.patch_status(phase=cond.FAILED, conditions=changes, **extra)
    upgrade.event("Warning", reason, message)
    logger.warning("%s/%s failed: %s", upgrade.namespace, upgrade.name, message)
    forget_secrets(upgrade.uid)
    return FINISHED


async def fail_refused(
    upgrade: Upgrade, failure: PlatformFailure, reason: str, condition_type: str, what: str
) -> Finished:
    """Failed because the platform said no: its failures, as sent, in status and conditions."""
    return await fail(
        upgrade,
        reason,
        f"the platform refused {what}: " + "; ".join(f.describe() for f in failure.failures),
        condition_type=condition_type,
        failures=failure.failures,
    )


async def wait_for(
    upgrade: Upgrade, reason: str, message: str, *, phase: str | None = None
) -> NoReturn:
    """Record (once) why the flow waits: Ready=False naming the missing object; an Event.

    Always raises `Waiting`: the pass ends here and the next one looks again."""
    ready = cond.find_condition(upgrade.conditions, cond.READY)
    unchanged = (
        ready is not None and ready.get("reason") == reason and ready.get("message") == message
    )
    if not unchanged:
        await upgrade.patch_status(
            phase=phase, conditions=[(cond.READY, cond.FALSE, reason, message)], message=message
        )
        upgrade.event("Warning", reason, message)
    raise Waiting(message)
