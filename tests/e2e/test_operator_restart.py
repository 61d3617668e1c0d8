"""The operator SIGKILLed mid-upload or mid-processing and started again carries on with the same
platform request (one `create`), and the upgrade still delivers the platform's dump."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import (
    Namespace,
    assert_delivered,
    describe,
    phase_of,
    sha256_hex,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DOWNTIME_SECONDS = 3


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_operator_killed_mid_upload_continues_the_same_request(
    transport: str,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    # Slow answers and one cut connection keep the upload going while the operator is down.
    source_size = 3 * 1024 * 1024
    emulator = start_emulator(latency=1.5, drop_after_bytes=source_size // 2)
    ns = namespaces()
    ns.prepare()
    source = ns.put_dump("dumps/acme.dump", size=source_size)
    upgrade = ns.apply_upgrade(
        "acme-to-18",
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
        transport=transport,
    )
    upgrade.wait_for_phase("Uploading")

    live_operator.kill()
    time.sleep(DOWNTIME_SECONDS)
    live_operator.start()

    obj = upgrade.wait_for_phase("Succeeded", "Failed", timeout=180)
    assert phase_of(obj) == "Succeeded", describe(obj)
    request_id = int(obj["status"]["requestId"])
    assert len(emulator.calls("create")) == 1
    assert emulator.original_path(request_id).read_bytes() == source
    assert obj["status"]["upload"]["sha256"] == sha256_hex(source)
    # The cut connection was resumed (or retried) by the mover, and that shows in the status.
    assert obj["status"]["upload"]["attempts"] >= 2, describe(obj)
    assert_delivered(obj, ns.volume(), "upgraded/acme-18.dump", emulator.upgraded_bytes(request_id))


def processing_on_the_platform(obj: dict[str, Any]) -> bool:
    """`process` was called and recorded: the platform's state, as mirrored, is past draft."""
    state = obj.get("status", {}).get("platform", {}).get("state")
    return phase_of(obj) == "Processing" and state in ("pending", "processing", "testing")


def test_operator_killed_mid_processing_polls_the_same_request(
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator(process_seconds=8)
    ns = namespaces()
    ns.prepare()
    ns.put_dump("dumps/acme.dump")
    upgrade = ns.apply_upgrade(
        "acme-to-18",
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
    )
    upgrade.wait_until(processing_on_the_platform, "the platform processing the request")

    live_operator.kill()
    time.sleep(DOWNTIME_SECONDS)
    live_operator.start()

    obj = upgrade.wait_for_phase("Succeeded", "Failed", timeout=180)
    assert phase_of(obj) == "Succeeded", describe(obj)
    request_id = int(obj["status"]["requestId"])
    assert len(emulator.calls("create")) == 1
    assert len(emulator.calls("process")) == 1
    assert_delivered(obj, ns.volume(), "upgraded/acme-18.dump", emulator.upgraded_bytes(request_id))
