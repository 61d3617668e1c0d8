"""The sha256 of a file on disk, read in large blocks: the one reader behind every check of
bytes already written (a published download's receipt, an rsync set's SHA256SUMS, the CLI's
recorded dump)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Final

from odoo_upgrade.transfer.buffers import page_aligned

# Large enough that the per-block Python work is negligible, small enough to stay off the
# mover's memory limit.
HASH_BLOCK: Final = 4 * 1024 * 1024


class DigestStopped(Exception):
    """Hashing was stopped (`stop` set) before the end of the file."""


def file_digest(
    path: str | os.PathLike[str], *, fsync: bool = False, stop: threading.Event | None = None
) -> tuple[int, str]:
    """(size, sha256 hex) of the file's bytes as read now.

    `fsync`: also make the file durable (its pages were just written by another process).
    `stop`: checked before each block; raises `DigestStopped` once set.
    """
    hasher = hashlib.sha256()
    with open(Path(path), "rb", buffering=0) as stream:
        size = hash_descriptor(stream.fileno(), hasher, stop=stop)
        if stop is not None and stop.is_set():
            raise DigestStopped
        if fsync:
            os.fsync(stream.fileno())
    return size, hasher.hexdigest()


def hash_descriptor(
    fd: int, hasher: Any, *, start: int = 0, stop: threading.Event | None = None
) -> int:
    """Feed the bytes of `fd` from `start` to `hasher`, in `HASH_BLOCK` reads into one
    page-aligned buffer (`buffers.py`), until its end or until `stop` is set (checked before
    each block); return the offset reached (at the end: the size)."""
    buffer = page_aligned(HASH_BLOCK)
    offset = start
    while stop is None or not stop.is_set():
        count = os.preadv(fd, [buffer], offset)
        if not count:
            break
        hasher.update(buffer[:count])
        offset += count
    return offset


def file_sha256(
    path: str | os.PathLike[str], *, fsync: bool = False, stop: threading.Event | None = None
) -> str:
    """The sha256 hex of the file (see `file_digest`)."""
    return file_digest(path, fsync=fsync, stop=stop)[1]
