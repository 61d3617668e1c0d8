"""One way to drive a mover Job through a step, whatever its direction.

Start the Job if there is none, report its progress while it runs, take its result when it
ends: success goes to the step's own handler, a transient failure is retried with growing
delays up to `--max-mover-retries`, anything else fails the upgrade with the mover's reason.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller import settings
from odoo_upgrade.controller.movers import MoverJob
from odoo_upgrade.controller.outcomes import Again, StepResult
from odoo_upgrade.controller.reporting import fail
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.spec import UpgradeSpec, VolumePath
from odoo_upgrade.controller.status import seconds_since
from odoo_upgrade.platform.retry import RetryPolicy
from odoo_upgrade.request import secret_keys
from odoo_upgrade.request.mover_result import (
    DESTINATION_EXISTS,
    MOVER_CRASHED,
    NO_RESULT,
    Direction,
    MoverResult,
)
from odoo_upgrade.request.progress import progress_text
from odoo_upgrade.request.transport import Transport


@dataclass(frozen=True)
class MoverStep:
    """How one direction shows in status: its condition, phase and status field."""

    direction: Direction
    condition: str
    phase: str
    status_field: str
    verb: str  # "uploading", for messages
    # Where the Job writes a new file (never over an existing one), for DestinationExists.
    output: Callable[[UpgradeSpec], tuple[str, VolumePath]] | None = None

    @property
    def started_event(self) -> str:
        return f"{self.direction.value.capitalize()}Started"


UPLOAD = MoverStep(Direction.UPLOAD, cond.UPLOADED, cond.UPLOADING, "upload", "uploading")
DOWNLOAD = MoverStep(
    Direction.DOWNLOAD,
    cond.DOWNLOADED,
    cond.DOWNLOADING,
    "download",
    "downloading",
    output=lambda spec: (
        "destination directory" if spec.downloads_a_directory else "destination file",
        spec.destination,
    ),
)

OnSuccess = Callable[[MoverResult], Awaitable[StepResult]]
# A step's own answer to a failure (e.g. wait until the user fixes it); None: the usual one.
OnFailure = Callable[[MoverJob, MoverResult], Awaitable[StepResult | None]]


# How often a running mover Job is looked at (progress, a stuck pod): 10 s after it starts,
# then ever less often, up to once a minute: a long transfer's progress needs no more, and a
# thousand resources moving at once must not poll the API server flat. Its end wakes the flow
# at once when the operator watches Jobs (controller.wakeups); this bounds the wait otherwise.
FIRST_LOOK_SECONDS = 10.0
LOOK_AT_MOST_EVERY = 60.0


def job_check_interval(spec: UpgradeSpec, looks: int = 0) -> float:
    """How long to wait before looking at a running mover Job again (after `looks` looks)."""
    interval = min(LOOK_AT_MOST_EVERY, FIRST_LOOK_SECONDS * 2.0**looks)
    return max(2.0, min(spec.poll_interval * 2.0**looks, interval))


async def drive_mover(
    upgrade: Upgrade,
    spec: UpgradeSpec,
    step: MoverStep,
    on_success: OnSuccess,
    *,
    started: dict[str, Any],
    before_start: Callable[[], Awaitable[None]] | None = None,
    on_failure: OnFailure | None = None,
    transport: Transport | None = None,
) -> StepResult:
    """Start, watch or conclude the step's mover Job (`started`: status fields at start;
    `transport`: the one the flow chose for the Job, where it chooses)."""
    # The start is recorded before the Job is created, so a step whose status has no
    # `startedAt` never had a Job: it is created without a read first.
    mover = None
    if (upgrade.status.get(step.status_field) or {}).get("startedAt"):
        mover = await upgrade.movers.find(step.direction)
    if mover is None:
        if before_start is not None:
            await before_start()
        upgrade.job_looks = 0
        message = await record_start(upgrade, step, started)
        if await upgrade.movers.start(spec, step.direction, transport=transport):
            upgrade.event("Normal", step.started_event, message)
            return Again(job_check_interval(spec))
        # A namesake all the same: another object's (JobConflict), one being deleted
        # (waited out), or ours, made by an operator that recorded its start only after.
        mover = await upgrade.movers.find(step.direction)
        if mover is None:
            return Again(2.0)  # deleted between the two calls
    outcome = mover.outcome
    if not outcome.finished:
        await report_running(upgrade, spec, step, mover)
        upgrade.job_looks += 1
        return Again(job_check_interval(spec, upgrade.job_looks))
    result = mover.result
    await record_host_key(upgrade, spec, result)
    if outcome.succeeded and result.succeeded:
        if upgrade.status.get("moverRetries"):
            await upgrade.patch_status(moverRetries=None)
        return await on_success(result)
    if result.reason in (NO_RESULT, MOVER_CRASHED) and (mover.problem or outcome.reason):
        # The pod died without its own word: what the kubelet or Job controller saw is better.
        why = mover.problem or f"{outcome.reason}: {outcome.message}".rstrip(": ")
        result = MoverResult.failure(
            (mover.problem or outcome.reason).split(":")[0], why, transient=True
        )
    if on_failure is not None and (handled := await on_failure(mover, result)) is not None:
        return handled
    return await mover_failed(upgrade, spec, step, mover, result)


async def record_start(upgrade: Upgrade, step: MoverStep, started: dict[str, Any]) -> str:
    """The status of a mover Job about to be created; the message saying so."""
    name = upgrade.movers.name(step.direction)
    message = f'{step.direction.value} Job "{name}" started'
    shown = [(step.condition, cond.UNKNOWN, step.verb.capitalize(), message)]
    if step.condition == cond.READY and upgrade.status.get("moverRetries"):
        shown = []  # a retried check keeps Ready=False saying what it waits for
    await upgrade.patch_status(
        phase=step.phase,
        conditions=shown,
        message=message,
        **{step.status_field: {"startedAt": cond.now_rfc3339(), **started}},
    )
    return message


async def report_running(
    upgrade: Upgrade, spec: UpgradeSpec, step: MoverStep, mover: MoverJob
) -> None:
    """Best effort, throttled: bytes from the mover's last progress line; a stuck pod's
    reason in the condition."""
    problem = mover.problem
    current = cond.find_condition(upgrade.conditions, step.condition) or {}
    if problem and problem not in str(current.get("message")):
        message = f"{step.direction.value} Job waiting: {problem}"
        await upgrade.patch_status(
            conditions=[(step.condition, cond.UNKNOWN, problem.split(":")[0], message)],
            message=message,
        )
    if time.monotonic() - upgrade.last_progress_probe < max(2.0, min(spec.poll_interval, 10.0)):
        return
    upgrade.last_progress_probe = time.monotonic()
    line = await upgrade.movers.progress(mover)
    if line is None:
        return
    shown = dict(upgrade.status.get(step.status_field) or {})
    if shown.get("bytesDone") == line.done and shown.get("bytesTotal") == line.total:
        return
    fields: dict[str, Any] = {"bytesDone": line.done}
    if line.total:
        fields["bytesTotal"] = line.total
    changes: dict[str, Any] = {step.status_field: fields}
    await upgrade.patch_status(progress=progress_text(line.done, line.total), **changes)


async def record_host_key(upgrade: Upgrade, spec: UpgradeSpec, result: MoverResult) -> None:
    """Pin the SFTP host key a mover trusted on first use, for every later attempt."""
    if not result.host_key or spec.sftp_host_key:
        return
    stored = await upgrade.stored_request()
    if stored is None or stored.sftp_host_key:
        return
    await upgrade.write_secret({secret_keys.SFTP_HOST_KEY: result.host_key})
    upgrade.event("Normal", "SftpHostKeyRecorded", "SFTP host key recorded on first use")


def retry_delay(retries: int) -> float:
    """Seconds between a failed mover attempt and the next: 5 s, 10 s, 20 s … 5 min."""
    base = settings.current().mover_retry_base_seconds
    return RetryPolicy(base_delay=base, max_delay=60 * base, jitter=False).delay_before(retries + 2)


def failed_at(mover: MoverJob) -> str | None:
    """When the Job failed (its Failed condition's transition), if it says."""
    for condition in (mover.job.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") in ("Failed", "FailureTarget")
            and condition.get("status") == "True"
        ):
            return str(condition.get("lastTransitionTime") or "") or None
    return None


async def retry_later(
    upgrade: Upgrade,
    step: MoverStep,
    mover: MoverJob,
    result: MoverResult,
    *,
    limit: int | None,
) -> StepResult:
    """Say why (once), keep the failed Job until the next attempt is due, then delete it so
    that the next pass starts a fresh one. Deleting it only then keeps the Job watch from
    waking the flow into an immediate retry. With a `limit`, the upgrade fails beyond it;
    without, the flow waits as long as it takes (a fix only the user can make)."""
    reason = result.reason.replace(":", "") or "Failed"
    retries = int(upgrade.status.get("moverRetries") or 0)
    if limit is not None and retries >= limit:
        message = f"{result.error} (still failing after {retries} retries)"
        return await fail(upgrade, reason, message, condition_type=step.condition)
    delay = retry_delay(retries)
    message = result.error or reason
    if limit is not None:
        message += f"; retry {retries + 1} of {limit} in {delay:.0f}s"
    shown = cond.find_condition(upgrade.conditions, cond.READY) or {}
    if shown.get("reason") != reason or shown.get("message") != message:
        changes = [(cond.READY, cond.FALSE, reason, message)]
        if step.condition != cond.READY:
            changes.insert(0, (step.condition, cond.FALSE, reason, message))
        await upgrade.patch_status(conditions=changes, progress=None, message=message)
        upgrade.event("Warning", reason, message)
    waited = seconds_since(failed_at(mover))
    if waited is not None and waited < delay:
        return Again(delay - waited)
    await upgrade.patch_status(moverRetries=retries + 1)
    await upgrade.movers.delete(step.direction)
    return Again(2.0)  # the deleted Job may linger a moment; drive_mover waits for it


async def mover_failed(
    upgrade: Upgrade, spec: UpgradeSpec, step: MoverStep, mover: MoverJob, result: MoverResult
) -> StepResult:
    """Retry what may pass (the mover says so), fail for what will not."""
    if result.transient:
        return await retry_later(
            upgrade, step, mover, result, limit=settings.current().max_mover_retries
        )
    if result.reason == DESTINATION_EXISTS and step.output is not None:
        what, output = step.output(spec)
        message = (
            f'{what} already exists, not overwritten: "{output.path}" on '
            f'PersistentVolumeClaim "{output.claim_name}"'
        )
        return await fail(upgrade, DESTINATION_EXISTS, message, condition_type=step.condition)
    return await fail(
        upgrade,
        result.reason.replace(":", ""),
        result.error,
        condition_type=step.condition,
        failures=result.failures or None,
    )
