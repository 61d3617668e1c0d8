"""The upgraded set of an `upgrade/request` request, as the platform leaves it under `/data/`.

`build_upgraded_set` is the one producer: `<dump_name>/` (the upgraded dump, a directory),
`filestore/` (the attachments the upgrade added) and `upgrade-report.html`. Today the dump
directory holds what `upgrade.build_upgraded` makes (its `dump.sql` and `manifest.json`, not a
pg_restore-able directory-format dump); point this function at a real directory-format producer
to change that, nothing else needs to know.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import zipfile
from pathlib import Path

from odoo_upgrade.emulator.dumps import DumpInfo
from odoo_upgrade.emulator.upgrade import build_upgraded

DEFAULT_DUMP_NAME = "upgraded.dump"
REPORT_NAME = "upgrade-report.html"
FILESTORE_NAME = "filestore"
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


def build_upgraded_set(
    source: Path, info: DumpInfo, target: str, data_dir: Path, dump_name: str = DEFAULT_DUMP_NAME
) -> None:
    """Write the upgraded set of `source` for `target` into `data_dir`, each piece atomically.

    Built under a staging directory and renamed into place, so a download never sees a half
    written piece; a previous build's leftovers are removed first.
    """
    staging = data_dir / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # A directory-format upload: its toc.dat stands for the whole dump here.
    payload = source / "toc.dat" if source.is_dir() else source
    archive = build_upgraded(payload, info, target, staging / "upgraded.zip").archive
    dump_dir = staging / dump_name
    with zipfile.ZipFile(archive) as upgraded:
        for member in upgraded.namelist():
            dump_dir.mkdir(parents=True, exist_ok=True)
            with upgraded.open(member) as unpacked, (dump_dir / member).open("wb") as out:
                shutil.copyfileobj(unpacked, out, 1 << 20)
    archive.unlink()
    source_sha = _sha256(payload)
    notes = f"Upgrade notes: database upgraded to {target} (source sha256 {source_sha}).\n"
    attachment = notes.encode()
    checksum = hashlib.sha1(attachment, usedforsecurity=False).hexdigest()
    _write(staging / FILESTORE_NAME / checksum[:2] / checksum, attachment)
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
