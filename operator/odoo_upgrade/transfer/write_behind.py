"""Makes a file durable while it is still being written: a flush every `STEP` bytes, on a
thread of its own, then the flushed pages dropped from the page cache.

Why: a download is published only after an fsync, and one fsync at the end waits for all of
the file at once. On a virtual disk the guest's write-back only reaches the host's cache and
the flush then waits for the host's disk; on this project's 2-core VM a single fsync after a
512 MiB download took 0.5-0.7 s, whatever write-back was started before it (bench/README.md).
Flushing every 32 MiB beside the transfer overlaps that wait with receiving, and the final
fsync has one step left. Flushed pages are clean, so dropping them is cheap: a large download
does not fill the pod's memory with cache (page cache counts against its cgroup limit).

An error of a background flush is kept and raised by `settle()`: the kernel reports a
write-back error once per descriptor, so the final fsync might not see it again.
"""

from __future__ import annotations

import os
import threading
from typing import Final

STEP: Final = 32 * 1024 * 1024


class WriteBehind:
    """Flushes `fd` in the background as the writer reports its progress with `advance`.

    The writer keeps writing meanwhile. Before cutting the file it calls `pause()`, before its
    final fsync `settle()` (which raises what a background flush met), and `close()` before
    closing the descriptor.
    """

    def __init__(self, fd: int, step: int = STEP) -> None:
        self._fd = fd
        self._step = step
        self._changed = threading.Condition()
        self._wanted = 0  # flush requested up to here (bytes written by then)
        self._flushed = 0  # durable and dropped from the cache up to here
        self._busy = False
        self._closing = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    @property
    def flushed(self) -> int:
        """Bytes from the start known durable (flushed by the background thread)."""
        with self._changed:
            return self._flushed

    def advance(self, size: int) -> None:
        """The file holds `size` bytes now; ask for a flush once a step more was written."""
        with self._changed:
            if self._closing or size - max(self._wanted, self._flushed) < self._step:
                return
            self._wanted = size
            if self._thread is None:  # no thread for files smaller than one step
                self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def pause(self) -> None:
        """Wait for the flush in progress and drop those asked for and not started (before
        the file is cut). A failed flush's error stays for `settle()`."""
        with self._changed:
            self._wanted = min(self._wanted, self._flushed)
            while self._busy:
                self._changed.wait()

    def settle(self) -> None:
        """Wait until what was asked for is flushed; raise a background flush's error."""
        with self._changed:
            while self._error is None and (
                self._busy or (self._wanted > self._flushed and not self._closing)
            ):
                self._changed.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def truncated(self, size: int) -> None:
        """The file was cut to `size` bytes (call `pause()` before cutting it)."""
        with self._changed:
            self._wanted = min(self._wanted, size)
            self._flushed = min(self._flushed, size)

    def close(self) -> None:
        """Stop the thread (after its flush in progress); the descriptor may be closed then."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closing and self._wanted <= self._flushed:
                    self._changed.wait()
                if self._closing:
                    return
                start, end = self._flushed, self._wanted
                self._busy = True
            error: OSError | None = None
            try:
                os.fdatasync(self._fd)
                os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)
            except OSError as exc:
                error = exc
            with self._changed:
                self._busy = False
                if error is None:
                    self._flushed = max(self._flushed, end)
                else:
                    self._error = error
                    self._wanted = self._flushed
                self._changed.notify_all()
