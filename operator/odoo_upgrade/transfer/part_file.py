"""Downloads land in `.<name>.part` beside the destination and become final atomically.

The part file survives a crash so that a rerun resumes it (its content is re-hashed, so the
sha256 covers the whole file). The final name is taken with `os.link`, which fails if the
name exists: a destination that appeared meanwhile is never clobbered.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from odoo_upgrade.transfer.errors import DestinationExists, SizeMismatch, TransferError

HASH_BLOCK = 4 * 1024 * 1024


def part_path(destination: Path) -> Path:
    """`<dir>/.<name>.part`: hidden, beside the destination so the rename stays on one disk."""
    return destination.with_name(f".{destination.name}.part")


def checksum_path(destination: Path) -> Path:
    return destination.with_name(f"{destination.name}.sha256")


def checksum_line(sha256_hex: str, name: str) -> str:
    """One line in the `sha256sum` format, so `sha256sum -c <file>.sha256` checks it."""
    return f"{sha256_hex}  {name}\n"


def refuse_existing(destination: Path) -> None:
    if os.path.lexists(destination):
        raise DestinationExists(
            f"destination {destination} exists already; downloads never overwrite a file "
            "(move it away or choose another path)"
        )


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _claim_name(source: Path, destination: Path) -> None:
    """Give `source` the name `destination` unless that name exists (never replace it)."""
    try:
        os.link(source, destination)
    except FileExistsError:
        raise DestinationExists(
            f"destination {destination} appeared while downloading; it was left untouched "
            f"and the download kept in {source}"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # No hard links on this filesystem: claim the name with O_EXCL, then rename over it.
        try:
            os.close(os.open(destination, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise DestinationExists(
                f"destination {destination} appeared while downloading; it was left "
                f"untouched and the download kept in {source}"
            ) from None
        os.replace(source, destination)
    else:
        os.unlink(source)


def write_checksum_file(destination: Path, sha256_hex: str) -> Path:
    """Write `<destination>.sha256` atomically (temp file, fsync, rename, fsync directory)."""
    final = checksum_path(destination)
    temp = final.with_name(f".{final.name}.part")
    with open(temp, "w", encoding="utf-8") as out:
        out.write(checksum_line(sha256_hex, destination.name))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, final)
    fsync_directory(final.parent)
    return final


class PartFile:
    """An exclusively locked `.part` file being appended to, with the sha256 of its content."""

    def __init__(self, destination: Path, file: BinaryIO) -> None:
        self.destination = destination
        self.path = part_path(destination)
        self._file = file
        self.hasher = hashlib.sha256()
        self.size = 0

    @classmethod
    def open(cls, destination: str | os.PathLike[str]) -> PartFile:
        """Open (or resume) the part file of `destination`; refuse if the destination exists.

        Blocking: re-hashes an existing part file. Raises `TransferError` if another process
        is downloading to the same destination.
        """
        dest = Path(destination)
        refuse_existing(dest)
        if not dest.parent.is_dir():
            raise TransferError(f"destination directory {dest.parent} does not exist")
        file = open(part_path(dest), "a+b")  # noqa: SIM115 - owned by the PartFile
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise TransferError(
                f"another download to {dest} is in progress (its {part_path(dest).name} is locked)"
            ) from None
        part = cls(dest, file)
        part._hash_existing()
        return part

    def _hash_existing(self) -> None:
        fd = self._file.fileno()
        offset = 0
        while block := os.pread(fd, HASH_BLOCK, offset):
            self.hasher.update(block)
            offset += len(block)
        self.size = offset

    def append(self, data: bytes | memoryview) -> None:
        """Write `data` at the end and hash it (hashlib and write both release the GIL)."""
        self._file.write(data)
        self.hasher.update(data)
        # Start writing back now and drop written pages from the page cache: the final fsync
        # then has little left to do, and a large dump does not fill the pod's memory with
        # cache (it counts against its cgroup limit).
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self.size += len(data)

    def restart(self) -> None:
        """Drop what was received so far (the server sent the whole file, or something else)."""
        self._file.flush()
        self._file.truncate(0)
        self.hasher = hashlib.sha256()
        self.size = 0

    def finish(self, expected_size: int | None) -> str:
        """Check the size, fsync, publish under the final name, write `.sha256`; return hex."""
        self._file.flush()
        if expected_size is not None and self.size != expected_size:
            self.discard()
            raise SizeMismatch(
                f"download of {self.destination.name}: got {self.size} bytes, "
                f"expected {expected_size}; the partial file was removed"
            )
        os.fsync(self._file.fileno())
        digest = self.hasher.hexdigest()
        try:
            _claim_name(self.path, self.destination)
        finally:
            self.close()
        fsync_directory(self.destination.parent)
        write_checksum_file(self.destination, digest)
        return digest

    def close(self) -> None:
        """Release the lock and keep the part file for a later resume."""
        if not self._file.closed:
            self._file.flush()
            self._file.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
