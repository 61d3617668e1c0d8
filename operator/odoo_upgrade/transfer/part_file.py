"""Downloads land in `.<name>.part` beside the destination and become final atomically.

The part file survives a crash so that a rerun resumes it (its content is re-hashed, so the
sha256 covers the whole file). The final name is taken with `os.link`, which fails if the
name exists: a destination that appeared meanwhile is never clobbered, and neither is a
`<name>.sha256` this download did not write.

Given a `DownloadBinding`, a part is resumed only when its origin (`binding.py`) names the
same request and source, and a receipt written before the rename lets `published_download`
recognise the file after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from odoo_upgrade.transfer.binding import (
    DownloadBinding,
    PartOrigin,
    Receipt,
    clear_origin,
    read_origin,
    read_receipt,
    source_digest,
    write_origin,
    write_receipt,
)
from odoo_upgrade.transfer.direct_append import DirectAppend
from odoo_upgrade.transfer.errors import DestinationExists, SizeMismatch, TransferError
from odoo_upgrade.transfer.file_digest import file_digest, hash_descriptor
from odoo_upgrade.transfer.results import TransferResult
from odoo_upgrade.transfer.write_behind import WriteBehind

# absorb(): hashed per slice while in the CPU cache.
ABSORB_SLICE = 1024 * 1024
MAP_WINDOW = 16 * 1024 * 1024


def hash_mapped(fd: int, hasher: Any, start: int, end: int) -> int:
    """Feed bytes `start`..`end` of `fd` to `hasher` straight from the page cache (mmap, no
    copy), one `ABSORB_SLICE` at a time while in the CPU cache, at most `MAP_WINDOW` mapped
    (so memory stays flat); return how far it got (`end`, or less at a window's end)."""
    first = start - start % mmap.ALLOCATIONGRANULARITY
    stop = min(end, first + MAP_WINDOW)
    with mmap.mmap(fd, stop - first, access=mmap.ACCESS_READ, offset=first) as view:
        view.madvise(mmap.MADV_SEQUENTIAL)
        data = memoryview(view)
        try:
            while start < stop:
                piece = data[start - first : start - first + min(ABSORB_SLICE, stop - start)]
                hasher.update(piece)
                start += len(piece)
                piece.release()
        finally:
            data.release()
    return start


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


def refuse_existing_file(destination: Path) -> None:
    """Refuse a destination file, or a checksum file beside it, that exists already."""
    refuse_existing(destination)
    refuse_existing(checksum_path(destination))


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
    """Write `<destination>.sha256` atomically (temp file, fsync, link, fsync directory).

    An existing checksum file is kept if it says the same, and never replaced otherwise
    (`DestinationExists`); only an empty one, left by a crash mid-claim, is filled in.
    """
    final = checksum_path(destination)
    line = checksum_line(sha256_hex, destination.name)
    if _holds(final, line):
        return final
    temp = final.with_name(f".{final.name}.part")
    with open(temp, "w", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())
    try:
        _claim_name(temp, final)
    except DestinationExists:
        temp.unlink(missing_ok=True)
        if not _holds(final, line):
            raise DestinationExists(
                f"{final} exists already with another checksum; it was left untouched "
                f"(move it away: it does not describe {destination.name})"
            ) from None
    fsync_directory(final.parent)
    return final


def _holds(path: Path, text: str) -> bool:
    """True if `path` says `text`; False if absent or empty; DestinationExists otherwise."""
    try:
        found = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    if found == text:
        return True
    if found == "" and path.is_file():
        path.unlink()  # vouches for nothing: a crash between claiming the name and filling it
        return False
    raise DestinationExists(
        f"{path} exists already with another checksum; it was left untouched "
        f"(move it away: it does not describe {path.name.removesuffix('.sha256')})"
    )


class PartFile:
    """An exclusively locked `.part` file being appended to, with the sha256 of its content.

    Bound (`binding` and `source` given), it keeps `origin` (what its bytes are) on disk
    beside it, and `finish` leaves a receipt of what it published.
    """

    def __init__(
        self,
        destination: Path,
        file: BinaryIO,
        binding: DownloadBinding | None = None,
        source: str = "",
    ) -> None:
        self.destination = destination
        self.path = part_path(destination)
        self._file = file
        self.hasher = hashlib.sha256()
        self.size = 0
        self.binding = binding
        self.source = source
        self.origin: PartOrigin | None = None
        # Flushes the part as it grows, so that `finish` has little left to make durable.
        self._behind = WriteBehind(file.fileno())

    @classmethod
    def open(
        cls,
        destination: str | os.PathLike[str],
        *,
        binding: DownloadBinding | None = None,
        source: str = "",
        unsettled: int = 0,
    ) -> PartFile:
        """Open (or resume) the part file of `destination`; refuse if the destination exists.

        With a `binding`, an existing part is kept only if its recorded origin names the same
        request and `source` (a URL or remote file name) and a validator; anything else is
        discarded before a byte of it is read. Without one, any part is resumed. Its last
        `unsettled` bytes are cut off first: a writer killed mid-transfer (OpenSSH's sftp
        writes answers at their offsets as they arrive) may have left holes there.

        Blocking: re-hashes an existing part file. Raises `TransferError` if another process
        is downloading to the same destination.
        """
        dest = Path(destination)
        refuse_existing_file(dest)
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
        part = cls(dest, file, binding, source)
        if binding is not None:
            origin = read_origin(dest)
            if origin is not None and origin.continues(binding, source):
                part.origin = origin
            else:
                part.restart()  # not provably this request's bytes of this file
        if unsettled:
            part._cut(max(0, os.fstat(file.fileno()).st_size - unsettled))
        part._hash_existing()
        return part

    def set_origin(self, origin: PartOrigin) -> None:
        """Record what the part's bytes are, before the first byte of them is written."""
        if self.binding is None:
            return
        if origin != self.origin:
            write_origin(self.destination, origin)
        self.origin = origin

    def new_origin(self, size: int | None, validator: str) -> PartOrigin | None:
        """The origin of this download's bytes from a server answer (None when unbound)."""
        if self.binding is None:
            return None
        return PartOrigin(
            request_id=str(self.binding.request_id),
            source_sha256=source_digest(self.source),
            size=size,
            validator=validator,
        )

    def _hash_existing(self) -> None:
        self.size = hash_descriptor(self._file.fileno(), self.hasher)

    def append(self, data: bytes | memoryview) -> None:
        """Write `data` at the end and hash it (hashlib and write both release the GIL)."""
        self._file.write(data)
        self.hasher.update(data)
        self.size += len(data)
        self._behind.advance(self.size)

    @contextlib.contextmanager
    def receiving(self) -> Iterator[DirectAppend]:
        """Append bytes received from a socket past the page cache (`direct_append.py`).

        On leaving, every byte received is written, also when an exception leaves. If a write
        failed, the part is cut back to its last whole write and hashed again from the disk
        before the error is raised, so its size and hash stay those of its bytes.
        """
        self._file.flush()
        sink = DirectAppend(self.path, self.size, self.hasher, self._behind.advance)
        try:
            yield sink
        finally:
            try:
                sink.close()
            except OSError:
                self._cut(sink.written)
                self.hasher = hashlib.sha256()
                self._hash_existing()
                raise
            finally:
                self.size = sink.written

    def absorb(self, upto: int | None = None) -> None:
        """Hash what another process (OpenSSH's sftp) wrote to the part, up to `upto`
        (default: its end), and flush it behind as `append` does.

        Hashed straight from the page cache (mmap, no copy), 1 MiB at a time so that each
        slice is hashed while in the CPU cache.
        """
        self._file.flush()
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        end = size if upto is None else min(upto, size)
        if end <= self.size:
            return
        while self.size < end:
            self.size = hash_mapped(fd, self.hasher, self.size, end)
        self._behind.advance(self.size)

    def drop_unhashed(self) -> None:
        """Cut the part back to what was hashed (bytes written by another process after it)."""
        self._cut(self.size)

    def restart(self) -> None:
        """Drop what was received so far (the server sent the whole file, or something else)."""
        self._cut(0)
        self.hasher = hashlib.sha256()
        self.size = 0
        if self.binding is not None:
            clear_origin(self.destination)  # after the truncate: never an origin for others' bytes
            self.origin = None

    def _cut(self, size: int) -> None:
        """Truncate the part to `size` bytes, with no background flush running meanwhile."""
        self._file.flush()
        self._behind.pause()
        self._file.truncate(size)
        self._behind.truncated(size)

    def finish(self, expected_size: int | None, *, attempts: int = 1) -> str:
        """Check the size, fsync, publish under the final name, write `.sha256`; return hex.

        Bound, a receipt (request, size, sha256, `attempts`) is written before the rename.
        """
        self._file.flush()
        if expected_size is not None and self.size != expected_size:
            self.discard()
            raise SizeMismatch(
                f"download of {self.destination.name}: got {self.size} bytes, "
                f"expected {expected_size}; the partial file was removed"
            )
        self._behind.settle()  # raises what a background flush met
        os.fsync(self._file.fileno())
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # all clean now
        digest = self.hasher.hexdigest()
        if self.binding is not None:
            write_receipt(
                self.destination,
                Receipt(
                    request_id=str(self.binding.request_id),
                    source_sha256=source_digest(self.source),
                    bytes=self.size,
                    sha256=digest,
                    attempts=attempts,
                ),
            )
        try:
            _claim_name(self.path, self.destination)
        finally:
            self.close()
        fsync_directory(self.destination.parent)
        write_checksum_file(self.destination, digest)
        if self.binding is not None:
            clear_origin(self.destination)
        return digest

    def close(self) -> None:
        """Release the lock and keep the part file for a later resume."""
        if not self._file.closed:
            self._behind.close()
            self._file.flush()
            self._file.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        if self.binding is not None:
            clear_origin(self.destination)


def _finish_claimed_publish(destination: Path, receipt: Receipt) -> None:
    """Rename the part over `destination` if the part holds exactly the receipt's bytes.

    Where hard links are missing, `_claim_name` claims the final name with an empty file and
    then renames the part over it: a crash between the two leaves that empty file, the whole
    part, and the receipt written before them.
    """
    part = part_path(destination)
    if part.is_file() and file_digest(part) == (receipt.bytes, receipt.sha256):
        os.replace(part, destination)
        fsync_directory(destination.parent)


def published_download(
    destination: str | os.PathLike[str], binding: DownloadBinding
) -> TransferResult | None:
    """The result of a download of `binding`'s request already published at `destination`.

    None unless the destination holds exactly the bytes (size and sha256, re-read now) that
    this request's receipt records: then a missing `<destination>.sha256` is written and the
    recorded result returned, so that an attempt after a crash between the rename and the
    result succeeds. An empty destination left by a crash mid-publish without hard links is
    first given the part, when the part holds the receipt's bytes. Raises `DestinationExists`
    if a `.sha256` beside it holds another checksum (it is never replaced). Blocking: hashes
    the file.
    """
    dest = Path(destination)
    receipt = read_receipt(dest)
    if receipt is None or receipt.request_id != str(binding.request_id) or not dest.is_file():
        return None
    if receipt.bytes and dest.stat().st_size == 0:
        _finish_claimed_publish(dest, receipt)
    if file_digest(dest) != (receipt.bytes, receipt.sha256):
        return None
    write_checksum_file(dest, receipt.sha256)
    part = part_path(dest)
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(part, dest):  # killed between taking the name and dropping the part's
            part.unlink()
    if not part.exists():
        clear_origin(dest)
    return TransferResult(bytes=receipt.bytes, sha256=receipt.sha256, attempts=receipt.attempts)
