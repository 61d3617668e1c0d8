"""Children (pg_dump, pg_restore, psql): their stderr drained in a thread, kept bounded.

A child that writes much to stderr (pg_restore --verbose, psql notices) must never block on
a full pipe while we read its stdout or feed its stdin; and a long run must not grow our
memory, so only the last lines are kept, plus a callback for each line as it comes.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Callable
from typing import IO

TAIL_LINES = 60
LINE_LIMIT = 2000


class StderrTail:
    """Reads a child's stderr to the end in a thread; `.text()` is its last lines."""

    def __init__(self, stream: IO[bytes], on_line: Callable[[str], None] | None = None) -> None:
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._on_line = on_line
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")[:LINE_LIMIT]
                self._lines.append(line)
                if self._on_line is not None:
                    self._on_line(line)

    def text(self, timeout: float = 10.0) -> str:
        """The kept lines, once the stream ended (or `timeout` passed)."""
        self._thread.join(timeout)
        return "\n".join(self._lines)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child still running (then kill it), and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def libpq_message(stderr: str, *, limit: int = 600) -> str:
    """The useful part of a tool's stderr: error lines without the `psql: error:` prefixes."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    wanted = [
        line
        for line in lines
        if any(mark in line for mark in ("error", "ERROR", "FATAL", "failed", "DETAIL", "HINT"))
    ] or lines[-3:]
    text = " ".join(wanted)
    for prefix in ("psql: error: ", "pg_dump: error: ", "pg_restore: error: "):
        text = text.replace(prefix, "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
