"""Dump a live database: `pg_dump --format=custom --no-owner`, streamed to `.<name>.part`.

The part file is hashed while written, fsynced and published under the final name only if
that name is still free (`transfer.part_file`: never over an existing file), with
`<name>.sha256` beside it. A part left by a crashed run is started over. Memory use is one
read buffer, whatever the database's size.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odoo_upgrade.database.child import StderrTail, stop
from odoo_upgrade.database.connection import ConnectionSettings, conninfo_dbname
from odoo_upgrade.database.errors import (
    CLIENT_IMAGE_HINT,
    SOURCE_FIELDS,
    DatabaseCommandFailed,
    DatabaseFields,
    DumpDestinationExists,
    DumpFailed,
)
from odoo_upgrade.database.preflight import check_source
from odoo_upgrade.database.server import DatabaseServer
from odoo_upgrade.database.tools import ClientTools, find_client_tools
from odoo_upgrade.transfer import ProgressCallback
from odoo_upgrade.transfer.errors import DestinationExists, TransferError
from odoo_upgrade.transfer.part_file import PartFile, refuse_existing

READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class DumpResult:
    path: Path
    database: str
    bytes: int
    sha256: str
    server_version: str  # "15.18"

    def status(self) -> dict[str, Any]:
        """The `status.dump` fields this result fills (camelCase, as in the CRD)."""
        return {"bytes": self.bytes, "sha256": self.sha256, "serverVersion": self.server_version}


def _exists_already(destination: Path, path_field: str) -> DumpDestinationExists:
    return DumpDestinationExists(
        f"{path_field}: {destination} exists already; a dump never overwrites a file "
        "(move it away or choose another path)",
        field=path_field,
    )


def _refuse_existing(destination: Path, path_field: str) -> None:
    try:
        refuse_existing(destination)
    except DestinationExists:
        raise _exists_already(destination, path_field) from None
    if not destination.parent.is_dir():
        raise DumpFailed(
            f"{path_field}: the directory {destination.parent} does not exist", field=path_field
        )


def check_dump_destination(destination: str | Path, *, path_field: str = "source.path") -> None:
    """The pre-flight rule of a dump's file: nothing exists under its name yet."""
    try:
        refuse_existing(Path(destination))
    except DestinationExists:
        raise _exists_already(Path(destination), path_field) from None


def _open_part(destination: Path, path_field: str) -> PartFile:
    _refuse_existing(destination, path_field)
    try:
        part = PartFile.open(destination)
    except DestinationExists:
        raise _exists_already(destination, path_field) from None
    except TransferError as exc:  # another dump to the same file holds its part's lock
        raise DumpFailed(f"{path_field}: {exc}", field=path_field) from None
    if part.size:
        part.restart()  # a crashed run's half dump: pg_dump cannot append to it
    return part


def dump_database(
    settings: ConnectionSettings,
    database: str,
    destination: str | Path,
    *,
    tools: ClientTools | None = None,
    progress: ProgressCallback | None = None,
    fields: DatabaseFields = SOURCE_FIELDS,
    path_field: str = "source.path",
    hint: str = CLIENT_IMAGE_HINT,
) -> DumpResult:
    """Dump `database` to `destination` (custom format, no owners); blocking.

    Refuses an existing `destination` before connecting, then checks (reachable,
    credentials, database present, pg_dump new enough). `progress(bytes_written, total)`
    after each block, where `total` is the size of the database's table data: an estimate
    (pg_dump compresses, so the dump usually ends below it). On failure nothing is left:
    no part file, no final file.
    """
    target = Path(destination)
    _refuse_existing(target, path_field)
    tools = tools or find_client_tools(hint=hint)
    checked = check_source(settings, database, tools=tools, fields=fields, hint=hint)
    part = _open_part(target, path_field)
    try:
        with DatabaseServer(settings, tools=tools, fields=fields) as server:
            _run_pg_dump(server, database, part, checked.data_bytes, progress)
        digest = part.finish(None)
    except DestinationExists:
        part.discard()
        raise DumpDestinationExists(
            f"{path_field}: {target} appeared while dumping; it was left untouched and the "
            "dump discarded",
            field=path_field,
        ) from None
    except BaseException:
        part.discard()
        raise
    return DumpResult(target, database, target.stat().st_size, digest, checked.server_version)


def _run_pg_dump(
    server: DatabaseServer,
    database: str,
    part: PartFile,
    total: int,
    progress: ProgressCallback | None,
) -> None:
    args = [
        server.tools.path("pg_dump"),
        "--format=custom",
        "--no-owner",
        "--no-password",
        f"--dbname={conninfo_dbname(database)}",
    ]
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=server.env,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    stderr = StderrTail(process.stderr)
    buffer = bytearray(READ_BLOCK)
    view = memoryview(buffer)
    try:
        with process.stdout as stdout:
            while count := stdout.readinto(view):  # type: ignore[attr-defined]
                part.append(view[:count])
                if progress is not None:
                    progress(part.size, total)
        returncode = process.wait()
    finally:
        stop(process)
    if returncode != 0:
        failure = server.fail(stderr.text(), database, "pg_dump", named=True)
        if isinstance(failure, DatabaseCommandFailed):
            raise DumpFailed(
                f"{server.fields.name}: pg_dump of {database!r} exited with {returncode}: "
                f"{failure.message}",
                field=server.fields.name,
            )
        raise failure
