"""Restore a dump into a NEW database, verified before it takes its final name.

The dump goes into `<target>__restoring_<hash of target and token>`, a name only this restore
uses; the `base` module must then be at the target series; only then is the database renamed
to its final name (`ALTER DATABASE ... RENAME TO`). A crash at any point leaves no database
under the final name; a rerun with the same token drops the leftover temporary database and
starts over. A database under the final name is never touched, except to recognise the one
this token restored already (its comment says so), which a rerun then reports as done.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odoo_upgrade.database.child import StderrTail, libpq_message, stop
from odoo_upgrade.database.connection import ConnectionSettings, conninfo_dbname, redact_password
from odoo_upgrade.database.errors import (
    CLIENT_IMAGE_HINT,
    RESTORE_FIELDS,
    DatabaseError,
    DatabaseFields,
    RestoreFailed,
    RestoreTargetExists,
    RestoreTemporaryNameTaken,
    RestoreVerificationFailed,
)
from odoo_upgrade.database.formats import DumpFormat, detect_dump_format, open_sql
from odoo_upgrade.database.preflight import require_restorable, restore_marker
from odoo_upgrade.database.server import MAX_NAME_BYTES, DatabaseServer, validate_database_name
from odoo_upgrade.database.tools import ClientTools, find_client_tools
from odoo_upgrade.database.versions import in_target_series

TEMPORARY_INFIX = "__restoring_"
FEED_BLOCK = 1024 * 1024
DEFAULT_JOBS = 2
# (done, total or None, unit): unit "bytes" (SQL fed to psql) or "tables" (pg_restore's
# table data items started).
RestoreProgress = Callable[[int, int | None, str], None]


@dataclass(frozen=True)
class RestoreResult:
    database: str
    base_version: str  # ir_module_module.latest_version of `base`, e.g. "18.0.1.3"
    format: DumpFormat
    adopted: bool  # restored by an earlier run of this token; nothing was done now

    def status(self) -> dict[str, Any]:
        """The `status.restore` fields this result fills (camelCase, as in the CRD)."""
        return {"database": self.database, "baseVersion": self.base_version}


def temporary_database_name(target: str, token: str) -> str:
    """`<target>__restoring_<8 hex>`: deterministic, within 63 bytes, unique to the pair."""
    digest = hashlib.sha256(f"{target}\x00{token}".encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len(TEMPORARY_INFIX) - len(digest)
    prefix = target.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{prefix}{TEMPORARY_INFIX}{digest}"


def base_module_version(server: DatabaseServer, database: str) -> str | None:
    """`latest_version` of the `base` row of `ir_module_module`; None if there is none."""
    rows = server.query(
        "SELECT coalesce((SELECT latest_version FROM public.ir_module_module "
        "WHERE name = 'base' LIMIT 1), '') "
        "WHERE to_regclass('public.ir_module_module') IS NOT NULL;",
        database,
        doing="reading the base module's version",
    )
    return (rows[0][0] or None) if rows else None


def verify_base_series(server: DatabaseServer, database: str, target: str, *, shown_as: str) -> str:
    """The base module's version if it is of the `target` series; else RestoreVerificationFailed."""
    version = base_module_version(server, database)
    fields = server.fields
    if version is None:
        raise RestoreVerificationFailed(
            f"{fields.name}: the restored dump has no ir_module_module row for 'base' "
            f"(not an Odoo database?); {shown_as}",
            field=fields.name,
        )
    if not in_target_series(version, target):
        raise RestoreVerificationFailed(
            f"{fields.name}: the restored database's base module is at {version}, not of the "
            f"target series {target}; {shown_as}",
            field=fields.name,
        )
    return version


def load_dump(
    server: DatabaseServer,
    database: str,
    dump: Path,
    fmt: DumpFormat,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: RestoreProgress | None = None,
) -> None:
    """Restore `dump` into the existing, empty `database` (no owners, no privileges)."""
    if fmt.uses_pg_restore:
        _pg_restore(server, database, dump, fmt, jobs, progress)
    else:
        _psql_restore(server, database, dump, fmt, progress)


def _table_data_items(server: DatabaseServer, dump: Path) -> int | None:
    listed = subprocess.run(
        [server.tools.path("pg_restore"), "--list", str(dump)],
        capture_output=True,
        env=server.env,
        check=False,
    )
    if listed.returncode != 0:
        return None
    return sum(1 for line in listed.stdout.splitlines() if b" TABLE DATA " in line)


def _pg_restore(
    server: DatabaseServer,
    database: str,
    dump: Path,
    fmt: DumpFormat,
    jobs: int,
    progress: RestoreProgress | None,
) -> None:
    total = _table_data_items(server, dump) if progress is not None else None
    started = 0

    def on_line(line: str) -> None:
        nonlocal started
        if progress is not None and "processing data for table" in line:
            started += 1
            progress(started, total, "tables")

    args = [
        server.tools.path("pg_restore"),
        "--no-owner",
        # A new database owned by the restoring role: GRANTs to the source's roles would
        # fail where those roles do not exist.
        "--no-privileges",
        "--exit-on-error",
        "--no-password",
        "--verbose",
        f"--dbname={conninfo_dbname(database)}",
    ]
    if fmt is not DumpFormat.TAR:  # tar archives cannot be restored in parallel
        args.append(f"--jobs={max(1, jobs)}")
    process = subprocess.Popen(
        [*args, str(dump)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server.env,
    )
    assert process.stderr is not None
    stderr = StderrTail(process.stderr, on_line)
    try:
        returncode = process.wait()
    finally:
        stop(process)
    if returncode != 0:
        raise _restore_failure(server, database, "pg_restore", returncode, stderr.text())


def _psql_restore(
    server: DatabaseServer,
    database: str,
    dump: Path,
    fmt: DumpFormat,
    progress: RestoreProgress | None,
) -> None:
    args = [
        server.tools.path("psql"),
        "--no-psqlrc",
        "--no-password",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        f"--dbname={conninfo_dbname(database)}",
        "--file=-",
    ]
    with open_sql(dump, fmt) as sql:
        process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=server.env,
        )
        assert process.stdin is not None and process.stderr is not None
        stderr = StderrTail(process.stderr)
        stdin = process.stdin
        fed = 0
        try:
            while block := sql.stream.read(FEED_BLOCK):
                stdin.write(block)
                fed += len(block)
                if progress is not None:
                    progress(sql.position(fed), sql.total, "bytes")
            stdin.close()  # end of input: psql finishes and exits
        except BrokenPipeError:
            pass  # psql stopped at an error: its exit status and stderr say which
        except BaseException:
            stop(process)
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        returncode = process.wait()
    if returncode != 0:
        raise _restore_failure(server, database, "psql", returncode, stderr.text())


def _restore_failure(
    server: DatabaseServer, database: str, tool: str, returncode: int, stderr: str
) -> DatabaseError:
    failure = server.fail(stderr, database, tool, named=False)
    if failure.transient:
        return failure
    message = redact_password(libpq_message(stderr), server.settings)
    return RestoreFailed(
        f"{server.fields.name}: {tool} failed (exit {returncode}) restoring into the "
        f"temporary database {database!r}: {message}",
        field=server.fields.name,
    )


def _drop_leftover(
    server: DatabaseServer, temporary: str, marker: str, existing: dict[str, str | None]
) -> None:
    """Drop a temporary database a crashed run left (ours: our comment, or none at all)."""
    if temporary not in existing:
        return
    comment = existing[temporary]
    # No comment: a run that died between CREATE DATABASE and COMMENT.
    if comment not in (None, marker):
        raise RestoreTemporaryNameTaken(
            f"{server.fields.name}: database {temporary!r}, the temporary name of this restore, "
            f"exists and was not made by it (comment {comment!r}); it was left untouched",
            field=server.fields.name,
        )
    server.drop_database(temporary)


def restore_database(
    settings: ConnectionSettings,
    dump: str | Path,
    database: str,
    *,
    target: str,
    token: str,
    tools: ClientTools | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: RestoreProgress | None = None,
    fields: DatabaseFields = RESTORE_FIELDS,
    dump_field: str = "destination.path",
    hint: str = CLIENT_IMAGE_HINT,
) -> RestoreResult:
    """Restore `dump` (custom, directory, tar, SQL, SQL.gz, Odoo zip) as the new `database`.

    `target` is the Odoo series the `base` module must be at (`18.0`, `saas~17.4`); `token`
    identifies this restore across reruns (e.g. the resource's uid). Refuses an existing
    `database` (RestoreTargetExists, nothing touched) unless this token restored it; blocking.
    """
    validate_database_name(database, fields.name)
    source = Path(dump)
    fmt = detect_dump_format(source, field_name=dump_field)
    tools = tools or find_client_tools(hint=hint)
    marker = restore_marker(token)
    temporary = temporary_database_name(database, token)
    with DatabaseServer(settings, tools=tools, fields=fields) as server:
        facts = require_restorable(server, database, token, hint, also=(temporary,))
        if facts.already_restored:
            version = verify_base_series(
                server, database, target, shown_as="it was restored by an earlier run"
            )
            return RestoreResult(database, version, fmt, adopted=True)
        _drop_leftover(server, temporary, marker, facts.existing)
        server.create_database(temporary, comment=marker)
        try:
            load_dump(server, temporary, source, fmt, jobs=jobs, progress=progress)
            version = verify_base_series(
                server,
                temporary,
                target,
                shown_as=f"the temporary database was dropped and nothing was created as "
                f"{database!r}",
            )
            try:  # fails, and touches nothing, if the target appeared meanwhile
                server.rename_database(temporary, database)
            except DatabaseError as exc:
                if "already exists" in exc.message:
                    raise _target_appeared(server, database) from None
                raise
        except BaseException:
            _drop_quietly(server, temporary)
            raise
    return RestoreResult(database, version, fmt, adopted=False)


def _target_appeared(server: DatabaseServer, database: str) -> RestoreTargetExists:
    return RestoreTargetExists(
        f"{server.fields.name}: database {database!r} appeared on the PostgreSQL server at "
        f"{server.settings.address} during the restore; it was left untouched and the "
        "restored copy dropped",
        field=server.fields.name,
    )


def _drop_quietly(server: DatabaseServer, temporary: str) -> None:
    """Best effort: a rerun drops what this cannot (the server may be the reason we fail)."""
    with contextlib.suppress(DatabaseError):
        server.drop_database(temporary)
