"""The platform (emulator) crashes and comes back while an upgrade is in flight: the operator
and the movers ride it out, and nothing is lost, doubled or half-written.

The emulator keeps its requests on disk, as the platform keeps them in its database; a crash
loses only connections in flight.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.chaos.conftest import chaos_full
from tests.chaos.invariants import Delivery, assert_nothing_lost, emulator_faults
from tests.chaos.ledger import RunLedger
from tests.chaos.movers import mover_pids
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import Namespace, phase_of

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DOWNTIME_SECONDS = 3.0
DUMP_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class CrashPoint:
    label: str
    phase: str
    mover: str | None = None
    short: bool = False


CRASH_POINTS = [
    CrashPoint("mid-processing", "Processing", short=True),
    CrashPoint("mid-upload", "Uploading", mover="upload"),
    CrashPoint("mid-download", "Downloading", mover="download"),
]


def selected_points() -> list[CrashPoint]:
    return CRASH_POINTS if chaos_full() else [p for p in CRASH_POINTS if p.short]


@pytest.mark.parametrize("point", selected_points(), ids=lambda p: p.label)
def test_upgrade_survives_a_platform_crash(
    point: CrashPoint,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    emulator = start_emulator(latency=0.3, drop_after_bytes=DUMP_BYTES // 2, process_seconds=4)
    ns = namespaces()
    ns.prepare()
    ns.put_dump("dumps/acme.dump", size=DUMP_BYTES)
    name = f"crash-{uuid.uuid4().hex[:6]}"
    upgrade = ns.apply_upgrade(
        name,
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
    )
    ledger.resources(1)

    def reached(obj: dict[str, Any]) -> bool:
        if phase_of(obj) != point.phase:
            return False
        return point.mover is None or bool(mover_pids(f"{name}-{point.mover}"))

    upgrade.wait_until(reached, f"{point.phase} to crash the platform", timeout=180, interval=0.1)
    emulator.kill()
    time.sleep(DOWNTIME_SECONDS)
    emulator.start()
    ledger.fault(f"platform SIGKILLed {point.label}, restarted")

    upgrade.wait_for_phase("Succeeded", "Failed", timeout=240)
    for kind, times in emulator_faults(emulator).items():
        ledger.fault(kind, times)
    compared = assert_nothing_lost(
        emulator, [Delivery(upgrade, ns.volume(), "upgraded/acme-18.dump")]
    )
    ledger.verified(1, compared)
