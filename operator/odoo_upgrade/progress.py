"""Progress of a transfer on stderr: a redrawn bar on a terminal, sparse lines elsewhere.

On a terminal the bar is redrawn at most ten times a second. In CI logs (not a TTY) a line is
printed at each 10% step, or every 30 seconds when the total size is unknown, so a log stays
short and still shows a transfer is alive.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from odoo_upgrade.request.progress import format_bytes

MIB = 1024 * 1024
_TTY_REDRAW_SECONDS = 0.1
_LOG_LINE_SECONDS = 30.0
_BAR_WIDTH = 28


def format_duration(seconds: float) -> str:
    """`H:MM:SS` for a duration in seconds."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class TransferProgress:
    """A `ProgressCallback` (`(bytes_done, bytes_total)`) that renders to a stream.

    Safe to call from a worker thread (blocking SFTP transfers report from one).
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        interactive: bool | None = None,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._done = 0
        # Bytes already there when we started (a resumed transfer): not part of the rate.
        self._resumed_from: int | None = None
        self._total: int | None = None
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._resumed_from is None or done < self._resumed_from:
                self._resumed_from = done
                self._started = time.monotonic()
            self._done, self._total = done, total
            now = time.monotonic()
            if self.interactive:
                if now - self._last_draw >= _TTY_REDRAW_SECONDS or (total and done >= total):
                    self._draw_bar(now)
            else:
                self._maybe_log_line(now)

    def finish(self) -> None:
        """End the bar's line (terminal) or print the final line (log)."""
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            if self.interactive:
                self._draw_bar(now)
                self.stream.write("\n")
                self.stream.flush()
            elif self._last_decile < 10:
                self._write_line(now)

    def _rate(self, now: float) -> float:
        elapsed = max(now - self._started, 1e-6)
        return (self._done - (self._resumed_from or 0)) / elapsed

    def _draw_bar(self, now: float) -> None:
        self._last_draw = now
        rate = self._rate(now)
        if self._total:
            fraction = min(self._done / self._total, 1.0)
            filled = int(fraction * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            remaining = (self._total - self._done) / rate if rate > 0 else 0.0
            text = (
                f"\r{self.label} [{bar}] {fraction * 100:5.1f}% "
                f"{format_bytes(self._done)}/{format_bytes(self._total)} "
                f"{rate / MIB:.1f} MiB/s ETA {format_duration(remaining)}"
            )
        else:
            text = f"\r{self.label} {format_bytes(self._done)} {rate / MIB:.1f} MiB/s"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()

    def _maybe_log_line(self, now: float) -> None:
        if self._total:
            decile = min(self._done * 10 // self._total, 10)
            if decile > self._last_decile:
                self._last_decile = decile
                self._write_line(now)
        elif now - self._last_draw >= _LOG_LINE_SECONDS:
            self._write_line(now)

    def _write_line(self, now: float) -> None:
        self._last_draw = now
        rate = self._rate(now)
        if self._total:
            percent = self._done * 100 // self._total
            text = (
                f"{self.label}: {percent}% ({format_bytes(self._done)} of "
                f"{format_bytes(self._total)}, {rate / MIB:.1f} MiB/s)"
            )
        else:
            text = f"{self.label}: {format_bytes(self._done)} ({rate / MIB:.1f} MiB/s)"
        self.stream.write(text + "\n")
        self.stream.flush()
