"""The upgraded set of an `upgrade/request` request, as the platform leaves it under `/data/`.

`build_upgraded_set` is the one producer: `<dump_name>/` (the upgraded dump, a directory),
`filestore/` (the attachments the upgrade added) and `upgrade-report.html`. With a scratch
PostgreSQL server (`--postgres-url`) and an uploaded dump that holds a database, the dump is a
real directory-format dump that `pg_restore` restores (`upgrade.produce_upgraded_directory_dump`);
without one (the suite's synthetic samples), the dump directory holds what
`upgrade.build_upgraded` makes: its `dump.sql` and `manifest.json`.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import zipfile
from pathlib import Path

from odoo_upgrade.emulator.dumps import DumpInfo, holds_database
from odoo_upgrade.emulator.upgrade import build_upgraded, produce_upgraded_directory_dump
from odoo_upgrade.request.upgraded import DEFAULT_DUMP_NAME, FILESTORE_NAME, REPORT_NAME

_STAGING = ".upgrade-build"


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _carried_as_is(
    payload: Path, info: DumpInfo, target: str, staging: Path, dump_name: str
) -> str:
    """The set's dump without a scratch server: `build_upgraded`'s files; its attachment."""
    archive = build_upgraded(payload, info, target, staging / "upgraded.zip").archive
    dump_dir = staging / dump_name
    with zipfile.ZipFile(archive) as upgraded:
        for member in upgraded.namelist():
            dump_dir.mkdir(parents=True, exist_ok=True)
            with upgraded.open(member) as unpacked, (dump_dir / member).open("wb") as out:
                shutil.copyfileobj(unpacked, out, 1 << 20)
    archive.unlink()
    notes = f"Upgrade notes: database upgraded to {target} (source sha256 {_sha256(payload)}).\n"
    attachment = notes.encode()
    checksum = hashlib.sha1(attachment, usedforsecurity=False).hexdigest()
    _write(staging / FILESTORE_NAME / checksum[:2] / checksum, attachment)
    return checksum


def build_upgraded_set(
    source: Path,
    info: DumpInfo,
    target: str,
    data_dir: Path,
    dump_name: str = DEFAULT_DUMP_NAME,
    postgres_url: str | None = None,
) -> None:
    """Write the upgraded set of `source` for `target` into `data_dir`, each piece atomically.

    Built under a staging directory and renamed into place, so a download never sees a half
    written piece; a previous build's leftovers are removed first. Raises UpgradeRefused (a
    customer message) when a database dump cannot be upgraded.
    """
    staging = data_dir / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # A directory-format upload: its toc.dat stands for the whole dump here.
    payload = source / "toc.dat" if source.is_dir() else source
    if postgres_url and holds_database(source):
        produced = produce_upgraded_directory_dump(
            source, info, target, staging / dump_name, postgres_url,
            filestore_dir=staging / FILESTORE_NAME,
        )  # fmt: skip
        checksum = produced.filestore_files[0].rsplit("/", 1)[-1]
    else:
        checksum = _carried_as_is(payload, info, target, staging, dump_name)
    report = (
        "<!DOCTYPE html>\n<html><head><title>Upgrade report</title></head><body>"
        f"<h1>Upgrade to {html.escape(target)}</h1>"
        f"<p>Source: {html.escape('+'.join(info.compressions) or 'unknown')} dump, Odoo "
        f"{html.escape(info.database_version or 'unknown')}, PostgreSQL "
        f"{html.escape(info.postgresql or 'unknown')}.</p>"
        f"<p>New attachments: 1 ({html.escape(checksum)}).</p></body></html>\n"
    )
    _write(staging / REPORT_NAME, report.encode())
    _fsync_tree(staging)
    for name in (dump_name, FILESTORE_NAME, REPORT_NAME):
        final = data_dir / name
        if final.is_dir():
            shutil.rmtree(final)
        (staging / name).replace(final)
    staging.rmdir()
