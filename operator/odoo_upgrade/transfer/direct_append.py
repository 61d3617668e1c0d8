"""A download's bytes go from the socket to the disk past the page cache (`O_DIRECT`).

Why: a buffered write copies every byte once more, into the page cache, on the receiving core,
which also hashes them; how fast the page cache takes writes differs from one machine (and one
day) to the next by more than 2x, and a durable download waits for those pages to reach the
disk anyway (bench/README.md). Here the receiving thread reads into page-aligned buffers and
hashes each piece as it arrives (still in the CPU's cache); a thread of its own writes each
full buffer with `O_DIRECT`, the disk reading it straight from the buffer. The pod's page cache,
which counts against its memory limit, stays empty.

What a direct write cannot take goes through the page cache as before: an offset or length
that is not a multiple of `ALIGN` (a resumed part's first buffer is cut to end on one, so only
the last buffer of an attempt is), and every write on a filesystem that refuses `O_DIRECT`
(`EINVAL` when opening or writing: tmpfs before Linux 6.6, some FUSE filesystems).
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from odoo_upgrade.transfer.buffers import page_aligned

# Direct I/O offsets and lengths are multiples of the device's logical block size: 512 or 4096.
ALIGN: Final = 4096
# 4 MiB per direct write: fewer, larger writes keep the disk's queue busy (1 MiB writes were
# slower by 5-15 %); three buffers let one fill while two are written.
BUFFER_SIZE: Final = 4 * 1024 * 1024
BUFFERS: Final = 3


def _open_direct(path: Path) -> int | None:
    """A descriptor writing `path` with `O_DIRECT`; None where the filesystem refuses it."""
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


class DirectAppend:
    """Appends received bytes to the file at `path`, which holds `start` bytes.

    The receiving thread fills `space()` and reports each piece with `took(count)`, which
    hashes it into `hasher` and hands full buffers to the writer thread; `close()` writes what
    is left and waits. `written` is the file's size as far as the writer got; `on_written` is
    called with it after each write (from the writer thread). A write that fails stops the
    writing: the error is raised by the next `took` and by `close`, and `written` stays at the
    last whole write.
    """

    def __init__(
        self, path: Path, start: int, hasher: Any, on_written: Callable[[int], None]
    ) -> None:
        self.received = start
        self.written = start
        self._hasher = hasher
        self._on_written = on_written
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._direct_fd = _open_direct(path)
        self._buffers = [page_aligned(BUFFER_SIZE) for _ in range(BUFFERS)]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(1, BUFFERS):
            self._free.put(index)
        self._full: queue.SimpleQueue[tuple[int, int, int] | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        self._current = 0
        self._filled = 0
        # The first buffer ends on an aligned offset, so that every following one is written
        # directly.
        self._capacity = BUFFER_SIZE - start % ALIGN
        self._closed = False
        self._thread = threading.Thread(target=self._write_queued, name="direct-append")
        self._thread.start()

    @property
    def direct(self) -> bool:
        """Whether full buffers still go past the page cache."""
        return self._direct_fd is not None

    def space(self) -> memoryview:
        """Where the next bytes go: the free rest of the current buffer."""
        return self._buffers[self._current][self._filled : self._capacity]

    def took(self, count: int) -> None:
        """`count` bytes were received into `space()`: hash them and queue a full buffer."""
        start, self._filled = self._filled, self._filled + count
        self._hasher.update(self._buffers[self._current][start : self._filled])
        self.received += count
        if self._filled == self._capacity:
            self._queue_current()
            self._current = self._free.get()  # blocks while every buffer is being written
            self._filled, self._capacity = 0, BUFFER_SIZE
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write what was received and not yet written, wait, and release the buffers and
        descriptors; raise a write's error."""
        if not self._closed:
            self._closed = True
            if self._filled:
                self._queue_current()
            self._full.put(None)
            self._thread.join()
            os.close(self._fd)
            if self._direct_fd is not None:
                os.close(self._direct_fd)
            self._buffers = []
        if self._error is not None:
            raise self._error

    def _queue_current(self) -> None:
        self._full.put((self._current, self._filled, self.received - self._filled))

    def _write_queued(self) -> None:
        while (item := self._full.get()) is not None:
            index, length, offset = item
            if self._error is None:
                try:
                    self._write(self._buffers[index][:length], offset)
                    self.written = offset + length
                    self._on_written(self.written)
                except OSError as exc:
                    self._error = exc
            self._free.put(index)

    def _write(self, data: memoryview, offset: int) -> None:
        if self._direct_fd is not None and offset % ALIGN == 0 and len(data) % ALIGN == 0:
            try:
                done = os.pwrite(self._direct_fd, data, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # The filesystem took the flag but not the write: the page cache from here on.
                os.close(self._direct_fd)
                self._direct_fd = None
                done = 0
            data, offset = data[done:], offset + done
        while data:
            done = os.pwrite(self._fd, data, offset)
            data, offset = data[done:], offset + done
