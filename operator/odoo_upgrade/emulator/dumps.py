"""Guess what an uploaded file is: pg_dump custom format, plain SQL, zip or gzip.

Only the first bytes are read (and, for a zip, its central directory), so sniffing costs the
same for a 1 KiB and a 1 GiB dump. What the platform calls `compressions`,
`database_version`, `postgresql` and `filestore` comes from here.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SNIFF_BYTES = 1 << 20
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


def _pgdmp_server_version(head: bytes) -> str | None:
    """The server version a custom-format archive header records (pg_dump's `ReadHead`)."""
    try:
        vmaj, vmin = head[5], head[6]
        int_size = head[8]
        pos = 11  # magic(5) + version(3) + intSize + offSize + format

        def read_int() -> int:
            nonlocal pos
            sign = head[pos]
            value = int.from_bytes(head[pos + 1 : pos + 1 + int_size], "little")
            pos += 1 + int_size
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
        if (vmaj, vmin) >= (1, 10):
            return read_str() or None
    except (IndexError, ValueError):
        return None
    return None


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
            postgresql=_major(_pgdmp_server_version(head)),
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


def sniff_dump(path: Path) -> DumpInfo:
    """Guess the format and versions of the file at `path` (never reads it whole)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except FileNotFoundError:
        head = b""
    info: DumpInfo | None = None
    if head.startswith(b"PK\x03\x04"):
        info = _sniff_zip(path)
    elif head.startswith(b"\x1f\x8b"):
        info = _sniff_gzip(path)
    elif head:
        info = _sniff_plain(head)
    return info or DumpInfo(valid=False, customer_message=NOT_A_DUMP_MESSAGE)
