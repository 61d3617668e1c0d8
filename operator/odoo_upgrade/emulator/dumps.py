"""Guess what an uploaded file is: pg_dump custom format, plain SQL, zip or gzip.

The format comes from the first bytes (and, for a zip, its central directory). The Odoo
version comes, as on the platform, from the dump's own `ir_module_module` row of `base`: the
SQL is streamed until that table's rows are read (pg_restore extracts just that table from a
custom-format archive), so memory does not grow with the dump. What the platform calls
`compressions`, `database_version`, `postgresql` and `filestore` comes from here.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from odoo_upgrade.database.child import StderrTail, libpq_message
from odoo_upgrade.database.errors import ClientToolsMissing
from odoo_upgrade.database.tools import find_client_tools
from odoo_upgrade.database.versions import odoo_series
from odoo_upgrade.emulator.sql_scan import OdooSqlScanner

SNIFF_BYTES = 1 << 20
SCAN_BLOCK = 1 << 20
NOT_A_DUMP_MESSAGE = (
    "The file you uploaded is not a valid database dump. Supported formats are a PostgreSQL "
    "dump (custom format or plain SQL, optionally gzipped) or a zip archive containing dump.sql."
)
_ODOO_VERSION = re.compile(rb"Odoo version[:= ]+(?:saas~)?(\d+\.\d+)")
_PG_DUMPED_FROM = re.compile(rb"Dumped from database version (\d+(?:\.\d+)?)")
_SQL_START = re.compile(rb"^\s*(--|SET |CREATE |BEGIN|SELECT |COPY |INSERT |ALTER |\\connect)")


@dataclass(frozen=True)
class DumpInfo:
    """What the platform would guess about an uploaded file."""

    valid: bool
    compressions: list[str] = field(default_factory=list)
    database_version: str | None = None
    postgresql: str | None = None
    filestore: bool = False
    customer_message: str | None = None


def _major(version: str | None) -> str | None:
    """'14.5' -> '14', '9.6.3' -> '9.6' (how PostgreSQL names its major versions)."""
    if not version:
        return None
    parts = version.split(".")
    if parts[0].isdigit() and int(parts[0]) < 10 and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _odoo_version(head: bytes) -> str | None:
    match = _ODOO_VERSION.search(head)
    return match.group(1).decode() if match else None


@dataclass(frozen=True)
class PgdmpHeader:
    """What a custom-format archive's header says (pg_dump's `ReadHead`, then the TOC count)."""

    server_version: str | None
    toc_entries: int | None  # 0 or less: no database in it (the test suite's synthetic dumps)


def read_pgdmp_header(head: bytes) -> PgdmpHeader:
    """Parse the first bytes of a custom-format archive; unknown fields are None."""
    try:
        vmaj, vmin = head[5], head[6]
        int_size = head[8]
        pos = 11  # magic(5) + version(3) + intSize + offSize + format

        def read_int() -> int:
            nonlocal pos
            sign = head[pos]
            value = int.from_bytes(head[pos + 1 : pos + 1 + int_size], "little")
            pos += 1 + int_size
            if pos > len(head):
                raise IndexError(pos)
            return -value if sign else value

        def read_str() -> str:
            nonlocal pos
            length = read_int()
            if length < 0:
                return ""
            text = head[pos : pos + length].decode("utf-8", "replace")
            pos += length
            return text

        if (vmaj, vmin) >= (1, 15):
            pos += 1  # compression algorithm, one byte
        else:
            read_int()  # compression level
        if (vmaj, vmin) >= (1, 4):
            for _ in range(7):  # creation timestamp
                read_int()
        read_str()  # database name
        server_version = None
        if (vmaj, vmin) >= (1, 10):
            server_version = read_str() or None
            read_str()  # pg_dump's version
        return PgdmpHeader(server_version, read_int())
    except (IndexError, ValueError):
        return PgdmpHeader(None, None)


def holds_database(path: Path) -> bool:
    """A custom-format archive (or directory-format dump) with TOC entries: something
    pg_restore can restore."""
    if path.is_dir():
        path = path / "toc.dat"
    with path.open("rb") as stream:
        entries = read_pgdmp_header(stream.read(SNIFF_BYTES)).toc_entries
    return entries is not None and entries > 0


def _base_series(stream: BinaryIO) -> str | None:
    """The Odoo series of the `base` module's row in the SQL of `stream` (read until found)."""
    scanner = OdooSqlScanner()
    while not scanner.modules_read and (chunk := stream.read(SCAN_BLOCK)):
        scanner.feed(chunk)
    scanner.finish()
    return odoo_series(scanner.base_version)


def tools_missing_message(what: str) -> str:
    return (
        f"The upgrade service cannot read {what}: the PostgreSQL client tools (pg_restore, "
        "psql) are not installed on the emulator host (install postgresql-client)."
    )


def _pgdmp_base_series(path: Path) -> str | None:
    """The base module's series in a custom-format archive, read with pg_restore.

    Raises DumpUnreadable when pg_restore is missing or cannot read the archive.
    """
    try:
        tools = find_client_tools()
    except ClientToolsMissing:
        raise DumpUnreadable(tools_missing_message("PostgreSQL custom-format dumps")) from None
    process = subprocess.Popen(
        [tools.path("pg_restore"), "--data-only", "--table=ir_module_module", "--file=-",
         str(path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    stderr = StderrTail(process.stderr)
    with process.stdout as stdout:
        series = _base_series(stdout)  # type: ignore[arg-type]
        while stdout.read(SCAN_BLOCK):  # the rest, so that pg_restore ends normally
            pass
    if process.wait() != 0:
        message = libpq_message(stderr.text(), limit=300)
        raise DumpUnreadable(f"The database dump could not be read by pg_restore: {message}")
    return series


class DumpUnreadable(Exception):
    """The dump looks like a dump, but it cannot be read: `str()` is the customer message."""


def _looks_like_sql(head: bytes) -> bool:
    if b"\x00" in head[:4096]:
        return False
    return bool(_SQL_START.match(head)) or b"PostgreSQL database dump" in head


def _sniff_plain(head: bytes) -> DumpInfo | None:
    """pg_dump custom or plain SQL, from the first bytes; None when neither."""
    if head.startswith(b"PGDMP"):
        return DumpInfo(
            valid=True,
            compressions=["pgdmp_custom"],
            database_version=_odoo_version(head),
            postgresql=_major(read_pgdmp_header(head).server_version),
        )
    if _looks_like_sql(head):
        found = _PG_DUMPED_FROM.search(head)
        return DumpInfo(
            valid=True,
            compressions=["sql"],
            database_version=_odoo_version(head),
            postgresql=_major(found.group(1).decode()) if found else None,
        )
    return None


def _sniff_directory(path: Path) -> DumpInfo:
    """A pg_dump directory-format dump (upgrade/request uploads): `toc.dat` and data files."""
    try:
        with (path / "toc.dat").open("rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError:
        head = b""
    if not head.startswith(b"PGDMP"):
        return DumpInfo(valid=False, customer_message=NOT_A_DUMP_MESSAGE)
    info = DumpInfo(
        valid=True,
        compressions=["pgdmp_directory"],
        postgresql=_major(read_pgdmp_header(head).server_version),
    )
    try:
        series = _database_series(path, info)
    except DumpUnreadable as exc:
        return replace(info, valid=False, customer_message=str(exc))
    return replace(info, database_version=series)


def _sniff_zip(path: Path) -> DumpInfo | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "dump.sql" not in names:
                return None
            with archive.open("dump.sql") as member:
                inner = _sniff_plain(member.read(SNIFF_BYTES))
            manifest: dict[str, object] = {}
            if "manifest.json" in names:
                try:
                    loaded = json.loads(archive.read("manifest.json"))
                    manifest = loaded if isinstance(loaded, dict) else {}
                except ValueError:
                    manifest = {}
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError):
        return None
    if inner is None:
        return None
    version = manifest.get("version")
    pg_version = manifest.get("pg_version")
    return DumpInfo(
        valid=True,
        compressions=["zip", *inner.compressions],
        database_version=str(version) if version else inner.database_version,
        postgresql=_major(str(pg_version)) if pg_version else inner.postgresql,
        filestore=any(name.startswith("filestore/") for name in names),
    )


def _sniff_gzip(path: Path) -> DumpInfo | None:
    try:
        with gzip.open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return None
    inner = _sniff_plain(head)
    if inner is None:
        return None
    return DumpInfo(
        valid=True,
        compressions=["gzip", *inner.compressions],
        database_version=inner.database_version,
        postgresql=inner.postgresql,
    )


def _database_series(path: Path, info: DumpInfo) -> str | None:
    """The series of the dump's own `base` row (None when it has none, e.g. a sample)."""
    kind = info.compressions[0]
    try:
        if kind in ("pgdmp_custom", "pgdmp_directory"):
            return _pgdmp_base_series(path) if holds_database(path) else None
        if info.compressions[-1] != "sql":
            return None
        if kind == "zip":
            with zipfile.ZipFile(path) as archive, archive.open("dump.sql") as member:
                return _base_series(member)  # type: ignore[arg-type]
        if kind == "gzip":
            with gzip.open(path, "rb") as unpacked:
                return _base_series(unpacked)  # type: ignore[arg-type]
        with path.open("rb") as raw:
            return _base_series(raw)
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError):
        return None


def sniff_dump(path: Path) -> DumpInfo:
    """Guess the format and versions of the file at `path` (streams it, never holds it).

    The format comes from the first bytes; the Odoo version from the dump's own
    `ir_module_module` row of `base`, else a zip's manifest, else an `Odoo version` marker.
    """
    info: DumpInfo | None = None
    if path.is_dir():
        return _sniff_directory(path)
    try:
        with path.open("rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except FileNotFoundError:
        head = b""
    if head.startswith(b"PK\x03\x04"):
        info = _sniff_zip(path)
    elif head.startswith(b"\x1f\x8b"):
        info = _sniff_gzip(path)
    elif head:
        info = _sniff_plain(head)
    if info is None:
        return DumpInfo(valid=False, customer_message=NOT_A_DUMP_MESSAGE)
    try:
        series = _database_series(path, info)
    except DumpUnreadable as exc:
        return replace(info, valid=False, customer_message=str(exc))
    return replace(info, database_version=series) if series else info
