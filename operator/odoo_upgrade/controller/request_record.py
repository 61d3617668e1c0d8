"""Where a created request lives: stored in the request Secret first, then its id in status,
retried until both stick (a request the platform made must never be forgotten), and read back
by every later step."""

from __future__ import annotations

import asyncio
import itertools
import logging

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller.jobs import request_secret_name
from odoo_upgrade.controller.kube import NotFound
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.platform import RetryPolicy
from odoo_upgrade.redact import redact
from odoo_upgrade.request.platform import CreatedRequest, RequestRef
from odoo_upgrade.request.stored import StoredRequest

logger = logging.getLogger("odoo_upgrade.controller.flow")

# Retries of the Secret write that must follow a `create`: 1 s, 2 s … 30 s, until stored.
SAVE_RETRY = RetryPolicy(attempts=1_000_000, base_delay=1.0, max_delay=30.0, jitter=False)


class RequestLost(Exception):
    """The request Secret holding the request's key is gone: it cannot be continued."""


async def save_request(upgrade: Upgrade, created: CreatedRequest) -> None:
    """Store the new request in the Secret, then its id in status, retrying until both stick
    or the resource is gone (an API server outage right after `create` must not lose it)."""
    request_id = created.ref.request_id
    for attempt in itertools.count(1):
        try:
            await upgrade.write_secret(created.secret_values)
            await record_request(upgrade, request_id, adopted=False)
            return
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as error:
            if await resource_gone(upgrade):
                logger.error(
                    "%s/%s was deleted while request %s was stored; it stays on the platform",
                    upgrade.namespace,
                    upgrade.name,
                    request_id,
                )
                return
            note = (
                f"request {request_id} created; storing it in Secret "
                f'"{request_secret_name(upgrade.name)}" failed (attempt {attempt}): '
                f"{redact(str(error))}; retrying"
            )
            logger.warning("%s/%s: %s", upgrade.namespace, upgrade.name, note)
            try:
                await upgrade.patch_status(
                    conditions=[(cond.REQUEST_CREATED, cond.UNKNOWN, "StoringRequest", note)]
                )
            except Exception:  # the API server may be away: the next attempt says it again
                logger.debug("status not updated", exc_info=True)
            await asyncio.sleep(SAVE_RETRY.delay_before(attempt + 1))


async def resource_gone(upgrade: Upgrade) -> bool:
    try:
        current = await upgrade.kube.get_upgrade(upgrade.namespace, upgrade.name)
    except NotFound:
        return True
    except Exception:
        return False
    return (current.get("metadata") or {}).get("uid") != upgrade.uid


async def record_request(upgrade: Upgrade, request_id: int, *, adopted: bool) -> None:
    """Status says the request exists: from now on it is never created again."""
    message = f"upgrade request {request_id} {'adopted from Secret' if adopted else 'created'}"
    await upgrade.patch_status(
        phase=cond.UPLOADING,
        requestId=request_id,
        requestSecretRef={"name": request_secret_name(upgrade.name)},
        failures=None,
        conditions=[(cond.REQUEST_CREATED, cond.TRUE, "RequestCreated", message)],
        message=message,
    )
    upgrade.event("Normal", "RequestCreated", message)


async def stored_request(upgrade: Upgrade) -> StoredRequest:
    """The request of this resource, as stored; `RequestLost` when its Secret is gone."""
    stored = await upgrade.stored_request()
    if stored is None:
        raise RequestLost(
            f'Secret "{request_secret_name(upgrade.name)}" holding the key of request '
            f"{upgrade.request_id} is gone; the request cannot be continued"
        )
    return stored


def ref_of(stored: StoredRequest) -> RequestRef:
    return RequestRef(stored.request_id, stored.key, stored.assigned_host)
