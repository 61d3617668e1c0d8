"""Progress as the mover prints it and as people read it.

The mover prints one line per step of progress to its log; the operator reads the last one
from the pod's log (the only channel a mover without API credentials has), so the format is
written here once, with its parser:

    upload: 1048576/3145728 bytes (33%)
    download: 1048576 bytes                 (total not known yet)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^(?P<verb>[a-z]+): (?P<done>\d+)(?:/(?P<total>\d+))? bytes(?: \(\d+%\))?$")


@dataclass(frozen=True)
class ProgressLine:
    """One progress report of a mover: what it does, bytes done, bytes in all (if known)."""

    verb: str
    done: int
    total: int | None = None

    def render(self) -> str:
        if self.total:
            percent = min(100, self.done * 100 // self.total)
            return f"{self.verb}: {self.done}/{self.total} bytes ({percent}%)"
        return f"{self.verb}: {self.done} bytes"


def parse_progress_line(log: str) -> ProgressLine | None:
    """The last progress line in a piece of log, if any (other lines are ignored)."""
    for line in reversed(log.splitlines()):
        match = _LINE.match(line.strip())
        if match:
            total = match.group("total")
            return ProgressLine(
                match.group("verb"), int(match.group("done")), int(total) if total else None
            )
    return None


def format_bytes(count: int) -> str:
    """A byte count for people: `512 B`, `12.3 KiB`, `1.5 GiB`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def progress_text(done: int, total: int | None) -> str:
    """`42% (1.2 GiB/3.0 GiB)`, or the bytes alone when the total is unknown."""
    if total:
        return f"{min(100, done * 100 // total)}% ({format_bytes(done)}/{format_bytes(total)})"
    return format_bytes(done)
