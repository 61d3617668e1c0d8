"""Dump a live database: `pg_dump --format=custom --no-owner`, streamed to `.<name>.part`.

The part file is hashed while written, fsynced and published under the final name only if
that name is still free (`transfer.part_file`: never over an existing file), with
`<name>.sha256` beside it. A part left by a crashed run is started over. Memory use is one
read buffer, whatever the database's size.

Given a `token` (the resource's uid), the dump is bound to it like a download to its request
(`transfer.binding`): a receipt is written before the rename, and a rerun after a crash
between the rename and the result recognises the file as its own instead of refusing it.
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
from odoo_upgrade.transfer.binding import DownloadBinding, remove_receipt
from odoo_upgrade.transfer.errors import DestinationExists, TransferError
from odoo_upgrade.transfer.part_file import PartFile, published_download, refuse_existing
from odoo_upgrade.transfer.results import TransferResult

READ_BLOCK = 1024 * 1024
PG_DUMP_SOURCE = "pg_dump"  # the "source" a dump's receipt names (a download's is its URL)


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


def _binding(token: str | None) -> DownloadBinding | None:
    return None if token is None else DownloadBinding(f"dump:{token}")


def _published_dump(destination: Path, token: str | None, path_field: str) -> TransferResult | None:
    """The dump `token`'s resource already published at `destination` (its receipt and bytes
    match), else None. Blocking: hashes the file."""
    binding = _binding(token)
    if binding is None:
        return None
    try:
        return published_download(destination, binding)
    except DestinationExists:  # a `.sha256` beside it describes other bytes
        raise _exists_already(destination, path_field) from None


def forget_dump_receipt(destination: str | Path) -> None:
    """For a caller that records its dump itself (the CLI's state file): once recorded, the
    dump is no longer recognised by its token, so a dump left from an older run is refused,
    not adopted. The operator keeps its receipts: a resource's uid names one dump forever."""
    remove_receipt(Path(destination))


def check_dump_destination(
    destination: str | Path, *, path_field: str = "source.path", token: str | None = None
) -> None:
    """The pre-flight rule of a dump's file: nothing exists under its name yet, or it is the
    dump `token`'s resource published before a crash."""
    target = Path(destination)
    try:
        refuse_existing(target)
    except DestinationExists:
        if _published_dump(target, token, path_field) is None:
            raise _exists_already(target, path_field) from None


def _open_part(destination: Path, path_field: str, token: str | None) -> PartFile:
    _refuse_existing(destination, path_field)
    try:
        part = PartFile.open(destination, binding=_binding(token), source=PG_DUMP_SOURCE)
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
    token: str | None = None,
) -> DumpResult:
    """Dump `database` to `destination` (custom format, no owners); blocking.

    Refuses an existing `destination` before connecting (unless it is the dump `token`'s
    resource published before a crash: then, after the checks, its result is returned and
    nothing is dumped again), then checks (reachable, credentials, database present, pg_dump
    new enough). `progress(bytes_written, total)` after each block, where `total` is the size
    of the database's table data: an estimate (pg_dump compresses, so the dump usually ends
    below it). On failure nothing is left: no part file, no final file.
    """
    target = Path(destination)
    published = _published_dump(target, token, path_field)
    if published is None:
        _refuse_existing(target, path_field)
    tools = tools or find_client_tools(hint=hint)
    checked = check_source(settings, database, tools=tools, fields=fields, hint=hint)
    if published is not None:
        return DumpResult(
            target, database, published.bytes, published.sha256, checked.server_version
        )
    part = _open_part(target, path_field, token)
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
