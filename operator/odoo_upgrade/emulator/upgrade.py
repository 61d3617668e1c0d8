"""The emulator's 'upgrade': a deterministic function of (dump, target), streamed in chunks.

The v1 upgraded archive is a zip, like the platform's: `dump.sql`, `manifest.json` and
`filestore/`. `dump.sql` is a header naming the target and the source's sha256, then the
source's SQL (unpacked from a zip or gzip upload; a custom-format archive is turned into SQL by
`pg_restore --file=-`), then, when the dump is an Odoo database, the 'upgrade': every installed
module and `base` move to the target series, and one new attachment (an upgrade report) gets
an `ir_attachment` row, its file under `filestore/`. Real psql restores the result. Dumps
that hold no database (the test suite's synthetic samples) are carried as they are.

`dump.sql` is stored uncompressed, so the upgraded SQL stream is a byte range of the archive
and needs no second copy on disk. Memory use does not depend on the dump's size.

`produce_upgraded_directory_dump` makes the upgrade/request API's `upgraded.dump/`
(directory format): it needs a scratch PostgreSQL server to restore into and dump from.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from odoo_upgrade.database import (
    ClientToolsMissing,
    DatabaseError,
    DatabaseServer,
    detect_dump_format,
    find_client_tools,
    settings_from_url,
)
from odoo_upgrade.database.child import StderrTail, libpq_message, stop
from odoo_upgrade.database.connection import conninfo_dbname
from odoo_upgrade.database.restore import base_module_version, load_dump
from odoo_upgrade.database.server import quote_literal
from odoo_upgrade.emulator.dumps import DumpInfo, holds_database, tools_missing_message
from odoo_upgrade.emulator.sql_scan import ATTACHMENTS, MODULES, OdooSqlScanner

CHUNK = 1 << 20
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# Columns of the new ir_attachment row, those the dump's table has are filled.
_ATTACHMENT_FIELDS = (
    "name",
    "type",
    "res_model",
    "store_fname",
    "checksum",
    "file_size",
    "mimetype",
    "description",
    "create_date",
    "write_date",
)
_INSTALLED_STATES = ("installed", "to upgrade", "to install")
POSTGRES_URL_MISSING = (
    "The upgrade service cannot produce a directory-format dump: the emulator was started "
    "without a scratch PostgreSQL server (--postgres-url postgresql://USER:PASSWORD@HOST:PORT/"
    "postgres)."
)


class UpgradeRefused(Exception):
    """The dump cannot be upgraded; `str()` is the customer message (request `invalid`)."""


@dataclass(frozen=True)
class UpgradedFiles:
    """Where the upgraded archive is, and which byte range of it is the SQL stream."""

    archive: Path
    sql_offset: int
    sql_length: int


@dataclass(frozen=True)
class NewAttachment:
    """The file the upgrade adds: an upgrade report, named by its sha1 as Odoo names files."""

    name: str
    content: bytes

    @classmethod
    def report(cls, target: str, source_sha256: str) -> NewAttachment:
        text = (
            f"Odoo upgrade report\nUpgraded to Odoo {target} by odoo-upgrade-emulator.\n"
            f"Source dump sha256 {source_sha256}\n"
        )
        return cls(f"upgrade_report_{target}.txt", text.encode())

    @property
    def checksum(self) -> str:
        return hashlib.sha1(self.content).hexdigest()  # noqa: S324 (Odoo's file naming)

    @property
    def store_fname(self) -> str:
        """`ab/abcdef…`, relative to the filestore."""
        return f"{self.checksum[:2]}/{self.checksum}"


def upgrade_sql(
    target: str,
    module_columns: Sequence[str],
    attachment_columns: Sequence[str] | None,
    attachment: NewAttachment,
) -> bytes:
    """SQL moving `base` and the installed modules to `target`, and adding `attachment`.

    Built for the dump's own columns: `state` only if the module table has one, the new
    attachment row only with the columns its `ir_attachment` has.
    """
    rest = (
        "nullif(regexp_replace(coalesce(latest_version, ''), "
        "'^(saas~)?[0-9]+[.][0-9]+[.]?', ''), '')"
    )
    where = "name = 'base'"
    if "state" in module_columns:
        states = ", ".join(quote_literal(s) for s in _INSTALLED_STATES)
        where += f" OR state IN ({states})"
    statements = [
        "",
        "-- odoo-upgrade-emulator: the upgrade",
        f"UPDATE public.{MODULES} SET latest_version = {quote_literal(target + '.')} || "  # noqa: S608
        f"coalesce({rest}, '1.0') WHERE {where};",
    ]
    if attachment_columns is not None:
        values = {
            "name": quote_literal(attachment.name),
            "type": "'binary'",
            "res_model": "'ir.module.module'",
            "store_fname": quote_literal(attachment.store_fname),
            "checksum": quote_literal(attachment.checksum),
            "file_size": str(len(attachment.content)),
            "mimetype": "'text/plain'",
            "description": quote_literal(f"Upgrade to {target}"),
            "create_date": "'2000-01-01 00:00:00'",
            "write_date": "'2000-01-01 00:00:00'",
        }
        columns = [c for c in _ATTACHMENT_FIELDS if c in attachment_columns]
        statements.append(
            # Column names from the fixed list above, values quoted.
            f"INSERT INTO public.{ATTACHMENTS} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join(values[c] for c in columns)});"
        )
    return ("\n".join(statements) + "\n").encode()


def _sha256(path: Path) -> str:
    """Of a file; of a directory-format dump, of its files' names and contents in order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\x00")
        with file.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _pg_restore_sql(source: Path) -> Iterator[BinaryIO]:
    """The SQL of a custom-format archive, streamed from `pg_restore --file=-`."""
    try:
        tools = find_client_tools()
    except ClientToolsMissing:
        raise UpgradeRefused(tools_missing_message("PostgreSQL custom-format dumps")) from None
    process = subprocess.Popen(
        [tools.path("pg_restore"), "--no-owner", "--no-privileges", "--file=-", str(source)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    stderr = StderrTail(process.stderr)
    try:
        with process.stdout as stdout:
            yield stdout  # type: ignore[misc]
        returncode = process.wait()
    finally:
        stop(process)
    if returncode != 0:
        raise UpgradeRefused(
            f"The database dump could not be read by pg_restore: {libpq_message(stderr.text())}"
        )


@contextmanager
def _source_sql(source: Path, info: DumpInfo) -> Iterator[BinaryIO]:
    """The SQL (or, for samples, the raw custom-format payload) of the upload."""
    if info.compressions[:1] == ["zip"]:
        with zipfile.ZipFile(source) as archive, archive.open("dump.sql") as member:
            yield member  # type: ignore[misc]
    elif info.compressions[:1] == ["gzip"]:
        with gzip.open(source, "rb") as unpacked:
            yield unpacked  # type: ignore[misc]
    elif info.compressions[:1] in (["pgdmp_custom"], ["pgdmp_directory"]) and holds_database(
        source
    ):
        with _pg_restore_sql(source) as sql:
            yield sql
    else:
        with source.open("rb") as raw:
            yield raw


def _member_data_offset(archive: Path, header_offset: int) -> int:
    """Offset of a member's data: after its local header, file name and extra field."""
    with archive.open("rb") as stream:
        stream.seek(header_offset)
        header = stream.read(30)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return int(header_offset + 30 + name_length + extra_length)


def _zip_info(name: str) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    member.external_attr = 0o644 << 16
    return member


def build_upgraded(source: Path, info: DumpInfo, target: str, destination: Path) -> UpgradedFiles:
    """Write the upgraded archive of `source` for `target` to `destination` (atomically).

    Raises UpgradeRefused (the request becomes `invalid`) when the dump cannot be read.
    """
    source_sha = _sha256(source)
    header = (
        "-- Odoo database upgraded by odoo-upgrade-emulator\n"
        f"-- Odoo version {target}\n"
        f"-- Upgraded from {info.database_version or 'unknown'} "
        f"({'+'.join(info.compressions)}), source sha256 {source_sha}\n"
    ).encode()
    attachment = NewAttachment.report(target, source_sha)
    partial = destination.with_name(f".{destination.name}.part")
    member = _zip_info("dump.sql")
    member.compress_type = zipfile.ZIP_STORED
    scanner = OdooSqlScanner()
    try:
        with zipfile.ZipFile(partial, "w") as archive:
            with (
                archive.open(member, "w", force_zip64=True) as out,
                _source_sql(source, info) as sql,
            ):
                out.write(header)
                while chunk := sql.read(CHUNK):
                    scanner.feed(chunk)
                    out.write(chunk)
                scanner.finish()
                if scanner.is_odoo:
                    out.write(
                        upgrade_sql(
                            target,
                            scanner.columns[MODULES],
                            scanner.columns.get(ATTACHMENTS),
                            attachment,
                        )
                    )
            manifest = {
                "version": target,
                "source_sha256": source_sha,
                "pg_version": info.postgresql,
            }
            archive.writestr(_zip_info("manifest.json"), json.dumps(manifest, sort_keys=True))
            if scanner.is_odoo:
                archive.writestr(
                    _zip_info(f"filestore/{attachment.store_fname}"), attachment.content
                )
            written = archive.getinfo("dump.sql")
        with partial.open("rb+") as stream:
            os.fsync(stream.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
    return UpgradedFiles(
        archive=destination,
        sql_offset=_member_data_offset(destination, written.header_offset),
        sql_length=written.file_size,
    )


# -- directory format (upgrade/request API) --------------------------------------------------


@dataclass(frozen=True)
class UpgradedDirectoryDump:
    """A directory-format upgraded dump, and the new filestore files written beside it."""

    path: Path  # the `upgraded.dump/` directory, holding toc.dat
    base_version: str | None
    filestore_files: tuple[str, ...]  # paths relative to the filestore dir, `ab/abcdef…`


def _columns(server: DatabaseServer, database: str, table: str) -> list[str]:
    """The columns of `public.<table>` in the scratch database (none: no such table)."""
    condition = f"table_schema = 'public' AND table_name = {quote_literal(table)}"
    rows = server.query(
        f"SELECT column_name FROM information_schema.columns WHERE {condition};",  # noqa: S608
        database,
        doing=f"reading the columns of {table}",
    )
    return [r[0] for r in rows]


def _pg_dump_directory(server: DatabaseServer, database: str, out: Path) -> None:
    completed = subprocess.run(
        [
            server.tools.path("pg_dump"),
            "--format=directory",
            "--no-owner",
            "--jobs=2",
            "--no-password",
            f"--file={out}",
            f"--dbname={conninfo_dbname(database)}",
        ],
        env=server.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if completed.returncode != 0:
        message = libpq_message(completed.stderr.decode("utf-8", "replace"))
        raise UpgradeRefused(f"The upgraded database could not be dumped: {message}")


def produce_upgraded_directory_dump(
    original: Path,
    info: DumpInfo,
    target: str,
    out_dir: Path,
    postgres_url: str | None,
    *,
    filestore_dir: Path | None = None,
) -> UpgradedDirectoryDump:
    """Restore `original` into a scratch database of `postgres_url`, upgrade it to `target`,
    `pg_dump --format=directory` it to `out_dir` (built beside it, renamed at the end), drop
    the scratch database. With `filestore_dir`, the new attachment's file is written there.

    Raises UpgradeRefused with a customer message: no URL, no client tools, an unreadable
    dump or a database that is not Odoo's.
    """
    if not postgres_url:
        raise UpgradeRefused(POSTGRES_URL_MISSING)
    if not info.valid:
        raise UpgradeRefused(info.customer_message or "The database dump is not valid.")
    try:
        settings, _ = settings_from_url(postgres_url)
        tools = find_client_tools()
        fmt = detect_dump_format(original, field_name="the uploaded dump")
    except ClientToolsMissing:
        raise UpgradeRefused(tools_missing_message("database dumps")) from None
    except (ValueError, DatabaseError) as exc:
        raise UpgradeRefused(f"The database dump cannot be upgraded: {exc}") from None
    attachment = NewAttachment.report(target, _sha256(original))
    scratch = f"emulator_scratch_{secrets.token_hex(6)}"
    part = out_dir.with_name(f".{out_dir.name}.part")
    if part.exists():
        shutil.rmtree(part)
    try:
        with DatabaseServer(settings, tools=tools) as server:
            server.create_database(scratch, comment="odoo-upgrade-emulator scratch database")
            try:
                load_dump(server, scratch, original, fmt)
                module_columns = _columns(server, scratch, MODULES)
                if "latest_version" not in module_columns:
                    raise UpgradeRefused(
                        "The database dump is not an Odoo database (no ir_module_module table)."
                    )
                attachment_columns = _columns(server, scratch, ATTACHMENTS) or None
                sql = upgrade_sql(target, module_columns, attachment_columns, attachment)
                server.query(sql.decode(), scratch, doing="upgrading the scratch database")
                version = base_module_version(server, scratch)
                _pg_dump_directory(server, scratch, part)
            finally:
                server.drop_database(scratch)
    except DatabaseError as exc:
        shutil.rmtree(part, ignore_errors=True)
        raise UpgradeRefused(f"The database dump could not be upgraded: {exc.message}") from None
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    os.rename(part, out_dir)
    files: tuple[str, ...] = ()
    if filestore_dir is not None:
        path = filestore_dir / attachment.store_fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(attachment.content)
        files = (attachment.store_fname,)
    return UpgradedDirectoryDump(out_dir, version, files)
