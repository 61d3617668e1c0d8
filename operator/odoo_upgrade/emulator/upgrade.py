"""The emulator's 'upgrade': a deterministic function of (dump, target), streamed in chunks.

The upgraded archive is a zip (like the platform's) holding `dump.sql` and `manifest.json`.
`dump.sql` is a header naming the target and the source's sha256, followed by the source's SQL
(unpacked from a zip or gzip upload; other uploads are carried as they are). It is stored
uncompressed, so the upgraded SQL stream is a byte range of the archive and needs no second
copy on disk. Memory use does not depend on the dump's size.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from odoo_upgrade.emulator.dumps import DumpInfo

CHUNK = 1 << 20
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class UpgradedFiles:
    """Where the upgraded archive is, and which byte range of it is the SQL stream."""

    archive: Path
    sql_offset: int
    sql_length: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _source_sql(source: Path, info: DumpInfo) -> Iterator[BinaryIO]:
    """The SQL (or custom-format) payload of the upload, unpacked from zip or gzip."""
    if info.compressions[:1] == ["zip"]:
        with zipfile.ZipFile(source) as archive, archive.open("dump.sql") as member:
            yield member  # type: ignore[misc]
    elif info.compressions[:1] == ["gzip"]:
        with gzip.open(source, "rb") as unpacked:
            yield unpacked  # type: ignore[misc]
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


def build_upgraded(source: Path, info: DumpInfo, target: str, destination: Path) -> UpgradedFiles:
    """Write the upgraded archive of `source` for `target` to `destination` (atomically)."""
    source_sha = _sha256(source)
    header = (
        "-- Odoo database upgraded by odoo-upgrade-emulator\n"
        f"-- Odoo version {target}\n"
        f"-- Upgraded from {info.database_version or 'unknown'} "
        f"({'+'.join(info.compressions)}), source sha256 {source_sha}\n"
    ).encode()
    partial = destination.with_name(f".{destination.name}.part")
    member = zipfile.ZipInfo("dump.sql", date_time=_FIXED_DATE)
    member.compress_type = zipfile.ZIP_STORED
    member.external_attr = 0o644 << 16
    manifest = zipfile.ZipInfo("manifest.json", date_time=_FIXED_DATE)
    manifest.external_attr = 0o644 << 16
    with zipfile.ZipFile(partial, "w") as archive:
        with archive.open(member, "w", force_zip64=True) as out, _source_sql(source, info) as sql:
            out.write(header)
            while chunk := sql.read(CHUNK):
                out.write(chunk)
        archive.writestr(
            manifest,
            json.dumps(
                {"version": target, "source_sha256": source_sha, "pg_version": info.postgresql},
                sort_keys=True,
            ),
        )
        written = archive.getinfo("dump.sql")
    with partial.open("rb+") as stream:
        os.fsync(stream.fileno())
    partial.replace(destination)
    return UpgradedFiles(
        archive=destination,
        sql_offset=_member_data_offset(destination, written.header_offset),
        sql_length=written.file_size,
    )
