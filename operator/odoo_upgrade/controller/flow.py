"""The flow of one `OdooUpgrade` (DESIGN.md §4), one named function per step, in order.

Every pass reads the resource afresh and decides the next step from `.status` alone
(`request.steps.next_step`), so a restarted operator continues where the last one stopped: a
request id in status or in the request Secret means "never create again", an intent to create
without an id means "the outcome is unknown, never create again", an existing mover Job is
adopted, not duplicated. Each step persists what it did before the next one may start.

    validate_prerequisites -> [check_databases -> dump_source_database] -> create_request
        -> upload_dump -> start_processing -> poll_platform -> download_dump
        -> [restore_upgraded_dump] -> succeed

The bracketed steps (with spec.source.database / spec.restore) live in `database_steps`.

Steps return `Again(after=…)` or `FINISHED` (controller.outcomes).
"""

from __future__ import annotations

import logging
import time

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller import metrics
from odoo_upgrade.controller.database_steps import DATABASE_STEPS
from odoo_upgrade.controller.mover_steps import DOWNLOAD, UPLOAD, drive_mover
from odoo_upgrade.controller.movers import JobConflict
from odoo_upgrade.controller.outcomes import FINISHED, NOW, Again, StepResult
from odoo_upgrade.controller.prerequisites import (
    not_allowed_message,
    revalidate_unless_fresh,
    validate_prerequisites,
)
from odoo_upgrade.controller.reporting import fail, fail_refused, wait_for
from odoo_upgrade.controller.request_record import (
    RequestLost,
    record_request,
    ref_of,
    save_request,
    stored_request,
)
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.secret_store import SecretConflict
from odoo_upgrade.controller.sftp_access import grant_sftp_download, grant_sftp_upload
from odoo_upgrade.controller.spec import SpecError, UpgradeSpec, parse_spec
from odoo_upgrade.controller.status import (
    downloaded_set_status,
    downloaded_status,
    dumped_bytes,
    log_progress,
    platform_status,
    platform_text,
    seconds_since,
    uploaded_status,
)
from odoo_upgrade.platform import PlatformError, PlatformFailure
from odoo_upgrade.platform.errors import platform_surely_did_not_act
from odoo_upgrade.redact import forget_secrets
from odoo_upgrade.request.allowlist import UrlNotAllowed
from odoo_upgrade.request.mover_result import MoverResult
from odoo_upgrade.request.platform import (
    RequestOrder,
    RequestRef,
    serves_log,
    states_of,
)
from odoo_upgrade.request.progress import format_bytes
from odoo_upgrade.request.states import StateClass, failure_report
from odoo_upgrade.request.steps import Progress, Step, next_step
from odoo_upgrade.request.transport import Transport, download_transport

logger = logging.getLogger(__name__)


# -- 1. validate: controller.prerequisites.validate_prerequisites --------------------------


# -- 2. create -----------------------------------------------------------------------------


async def create_request(upgrade: Upgrade, spec: UpgradeSpec, contract: str) -> StepResult:
    """Call `create` at most once, ever: the intent is recorded first, the answer stored
    in the Secret before anything else. A Secret holding a request (a crash between Secret and
    status) is adopted; an intent without a request means the outcome is unknown."""
    stored = await upgrade.stored_request()
    if stored is not None:
        await record_request(upgrade, stored.request_id, adopted=True)
        return NOW
    if upgrade.status.get("createAttemptedAt"):
        return await create_outcome_unknown(upgrade, spec, "the operator stopped while it waited")
    message = f"creating an upgrade request to {spec.target} on {spec.platform_url}"
    await upgrade.patch_status(
        phase=cond.CREATING,
        createAttemptedAt=cond.now_rfc3339(),
        conditions=[(cond.REQUEST_CREATED, cond.UNKNOWN, "Creating", message)],
        message=message,
    )
    order = RequestOrder(
        contract=contract,
        email=spec.email,
        target=spec.target,
        aim=spec.aim,
        filename=spec.filename,
        timezone=spec.timezone,
        env_vars=spec.platform_env,
    )
    try:
        created = await upgrade.platform_call(spec, "create", lambda p: p.create(order))
    except PlatformFailure as failure:
        if failure.transient:
            await upgrade.patch_status(createAttemptedAt=None)
            raise
        return await fail_refused(
            upgrade, failure, "RequestRefused", cond.REQUEST_CREATED, "the request"
        )
    except PlatformError as error:
        if platform_surely_did_not_act(error):
            await upgrade.patch_status(createAttemptedAt=None)  # no request: safe to try again
            raise
        return await create_outcome_unknown(upgrade, spec, f"the answer was lost ({error})")
    await save_request(upgrade, created)
    if created.info:  # a warning the platform wants shown (a production request, ...)
        upgrade.event("Normal", "PlatformNotice", platform_text(created.info))
    return NOW


async def create_outcome_unknown(upgrade: Upgrade, spec: UpgradeSpec, why: str) -> StepResult:
    """A `create` may have opened (and billed) a request whose id never reached us."""
    return await fail(
        upgrade,
        "CreateOutcomeUnknown",
        f"`create` was sent to {spec.platform_url} but {why}: a request may exist on the "
        f"platform. Not creating another one. Check the platform (or its email to {spec.email}) "
        "for a request of this resource; to start over, delete and re-apply the OdooUpgrade",
        condition_type=cond.REQUEST_CREATED,
    )


# -- 3. upload -----------------------------------------------------------------------------


async def upload_dump(upgrade: Upgrade, spec: UpgradeSpec) -> StepResult:
    """The upload Job streams the dump from the source PVC (SFTP access granted first)."""
    stored = await stored_request(upgrade)

    async def prepare() -> None:
        await revalidate_unless_fresh(upgrade, spec)  # `create` may just have found them
        if spec.needs_sftp_access(dumped_bytes(upgrade.status)) and stored.sftp_access is None:
            await grant_sftp_upload(upgrade, spec, stored)

    async def uploaded(result: MoverResult) -> StepResult:
        message = f"uploaded {format_bytes(result.bytes or 0)} over {result.transport}"
        metrics.BYTES_MOVED.labels(direction="upload").inc(result.bytes or 0)
        await upgrade.patch_status(
            phase=cond.PROCESSING,
            upload=uploaded_status(result, spec.transport),
            conditions=[(cond.UPLOADED, cond.TRUE, "Uploaded", message)],
            progress=None,
            message=message,
        )
        upgrade.event("Normal", "Uploaded", message)
        return NOW

    return await drive_mover(
        upgrade,
        spec,
        UPLOAD,
        uploaded,
        started={"transport": spec.transport, "completedAt": None},
        before_start=prepare,
    )


# -- 4. process ----------------------------------------------------------------------------


async def start_processing(upgrade: Upgrade, spec: UpgradeSpec) -> StepResult:
    """Call `process` once. The intent is recorded first; after a crash that left it, the
    platform's state tells whether the call got through."""
    ref = ref_of(await stored_request(upgrade))
    needed = True
    if upgrade.status.get("processRequestedAt"):
        current = await upgrade.platform_call(spec, "status", lambda p: p.status(ref))
        needed = current.state_class is StateClass.AWAITING_DUMP
    facts = {}
    # The first poll is due a pollInterval after `process`, not after the patch that follows
    # it: a loaded API server took seconds for it and made every first poll that much late.
    asked = time.monotonic()
    if needed:
        await upgrade.patch_status(processRequestedAt=cond.now_rfc3339())
        asked = time.monotonic()
        try:
            facts = await upgrade.platform_call(spec, "process", lambda p: p.process(ref))
        except PlatformFailure as failure:
            if failure.transient:
                raise
            return await fail_refused(
                upgrade, failure, "ProcessRefused", cond.PROCESSED, "to process"
            )
    message = "processing requested"
    mirrored = {"platform": facts} if facts else {}
    await upgrade.patch_status(
        phase=cond.PROCESSING,
        conditions=[(cond.PROCESSED, cond.TRUE, "ProcessingRequested", message)],
        message=message,
        **mirrored,
    )
    upgrade.event("Normal", "ProcessingRequested", message)
    if facts.get("pgVersionCompatible") is False:
        upgrade.event(
            "Warning",
            "PgVersionIncompatible",
            "the platform says the upgraded dump cannot be restored on the PostgreSQL version "
            "of the uploaded dump: restore it on a newer server",
        )
    upgrade.poll_due = asked + spec.poll_interval
    return Again(max(0.0, upgrade.poll_due - time.monotonic()))


# -- 5. poll -------------------------------------------------------------------------------


async def poll_platform(upgrade: Upgrade, spec: UpgradeSpec) -> StepResult:
    """Every `pollInterval`, counted from `process` and then from the start of each poll (a
    slow answer or status patch does not stretch it): mirror the platform's status; Event on
    a state change."""
    states = states_of(spec.platform_api)
    platform = dict(upgrade.status.get("platform") or {})
    previous = platform.get("state")
    if upgrade.poll_due is not None:
        due_in = upgrade.poll_due - time.monotonic()
    else:  # a new handle (the operator restarted): the stored times tell
        since = seconds_since(
            platform.get("lastCheckTime") or upgrade.status.get("processRequestedAt")
        )
        due_in = 0.0 if since is None else spec.poll_interval - since
    if due_in > 0 and not states.is_final(previous):
        return Again(due_in)  # woken early (a mover Job changed)
    state, why = previous, platform.get("customerMessage") or platform.get("reason")
    started = time.monotonic()
    if not states.is_final(previous):
        ref = ref_of(await stored_request(upgrade))
        checked_at = cond.now_rfc3339()
        current = await upgrade.platform_call(spec, "status", lambda p: p.status(ref))
        state, why = current.state, current.message
        mirrored = platform_status(current, checked_at)
        if current.state_class is StateClass.SUCCEEDED:  # one patch: the mirror and the phase
            message = f"upgraded dump ready on the platform (state {state})"
            await upgrade.patch_status(
                phase=cond.DOWNLOADING,
                platform=mirrored,
                conditions=[(cond.DOWNLOADED, cond.UNKNOWN, "Ready", message)],
                progress=None,  # the platform log's last line, if it was shown
                message=message,
            )
        elif current.state_class is StateClass.IN_PROGRESS and serves_log(spec.platform_api):
            # The same patch carries the newest line of the platform's log.
            offset, line = await read_platform_log(upgrade, spec, ref)
            mirrored["logOffset"] = offset
            if line is None:
                await upgrade.patch_status(platform=mirrored)
            else:
                await upgrade.patch_status(platform=mirrored, progress=line)
        else:
            await upgrade.patch_status(platform=mirrored)
        if state != previous:
            change = f"{previous} -> {state}" if previous else str(state)
            upgrade.event("Normal", "PlatformState", f"platform state {change}")
        if not states.is_known(state):
            logger.info("%s/%s: unknown platform state %r, still waiting", upgrade.namespace,
                        upgrade.name, state)  # fmt: skip
    klass = states.classify(state)
    if klass is StateClass.FAILED:
        reason, wording = failure_report(str(state))
        return await fail(
            upgrade, reason, f"{wording}: {why or 'no reason given'}", condition_type=cond.PROCESSED
        )
    if klass is StateClass.SUCCEEDED:
        if upgrade.phase != cond.DOWNLOADING:  # final already before this pass (a restart)
            message = f"upgraded dump ready on the platform (state {state})"
            await upgrade.patch_status(
                phase=cond.DOWNLOADING,
                conditions=[(cond.DOWNLOADED, cond.UNKNOWN, "Ready", message)],
                progress=None,
                message=message,
            )
        return NOW
    upgrade.poll_due = started + spec.poll_interval
    return Again(max(0.0, upgrade.poll_due - time.monotonic()))


async def read_platform_log(
    upgrade: Upgrade, spec: UpgradeSpec, ref: RequestRef
) -> tuple[int, str | None]:
    """Best effort: the platform's upgrade log read on from `.status.platform.logOffset`; the
    offset reached and the newest complete line (for `.status.progress`), if any."""
    offset = int((upgrade.status.get("platform") or {}).get("logOffset") or 0)
    try:
        text, end = await upgrade.platform_call(spec, "logs", lambda p: p.log_tail(ref, offset))
    except PlatformError as error:
        logger.debug("%s/%s: platform log not read: %s", upgrade.namespace, upgrade.name, error)
        return offset, None
    complete, newline, _ = text.rpartition("\n")
    if not newline:
        return offset, None  # no complete line yet: read it again next time
    if len(complete) + 1 < len(text):  # a line still being written: from its start next time
        end = offset + len((complete + newline).encode())
    return end, log_progress(complete)


# -- 6. download ---------------------------------------------------------------------------


async def download_dump(upgrade: Upgrade, spec: UpgradeSpec) -> StepResult:
    """The download Job writes the upgraded dump into the destination PVC (never over a file);
    over SFTP (access granted again now that the request is done) when the upload went so."""
    await stored_request(upgrade)
    uploaded_over = (upgrade.status.get("upload") or {}).get("transport")
    transport = download_transport(
        spec.transport, spec.destination_format, uploaded_over, api=spec.platform_api
    )

    async def downloaded(result: MoverResult) -> StepResult:
        metrics.BYTES_MOVED.labels(direction="download").inc(result.bytes or 0)
        message = f"downloaded {format_bytes(result.bytes or 0)} to {spec.destination.path}"
        if spec.downloads_a_directory:
            shown = downloaded_set_status(result, spec.destination.path)
            message = (
                f"downloaded {shown['files']} files ({format_bytes(result.bytes or 0)}) to "
                f"{spec.destination.path}/, checked by its SHA256SUMS"
            )
        else:
            shown = downloaded_status(result, spec.destination.path)
            message += f" over {shown['transport']}"
        await upgrade.patch_status(
            download=shown,
            conditions=[(cond.DOWNLOADED, cond.TRUE, "Downloaded", message)],
            progress=None,
            message=message,
        )
        upgrade.event("Normal", "Downloaded", message)
        return NOW

    async def prepare() -> None:
        await validate_prerequisites(upgrade, spec)
        if transport is Transport.SFTP:
            await grant_sftp_download(upgrade, spec)

    return await drive_mover(
        upgrade,
        spec,
        DOWNLOAD,
        downloaded,
        started={"path": spec.destination.path, "transport": transport.value},
        before_start=prepare,
        transport=transport,
    )


def refused_destination(upgrade: Upgrade) -> bool:
    """Failed only because the destination existed: the one failure a spec edit fixes."""
    ready = cond.find_condition(upgrade.conditions, cond.READY)
    return ready is not None and ready.get("reason") == "DestinationExists"


async def retry_download_after_spec_change(upgrade: Upgrade) -> StepResult:
    """Wait for the user to change the spec (e.g. destination.path), then download again.

    The request on the platform is done and paid for; only the way back was blocked.
    """
    ready = cond.find_condition(upgrade.conditions, cond.READY) or {}
    if int(ready.get("observedGeneration") or 0) >= (upgrade.generation or 0):
        return Again(upgrade.waiting_interval())
    await upgrade.movers.delete(DOWNLOAD.direction)
    message = "spec changed after the destination was refused: downloading again"
    await upgrade.patch_status(
        phase=cond.DOWNLOADING,
        conditions=[
            (cond.DOWNLOADED, cond.UNKNOWN, "SpecChanged", message),
            (cond.READY, cond.UNKNOWN, "Progressing", message),
        ],
        message=message,
        moverRetries=None,
    )
    upgrade.event("Normal", "SpecChanged", message)
    return Again(2.0)  # the deleted Job may linger a moment; the download step waits for it


# -- 7. succeed ----------------------------------------------------------------------------


async def succeed(upgrade: Upgrade, spec: UpgradeSpec) -> StepResult:
    """Ready=True: the upgraded dump is on the destination volume."""
    message = f"upgraded to {spec.target}: {spec.destination.path} on {spec.destination.claim_name}"
    if spec.restore is not None:
        message += f", restored as database {spec.restore.database.name!r}"
    await upgrade.patch_status(
        phase=cond.SUCCEEDED,
        conditions=[(cond.READY, cond.TRUE, "Succeeded", message)],
        progress=None,
        message=message,
    )
    upgrade.event("Normal", "Succeeded", message)
    forget_secrets(upgrade.uid)
    return FINISHED


# -- the pass ------------------------------------------------------------------------------


def progress_of(upgrade: Upgrade, spec: UpgradeSpec) -> Progress:
    """What `.status` records as done (the only memory of the flow)."""
    conditions = upgrade.conditions
    state = (upgrade.status.get("platform") or {}).get("state")
    return Progress(
        check_wanted=spec.touches_databases,
        checked=bool((upgrade.status.get("preflight") or {}).get("completedAt")),
        dump_wanted=spec.source_database is not None,
        dumped=cond.is_true(conditions, cond.DUMPED),
        created=upgrade.request_id is not None,
        uploaded=cond.is_true(conditions, cond.UPLOADED),
        processed=cond.is_true(conditions, cond.PROCESSED),
        upgraded=upgrade.phase == cond.DOWNLOADING
        or states_of(spec.platform_api).classify(state) is StateClass.SUCCEEDED,
        downloaded=cond.is_true(conditions, cond.DOWNLOADED),
        restore_wanted=spec.restore is not None,
        restored=cond.is_true(conditions, cond.RESTORED),
    )


async def reconcile(upgrade: Upgrade) -> StepResult:
    """One pass over the flow from the stored status."""
    await upgrade.refresh()
    if upgrade.phase == cond.FAILED and refused_destination(upgrade):
        return await retry_download_after_spec_change(upgrade)
    if upgrade.phase in cond.TERMINAL_PHASES:
        return FINISHED
    try:
        spec = parse_spec(upgrade.obj.get("spec") or {})
    except SpecError as error:
        await wait_for(upgrade, "InvalidSpec", str(error), phase=upgrade.phase or cond.PENDING)
    if not upgrade.phase:
        await upgrade.patch_status(
            phase=cond.PENDING,
            conditions=[(cond.READY, cond.UNKNOWN, "Progressing", "checking prerequisites")],
        )
        upgrade.event("Normal", "Accepted", f"upgrade to {spec.target} accepted")
    step = next_step(progress_of(upgrade, spec))
    started = time.monotonic()
    try:
        return await run_step(upgrade, spec, step)
    except SecretConflict as error:
        await wait_for(upgrade, "RequestSecretConflict", str(error))
    except JobConflict as error:
        await wait_for(upgrade, "JobConflict", str(error))
    except RequestLost as error:
        return await fail(upgrade, "RequestSecretLost", str(error))
    except UrlNotAllowed:
        await wait_for(upgrade, "PlatformUrlNotAllowed", not_allowed_message(spec))
    finally:
        metrics.STEP_DURATION.labels(step=step.value).observe(time.monotonic() - started)


async def run_step(upgrade: Upgrade, spec: UpgradeSpec, step: Step) -> StepResult:
    """Run `step` after the prerequisites it needs."""
    if step is Step.CREATE:
        contract = await validate_prerequisites(upgrade, spec)
        return await create_request(upgrade, spec, contract or "")
    if step in DATABASE_STEPS:  # each checks the prerequisites before its Job starts
        return await DATABASE_STEPS[step](
            upgrade, spec, lambda: validate_prerequisites(upgrade, spec)
        )
    # Upload and download check their prerequisites before they start a mover Job.
    steps = {
        Step.UPLOAD: upload_dump,
        Step.PROCESS: start_processing,
        Step.WAIT: poll_platform,
        Step.DOWNLOAD: download_dump,
        Step.FINISH: succeed,
    }
    if step not in steps:
        raise NotImplementedError(f"step {step} is not part of this flow")
    return await steps[step](upgrade, spec)
