"""A missing contract Secret, PVC or source dump is named in a condition; nothing is asked of the
platform while the Secret or PVC is missing; once the missing piece appears the upgrade goes on
to Succeeded. The three cases run side by side, each with its own emulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.scenario import Namespace, Upgrade, assert_delivered, describe, phase_of

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

SOURCE = "dumps/acme.dump"
DESTINATION = "upgraded/acme-18.dump"


@dataclass
class Case:
    missing: str  # what is missing: a name the condition must mention
    ns: Namespace
    emulator: RunningEmulator
    upgrade: Upgrade
    supply: Callable[[], object]
    asks_platform_first: bool  # only the mover can see a file on the volume


def start_case(
    missing: str,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> Case:
    ns = namespaces()
    emulator = start_emulator()
    if missing != "odoo-contract":
        ns.add_contract_secret()
    if missing != "odoo-backups":
        ns.add_pvc()
    if missing != SOURCE:
        ns.put_dump(SOURCE)
    upgrade = ns.apply_upgrade(
        "acme-to-18",
        platform_url=emulator.url,
        source_path=SOURCE,
        destination_path=DESTINATION,
    )
    supplies: dict[str, Callable[[], object]] = {
        "odoo-contract": ns.add_contract_secret,
        "odoo-backups": ns.add_pvc,
        SOURCE: lambda: ns.put_dump(SOURCE),
    }
    supply = supplies[missing]
    return Case(missing, ns, emulator, upgrade, supply, asks_platform_first=missing == SOURCE)


def test_missing_prerequisite_is_named_and_the_upgrade_continues_once_it_appears(
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    cases = [
        start_case(missing, namespaces, start_emulator)
        for missing in ("odoo-contract", "odoo-backups", SOURCE)
    ]

    for case in cases:
        obj = case.upgrade.wait_for_condition_mentioning(case.missing, timeout=90)
        assert phase_of(obj) != "Succeeded", describe(obj)
        if not case.asks_platform_first:
            assert case.emulator.calls() == [], f"{case.missing}: platform called while missing"

    for case in cases:
        case.supply()
    for case in cases:
        obj = case.upgrade.wait_for_phase("Succeeded", "Failed", timeout=180)
        assert phase_of(obj) == "Succeeded", f"{case.missing}: {describe(obj)}"
        assert len(case.emulator.calls("create")) == 1, case.missing
        request_id = int(obj["status"]["requestId"])
        assert_delivered(
            obj, case.ns.volume(), DESTINATION, case.emulator.upgraded_bytes(request_id)
        )
