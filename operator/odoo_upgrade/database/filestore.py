"""The new database's filestore: a copy of the production filestore with the upgrade's merged in.

Odoo names filestore files by the sha1 of their content (`ab/abcdef…`) and never changes one in
place, so a hard link is a valid copy and costs no space; across filesystems (or where links
are refused) files are copied. The upgraded archive's `filestore/` is merged over the copy by
writing each file beside its place and renaming it in: a linked file is replaced as a
directory entry, never written through, so the source stays unchanged.

Built in a hidden sibling `.<name>.odoo-upgrade-part`, renamed to `path` at the end, never over
an existing path. With a token, `.<name>.odoo-upgrade.json` beside it records whose it is, so
that a rerun after the rename reports the finished copy instead of refusing it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from odoo_upgrade.database.errors import (
    FILESTORE_FIELDS,
    FilestoreArchiveInvalid,
    FilestoreDestinationExists,
    FilestoreFields,
    FilestorePathsOverlap,
    FilestoreSourceNotFound,
    FilestoreSymlinkedDirectory,
)
from odoo_upgrade.database.formats import ODOO_ZIP_FILESTORE
from odoo_upgrade.noreplace import rename_without_replacing

COPY_BLOCK = 1024 * 1024
PART_SUFFIX = ".odoo-upgrade-part"
RECORD_SUFFIX = ".odoo-upgrade.json"
# Link failures that mean "copy instead": another filesystem, links refused (protected
# hardlinks, a filesystem without them), too many links to one inode.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)

# (files done, total or None)
FilestoreProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class FilestoreResult:
    path: Path
    files: int  # regular files in the new filestore
    linked: int
    copied: int
    merged: int  # files written from the upgraded archive (new or replacing)
    adopted: bool  # built by an earlier run of this token; nothing was done now

    def status(self) -> dict[str, Any]:
        """The `status.restore` field this result fills."""
        return {"filestoreFiles": self.files}


def part_dir(path: Path) -> Path:
    return path.with_name(f".{path.name}{PART_SUFFIX}")


def record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{RECORD_SUFFIX}")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def _adopted(path: Path, token: str | None) -> FilestoreResult | None:
    """The result of an earlier run of `token` that published `path`, if that is what it is."""
    if token is None or not path.is_dir():
        return None
    try:
        record = json.loads(record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("token") != _token_hash(token):
        return None
    return FilestoreResult(
        path,
        int(record.get("files", 0)),
        int(record.get("linked", 0)),
        int(record.get("copied", 0)),
        int(record.get("merged", 0)),
        adopted=True,
    )


def check_filestore(
    source_path: str | Path,
    path: str | Path,
    *,
    token: str | None = None,
    fields: FilestoreFields = FILESTORE_FIELDS,
) -> bool:
    """`source_path` is a directory, `path` does not exist and neither contains the other.

    True when `path` is this token's finished copy already (nothing to do).
    """
    source, destination = Path(source_path), Path(path)
    if not source.is_dir():
        raise FilestoreSourceNotFound(
            f"{fields.source_path}: {source} is not a directory (the production filestore to "
            "copy, e.g. <data_dir>/filestore/<database>)",
            field=fields.source_path,
        )
    if os.path.lexists(destination):
        if _adopted(destination, token) is not None:
            return True
        raise FilestoreDestinationExists(
            f"{fields.path}: {destination} exists already; the new filestore is never written "
            "over an existing path (choose another path, or remove it yourself)",
            field=fields.path,
        )
    real_source, real_destination = source.resolve(), destination.resolve()
    if real_destination.is_relative_to(real_source) or real_source.is_relative_to(real_destination):
        raise FilestorePathsOverlap(
            f"{fields.path}: {destination} and {fields.source_path} {source} overlap; the new "
            "filestore must lie outside the production one",
            field=fields.path,
        )
    return False


class _Copier:
    """Links (or copies) files into the part tree, counting what it did."""

    def __init__(self) -> None:
        self.linked = 0
        self.copied = 0
        self._links_work = True

    def place(self, source: Path, target: Path) -> None:
        if self._links_work:
            try:
                os.link(source, target, follow_symlinks=False)
                self.linked += 1
                return
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                # Another filesystem stays another filesystem: stop trying for each file.
                self._links_work = exc.errno != errno.EXDEV
        shutil.copy2(source, target, follow_symlinks=False)
        self.copied += 1


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        yield Path(directory), dirnames, sorted(filenames)


def _copy_tree(
    source: Path, part: Path, copier: _Copier, progress: FilestoreProgress | None
) -> None:
    part.mkdir(mode=stat.S_IMODE(source.stat().st_mode) | 0o700)
    done = 0
    for directory, dirnames, filenames in _walk(source):
        relative = directory.relative_to(source)
        for name in list(dirnames):
            entry = directory / name
            if entry.is_symlink():  # os.walk lists it but does not enter it: keep it a link
                os.symlink(os.readlink(entry), part / relative / name)
                dirnames.remove(name)
                continue
            (part / relative / name).mkdir(mode=stat.S_IMODE(entry.lstat().st_mode) | 0o700)
        for name in filenames:
            entry = directory / name
            target = part / relative / name
            if entry.is_symlink():
                os.symlink(os.readlink(entry), target)
            else:
                copier.place(entry, target)
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(done, None)


def _safe_relative(name: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise FilestoreArchiveInvalid(
            f"the upgraded archive's filestore holds an unsafe path {name!r}; nothing was merged"
        )
    return relative


def _refuse_linked_parents(part: Path, target: Path, fields: FilestoreFields) -> None:
    """The copy keeps the source's symlinked directories as links: a merge writing below one
    would land in the directory it points to, the source's own storage."""
    current = part
    for name in target.relative_to(part).parts[:-1]:
        current = current / name
        if current.is_symlink():
            linked = current.relative_to(part).as_posix()
            raise FilestoreSymlinkedDirectory(
                f"{fields.source_path}: {linked!r} is a symbolic link to a directory and the "
                f"upgraded filestore writes into it; make it a real directory (nothing was "
                f"merged, the source is untouched)"
            )
        if not current.exists():
            return


def _replace_with(stream: BinaryIO, part: Path, target: Path, fields: FilestoreFields) -> None:
    """Write `stream` to `target` (inside `part`) through a sibling temp file and a rename."""
    _refuse_linked_parents(part, target, fields)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.merge")
    with temporary.open("wb") as out:
        shutil.copyfileobj(stream, out, COPY_BLOCK)
    # os.replace swaps the directory entry: a hard link to the source is dropped, not written.
    os.replace(temporary, target)


def _merge_zip(archive_path: Path, part: Path, fields: FilestoreFields) -> int:
    merged = 0
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = [
                m
                for m in archive.infolist()
                if m.filename.startswith(ODOO_ZIP_FILESTORE) and not m.is_dir()
            ]
            relatives = [_safe_relative(m.filename[len(ODOO_ZIP_FILESTORE) :]) for m in members]
            for member, relative in zip(members, relatives, strict=True):
                with archive.open(member) as stream:
                    target = part.joinpath(*relative.parts)
                    _replace_with(stream, part, target, fields)  # type: ignore[arg-type]
                merged += 1
    except zipfile.BadZipFile as exc:
        raise FilestoreArchiveInvalid(f"{archive_path}: not a readable zip ({exc})") from None
    return merged


def _merge_directory(upgraded: Path, part: Path, fields: FilestoreFields) -> int:
    merged = 0
    for directory, _, filenames in _walk(upgraded):
        relative = directory.relative_to(upgraded)
        for name in filenames:
            entry = directory / name
            if entry.is_symlink() or not entry.is_file():
                continue
            with entry.open("rb") as stream:
                _replace_with(stream, part, part / relative / name, fields)
            merged += 1
    return merged


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _sync_filesystem(path: Path) -> None:
    """Make the tree durable: syncfs(2) of its filesystem (sync(2) where there is none)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _publish(part: Path, path: Path, fields: FilestoreFields) -> None:
    """Rename `part` to `path` unless `path` exists."""
    if not rename_without_replacing(part, path):
        raise FilestoreDestinationExists(
            f"{fields.path}: {path} appeared while the filestore was copied; it was left untouched",
            field=fields.path,
        )


def _count_files(root: Path) -> int:
    return sum(len(filenames) for _, _, filenames in os.walk(root))


def build_filestore(
    source_path: str | Path,
    path: str | Path,
    *,
    upgraded: str | Path | None = None,
    token: str | None = None,
    fields: FilestoreFields = FILESTORE_FIELDS,
    progress: FilestoreProgress | None = None,
) -> FilestoreResult:
    """Make `path` = copy of `source_path` + the upgraded filestore; blocking.

    `upgraded` is the upgraded archive (a zip whose `filestore/` members are merged), a
    directory that is itself a filestore (the upgrade/request API's `filestore/`), or a
    plain SQL file (nothing to merge). The source is only read. Refuses an existing `path`
    unless this `token` built it. `progress(files, None)` every 1000 files, then the total.
    """
    source, destination = Path(source_path), Path(path)
    if check_filestore(source, destination, token=token, fields=fields):
        adopted = _adopted(destination, token)
        assert adopted is not None
        return adopted
    upgraded_path = Path(upgraded) if upgraded is not None else None
    if upgraded_path is not None and not upgraded_path.exists():
        raise FilestoreArchiveInvalid(f"the upgraded filestore {upgraded_path} does not exist")
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = part_dir(destination)
    if os.path.lexists(part):
        shutil.rmtree(part)  # a crashed run's: links and copies only, the source is not in it
    copier = _Copier()
    _copy_tree(source, part, copier, progress)
    merged = 0
    if upgraded_path is not None:
        if upgraded_path.is_dir():
            merged = _merge_directory(upgraded_path, part, fields)
        elif zipfile.is_zipfile(upgraded_path):
            merged = _merge_zip(upgraded_path, part, fields)
        # else: an upgraded SQL file (destination format `sql`) carries no filestore
    files = _count_files(part)
    result = FilestoreResult(destination, files, copier.linked, copier.copied, merged, False)
    if token is not None:
        _write_record(destination, token, result)
    _sync_filesystem(part)
    try:
        _publish(part, destination, fields)
    except BaseException:
        record_path(destination).unlink(missing_ok=True)
        raise
    if progress is not None:
        progress(files, files)
    return result


def _write_record(destination: Path, token: str, result: FilestoreResult) -> None:
    record = record_path(destination)
    temporary = record.with_name(record.name + ".part")
    temporary.write_text(
        json.dumps(
            {
                "token": _token_hash(token),
                "files": result.files,
                "linked": result.linked,
                "copied": result.copied,
                "merged": result.merged,
            },
            sort_keys=True,
        ),
        encoding="utf-8",
    )
    os.replace(temporary, record)
