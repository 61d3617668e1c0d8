"""The operator SIGKILLed at every step boundary and mid-transfer, and the mover SIGKILLed
mid-transfer: each upgrade still ends Succeeded with one `create`, the platform's bytes on the
volume and no partial file under a final name.

A kill point is a state a user could see (`kubectl get odooupgrade -o yaml`): a condition, a
phase, or a phase while the mover's process is running. The test watches for it, kills, keeps
the operator down a moment, starts it again, and checks the invariants of
tests/chaos/invariants.py. Killing the operator does not stop a running mover (it is its own
pod); killing the mover makes the Job start a new pod, which must resume, not restart wrong.
The short form runs its points on both platform APIs (database-v1 over HTTPS, upgrade-request
over rsync).
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
from tests.chaos.movers import kill_movers, mover_pids
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import Namespace, condition, phase_of

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DOWNTIME_SECONDS = 2.0
# Big enough that a transfer cut once by the emulator and retried lasts a few polls.
DUMP_BYTES = 3 * 1024 * 1024

Reached = Callable[[dict[str, Any], str], bool]


def has_condition(type_: str) -> Reached:
    def reached(obj: dict[str, Any], _: str) -> bool:
        found = condition(obj, type_)
        return found is not None and found.get("status") == "True"

    return reached


def request_recorded(obj: dict[str, Any], _: str) -> bool:
    return obj.get("status", {}).get("requestId") is not None


def in_phase(phase: str) -> Reached:
    def reached(obj: dict[str, Any], _: str) -> bool:
        return phase_of(obj) == phase

    return reached


def mover_running(phase: str, job_suffix: str) -> Reached:
    def reached(obj: dict[str, Any], name: str) -> bool:
        return phase_of(obj) == phase and bool(mover_pids(f"{name}-{job_suffix}"))

    return reached


@dataclass(frozen=True)
class KillPoint:
    """Where to strike, whom (`operator` or the `<suffix>` mover), over which transport."""

    label: str
    reached: Reached
    victim: str = "operator"
    transport: str = "https"
    short: bool = False

    @property
    def api(self) -> str:
        return "upgrade-request" if self.transport == "rsync" else "database-v1"

    def on_upgrade_request(self) -> KillPoint:
        """The same point on the upgrade-request API (rsync both ways); in the short form only
        where the APIs differ (a platform state, an rsync resumed by a new pod)."""
        short = self.short and self.label != "operator after RequestCreated"
        return KillPoint(f"{self.label} upgrade-request", self.reached, self.victim, "rsync", short)


KILL_POINTS = [
    KillPoint("operator after RequestCreated", request_recorded, short=True),
    KillPoint("operator mid-upload", mover_running("Uploading", "upload")),
    KillPoint("operator mid-upload sftp", mover_running("Uploading", "upload"), transport="sftp"),
    KillPoint("operator after Uploaded", has_condition("Uploaded")),
    KillPoint("operator while Processing", in_phase("Processing"), short=True),
    KillPoint("operator mid-download", mover_running("Downloading", "download")),
    KillPoint("operator after Downloaded", has_condition("Downloaded")),
    KillPoint("mover mid-upload", mover_running("Uploading", "upload"), victim="upload"),
    KillPoint(
        "mover mid-upload sftp",
        mover_running("Uploading", "upload"),
        victim="upload",
        transport="sftp",
    ),
    KillPoint(
        "mover mid-download",
        mover_running("Downloading", "download"),
        victim="download",
        short=True,
    ),
    KillPoint(
        "mover mid-download sftp",
        mover_running("Downloading", "download"),
        victim="download",
        transport="sftp",
        short=True,
    ),
    KillPoint(
        "operator mid-download sftp",
        mover_running("Downloading", "download"),
        transport="sftp",
    ),
]


# Every point that does not name SFTP, on upgrade-request too.
KILL_POINTS += [p.on_upgrade_request() for p in KILL_POINTS if p.transport == "https"]


def selected_points() -> list[KillPoint]:
    return KILL_POINTS if chaos_full() else [p for p in KILL_POINTS if p.short]


@pytest.mark.parametrize("point", selected_points(), ids=lambda p: p.label.replace(" ", "-"))
def test_upgrade_survives_a_kill(
    point: KillPoint,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    # Slow answers and one cut per transfer keep each step observable for a few polls.
    emulator = start_emulator(latency=0.3, drop_after_bytes=DUMP_BYTES // 2, process_seconds=3)
    ns = namespaces()
    ns.prepare()
    ns.put_dump("dumps/acme.dump", size=DUMP_BYTES)
    name = f"kill-{uuid.uuid4().hex[:6]}"
    destination = "upgraded/acme-18" + ("" if point.api == "upgrade-request" else ".dump")
    upgrade = ns.apply_upgrade(
        name,
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path=destination,
        transport=point.transport,
        api=point.api,
    )
    ledger.resources(1)

    upgrade.wait_until(lambda obj: point.reached(obj, name), point.label, timeout=180, interval=0.1)
    if point.victim == "operator":
        live_operator.kill()
        time.sleep(DOWNTIME_SECONDS)
        live_operator.start()
    else:
        assert kill_movers(f"{name}-{point.victim}") >= 1, f"no {point.victim} mover to kill"
    ledger.fault(f"SIGKILL {point.label}")

    upgrade.wait_for_phase("Succeeded", "Failed", timeout=240)
    for kind, times in emulator_faults(emulator).items():
        ledger.fault(kind, times)
    compared = assert_nothing_lost(
        emulator, [Delivery(upgrade, ns.volume(), destination, point.api)]
    )
    if point.api == "database-v1":  # the dump came back the way it went
        assert upgrade.get()["status"]["download"]["transport"] == point.transport
    ledger.verified(1, compared)
