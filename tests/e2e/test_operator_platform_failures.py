"""A request the platform refuses (unknown target, unknown contract) fails the OdooUpgrade with
the platform's own words, after exactly one `create`, and is not retried."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from odoo_upgrade.redact import MASK
from tests.support.emulator import RunningEmulator
from tests.support.scenario import (
    SAMPLE_CONTRACT,
    Namespace,
    conditions_of,
    describe,
    phase_of,
    without_nulls,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

POLL_INTERVALS_TO_WATCH = 4


@pytest.mark.parametrize(
    ("target", "contract", "reason"),
    [
        ("99.0", SAMPLE_CONTRACT, "TARGET:INVALID"),
        ("18.0", "M999999-nosuchcontract", "CONTRACT:NOT_FOUND"),
    ],
    ids=["unknown-target", "unknown-contract"],
)
def test_platform_refusal_fails_the_upgrade_after_one_create(
    target: str,
    contract: str,
    reason: str,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator()
    ns = namespaces()
    ns.prepare(contract=contract)
    ns.put_dump("dumps/acme.dump")
    upgrade = ns.apply_upgrade(
        "acme-refused",
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme.dump",
        target=target,
    )

    obj = upgrade.wait_for_phase("Failed", "Succeeded")
    assert phase_of(obj) == "Failed", describe(obj)
    # No retry loop: still Failed and still one `create` a few poll intervals later.
    time.sleep(POLL_INTERVALS_TO_WATCH)
    obj = upgrade.get()
    assert phase_of(obj) == "Failed", describe(obj)
    assert [c["ok"] for c in emulator.calls("create")] == [False]
    assert not emulator.calls("upload") and not emulator.calls("request_sftp_access")
    assert "requestId" not in obj["status"]

    # The status carries the failures as the platform sends them for this request, except the
    # contract reference (a secret, DESIGN.md §5), which is masked wherever it is echoed.
    sent = emulator.api(
        "create",
        contract=contract,
        email="ops@acme.example",
        target=target,
        aim="test",
        filename="acme.dump",
    )["failures"]
    assert [f["reason"] for f in sent] == [reason]
    shown = [masked(failure, contract) for failure in without_nulls(sent)]
    assert without_nulls(obj["status"]["failures"]) == shown
    assert contract not in describe(obj)
    messages = [str(c.get("message", "")) for c in conditions_of(obj)]
    assert any(shown[0]["message"] in message for message in messages), describe(obj)


def masked(failure: dict[str, Any], secret: str) -> dict[str, Any]:
    """`failure` with `secret` masked in every string value, as the operator must show it."""
    return {k: v.replace(secret, MASK) if isinstance(v, str) else v for k, v in failure.items()}
