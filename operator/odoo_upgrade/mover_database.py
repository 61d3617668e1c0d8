"""`odoo-upgrade mover check|dump|restore`: the database directions of the mover Jobs.

Same contract as upload and download (`odoo_upgrade.mover`): no API access, the inputs on
the command line and in mounted volumes, progress lines on stdout (`request.progress`), the
result as JSON in the termination message. Credentials come only from a mounted connection
Secret (`--secret-dir`: files host, port, username, password, optional sslmode); the password
reaches pg_dump/pg_restore/psql through a libpq password file under `TMPDIR`.

    check     pre-flight: databases reachable, client tools new enough, restore target and
              filestore path free, dump file not there yet. Changes nothing.
    dump      pg_dump of a live database to a new file (never over one), sha256 beside it.
    restore   the upgraded dump into a NEW database, verified, renamed; the filestore built.

A `DatabaseError` becomes `{"error", "reason", "transient", "field"}`: the reason and the spec
field to fix, as the library named them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from odoo_upgrade.database import (
    RESTORE_FIELDS,
    SOURCE_FIELDS,
    ConnectionSettings,
    DatabaseError,
    build_filestore,
    check_dump_destination,
    check_filestore,
    check_restore_target,
    check_source,
    dump_database,
    restore_database,
    settings_from_secret_dir,
)
from odoo_upgrade.mover import (
    TERMINATION_LOG,
    MoverCommand,
    ProgressPrinter,
    classify,
    write_termination_message,
)
from odoo_upgrade.redact import redact
from odoo_upgrade.request.mover_result import (
    EXIT_PERMANENT,
    EXIT_RETRY_POD,
    MoverResult,
    termination_text,
)
from odoo_upgrade.request.progress import ProgressLine
from odoo_upgrade.request.upgraded import upgraded_parts

PROGRESS_EVERY_SECONDS = 2.0


def database_failure(error: DatabaseError) -> MoverResult:
    """The library's failure as the mover reports it: reason, message, flag, the field."""
    details = {"field": error.field} if error.field else {}
    return MoverResult(
        False,
        reason=error.reason,
        error=redact(error.message),
        transient=error.transient,
        details=details,
    )


def report(
    termination_log: Path, action: Callable[[], MoverResult], *, retry_pod: bool = True
) -> NoReturn:
    """Run `action`, write its result or failure to the termination log, exit 0, 1 or 2.

    `retry_pod=False`: every failure exits 2 (the Job fails at once, the operator decides)."""
    try:
        result = action()
    except DatabaseError as error:
        result = database_failure(error)
    except BaseException as exc:  # the result must be written whatever happened
        if isinstance(exc, SystemExit):
            raise
        failure = classify(exc)
        result = MoverResult.failure(
            failure.reason, redact(str(failure)), transient=failure.transient
        )
    write_termination_message(termination_log, result)
    if result.succeeded:
        click.echo(redact(termination_text(result)))
        sys.exit(0)
    click.echo(f"error: {result.error} ({result.reason})", err=True)
    sys.exit(EXIT_RETRY_POD if retry_pod and result.transient else EXIT_PERMANENT)


def connection(secret_dir: Path, field_name: str) -> ConnectionSettings:
    """Settings from the mounted connection Secret (its password registered for redaction)."""
    return settings_from_secret_dir(secret_dir, field_name=field_name)


class Throttled:
    """Prints a line at most every couple of seconds, and always the last one."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, line: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_EVERY_SECONDS:
            self._last = now
            click.echo(line)


def restore_progress(printer: Throttled) -> Callable[[int, int | None, str], None]:
    """Bytes of SQL fed as progress lines; pg_restore's tables as lines for people only."""

    def show(done: int, total: int | None, unit: str) -> None:
        final = total is not None and done >= total
        if unit == "bytes":
            printer(ProgressLine("restore", done, total).render(), final=final)
        else:
            printer(f"restore: table data {done} of {total if total is not None else '?'}",
                    final=final)  # fmt: skip

    return show


# -- check ----------------------------------------------------------------------------------


def check(
    *,
    target: str,
    token: str,
    source_secret_dir: Path | None,
    source_database: str | None,
    dump_destination: Path | None,
    restore_secret_dir: Path | None,
    restore_database_name: str | None,
    filestore_source: Path | None,
    filestore_path: Path | None,
) -> MoverResult:
    """Every pre-flight rule, in the order a user would fix them; the first failure raises."""
    details: dict[str, Any] = {"target": target}
    if source_database is not None and source_secret_dir is not None:
        settings = connection(source_secret_dir, SOURCE_FIELDS.secret)
        source = check_source(settings, source_database)
        click.echo(
            f"check: source database {source.database!r} on PostgreSQL {source.server_version} "
            f"(pg_dump {source.client_version}), {source.size_bytes} bytes"
        )
        if dump_destination is not None:
            check_dump_destination(dump_destination, token=token)
        details["source"] = {
            "database": source.database,
            "serverVersion": source.server_version,
            "clientVersion": source.client_version,
            "sizeBytes": source.size_bytes,
        }
    if restore_database_name is not None and restore_secret_dir is not None:
        settings = connection(restore_secret_dir, RESTORE_FIELDS.secret)
        restore = check_restore_target(settings, restore_database_name, token=token)
        click.echo(
            f"check: restore target {restore.database!r} on PostgreSQL {restore.server_version} "
            f"(pg_restore {restore.client_version})"
            + (", restored already by this resource" if restore.already_restored else ", free")
        )
        details["restore"] = {
            "database": restore.database,
            "serverVersion": restore.server_version,
            "clientVersion": restore.client_version,
            "alreadyRestored": restore.already_restored,
        }
    if filestore_source is not None and filestore_path is not None:
        built = check_filestore(filestore_source, filestore_path, token=token)
        click.echo(f"check: filestore {filestore_source} present, {filestore_path} free")
        details["filestore"] = {"alreadyBuilt": built}
    return MoverResult(True, details=details)


# -- dump -----------------------------------------------------------------------------------


def dump(secret_dir: Path, database: str, destination: Path, token: str | None) -> MoverResult:
    """pg_dump `database` to `destination` (its directory made if needed; never over a file
    but the one `token`'s resource published before a crash)."""
    settings = connection(secret_dir, SOURCE_FIELDS.secret)
    destination.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"dump: database {database!r} on {settings.address} to {destination}")
    result = dump_database(
        settings, database, destination, progress=ProgressPrinter("dump"), token=token
    )
    click.echo(ProgressLine("dump", result.bytes, result.bytes).render())
    return MoverResult(
        True,
        bytes=result.bytes,
        sha256=result.sha256,
        path=str(result.path),
        details={"database": result.database, "serverVersion": result.server_version},
    )


# -- restore --------------------------------------------------------------------------------


def restore(
    *,
    secret_dir: Path,
    database: str,
    dump_path: Path,
    target: str,
    token: str,
    filestore_source: Path | None,
    filestore_path: Path | None,
) -> MoverResult:
    """Restore `dump_path` (a v1 file, or an upgrade/request set's dump) as the new
    `database` (verified at `target`), then its filestore."""
    settings = connection(secret_dir, RESTORE_FIELDS.secret)
    printer = Throttled()
    parts = upgraded_parts(dump_path)
    click.echo(f"restore: {parts.dump} into new database {database!r} on {settings.address}")
    restored = restore_database(
        settings,
        parts.dump,
        database,
        target=target,
        token=token,
        progress=restore_progress(printer),
    )
    how = "adopted (restored by an earlier attempt)" if restored.adopted else "restored"
    click.echo(f"restore: {database!r} {how}, base module at {restored.base_version}")
    details: dict[str, Any] = {
        "database": restored.database,
        "baseVersion": restored.base_version,
        "format": restored.format.value,
    }
    if filestore_source is not None and filestore_path is not None:
        click.echo(f"filestore: {filestore_source} -> {filestore_path}")
        built = build_filestore(
            filestore_source,
            filestore_path,
            upgraded=parts.filestore,
            token=token,
            progress=lambda files, _total: printer(f"filestore: {files} files"),
        )
        click.echo(
            f"filestore: {built.files} files ({built.linked} linked, {built.copied} copied, "
            f"{built.merged} from the upgrade)"
        )
        details.update(filestoreFiles=built.files, filestoreMerged=built.merged)
    return MoverResult(True, details=details)


# -- commands -------------------------------------------------------------------------------

CONNECTION_DIR_HELP = (
    "Directory of the mounted connection Secret (one file per key: host, port, username and "
    "the rest of a CloudNativePG <cluster>-app Secret)."
)
DIRECTORY = click.Path(path_type=Path, file_okay=False)
FILE = click.Path(path_type=Path, dir_okay=False)
TARGET = click.option("--target", required=True, help="The Odoo series upgraded to, e.g. 18.0.")
TOKEN = click.option(
    "--token",
    required=True,
    help="Identifies this restore across attempts (the resource's uid): a rerun recognises the "
    "database and filestore it made.",
)
FILESTORE_SOURCE = click.option(
    "--filestore-source", type=DIRECTORY, help="The production filestore (only read)."
)
FILESTORE_PATH = click.option(
    "--filestore-path", type=DIRECTORY, help="The new filestore (must not exist)."
)


@click.command("check", cls=MoverCommand)
@TARGET
@TOKEN
@click.option("--source-secret-dir", type=DIRECTORY, help=CONNECTION_DIR_HELP)
@click.option("--source-database", help="The database to dump.")
@click.option("--dump-destination", type=FILE, help="Where the dump will go (must not exist).")
@click.option("--restore-secret-dir", type=DIRECTORY, help=CONNECTION_DIR_HELP)
@click.option("--restore-database", help="The database to restore into (must not exist).")
@FILESTORE_SOURCE
@FILESTORE_PATH
@TERMINATION_LOG
def check_command(
    target: str,
    token: str,
    source_secret_dir: Path | None,
    source_database: str | None,
    dump_destination: Path | None,
    restore_secret_dir: Path | None,
    restore_database: str | None,
    filestore_source: Path | None,
    filestore_path: Path | None,
    termination_log: Path,
) -> None:
    """Pre-flight: check the source database, the restore target and the filestore."""
    report(
        termination_log,
        lambda: check(
            target=target,
            token=token,
            source_secret_dir=source_secret_dir,
            source_database=source_database,
            dump_destination=dump_destination,
            restore_secret_dir=restore_secret_dir,
            restore_database_name=restore_database,
            filestore_source=filestore_source,
            filestore_path=filestore_path,
        ),
        retry_pod=False,
    )


@click.command("dump", cls=MoverCommand)
@click.option("--secret-dir", required=True, type=DIRECTORY, help=CONNECTION_DIR_HELP)
@click.option("--database", required=True, help="The database to dump.")
@click.option("--destination", required=True, type=FILE, help="The dump file (must not exist).")
@click.option(
    "--token",
    help="Identifies this dump across attempts (the resource's uid): a rerun recognises the "
    "file it published.",
)
@TERMINATION_LOG
def dump_command(
    secret_dir: Path, database: str, destination: Path, token: str | None, termination_log: Path
) -> None:
    """Dump a live database (pg_dump custom format, no owners) to a new file."""
    report(termination_log, lambda: dump(secret_dir, database, destination, token))


@click.command("restore", cls=MoverCommand)
@click.option("--secret-dir", required=True, type=DIRECTORY, help=CONNECTION_DIR_HELP)
@click.option("--database", required=True, help="The NEW database to restore into.")
@click.option(
    "--dump",
    "dump_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The upgraded dump: a file (database-v1), or the downloaded set's directory "
    "(upgrade-request: its directory-format dump restored, its filestore/ merged).",
)
@TARGET
@TOKEN
@FILESTORE_SOURCE
@FILESTORE_PATH
@TERMINATION_LOG
def restore_command(
    secret_dir: Path,
    database: str,
    dump_path: Path,
    target: str,
    token: str,
    filestore_source: Path | None,
    filestore_path: Path | None,
    termination_log: Path,
) -> None:
    """Restore the upgraded dump into a new, verified database; build its filestore."""
    report(
        termination_log,
        lambda: restore(
            secret_dir=secret_dir,
            database=database,
            dump_path=dump_path,
            target=target,
            token=token,
            filestore_source=filestore_source,
            filestore_path=filestore_path,
        ),
    )
