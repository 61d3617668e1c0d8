"""What the platform gives back: which upgraded file a v1 download fetches (by
`destination.format` / `--format`), and the layout of an upgrade/request upgraded set.

An upgrade/request download is a directory (the set):

    <dump_name>/            the upgraded dump, pg_dump directory format (default upgraded.dump)
    filestore/              the upgraded attachments, merged over a copy of production's
    upgrade-report.html     the platform's report
    upgrade.log             the platform's upgrade log
    SHA256SUMS              ours: sha256sum format over every other file
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the platform package imports this module's names: no cycle at run time
    from odoo_upgrade.platform.models import UpgradeRequest

DEFAULT_DUMP_NAME = "upgraded.dump"
FILESTORE_NAME = "filestore"
REPORT_NAME = "upgrade-report.html"
LOG_NAME = "upgrade.log"
SHA256SUMS = "SHA256SUMS"
DUMP_TOC = "toc.dat"  # what makes a directory a pg_dump directory-format dump


class UpgradedFormat(StrEnum):
    ARCHIVE = "archive"  # the platform's dump archive (`upgraded/archive`)
    SQL = "sql"  # the plain SQL stream (`upgraded/sql`)


def upgraded_url(request: UpgradeRequest, fmt: str) -> str | None:
    """The key-bearing URL of the upgraded file in `fmt` (a secret), if the platform gave one."""
    if fmt == UpgradedFormat.SQL:
        return request.upgraded_sql_url
    return request.upgraded_dump_url


def upgraded_sftp_name(shared_file: str) -> str:
    """The name the SFTP server gives the upgraded archive once done (`get upgraded_<file>`)."""
    return f"upgraded_{shared_file}"


@dataclass(frozen=True)
class UpgradedParts:
    """Where a restore reads from: the dump, and what is merged over the filestore copy."""

    dump: Path
    filestore: Path | None  # None: nothing to merge


def upgraded_parts(downloaded: Path, dump_name: str | None = None) -> UpgradedParts:
    """The dump and the upgraded filestore of what a download published at `downloaded`.

    A v1 file is both (an archive's `filestore/` members are merged; SQL carries none). A
    set's dump is `<dump_name>/`, or, when the name is not known here (a restore Job), its
    one top-level directory holding a pg_dump table of contents; its filestore `filestore/`.
    """
    if not (downloaded / SHA256SUMS).is_file():
        return UpgradedParts(downloaded, downloaded)
    if dump_name is not None:
        dump = downloaded / dump_name
    else:
        dumps = sorted(
            entry
            for entry in downloaded.iterdir()
            if entry.is_dir() and not entry.is_symlink() and (entry / DUMP_TOC).is_file()
        )
        # Not one: left to the restore to refuse, naming the path (no dump, or ambiguous).
        dump = dumps[0] if len(dumps) == 1 else downloaded
    filestore = downloaded / FILESTORE_NAME
    return UpgradedParts(dump, filestore if filestore.is_dir() else None)
