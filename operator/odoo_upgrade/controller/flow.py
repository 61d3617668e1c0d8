"""The flow of one `OdooUpgrade` (DESIGN.md §4), one named function per step, in order.

Every pass reads the resource afresh and decides the next step from `.status` alone, so a
restarted operator continues where the last one stopped: a request id in status or in the
request Secret means "never create again", an existing mover Job is adopted, not duplicated.
Each step persists what it did (status patch, Secret) before the next one may start.

    validate_prerequisites -> create_request -> start_upload / check_upload
        -> start_processing -> poll_platform -> start_download / check_download -> succeed

Steps return the seconds to wait before the next pass, or `None` once the upgrade is final.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller import metrics
from odoo_upgrade.controller.jobs import (
    JobOutcome,
    download_job_name,
    download_job_spec,
    job_outcome,
    labels,
    request_secret_name,
    termination_result,
    upload_job_name,
    upload_job_spec,
)
from odoo_upgrade.controller.kube import AlreadyExists, KubeApi, NotFound, decode_secret
from odoo_upgrade.controller.resource import Upgrade, Waiting
from odoo_upgrade.controller.spec import SpecError, UpgradeSpec, parse_duration, parse_spec
from odoo_upgrade.controller.status import (
    downloaded_status,
    human_bytes,
    parse_progress_line,
    platform_status,
    progress_text,
    seconds_since,
    uploaded_status,
)
from odoo_upgrade.platform import Failure, PlatformError, PlatformFailure
from odoo_upgrade.platform.client import platform_surely_did_not_act
from odoo_upgrade.redact import redact, register_secret

logger = logging.getLogger(__name__)


# Keys of the request Secret (docs/INTERNALS.md).
SECRET_REQUEST_ID = "requestId"  # noqa: S105 - a key name
SECRET_KEY = "key"  # noqa: S105 - a key name
SECRET_SSH_PRIVATE = "ssh-privatekey"  # noqa: S105 - a key name
SECRET_SSH_PUBLIC = "ssh-publickey"  # noqa: S105 - a key name
SECRET_SFTP_ACCESS = "sftp-access"  # noqa: S105 - a key name
SECRET_HOST_KEY = "sftp-host-key"  # noqa: S105 - a key name

# Mover result reasons (see odoo_upgrade.mover) the operator waits out rather than failing on.
SOURCE_NOT_FOUND = "SourceNotFound"
DESTINATION_EXISTS = "DestinationExists"
TRANSIENT_MOVER_REASONS = frozenset(
    {"PlatformUnavailable", "TRANSFER:UNAVAILABLE", "MoverCrashed", "Interrupted", "NoResult"}
)

# Ready=False reasons of validate_prerequisites, cleared once the object appears.
PREREQUISITE_REASONS = frozenset(
    {
        "ContractSecretNotFound",
        "ContractKeyMissing",
        "SourceClaimNotFound",
        "DestinationClaimNotFound",
        "InvalidSpec",
    }
)

# Requests created whose Secret/status write has not succeeded yet, by resource uid.
_unsaved_requests: dict[str, tuple[int, str]] = {}


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


# -- 0. terminal states and failure ----------------------------------------------------------


async def fail(
    upgrade: Upgrade,
    reason: str,
    message: str,
    *,
    condition_type: str | None = None,
    failures: list[Failure] | None = None,
) -> None:
    """Failed for good: Ready=False with the reason, the step's condition too, an Event."""
    changes = [(cond.READY, cond.FALSE, reason, message)]
    if condition_type and condition_type != cond.READY:
        changes.insert(0, (condition_type, cond.FALSE, reason, message))
    extra: dict[str, Any] = {"progress": None, "message": redact(message)}
    if failures is not None:
        extra["failures"] = [f.to_json() for f in failures]
    await upgrade.patch_status(phase=cond.FAILED, conditions=changes, **extra)
    upgrade.event("Warning", reason, message)
    logger.warning("%s/%s failed: %s", upgrade.namespace, upgrade.name, redact(message))


async def fail_refused(
    upgrade: Upgrade, failure: PlatformFailure, reason: str, condition_type: str, what: str
) -> None:
    """Failed because the platform said no: its failures, as sent, in status and conditions."""
    await fail(
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


# -- 1. validate ---------------------------------------------------------------------------


async def validate_prerequisites(upgrade: Upgrade, spec: UpgradeSpec) -> str | None:
    """The contract Secret, source and destination PVCs exist; returns the contract.

    Before the request exists the contract is needed; after, only the volumes are. Nothing is
    asked of the platform while something is missing.
    """
    phase = upgrade.status.get("phase") or cond.PENDING
    contract: str | None = None
    if upgrade.request_id is None:
        ref = spec.contract
        try:
            secret = decode_secret(await upgrade.kube.get_secret(upgrade.namespace, ref.name))
        except NotFound:
            await wait_for(
                upgrade,
                "ContractSecretNotFound",
                f'Secret "{ref.name}" (spec.contractSecretRef) not found in namespace '
                f'"{upgrade.namespace}"',
                phase=phase,
            )
        if not secret.get(ref.key, "").strip():
            await wait_for(
                upgrade,
                "ContractKeyMissing",
                f'Secret "{ref.name}" has no key "{ref.key}" (spec.contractSecretRef.key)',
                phase=phase,
            )
        contract = secret[ref.key].strip()
        register_secret(contract)
    for role, claim in (
        ("Source", spec.source.claim_name),
        ("Destination", spec.destination.claim_name),
    ):
        try:
            await upgrade.kube.get_pvc(upgrade.namespace, claim)
        except NotFound:
            await wait_for(
                upgrade,
                f"{role}ClaimNotFound",
                f'PersistentVolumeClaim "{claim}" (spec.{role.lower()}.claimName) not found in '
                f'namespace "{upgrade.namespace}"',
                phase=phase,
            )
    ready = cond.find_condition(upgrade.conditions, cond.READY)
    if ready is None or ready.get("reason") in PREREQUISITE_REASONS:
        await upgrade.patch_status(
            phase=phase,
            conditions=[(cond.READY, cond.UNKNOWN, "Progressing", "prerequisites found")],
            message="prerequisites found",
        )
    return contract


# -- 2. create -----------------------------------------------------------------------------


async def read_request_secret(upgrade: Upgrade) -> dict[str, str] | None:
    """The request Secret's data if it exists and belongs to this resource."""
    name = request_secret_name(upgrade.name)
    try:
        secret = await upgrade.kube.get_secret(upgrade.namespace, name)
    except NotFound:
        return None
    owners = (secret.get("metadata") or {}).get("ownerReferences") or []
    if not any(o.get("uid") == upgrade.uid for o in owners):
        await wait_for(
            upgrade,
            "RequestSecretConflict",
            f'Secret "{name}" exists but belongs to another object; delete it or rename the '
            "OdooUpgrade",
        )
    data = decode_secret(secret)
    register_secret(data.get(SECRET_KEY))
    return data


async def record_request(upgrade: Upgrade, request_id: int, *, adopted: bool) -> None:
    """Status says the request exists: from now on it is never created again."""
    verb = "adopted from Secret" if adopted else "created"
    message = f"upgrade request {request_id} {verb}"
    await upgrade.patch_status(
        phase=cond.UPLOADING,
        requestId=request_id,
        requestSecretRef={"name": request_secret_name(upgrade.name)},
        failures=None,
        conditions=[(cond.REQUEST_CREATED, cond.TRUE, "RequestCreated", message)],
        message=message,
    )
    upgrade.event("Normal", "RequestCreated", message)


async def create_request(upgrade: Upgrade, spec: UpgradeSpec, contract: str) -> float:
    """Call `create` exactly once; store {requestId, key} in the Secret, then in status.

    A Secret that already holds a request id (a crash between Secret and status) is adopted.
    """
    if upgrade.uid in _unsaved_requests:
        await save_request(upgrade, *_unsaved_requests[upgrade.uid])
        return 0
    existing = await read_request_secret(upgrade)
    if existing and existing.get(SECRET_REQUEST_ID):
        await record_request(upgrade, int(existing[SECRET_REQUEST_ID]), adopted=True)
        return 0
    await upgrade.patch_status(
        phase=cond.CREATING,
        conditions=[
            (cond.REQUEST_CREATED, cond.UNKNOWN, "Creating", "creating the upgrade request")
        ],
    )
    upgrade.event(
        "Normal", "Creating", f"creating an upgrade request to {spec.target} on {spec.platform_url}"
    )
    try:
        request = await upgrade.platform_call(
            spec,
            "create",
            lambda p: p.create(
                contract=contract,
                email=spec.email,
                target=spec.target,
                aim=spec.aim,
                filename=spec.filename,
                timezone=spec.timezone,
            ),
        )
    except PlatformFailure as failure:
        if failure.transient:
            raise
        await fail_refused(upgrade, failure, "RequestRefused", cond.REQUEST_CREATED, "the request")
        return 0
    except PlatformError as error:
        if platform_surely_did_not_act(error):
            raise  # transient and harmless: the caller retries with backoff
        # The platform may have created (and billed) a request whose id never reached us;
        # creating again could make a second one. A human decides.
        await fail(
            upgrade,
            "CreateOutcomeUnknown",
            f"the answer to `create` was lost ({error}); a request may exist on the platform. "
            "Not creating another one: delete and re-apply the OdooUpgrade to try again",
            condition_type=cond.REQUEST_CREATED,
        )
        return 0
    register_secret(request.key)
    _unsaved_requests[upgrade.uid] = (request.id, request.key)
    await save_request(upgrade, request.id, request.key)
    return 0


async def save_request(upgrade: Upgrade, request_id: int, key: str) -> None:
    """Store the new request in the Secret, then its id in status, retrying until both stick.

    Until then the request lives in `_unsaved_requests`: an API server outage right after
    `create` must not lead to a second `create` when the step runs again.
    """
    data = {SECRET_REQUEST_ID: str(request_id), SECRET_KEY: key}
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": request_secret_name(upgrade.name),
            "namespace": upgrade.namespace,
            "labels": labels(upgrade.owner, component="request"),
            "ownerReferences": [upgrade.owner.reference()],
        },
        "stringData": data,
    }
    for attempt in range(1, 1_000_000):
        try:
            try:
                await upgrade.kube.create_secret(upgrade.namespace, body)
            except AlreadyExists:
                await upgrade.kube.patch_secret_data(
                    upgrade.namespace, request_secret_name(upgrade.name), data
                )
            await record_request(upgrade, request_id, adopted=False)
            break
        except Exception as error:  # the API server may be away: keep the request, try again
            logger.warning(
                "storing request %s failed (attempt %d): %s",
                request_id,
                attempt,
                redact(str(error)),
            )
            await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))
    _unsaved_requests.pop(upgrade.uid, None)


# -- 3. upload -----------------------------------------------------------------------------


async def provision_sftp_access(
    upgrade: Upgrade, spec: UpgradeSpec, secret: dict[str, str]
) -> None:
    """Key pair, `request_sftp_access`, host key (pinned or first seen): all into the Secret."""
    from odoo_upgrade import transfer  # the transfer package pulls in paramiko: load lazily

    request_id = int(secret[SECRET_REQUEST_ID])
    keypair = await asyncio.to_thread(transfer.generate_ssh_keypair)
    access = await upgrade.platform_call(
        spec,
        "request_sftp_access",
        lambda p: p.request_sftp_access(request_id, secret[SECRET_KEY], keypair.public_line + "\n"),
    )
    host_key = spec.sftp_host_key or secret.get(SECRET_HOST_KEY)
    if not host_key:
        host_key = await asyncio.to_thread(transfer.fetch_host_key, access.hostname, access.port)
    values = {
        SECRET_SSH_PRIVATE: keypair.private_pem,
        SECRET_SSH_PUBLIC: keypair.public_line,
        SECRET_SFTP_ACCESS: json.dumps(
            {
                "hostname": access.hostname,
                "sftp_port": access.port,
                "sftp_user": access.user,
                "shared_file": access.shared_file,
                "request_id": access.request_id,
            }
        ),
        SECRET_HOST_KEY: host_key,
    }
    await upgrade.kube.patch_secret_data(
        upgrade.namespace, request_secret_name(upgrade.name), values
    )
    secret.update(values)
    how = "pinned" if spec.sftp_host_key else "recorded on first use"
    upgrade.event("Normal", "SftpAccessGranted", f"SFTP access granted (host key {how})")


async def require_request_secret(upgrade: Upgrade) -> dict[str, str]:
    secret = await read_request_secret(upgrade)
    if not secret or not secret.get(SECRET_KEY):
        await fail(
            upgrade,
            "RequestSecretLost",
            f'Secret "{request_secret_name(upgrade.name)}" holding the key of request '
            f"{upgrade.request_id} is gone; the request cannot be continued",
        )
        raise Waiting("request secret lost")
    return secret


async def job_of(upgrade: Upgrade, name: str) -> dict[str, Any] | None:
    """The mover Job `name` if it exists and is ours (a namesake of a deleted resource waits)."""
    try:
        job = await upgrade.kube.get_job(upgrade.namespace, name)
    except NotFound:
        return None
    owners = (job.get("metadata") or {}).get("ownerReferences") or []
    if not any(o.get("uid") == upgrade.uid for o in owners):
        await wait_for(upgrade, "JobConflict", f'Job "{name}" exists but belongs to another object')
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        raise Waiting(f'Job "{name}" is being deleted')  # a new one is created once it is gone
    return job


async def mover_result(upgrade: Upgrade, job: Mapping[str, Any]) -> dict[str, Any]:
    uid = str((job.get("metadata") or {}).get("uid") or "")
    pods = await upgrade.kube.list_job_pods(upgrade.namespace, uid) if uid else []
    return termination_result(pods) or {}


async def start_upload(upgrade: Upgrade, spec: UpgradeSpec, secret: dict[str, str]) -> float:
    """Create the upload Job (after SFTP access when SFTP may be used)."""
    if spec.uses_sftp and SECRET_SFTP_ACCESS not in secret:
        await provision_sftp_access(upgrade, spec, secret)
    try:
        await upgrade.kube.create_job(upgrade.namespace, upload_job_spec(upgrade.owner, spec))
    except AlreadyExists:
        return 0
    message = f'upload Job "{upload_job_name(upgrade.name)}" started ({spec.transport})'
    await upgrade.patch_status(
        phase=cond.UPLOADING,
        upload={"transport": spec.transport, "startedAt": cond.now_rfc3339(), "completedAt": None},
        conditions=[(cond.UPLOADED, cond.UNKNOWN, "Uploading", message)],
        progress=f"uploading ({spec.transport})",
        message=message,
    )
    upgrade.event("Normal", "UploadStarted", message)
    return job_check_interval(spec)


async def report_upload_progress(
    upgrade: Upgrade, spec: UpgradeSpec, job: Mapping[str, Any], secret: Mapping[str, str]
) -> None:
    """Best effort, throttled: bytes at the platform (SFTP size) or the mover's log line."""
    if time.monotonic() - upgrade.last_progress_probe < max(2.0, min(spec.poll_interval, 10.0)):
        return
    upgrade.last_progress_probe = time.monotonic()
    done: int | None = None
    total: int | None = None
    uid = str((job.get("metadata") or {}).get("uid") or "")
    pods = await upgrade.kube.list_job_pods(upgrade.namespace, uid) if uid else []
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if running:
        pod_name = str(running[-1]["metadata"]["name"])
        parsed = parse_progress_line(await upgrade.kube.pod_log_tail(upgrade.namespace, pod_name))
        if parsed:
            done, total = parsed
    if done is None and SECRET_SFTP_ACCESS in secret:
        from odoo_upgrade.controller.sftp_progress import remote_size

        done = await asyncio.to_thread(remote_size, secret)
    if done is None:
        return
    upload = dict(upgrade.status.get("upload") or {})
    total = total or upload.get("bytesTotal")
    if upload.get("bytesDone") == done:
        return
    patch_upload: dict[str, Any] = {"bytesDone": done}
    if total:
        patch_upload["bytesTotal"] = total
    await upgrade.patch_status(upload=patch_upload, progress=progress_text(done, total))


async def check_upload(
    upgrade: Upgrade, spec: UpgradeSpec, job: Mapping[str, Any], secret: Mapping[str, str]
) -> float:
    """Read the upload Job's outcome; record the result or decide about a failure."""
    outcome = job_outcome(job)
    if not outcome.finished:
        try:
            await report_upload_progress(upgrade, spec, job, secret)
        except Exception as error:  # progress is cosmetic: never let it stop the flow
            logger.debug("upload progress probe failed: %s", redact(str(error)))
        return job_check_interval(spec)
    result = await mover_result(upgrade, job)
    if outcome.succeeded:
        size = int(result.get("bytes") or 0)
        transport = str(result.get("transport") or spec.transport)
        message = f"uploaded {human_bytes(size)} over {transport}"
        metrics.BYTES_MOVED.labels(direction="upload").inc(size)
        await upgrade.patch_status(
            phase=cond.PROCESSING,
            upload=uploaded_status(result, spec.transport),
            conditions=[(cond.UPLOADED, cond.TRUE, "Uploaded", message)],
            progress=None,
            message=message,
        )
        upgrade.event("Normal", "Uploaded", message)
        return 0
    return await mover_failed(upgrade, spec, "upload", cond.UPLOADED, outcome, result)


async def mover_failed(
    upgrade: Upgrade,
    spec: UpgradeSpec,
    direction: str,
    condition_type: str,
    outcome: JobOutcome,
    result: Mapping[str, Any],
) -> float:
    """A failed mover Job: wait and retry for what may change (a file appearing, the network),
    fail for what will not (refused by the platform, an existing destination)."""
    reason = str(result.get("reason") or "NoResult")
    error = str(
        result.get("error") or outcome.message or f"the {direction} Job failed ({outcome.reason})"
    )
    job_name = (
        upload_job_name(upgrade.name) if direction == "upload" else download_job_name(upgrade.name)
    )
    if reason == SOURCE_NOT_FOUND or reason in TRANSIENT_MOVER_REASONS:
        message = f"{error}; retrying"
        await upgrade.patch_status(
            conditions=[
                (condition_type, cond.FALSE, reason, message),
                (cond.READY, cond.FALSE, reason, message),
            ],
            progress=None,
            message=message,
        )
        upgrade.event("Warning", reason, message)
        await upgrade.kube.delete_job(upgrade.namespace, job_name)
        upgrade.mover_retries += 1
        return clamp(spec.poll_interval * 2 ** min(upgrade.mover_retries, 8), 3.0, 300.0)
    failures = [Failure.from_json(f) for f in result.get("failures") or [] if isinstance(f, dict)]
    await fail(
        upgrade,
        reason.replace(":", ""),
        error,
        condition_type=condition_type,
        failures=failures or None,
    )
    return 0


def job_check_interval(spec: UpgradeSpec) -> float:
    """How often to look at a running mover Job."""
    return clamp(spec.poll_interval, 1.0, 5.0)


async def upload_dump(upgrade: Upgrade, spec: UpgradeSpec) -> float:
    """Step 3: start the upload Job if it does not exist yet, else check it."""
    secret = await require_request_secret(upgrade)
    job = await job_of(upgrade, upload_job_name(upgrade.name))
    if job is None:
        return await start_upload(upgrade, spec, secret)
    return await check_upload(upgrade, spec, job, secret)


# -- 4. process ----------------------------------------------------------------------------


async def start_processing(upgrade: Upgrade, spec: UpgradeSpec) -> float:
    """Call `process` once. After a crash the platform's state tells whether it was called."""
    secret = await require_request_secret(upgrade)
    request_id, key = int(secret[SECRET_REQUEST_ID]), secret[SECRET_KEY]
    current = await upgrade.platform_call(spec, "status", lambda p: p.status(request_id, key))
    if current.state == "draft":
        try:
            await upgrade.platform_call(spec, "process", lambda p: p.process(request_id, key))
        except PlatformFailure as failure:
            if failure.transient:
                raise
            await fail_refused(upgrade, failure, "ProcessRefused", cond.PROCESSED, "to process")
            return 0
        current = await upgrade.platform_call(spec, "status", lambda p: p.status(request_id, key))
    message = f"processing requested (platform state {current.state})"
    await upgrade.patch_status(
        phase=cond.PROCESSING,
        platform=platform_status(current, cond.now_rfc3339()),
        conditions=[(cond.PROCESSED, cond.TRUE, "ProcessingRequested", message)],
        message=message,
    )
    upgrade.event("Normal", "ProcessingRequested", message)
    return spec.poll_interval


# -- 5. poll -------------------------------------------------------------------------------


async def poll_platform(upgrade: Upgrade, spec: UpgradeSpec) -> float:
    """Every `pollInterval`: mirror the platform's status; Event on a state change."""
    platform = dict(upgrade.status.get("platform") or {})
    since = seconds_since(platform.get("lastCheckTime"))
    if (
        since is not None
        and since < spec.poll_interval
        and platform.get("state") not in ("done", "delivered", "invalid")
    ):
        return spec.poll_interval - since
    previous = platform.get("state")
    state = previous
    if previous not in ("done", "delivered", "invalid"):
        secret = await require_request_secret(upgrade)
        request_id, key = int(secret[SECRET_REQUEST_ID]), secret[SECRET_KEY]
        current = await upgrade.platform_call(spec, "status", lambda p: p.status(request_id, key))
        state = current.state
        await upgrade.patch_status(platform=platform_status(current, cond.now_rfc3339()))
        if state != previous:
            upgrade.event("Normal", "PlatformState", f"platform state {previous} -> {state}")
        if current.in_progress and state not in ("draft", "pending", "processing", "testing"):
            logger.info(
                "%s/%s: unknown platform state %r, still waiting",
                upgrade.namespace,
                upgrade.name,
                state,
            )
    if state == "invalid":
        why = str(upgrade.status.get("platform", {}).get("customerMessage") or "no reason given")
        await fail(
            upgrade,
            "RequestInvalid",
            f"the platform declared the request invalid: {why}",
            condition_type=cond.PROCESSED,
        )
        return 0
    if state in ("done", "delivered"):
        message = f"upgraded dump ready on the platform (state {state})"
        await upgrade.patch_status(
            phase=cond.DOWNLOADING,
            conditions=[(cond.DOWNLOADED, cond.UNKNOWN, "Ready", message)],
            message=message,
        )
        return 0
    return spec.poll_interval


# -- 6. download ---------------------------------------------------------------------------


async def start_download(upgrade: Upgrade, spec: UpgradeSpec) -> float:
    """Create the download Job, writing into the destination PVC (never over a file)."""
    try:
        await upgrade.kube.create_job(upgrade.namespace, download_job_spec(upgrade.owner, spec))
    except AlreadyExists:
        return 0
    message = f'download Job "{download_job_name(upgrade.name)}" started'
    await upgrade.patch_status(
        phase=cond.DOWNLOADING,
        download={"path": spec.destination.path, "startedAt": cond.now_rfc3339()},
        conditions=[(cond.DOWNLOADED, cond.UNKNOWN, "Downloading", message)],
        progress="downloading",
        message=message,
    )
    upgrade.event("Normal", "DownloadStarted", message)
    return job_check_interval(spec)


async def check_download(upgrade: Upgrade, spec: UpgradeSpec, job: Mapping[str, Any]) -> float:
    """Read the download Job's outcome; an existing destination fails the upgrade."""
    outcome = job_outcome(job)
    if not outcome.finished:
        return job_check_interval(spec)
    result = await mover_result(upgrade, job)
    if outcome.succeeded:
        size = int(result.get("bytes") or 0)
        metrics.BYTES_MOVED.labels(direction="download").inc(size)
        message = f"downloaded {human_bytes(size)} to {spec.destination.path}"
        await upgrade.patch_status(
            download=downloaded_status(result, spec.destination.path),
            conditions=[(cond.DOWNLOADED, cond.TRUE, "Downloaded", message)],
            progress=None,
            message=message,
        )
        upgrade.event("Normal", "Downloaded", message)
        return 0
    if result.get("reason") == DESTINATION_EXISTS:
        await fail(
            upgrade,
            DESTINATION_EXISTS,
            f'destination file already exists, not overwritten: "{spec.destination.path}" on '
            f'PersistentVolumeClaim "{spec.destination.claim_name}"',
            condition_type=cond.DOWNLOADED,
        )
        return 0
    return await mover_failed(upgrade, spec, "download", cond.DOWNLOADED, outcome, result)


async def download_dump(upgrade: Upgrade, spec: UpgradeSpec) -> float:
    """Step 6: start the download Job if it does not exist yet, else check it."""
    await require_request_secret(upgrade)
    job = await job_of(upgrade, download_job_name(upgrade.name))
    if job is None:
        return await start_download(upgrade, spec)
    return await check_download(upgrade, spec, job)


def refused_destination(upgrade: Upgrade) -> bool:
    """Failed only because the destination file existed: the one failure a spec edit fixes."""
    ready = cond.find_condition(upgrade.conditions, cond.READY)
    return ready is not None and ready.get("reason") == DESTINATION_EXISTS


async def retry_download_after_spec_change(upgrade: Upgrade) -> float:
    """Wait for the user to change the spec (e.g. destination.path), then download again.

    The request on the platform is done and paid for; only the way back was blocked.
    """
    ready = cond.find_condition(upgrade.conditions, cond.READY) or {}
    generation = upgrade.generation or 0
    if int(ready.get("observedGeneration") or 0) >= generation:
        return waiting_interval(upgrade)
    await upgrade.kube.delete_job(upgrade.namespace, download_job_name(upgrade.name))
    message = "spec changed after the destination was refused: downloading again"
    await upgrade.patch_status(
        phase=cond.DOWNLOADING,
        conditions=[
            (cond.DOWNLOADED, cond.UNKNOWN, "SpecChanged", message),
            (cond.READY, cond.UNKNOWN, "Progressing", message),
        ],
        message=message,
    )
    upgrade.event("Normal", "SpecChanged", message)
    # The deleted Job may linger a moment; the download step waits for it to go.
    return 2.0


# -- 7. succeed ----------------------------------------------------------------------------


async def succeed(upgrade: Upgrade, spec: UpgradeSpec) -> None:
    """Ready=True: the upgraded dump is on the destination volume."""
    message = f"upgraded to {spec.target}: {spec.destination.path} on {spec.destination.claim_name}"
    await upgrade.patch_status(
        phase=cond.SUCCEEDED,
        conditions=[(cond.READY, cond.TRUE, "Succeeded", message)],
        progress=None,
        message=message,
    )
    upgrade.event("Normal", "Succeeded", message)


# -- the pass ------------------------------------------------------------------------------


async def reconcile(upgrade: Upgrade) -> float | None:
    """One pass over the flow from the stored status; seconds to the next pass, or None."""
    await upgrade.refresh()
    status = upgrade.status
    if status.get("phase") == cond.FAILED and refused_destination(upgrade):
        return await retry_download_after_spec_change(upgrade)
    if status.get("phase") in cond.TERMINAL_PHASES:
        return None
    try:
        spec = parse_spec(upgrade.obj.get("spec") or {})
    except SpecError as error:
        await wait_for(
            upgrade, "InvalidSpec", str(error), phase=status.get("phase") or cond.PENDING
        )
    conditions = upgrade.conditions
    started = time.monotonic()
    step = "validate"
    try:
        if not status.get("phase"):
            await upgrade.patch_status(
                phase=cond.PENDING,
                conditions=[(cond.READY, cond.UNKNOWN, "Progressing", "checking prerequisites")],
            )
            upgrade.event("Normal", "Accepted", f"upgrade to {spec.target} accepted")
        if upgrade.request_id is None:
            contract = await validate_prerequisites(upgrade, spec)
            step = "create"
            return await create_request(upgrade, spec, contract or "")
        if not cond.is_true(conditions, cond.UPLOADED):
            await validate_prerequisites(upgrade, spec)
            step = "upload"
            return await upload_dump(upgrade, spec)
        if not cond.is_true(conditions, cond.PROCESSED):
            step = "process"
            return await start_processing(upgrade, spec)
        state = (status.get("platform") or {}).get("state")
        if status.get("phase") != cond.DOWNLOADING and state not in ("done", "delivered"):
            step = "poll"
            return await poll_platform(upgrade, spec)
        if not cond.is_true(conditions, cond.DOWNLOADED):
            await validate_prerequisites(upgrade, spec)
            step = "download"
            return await download_dump(upgrade, spec)
        step = "succeed"
        await succeed(upgrade, spec)
        return None
    finally:
        metrics.STEP_DURATION.labels(step=step).observe(time.monotonic() - started)


def waiting_interval(upgrade: Upgrade) -> float:
    """How soon to look again at a resource that waits for a missing object."""
    poll = (upgrade.obj.get("spec") or {}).get("platform", {}).get("pollInterval")
    try:
        seconds = parse_duration(poll) if isinstance(poll, str) else 60.0
    except SpecError:
        seconds = 60.0
    return clamp(seconds, 2.0, 15.0)


async def run(upgrade: Upgrade, stopped: Callable[[], bool]) -> None:
    """Drive one upgrade pass after pass until it is final or the operator stops driving it.

    A pass is shielded from cancellation: a `create` answer must reach the Secret even when the
    operator is asked to stop at that moment. Transient errors (platform or API server) are
    retried here with bounded, jittered backoff; permanent platform failures fail the upgrade.
    """
    troubles = 0  # consecutive passes that failed, for the backoff only
    while not stopped():
        try:
            delay = await asyncio.shield(reconcile(upgrade))
            troubles = 0
        except Waiting:
            delay = waiting_interval(upgrade)
        except PlatformError as error:
            if not error.transient:
                failures = error.failures if isinstance(error, PlatformFailure) else None
                await fail(upgrade, "PlatformError", str(error), failures=failures)
                return
            troubles += 1
            delay = transient_backoff(troubles)
            upgrade.event("Warning", "PlatformUnavailable", f"{error}; retrying in {delay:.0f}s")
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as error:  # API server away, conflicts...: the next pass starts afresh
            troubles += 1
            delay = transient_backoff(troubles)
            logger.warning(
                "%s/%s: pass failed, retrying in %.0fs: %s",
                upgrade.namespace,
                upgrade.name,
                delay,
                redact(f"{type(error).__name__}: {error}"),
            )
        if delay is None:
            return
        await asyncio.sleep(max(0.0, delay))


def transient_backoff(troubles: int) -> float:
    """Exponential backoff with jitter, bounded: about 1 s, 2 s, 4 s … up to 5 minutes."""
    ceiling = min(300.0, 2.0 ** min(troubles, 9))
    return random.uniform(ceiling / 2, ceiling)


async def delete_children(kube: KubeApi, namespace: str, name: str, uid: str) -> None:
    """Delete this resource's mover Jobs and request Secret (only if they are its own).

    Dumps on volumes are never touched: they belong to the user.
    """

    def owned(obj: Mapping[str, Any]) -> bool:
        owners = (obj.get("metadata") or {}).get("ownerReferences") or []
        return any(o.get("uid") == uid for o in owners)

    for job_name in (upload_job_name(name), download_job_name(name)):
        try:
            if owned(await kube.get_job(namespace, job_name)):
                await kube.delete_job(namespace, job_name)
        except NotFound:
            pass
    try:
        secret_name = request_secret_name(name)
        if owned(await kube.get_secret(namespace, secret_name)):
            await kube.delete_secret(namespace, secret_name)
    except NotFound:
        pass
