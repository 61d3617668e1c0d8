"""The sha256 of a file on disk, read in large blocks: the one reader behind every check of
bytes already written (a published download's receipt, an rsync set's SHA256SUMS, the CLI's
recorded dump)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Final

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
    size = 0
    with open(Path(path), "rb", buffering=0) as stream:
        while block := stream.read(HASH_BLOCK):
            if stop is not None and stop.is_set():
                raise DigestStopped
            hasher.update(block)
            size += len(block)
        if fsync:
            os.fsync(stream.fileno())
    return size, hasher.hexdigest()


def file_sha256(
    path: str | os.PathLike[str], *, fsync: bool = False, stop: threading.Event | None = None
) -> str:
    """The sha256 hex of the file (see `file_digest`)."""
    return file_digest(path, fsync=fsync, stop=stop)[1]
