"""kube-apiserver restarted (etcd kept) while upgrades are in flight: the operator's watches and
status patches, the Job controller and the movers' pods all lose the API for a while, and
every upgrade still ends Succeeded with one `create` and the platform's bytes on its volume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.conftest import ChaosCluster, chaos_full
from tests.chaos.invariants import Delivery, assert_nothing_lost, emulator_faults
from tests.chaos.ledger import RunLedger
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import Namespace, phase_of, wait_all

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DUMP_BYTES = 512 * 1024
DOWNTIME_SECONDS = 4.0


@pytest.mark.slow
def test_upgrades_survive_an_apiserver_restart(
    cluster: ChaosCluster,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    count = 6 if chaos_full() else 3
    emulator = start_emulator(latency=0.3, drop_after_bytes=DUMP_BYTES // 2, process_seconds=4)
    ns = namespaces()
    ns.prepare()
    deliveries = []
    for index in range(count):
        ns.put_dump(f"dumps/db-{index}.dump", size=DUMP_BYTES)
        upgrade = ns.apply_upgrade(
            f"api-{index}",
            platform_url=emulator.url,
            source_path=f"dumps/db-{index}.dump",
            destination_path=f"upgraded/db-{index}.dump",
            transport="sftp" if index % 2 else "https",
        )
        deliveries.append(Delivery(upgrade, ns.volume(), f"upgraded/db-{index}.dump"))
    ledger.resources(count)

    # Strike while the first resource moves bytes, and once more while it is processed.
    first = deliveries[0].upgrade
    for phase in ("Uploading", "Processing"):

        def reached(obj: dict[str, Any], phase: str = phase) -> bool:
            return phase_of(obj) in (phase, "Succeeded", "Failed")

        first.wait_until(
            reached,
            f"phase {phase} to restart kube-apiserver",
            timeout=180,
            interval=0.2,
        )
        cluster.restart_apiserver(downtime=DOWNTIME_SECONDS)
        ledger.fault(f"kube-apiserver SIGKILLed while {phase}, restarted (etcd kept)")

    wait_all([d.upgrade for d in deliveries], "Succeeded", "Failed", timeout=300)
    for kind, times in emulator_faults(emulator).items():
        ledger.fault(kind, times)
    compared = assert_nothing_lost(emulator, deliveries)
    ledger.verified(count, compared)


def test_apiserver_down_while_create_is_in_flight_creates_once(
    cluster: ChaosCluster,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    # The platform takes 3 s to answer; the API is gone for longer than that, so the answer to
    # `create` arrives while the request Secret cannot be written. The request must still be
    # the only one: kept and stored once the API is back, never created a second time.
    emulator = start_emulator(latency=3.0, process_seconds=2)
    ns = namespaces()
    ns.prepare()
    ns.put_dump("dumps/acme.dump", size=DUMP_BYTES)
    upgrade = ns.apply_upgrade(
        "api-create",
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
    )
    ledger.resources(1)
    upgrade.wait_until(
        lambda obj: phase_of(obj) == "Creating", "phase Creating", timeout=120, interval=0.1
    )
    cluster.restart_apiserver(downtime=6.0)
    ledger.fault("kube-apiserver SIGKILLed while `create` is in flight, restarted (etcd kept)")

    upgrade.wait_for_phase("Succeeded", "Failed", timeout=240)
    for kind, times in emulator_faults(emulator).items():
        ledger.fault(kind, times)
    compared = assert_nothing_lost(
        emulator, [Delivery(upgrade, ns.volume(), "upgraded/acme-18.dump")]
    )
    ledger.verified(1, compared)
