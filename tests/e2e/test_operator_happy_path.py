"""An OdooUpgrade goes through every phase to Succeeded and leaves the platform's upgraded dump,
byte for byte, on the destination volume — on database-v1 over HTTPS and over SFTP (both ways), on
upgrade-request over rsync (a directory with its SHA256SUMS) — and the request key or token
never leaves its Secret.

One upgrade per transport runs side by side (module fixture); each test reads what they left.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.platform_ports import take_port
from tests.support.scenario import (
    CONDITION_ORDER,
    DEFAULT_PROCESS_SECONDS,
    RESOURCE,
    SAMPLE_CONTRACT,
    Kube,
    Namespace,
    Upgrade,
    assert_delivered,
    assert_set_delivered,
    condition,
    describe,
    phase_of,
    sha256_hex,
    wait_all,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

TRANSPORTS = ("https", "sftp", "rsync")
# The platform API of each transport's upgrade; rsync is upgrade-request's own.
API_OF = {"https": "database-v1", "sftp": "database-v1", "rsync": "upgrade-request"}
SECRET_OF = {"database-v1": "key", "upgrade-request": "token"}


def destination_of(transport: str) -> str:
    """A file for database-v1, a new directory for upgrade-request."""
    return f"upgraded/{transport}" + ("" if API_OF[transport] == "upgrade-request" else ".dump")


@dataclass
class Delivery:
    """One upgrade of the module's scenario: what went in, and the resource at the end."""

    upgrade: Upgrade
    source: bytes
    obj: dict[str, Any]


@dataclass
class Scenario:
    ns: Namespace
    emulator: RunningEmulator
    deliveries: dict[str, Delivery]  # by transport


@pytest.fixture(scope="module")
def scenario(
    cluster: Any,
    kube: Kube,
    operator: RunningOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    emulator = RunningEmulator(
        data_dir=tmp_path_factory.mktemp("emulator"),
        port=take_port(),
        process_seconds=DEFAULT_PROCESS_SECONDS,
    )
    ns = Namespace.create(kube, cluster.volume_dir, diagnostics=operator.log_tail)
    try:
        ns.prepare()
        started = {}
        for transport in TRANSPORTS:
            source = ns.put_dump(f"dumps/{transport}.dump")
            upgrade = ns.apply_upgrade(
                f"acme-{transport}",
                platform_url=emulator.url,
                source_path=f"dumps/{transport}.dump",
                destination_path=destination_of(transport),
                transport=transport,
                api=API_OF[transport],
            )
            started[transport] = (upgrade, source)
        objects = wait_all([u for u, _ in started.values()], "Succeeded", "Failed")
        deliveries = {
            transport: Delivery(upgrade, source, obj)
            for (transport, (upgrade, source)), obj in zip(started.items(), objects, strict=True)
        }
        yield Scenario(ns, emulator, deliveries)
    finally:
        emulator.stop()
        ns.delete()


def create_method(transport: str) -> str:
    return "create" if API_OF[transport] == "database-v1" else "upgrade/request/create"


def creates_for(emulator: RunningEmulator, transport: str, request_id: int) -> int:
    calls = emulator.calls(create_method(transport))
    return sum(1 for call in calls if call["request"] == request_id)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_upgrade_delivers_the_platforms_upgraded_dump(transport: str, scenario: Scenario) -> None:
    delivery = scenario.deliveries[transport]
    obj, emulator = delivery.obj, scenario.emulator

    assert phase_of(obj) == "Succeeded", describe(obj)
    for type_ in CONDITION_ORDER:
        found = condition(obj, type_)
        assert found is not None and found["status"] == "True", f"{type_}: {describe(obj)}"
    assert delivery.upgrade.phases_in_flow_order(), delivery.upgrade.phases_seen
    status = obj["status"]
    request_id = int(status["requestId"])
    if API_OF[transport] == "upgrade-request":
        served = emulator.request_data(request_id)
        assert_set_delivered(obj, scenario.ns.volume(), destination_of(transport), served)
        uploaded = (served / "origin.dump").read_bytes()
        processes = emulator.calls("upgrade/request/process")
        assert status["platform"]["assignedHost"] == emulator.assigned_host
        assert status["platform"]["pgVersionCompatible"] is True
    else:
        upgraded = emulator.upgraded_bytes(request_id)
        assert_delivered(obj, scenario.ns.volume(), destination_of(transport), upgraded)
        uploaded = emulator.original_path(request_id).read_bytes()
        processes = emulator.calls("process")
        uploads = [c for c in emulator.calls("upload") if c["request"] == request_id]
        if transport == "sftp":
            assert not uploads, "an SFTP upgrade uploaded over HTTPS"
        else:
            assert uploads
        # The dump comes back the way it went: SFTP `get upgraded_<filename>` once done.
        gets = [
            (c["file"], c["bytes"])
            for c in emulator.calls("sftp-get")
            if c["request"] == request_id
        ]
        name = f"upgraded_{transport}.dump"  # the filename defaults to the source's basename
        assert gets == ([(name, len(upgraded))] if transport == "sftp" else [])
        assert status["download"]["transport"] == transport
    # What was uploaded is the source dump, by the transport asked for.
    assert uploaded == delivery.source
    assert status["upload"]["sha256"] == sha256_hex(delivery.source)
    assert status["upload"]["bytesDone"] == len(delivery.source)
    assert status["upload"]["transport"] == transport
    assert status["platform"]["state"] == "done"
    assert creates_for(emulator, transport, request_id) == 1
    assert [c["request"] for c in processes].count(request_id) == 1
    # The platform's progress is told as Events on the resource, up to its final state.
    told = [
        str(e.get("message", ""))
        for e in scenario.ns.events()
        if e.get("involvedObject", {}).get("name") == delivery.upgrade.name
    ]
    assert any("done" in message for message in told), told
    # The upgrades together made exactly one request each: no hidden retry of `create`.
    made = {method: len(emulator.calls(method)) for method in map(create_method, TRANSPORTS)}
    assert made == {method: [create_method(t) for t in TRANSPORTS].count(method) for method in made}


def pod_logs(cluster: Any, namespace: str) -> dict[str, str]:
    """The mover pods' logs the test pod runner keeps (`<logs>/pods/<ns>_<pod>.log`)."""
    root = Path(cluster.logs_dir) / "pods"
    return {str(p): p.read_text(errors="replace") for p in sorted(root.glob(f"{namespace}_*"))}


def private_key_body(pem: str) -> list[str]:
    """The base64 lines of a PEM private key (a leak shows even without the armour lines)."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_request_key_and_contract_never_leave_their_secrets(
    cluster: Any, kube: Kube, operator: RunningOperator, scenario: Scenario
) -> None:
    ns = scenario.ns
    secrets: dict[str, str] = {"contract": SAMPLE_CONTRACT}
    for transport, delivery in scenario.deliveries.items():
        data = delivery.upgrade.request_secret()
        secrets[f"{transport} request {SECRET_OF[API_OF[transport]]}"] = data[
            SECRET_OF[API_OF[transport]]
        ]
        for number, line in enumerate(private_key_body(data.get("ssh-privatekey", ""))):
            secrets[f"{transport} ssh private key line {number}"] = line
    assert all(len(value) >= 8 for value in secrets.values()), "secrets too short to search"

    logs = pod_logs(cluster, ns.name)
    assert logs, "no mover pod log of this run to search"
    places = {
        "resources": kube.run("get", RESOURCE, "-n", ns.name, "-o", "yaml"),
        "events": kube.run("get", "events", "-n", ns.name, "-o", "yaml"),
        "jobs": kube.run("get", "jobs", "-n", ns.name, "-o", "yaml"),
        "operator log": operator.logs(),
        "operator metrics": operator.metrics(),
        **{f"pod log {path}": text for path, text in logs.items()},
    }
    leaks = [
        f"{secret} in {place}"
        for place, text in places.items()
        for secret, value in secrets.items()
        if value in text
    ]
    assert leaks == []
