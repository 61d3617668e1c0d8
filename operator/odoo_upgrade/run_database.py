"""The database steps of `odoo-upgrade run` (`--database`, `--restore-name`): pre-flight, dump,
restore, on the PostgreSQL client tools of this machine.

`runflow` calls them in the order `request.steps.next_step` gives; what they did goes into the
state file (`runstate`), so a rerun resumes. Connection settings come from the flags or libpq's
environment (`PGHOST`, `PGPORT`, `PGUSER`); the password only from `PGPASSWORD` or
`~/.pgpass`, never a flag. Failures are the `odoo_upgrade.database` errors, naming the flag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from odoo_upgrade.database import (
    ConnectionSettings,
    DatabaseFields,
    DumpResult,
    FilestoreFields,
    FilestoreResult,
    RestoreResult,
    build_filestore,
    check_dump_destination,
    check_filestore,
    check_restore_target,
    check_source,
    dump_database,
    restore_database,
)
from odoo_upgrade.request.upgraded import UpgradedParts

CONNECTION_FLAGS = "--pg-host/--pg-port/--pg-user (password from PGPASSWORD or ~/.pgpass)"
SOURCE_FLAGS = DatabaseFields("--database", CONNECTION_FLAGS)
RESTORE_FLAGS = DatabaseFields("--restore-name", CONNECTION_FLAGS)
FILESTORE_FLAGS = FilestoreFields("--filestore", "--restore-filestore")
DUMP_FLAG = "--dump"
OUTPUT_FLAG = "--output"
CLIENT_HINT = "the PostgreSQL client on PATH (or ODOO_UPGRADE_PG_BIN=<bin dir>)"

Say = Callable[[str], None]


@dataclass(frozen=True)
class DatabaseOptions:
    """What `run` does with databases: dump `source` first, restore into `restore` after."""

    settings: ConnectionSettings
    source: str | None = None  # --database
    restore: str | None = None  # --restore-name
    filestore: Path | None = None  # --filestore: the source database's filestore
    restore_filestore: Path | None = None  # --restore-filestore: the new one


def restore_token(platform_url: str, request_id: int) -> str:
    """Names this run's restore across reruns: a rerun recognises the database it made."""
    return f"odoo-upgrade run {platform_url.rstrip('/')} request {request_id}"


def dump_token(state_file: Path, options: DatabaseOptions) -> str:
    """Names this run's dump (its state file, and the database it dumps) between the dump's
    rename and its record in the state file: a rerun killed in that window recognises the
    dump it made; another run, or another database, does not. Once recorded, the receipt is
    forgotten (`forget_dump_receipt`)."""
    where = options.settings
    return (
        f"odoo-upgrade run {state_file.resolve()} database {options.source} on "
        f"{where.user}@{where.address}"
    )


def preflight(options: DatabaseOptions, dump: Path, token: str, say: Say) -> None:
    """Before any dump or `create`: the source answers and pg_dump is new enough, the dump
    file is free (or this run's own, `token`), the restore target does not exist, the
    filestores are as they must be."""
    if options.source is not None:
        source = check_source(options.settings, options.source, fields=SOURCE_FLAGS,
                              hint=CLIENT_HINT)  # fmt: skip
        check_dump_destination(dump, path_field=DUMP_FLAG, token=token)
        say(
            f"database {source.database!r} on {options.settings.address}: PostgreSQL "
            f"{source.server_version}, pg_dump {source.client_version}"
        )
    if options.restore is not None:
        target = check_restore_target(
            options.settings, options.restore, fields=RESTORE_FLAGS, hint=CLIENT_HINT
        )
        say(f"restore target {target.database!r} is free on {options.settings.address}")
    if options.filestore is not None and options.restore_filestore is not None:
        check_filestore(options.filestore, options.restore_filestore, fields=FILESTORE_FLAGS)


def dump_source(
    options: DatabaseOptions,
    dump: Path,
    token: str,
    progress: Callable[[int, int | None], None],
) -> DumpResult:
    """`pg_dump --format=custom --no-owner` of the source to `dump` (never over a file but
    this run's own dump, `token`, published before a kill: that one is returned as is)."""
    assert options.source is not None
    return dump_database(
        options.settings, options.source, dump, progress=progress, fields=SOURCE_FLAGS,
        path_field=DUMP_FLAG, hint=CLIENT_HINT, token=token,
    )  # fmt: skip


def restore_upgraded(
    options: DatabaseOptions, upgraded: UpgradedParts, target: str, token: str
) -> tuple[RestoreResult, FilestoreResult | None]:
    """The upgraded dump into the new database (verified at `target`), then its filestore."""
    assert options.restore is not None
    restored = restore_database(
        options.settings, upgraded.dump, options.restore, target=target, token=token,
        fields=RESTORE_FLAGS, dump_field=OUTPUT_FLAG, hint=CLIENT_HINT,
    )  # fmt: skip
    filestore = None
    if options.filestore is not None and options.restore_filestore is not None:
        filestore = build_filestore(
            options.filestore, options.restore_filestore, upgraded=upgraded.filestore, token=token,
            fields=FILESTORE_FLAGS,
        )  # fmt: skip
    return restored, filestore
