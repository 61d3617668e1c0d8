"""The database steps of the flow (DESIGN.md §4 1, 1b, 6b), each one mover Job:

    check_databases        `<name>-check`    pre-flight, before any dump or `create`
    dump_source_database   `<name>-dump`     source.database -> source.path, before `create`
    restore_upgraded_dump  `<name>-restore`  destination.path -> restore.database (+ filestore)

The operator has no PostgreSQL client and mounts no volume: it reads the connection Secrets
only to see that they exist with their keys, and leaves everything else to the Jobs, which it
drives like every mover (`mover_steps.drive_mover`). A failure the user fixes outside the
resource (a database missing, a password refused, the restore target taken, a client too old)
is shown as Ready=False with the library's reason and a message naming the field, and checked
again with growing delays until it holds: nothing is dumped, nothing asked of the platform
meanwhile. Deleting the resource never drops a database or deletes a dump.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller.kube import NotFound, decode_secret
from odoo_upgrade.controller.mover_steps import MoverStep, OnFailure, drive_mover, retry_later
from odoo_upgrade.controller.movers import MoverJob
from odoo_upgrade.controller.outcomes import NOW, StepResult
from odoo_upgrade.controller.reporting import wait_for
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.spec import DatabaseRef, UpgradeSpec
from odoo_upgrade.controller.status import (
    dumped_status,
    preflight_status,
    restored_status,
)
from odoo_upgrade.database import errors as db
from odoo_upgrade.database.connection import settings_from_secret
from odoo_upgrade.request.mover_result import Direction, MoverResult
from odoo_upgrade.request.progress import format_bytes
from odoo_upgrade.request.steps import Step

CHECK = MoverStep(Direction.CHECK, cond.READY, cond.PENDING, "preflight", "checking")
DUMP = MoverStep(Direction.DUMP, cond.DUMPED, cond.DUMPING, "dump", "dumping")
RESTORE = MoverStep(Direction.RESTORE, cond.RESTORED, cond.RESTORING, "restore", "restoring")

# Failures of a dump or restore that something outside the resource fixes (or a server that is
# away): waited for, like every failure of the pre-flight. Others (a failed pg_restore, a
# verification that does not hold) fail the upgrade, or are retried boundedly if transient.
WAITED_REASONS = db.FIXED_OUTSIDE | {db.DatabaseUnreachable.reason}
# Ready=False reasons of the operator's own look at Secrets and claims, cleared once they hold.
SECRET_NOT_FOUND = "DatabaseSecretNotFound"  # noqa: S105 (a reason, not a secret)
FILESTORE_CLAIM_NOT_FOUND = "FilestoreClaimNotFound"
PREREQUISITE_REASONS = frozenset(
    {SECRET_NOT_FOUND, db.DatabaseSecretKeyMissing.reason, FILESTORE_CLAIM_NOT_FOUND}
)

Prerequisites = Callable[[], Awaitable[object]]


# -- what the operator itself checks before a Job starts -----------------------------------


async def require_connection_secrets(
    upgrade: Upgrade, refs: Sequence[tuple[DatabaseRef, str]]
) -> None:
    """Each connection Secret exists and has the keys a mover needs (`Waiting` else).

    The operator reads them only for that (and to redact the password): the Jobs mount them."""
    for ref, field in refs:
        try:
            secret = await upgrade.kube.get_secret(upgrade.namespace, ref.secret_name)
        except NotFound:
            await wait_for(
                upgrade,
                SECRET_NOT_FOUND,
                f'{field}: Secret "{ref.secret_name}" not found in namespace '
                f'"{upgrade.namespace}" (expected the keys host, port, username, password, as in '
                "a CloudNativePG <cluster>-app Secret)",
            )
        try:
            settings_from_secret(decode_secret(secret), field_name=field)
        except db.DatabaseSecretKeyMissing as error:
            await wait_for(upgrade, error.reason, f'{error.message} (Secret "{ref.secret_name}")')


async def require_filestore_claim(upgrade: Upgrade, spec: UpgradeSpec) -> None:
    filestore = spec.restore.filestore if spec.restore else None
    if filestore is None:
        return
    try:
        await upgrade.kube.get_pvc(upgrade.namespace, filestore.claim_name)
    except NotFound:
        await wait_for(
            upgrade,
            FILESTORE_CLAIM_NOT_FOUND,
            f'restore.filestore.claimName: PersistentVolumeClaim "{filestore.claim_name}" not '
            f'found in namespace "{upgrade.namespace}"',
        )


def source_secret(spec: UpgradeSpec) -> list[tuple[DatabaseRef, str]]:
    if spec.source_database is None:
        return []
    return [(spec.source_database, db.SOURCE_FIELDS.secret)]


def restore_secret(spec: UpgradeSpec) -> list[tuple[DatabaseRef, str]]:
    if spec.restore is None:
        return []
    return [(spec.restore.database, db.RESTORE_FIELDS.secret)]


async def clear_prerequisite_wait(upgrade: Upgrade) -> None:
    """Ready=False for a Secret or claim that is there now: back to Progressing."""
    ready = cond.find_condition(upgrade.conditions, cond.READY)
    if ready is not None and ready.get("reason") in PREREQUISITE_REASONS:
        await upgrade.patch_status(
            conditions=[(cond.READY, cond.UNKNOWN, "Progressing", "prerequisites found")],
            message="prerequisites found",
        )


# -- waiting for a fix -----------------------------------------------------------------------


async def wait_for_fix(
    upgrade: Upgrade, step: MoverStep, mover: MoverJob, result: MoverResult
) -> StepResult:
    """Ready=False with the mover's reason and message, as long as it takes: a fresh attempt
    now and then (5 s, 10 s, … 5 min) until the user fixed what it names."""
    return await retry_later(upgrade, step, mover, result, limit=None)


def waited_failures(upgrade: Upgrade, step: MoverStep, *, every: bool = False) -> OnFailure:
    """The `on_failure` of a step: wait for a fix (every failure, or those a user fixes)."""

    async def handle(mover: MoverJob, result: MoverResult) -> StepResult | None:
        if every or result.reason in WAITED_REASONS:
            return await wait_for_fix(upgrade, step, mover, result)
        return None

    return handle


# -- 1. check --------------------------------------------------------------------------------


async def check_databases(
    upgrade: Upgrade, spec: UpgradeSpec, prerequisites: Prerequisites
) -> StepResult:
    """Pre-flight in the `<name>-check` Job: the source database answers with the Secret's
    credentials and pg_dump is new enough, the dump file is not there yet, the restore target
    does not exist and may be created, the filestore's sourcePath is there and path is not."""

    async def before_start() -> None:
        await prerequisites()
        await require_connection_secrets(upgrade, [*source_secret(spec), *restore_secret(spec)])
        await require_filestore_claim(upgrade, spec)
        await clear_prerequisite_wait(upgrade)

    async def passed(result: MoverResult) -> StepResult:
        message = "pre-flight checks passed: " + preflight_summary(spec, result)
        await upgrade.patch_status(
            preflight=preflight_status(result),
            conditions=[(cond.READY, cond.UNKNOWN, "Progressing", message)],
            message=message,
        )
        upgrade.event("Normal", "PreflightPassed", message)
        return NOW

    return await drive_mover(
        upgrade,
        spec,
        CHECK,
        passed,
        started={"completedAt": None},
        before_start=before_start,
        on_failure=waited_failures(upgrade, CHECK, every=True),
    )


def preflight_summary(spec: UpgradeSpec, result: MoverResult) -> str:
    parts = []
    source = result.details.get("source") or {}
    if spec.source_database is not None:
        parts.append(
            f"source database {spec.source_database.name!r} on PostgreSQL "
            f"{source.get('serverVersion', '?')}"
        )
    if spec.restore is not None:
        parts.append(f"restore target {spec.restore.database.name!r} free")
        if spec.restore.filestore is not None:
            filestore = spec.restore.filestore
            parts.append(f"filestore {filestore.source_path} present, {filestore.path} free")
    return ", ".join(parts)


# -- 1b. dump --------------------------------------------------------------------------------


async def dump_source_database(
    upgrade: Upgrade, spec: UpgradeSpec, prerequisites: Prerequisites
) -> StepResult:
    """The `<name>-dump` Job dumps source.database to source.path (never over a file)."""
    assert spec.source_database is not None  # next_step gives DUMP only then

    async def before_start() -> None:
        await prerequisites()
        await require_connection_secrets(upgrade, source_secret(spec))
        await clear_prerequisite_wait(upgrade)

    async def dumped(result: MoverResult) -> StepResult:
        message = (
            f"dumped database {spec.source_database.name!r} "  # type: ignore[union-attr]
            f"({format_bytes(result.bytes or 0)}) to {spec.source.path}"
        )
        await upgrade.patch_status(
            dump=dumped_status(result),
            conditions=[(cond.DUMPED, cond.TRUE, "Dumped", message)],
            progress=None,
            message=message,
        )
        upgrade.event("Normal", "Dumped", message)
        return NOW

    return await drive_mover(
        upgrade,
        spec,
        DUMP,
        dumped,
        started={"completedAt": None},
        before_start=before_start,
        on_failure=waited_failures(upgrade, DUMP),
    )


# -- 6b. restore -----------------------------------------------------------------------------


async def restore_upgraded_dump(
    upgrade: Upgrade, spec: UpgradeSpec, prerequisites: Prerequisites
) -> StepResult:
    """The `<name>-restore` Job restores destination.path into restore.database under a
    temporary name, verifies `base` is at the target series, renames it, builds the filestore.
    The target is checked again right before (it may have appeared since the pre-flight)."""
    assert spec.restore is not None  # next_step gives RESTORE only then
    target = spec.restore.database.name

    async def before_start() -> None:
        await prerequisites()
        await require_connection_secrets(upgrade, restore_secret(spec))
        await require_filestore_claim(upgrade, spec)
        await clear_prerequisite_wait(upgrade)

    async def restored(result: MoverResult) -> StepResult:
        message = (
            f"restored database {target!r}, base module at {result.details.get('baseVersion')}"
        )
        if spec.restore is not None and spec.restore.filestore is not None:
            files = result.details.get("filestoreFiles")
            message += f", filestore {spec.restore.filestore.path} ({files} files)"
        await upgrade.patch_status(
            restore=restored_status(result),
            conditions=[(cond.RESTORED, cond.TRUE, "Restored", message)],
            progress=None,
            message=message,
        )
        upgrade.event("Normal", "Restored", message)
        return NOW

    return await drive_mover(
        upgrade,
        spec,
        RESTORE,
        restored,
        started={"database": target, "completedAt": None},
        before_start=before_start,
        on_failure=waited_failures(upgrade, RESTORE),
    )


DatabaseStep = Callable[[Upgrade, UpgradeSpec, Prerequisites], Awaitable[StepResult]]
DATABASE_STEPS: dict[Step, DatabaseStep] = {
    Step.CHECK: check_databases,
    Step.DUMP: dump_source_database,
    Step.RESTORE: restore_upgraded_dump,
}
