"""Many upgrades at once against a flaky platform: 30 % of API calls answered `SERVER:ERROR`,
every transfer cut once mid-way, every answer slow. Each upgrade still ends Succeeded with one
`create`, the platform's bytes on its volume and no partial file.

`make chaos` runs 20 resources; the shortened run in `make test` runs 5.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.conftest import chaos_full
from tests.chaos.invariants import Delivery, assert_nothing_lost, emulator_faults
from tests.chaos.ledger import RunLedger
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import Namespace, wait_all

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DUMP_BYTES = 256 * 1024
CUT_AFTER_BYTES = 64 * 1024


def test_concurrent_upgrades_survive_a_flaky_platform(
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    count = 20 if chaos_full() else 5
    emulator = start_emulator(
        fail_rate=0.3,
        drop_after_bytes=CUT_AFTER_BYTES,
        latency=0.2,
        fault_seed=7,
        process_seconds=2,
    )
    ns = namespaces()
    ns.prepare()
    deliveries = []
    for index in range(count):
        ns.put_dump(f"dumps/db-{index}.dump", size=DUMP_BYTES)
        upgrade = ns.apply_upgrade(
            f"flaky-{index}",
            platform_url=emulator.url,
            source_path=f"dumps/db-{index}.dump",
            destination_path=f"upgraded/db-{index}.dump",
            # Both transports: HTTPS uploads restart, SFTP uploads resume with `put -a`.
            transport="sftp" if index % 2 else "https",
        )
        deliveries.append(Delivery(upgrade, ns.volume(), f"upgraded/db-{index}.dump"))
    ledger.resources(count)

    wait_all([d.upgrade for d in deliveries], "Succeeded", "Failed", timeout=120 + 20 * count)

    for kind, times in emulator_faults(emulator).items():
        ledger.fault(kind, times)
    compared = assert_nothing_lost(emulator, deliveries)
    ledger.verified(count, compared)
