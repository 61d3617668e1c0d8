"""What a dump to restore is: pg_dump custom, directory or tar; plain SQL, gzipped SQL; an Odoo
zip backup (`dump.sql`, `filestore/`, `manifest.json`). Told from its first bytes.

`open_sql` streams the SQL of the three SQL-carrying formats, with the position in the file
as it reads, for progress: memory never depends on the dump's size.
"""

from __future__ import annotations

import enum
import gzip
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from odoo_upgrade.database.errors import DumpFormatUnknown, DumpNotFound

HEAD_BYTES = 64 * 1024
ODOO_ZIP_SQL = "dump.sql"
ODOO_ZIP_FILESTORE = "filestore/"


class DumpFormat(enum.Enum):
    CUSTOM = "custom"
    DIRECTORY = "directory"
    TAR = "tar"
    SQL = "sql"
    SQL_GZIP = "sql.gz"
    ODOO_ZIP = "zip"

    @property
    def uses_pg_restore(self) -> bool:
        return self in (DumpFormat.CUSTOM, DumpFormat.DIRECTORY, DumpFormat.TAR)


def detect_dump_format(path: Path, *, field_name: str = "destination.path") -> DumpFormat:
    """The format of the dump at `path`; `DumpNotFound`/`DumpFormatUnknown` name `field_name`."""
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return DumpFormat.DIRECTORY
        raise DumpFormatUnknown(
            f"{field_name}: {path} is a directory without toc.dat, not a pg_dump "
            "directory-format dump",
            field=field_name,
        )
    try:
        with path.open("rb") as stream:
            head = stream.read(HEAD_BYTES)
    except FileNotFoundError:
        raise DumpNotFound(f"{field_name}: {path} does not exist", field=field_name) from None
    if head.startswith(b"PGDMP"):
        return DumpFormat.CUSTOM
    if head.startswith(b"PK\x03\x04"):
        if _zip_has_sql(path):
            return DumpFormat.ODOO_ZIP
        raise DumpFormatUnknown(
            f"{field_name}: {path} is a zip without {ODOO_ZIP_SQL}, not an Odoo backup",
            field=field_name,
        )
    if head.startswith(b"\x1f\x8b"):
        return DumpFormat.SQL_GZIP
    if head[257:262] == b"ustar":
        return DumpFormat.TAR
    if head and b"\x00" not in head:
        return DumpFormat.SQL
    raise DumpFormatUnknown(
        f"{field_name}: {path} is none of pg_dump custom, directory or tar format, plain SQL, "
        "gzipped SQL or an Odoo zip backup",
        field=field_name,
    )


def _zip_has_sql(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return ODOO_ZIP_SQL in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


@dataclass
class SqlStream:
    """The SQL of a dump being read: `stream`, and how far into the file we are."""

    stream: BinaryIO
    total: int | None
    compressed: BinaryIO | None = None

    def position(self, fed: int) -> int:
        """Bytes of progress, given `fed` bytes of SQL read so far."""
        if self.compressed is not None:  # gzip: how much of the compressed file is consumed
            return self.compressed.tell()
        return fed


@contextmanager
def open_sql(path: Path, fmt: DumpFormat) -> Iterator[SqlStream]:
    """Stream the SQL of a plain, gzipped or Odoo zip dump."""
    try:
        if fmt is DumpFormat.SQL:
            with path.open("rb") as raw:
                yield SqlStream(raw, os.fstat(raw.fileno()).st_size)
        elif fmt is DumpFormat.SQL_GZIP:
            with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                yield SqlStream(unpacked, os.fstat(raw.fileno()).st_size, raw)  # type: ignore[arg-type]
        elif fmt is DumpFormat.ODOO_ZIP:
            with zipfile.ZipFile(path) as archive, archive.open(ODOO_ZIP_SQL) as member:
                size = archive.getinfo(ODOO_ZIP_SQL).file_size
                yield SqlStream(member, size)  # type: ignore[arg-type]
        else:
            raise ValueError(f"{fmt.value} dumps are read by pg_restore, not as SQL")
    except (zipfile.BadZipFile, zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise DumpFormatUnknown(f"{path}: the dump is damaged ({exc})") from None
