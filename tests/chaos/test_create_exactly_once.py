"""At most one `create` per resource, across any crash (issue "hardening", item 1).

A gateway before the platform holds the answer to `create` after the platform acted; the
operator is SIGKILLed while it waits and started again. The restarted operator finds the
intent it recorded before calling `create`, and no request id: it never creates again, and the
resource says what to check. A `create` answered 502 by the gateway is treated the same way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from tests.chaos.ledger import RunLedger
from tests.support.emulator import RunningEmulator
from tests.support.front import PlatformFront
from tests.support.operator import RunningOperator
from tests.support.platform_ports import take_port
from tests.support.scenario import Namespace, Upgrade, condition, describe, phase_of

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]


def successful_creates(emulator: RunningEmulator) -> int:
    return sum(1 for call in emulator.calls("create") if call["ok"])


def apply_behind(front: PlatformFront, ns: Namespace, emulator: RunningEmulator) -> Upgrade:
    """A resource whose platform URL is the front before `emulator`."""
    ns.prepare(contract=emulator.contract)
    ns.put_dump("dumps/acme.dump")
    return ns.apply_upgrade(
        f"once-{uuid.uuid4().hex[:6]}",
        platform_url=front.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
    )


def test_operator_killed_while_the_create_answer_is_in_flight_never_creates_twice(
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    emulator = start_emulator()
    with PlatformFront(emulator.url, port=take_port()) as front:
        front.hold_create()
        upgrade = apply_behind(front, namespaces(), emulator)
        ledger.resources(1)
        deadline = time.monotonic() + 60
        while successful_creates(emulator) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert successful_creates(emulator) == 1, "the platform never saw the create"
        live_operator.kill()  # the platform acted; its answer never reached the operator
        ledger.fault("SIGKILL while the create answer is in flight")
        front.release()
        live_operator.start()
        obj = upgrade.wait_for_phase("Failed", "Succeeded", timeout=120)
    assert phase_of(obj) == "Failed", describe(obj)
    ready = condition(obj, "Ready") or {}
    assert ready.get("reason") == "CreateOutcomeUnknown", describe(obj)
    assert "delete and re-apply" in str(ready.get("message"))
    time.sleep(2)  # a few more passes of the restarted operator
    assert successful_creates(emulator) == 1
    assert len(emulator.calls("create")) == 1
    ledger.verified(1, 0)  # the outcome it must have: failed, one create, nothing to compare


def test_a_create_answered_502_by_a_gateway_is_not_repeated(
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    ledger: RunLedger,
) -> None:
    emulator = start_emulator()
    with PlatformFront(emulator.url, port=take_port()) as front:
        front.answer_create_with(502)
        upgrade = apply_behind(front, namespaces(), emulator)
        ledger.resources(1)
        ledger.fault("create answered 502 after the platform acted")
        obj = upgrade.wait_for_phase("Failed", "Succeeded", timeout=120)
    assert phase_of(obj) == "Failed", describe(obj)
    assert (condition(obj, "Ready") or {}).get("reason") == "CreateOutcomeUnknown"
    assert len(emulator.calls("create")) == 1 == front.creates_seen
    ledger.verified(1, 0)
