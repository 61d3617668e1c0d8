"""The sha256 of a file being sent, hashed beside the sending thread on CPU time it leaves idle.

Why: an upload's client, its hash and, on a small machine, the server receiving it (the
bench's emulator) are three busy threads. On two cores, hashing at normal priority took CPU
from the sending path: the HTTPS upload ran at 0.45-0.8x `curl -T`, against 0.95x without a
hash (bench/README.md). A thread under Linux's `SCHED_IDLE` runs only on a core nothing else
wants, so the hash fills the gaps the transfer leaves (waiting on the socket, the server) and
the send runs as fast as without it.

An idle thread may never get a core on a busy machine, and Linux does not let an unprivileged
thread leave `SCHED_IDLE`. So `finish()` tells the idle thread to stop after its block and
hashes the rest on the calling thread at that thread's priority: the digest may come later
than the send, never not at all.

The digest is of the file as read beside the transfer, not of the sent bytes; `finish()`
refuses a file whose size or modification time changed since it was opened (another process
rewrote the dump), so the two reads saw the same file. Used by the uploads that hash a whole
file while it is sent: HTTPS (`file_post.py`) and SFTP through OpenSSH's `sftp` (`sftp.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Final

from odoo_upgrade.transfer.errors import SizeMismatch
from odoo_upgrade.transfer.file_digest import hash_descriptor


def _stamp(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_size, status.st_mtime_ns


def _run_only_on_idle_cpu() -> None:
    """Put the calling thread under `SCHED_IDLE` (Linux); elsewhere leave it as it is."""
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))


class IdleHash:
    """Start hashing `path` at once, in a thread of its own at idle priority.

    `finish(size)` returns the sha256 hex; `close()` stops and discards. Use as a context
    manager so that the thread and the descriptor go away on every path.
    """

    NAME: Final = "idle-hash"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._opened = _stamp(self._fd)
        self._hasher = hashlib.sha256()
        self._offset = 0
        self._handover = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._hash, name=self.NAME, daemon=True)
        self._thread.start()

    def __enter__(self) -> IdleHash:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def thread_id(self) -> int | None:
        """The hashing thread's kernel id, while it runs (what `ps -L` and `chrt -p` show)."""
        return self._thread.native_id

    def _hash(self) -> None:
        _run_only_on_idle_cpu()
        try:
            self._offset = hash_descriptor(self._fd, self._hasher, stop=self._handover)
        except BaseException as exc:  # re-raised by finish()
            self._failure = exc

    def finish(self, size: int) -> str:
        """Hash what the idle thread has not reached here; the sha256 hex of the file, sent
        as `size` bytes.

        Raises `SizeMismatch` if the file is not `size` bytes or changed since it was opened,
        or the `OSError` a read met.
        """
        self._handover.set()
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        end = hash_descriptor(self._fd, self._hasher, start=self._offset)
        opened_size = self._opened[0]
        if _stamp(self._fd) != self._opened or end != opened_size or end != size:
            raise SizeMismatch(f"upload: {self.path.name} changed while being sent")
        return self._hasher.hexdigest()

    def close(self) -> None:
        """Stop the thread (after its current block) and close the file."""
        self._handover.set()
        self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
