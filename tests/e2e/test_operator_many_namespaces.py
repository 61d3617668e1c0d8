"""Several OdooUpgrades in two namespaces at once each get their own request and their own
upgraded dump."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.scenario import Namespace, assert_delivered, describe, phase_of, wait_all

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]


def test_upgrades_in_two_namespaces_run_side_by_side(
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator()
    first, second = namespaces(), namespaces()
    runs = []
    for ns, name, transport in (
        (first, "acme", "https"),
        (first, "globex", "sftp"),
        (second, "acme", "https"),
    ):
        ns.prepare()
        source = ns.put_dump(f"dumps/{name}.dump")
        upgrade = ns.apply_upgrade(
            name,
            platform_url=emulator.url,
            source_path=f"dumps/{name}.dump",
            destination_path=f"upgraded/{name}.dump",
            transport=transport,
        )
        runs.append((ns, name, source, upgrade))

    objects = wait_all([run[3] for run in runs], "Succeeded", "Failed", timeout=180)

    request_ids = set()
    for (ns, name, source, _), obj in zip(runs, objects, strict=True):
        assert phase_of(obj) == "Succeeded", f"{ns.name}/{name}: {describe(obj)}"
        request_id = int(obj["status"]["requestId"])
        request_ids.add(request_id)
        assert emulator.original_path(request_id).read_bytes() == source
        assert_delivered(
            obj, ns.volume(), f"upgraded/{name}.dump", emulator.upgraded_bytes(request_id)
        )
    assert len(request_ids) == len(runs)
    assert len(emulator.calls("create")) == len(runs)
