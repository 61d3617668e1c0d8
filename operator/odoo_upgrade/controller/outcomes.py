"""What a step of the flow tells the driver: run again (when), or stop for good.

Steps return `Again(after=seconds)` or `FINISHED`; they never return bare numbers. A step that
cannot go on until something outside changes (a missing Secret, a foreign Job) raises
`Waiting`, kopf's `TemporaryError`: the pass ends and the driver looks again later.
"""

from __future__ import annotations

from dataclasses import dataclass

import kopf


@dataclass(frozen=True)
class Again:
    """Run the next pass after `after` seconds (0: at once, the step recorded progress)."""

    after: float = 0.0


@dataclass(frozen=True)
class Finished:
    """The upgrade is final (Succeeded or Failed): no more passes."""


NOW = Again(0.0)
FINISHED = Finished()
StepResult = Again | Finished


class Waiting(kopf.TemporaryError):
    """Something the flow needs is not there yet; the condition says what. Retry later."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message, delay=delay)
