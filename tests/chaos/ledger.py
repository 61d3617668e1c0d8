"""What a fault run did, recorded per test and summed over the session.

Tests record through pytest's `record_property` (so the figures travel with each test report
and need no global state); `tests/chaos/conftest.py` sums the reports and, under
`CHAOS_FULL=1`, writes them into docs/RELIABILITY.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

FAULT = "chaos.fault"
RESOURCES = "chaos.resources"
VERIFIED = "chaos.verified"
BYTES = "chaos.bytes"
INPUT = "chaos.input"


class RunLedger:
    """Records one test's faults, inputs and resources into its report."""

    def __init__(self, record_property: Callable[[str, object], None]) -> None:
        self._record = record_property

    def fault(self, kind: str, count: int = 1) -> None:
        """A fault of `kind` (e.g. "operator SIGKILL at Uploading") was injected `count` times."""
        for _ in range(count):
            self._record(FAULT, kind)

    def resources(self, count: int) -> None:
        """`count` OdooUpgrade resources were started (each must end verified, or it is lost)."""
        self._record(RESOURCES, count)

    def verified(self, count: int, byte_count: int) -> None:
        """`count` resources ended as they must (Succeeded, or the failure a test expects,
        e.g. CreateOutcomeUnknown) with `byte_count` upgraded bytes checked."""
        self._record(VERIFIED, count)
        self._record(BYTES, byte_count)

    def input(self, case: str) -> None:
        """One bad input `case` was tried and got the user-visible outcome it should."""
        self._record(INPUT, case)


@dataclass
class RunFigures:
    """The session's sums."""

    faults: Counter[str] = field(default_factory=Counter)
    inputs: list[str] = field(default_factory=list)
    resources: int = 0
    verified: int = 0
    bytes: int = 0
    tests_passed: int = 0
    tests_failed: int = 0
    tests_skipped: int = 0

    @property
    def lost(self) -> int:
        """Resources started but not verified: failed runs count here, never hidden."""
        return self.resources - self.verified

    def add(self, outcome: str, properties: Iterable[tuple[str, Any]]) -> None:
        """Add one test's call-phase report."""
        if outcome == "passed":
            self.tests_passed += 1
        elif outcome == "failed":
            self.tests_failed += 1
        else:
            self.tests_skipped += 1
        for name, value in properties:
            if name == FAULT:
                self.faults[str(value)] += 1
            elif name == INPUT:
                self.inputs.append(str(value))
            elif name == RESOURCES:
                self.resources += int(value)
            elif name == VERIFIED:
                self.verified += int(value)
            elif name == BYTES:
                self.bytes += int(value)
