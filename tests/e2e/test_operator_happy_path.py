"""An OdooUpgrade goes through every phase to Succeeded and leaves the platform's upgraded dump,
byte for byte, on the destination volume — over HTTPS and over SFTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.scenario import (
    CONDITION_ORDER,
    Namespace,
    assert_delivered,
    condition,
    describe,
    phase_of,
    sha256_hex,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_upgrade_delivers_the_platforms_upgraded_dump(
    transport: str,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator()
    ns = namespaces()
    ns.prepare()
    source = ns.put_dump("dumps/acme.dump")
    upgrade = ns.apply_upgrade(
        "acme-to-18",
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
        transport=transport,
    )

    obj = upgrade.wait_for_phase("Succeeded", "Failed")

    assert phase_of(obj) == "Succeeded", describe(obj)
    for type_ in CONDITION_ORDER:
        found = condition(obj, type_)
        assert found is not None and found["status"] == "True", f"{type_}: {describe(obj)}"
    assert upgrade.phases_in_flow_order(), upgrade.phases_seen
    status = obj["status"]
    request_id = int(status["requestId"])
    assert_delivered(obj, ns.volume(), "upgraded/acme-18.dump", emulator.upgraded_bytes(request_id))
    # What was uploaded is the source dump, by the transport asked for.
    assert emulator.original_path(request_id).read_bytes() == source
    assert status["upload"]["sha256"] == sha256_hex(source)
    assert status["upload"]["bytesDone"] == len(source)
    assert status["upload"]["transport"] == transport
    assert status["platform"]["state"] == "done"
    assert len(emulator.calls("create")) == 1
    assert len(emulator.calls("process")) == 1
    if transport == "sftp":
        assert emulator.calls("request_sftp_access")
        assert not emulator.calls("upload")
    else:
        assert emulator.calls("upload")
