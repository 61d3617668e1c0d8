"""What a transfer reports: to its caller as it goes, and once it is done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# (bytes_done, bytes_total or None when the total is not known yet)
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class TransferResult:
    """A finished transfer: size and sha256 of the whole file, and connections it took."""

    bytes: int
    sha256: str
    attempts: int

    def to_json(self) -> dict[str, int | str]:
        return {"bytes": self.bytes, "sha256": self.sha256, "attempts": self.attempts}
