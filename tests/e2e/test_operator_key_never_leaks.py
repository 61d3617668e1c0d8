"""After upgrades over HTTPS and SFTP, the request key (and every URL embedding it), the contract
and the SSH private key appear nowhere a user or a log collector can read: the resource, the
namespace's Events, the operator's log, the mover pods' logs and the operator's metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import (
    RESOURCE,
    SAMPLE_CONTRACT,
    Kube,
    Namespace,
    describe,
    phase_of,
    wait_all,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]


def pod_logs(cluster: Any) -> dict[str, str]:
    """The mover pods' logs the test pod runner keeps under .cluster/logs/pods/."""
    root = Path(cluster.logs_dir) / "pods"
    return {
        str(path): path.read_text(errors="replace")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def private_key_body(pem: str) -> list[str]:
    """The base64 lines of a PEM private key (a leak shows even without the armour lines)."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_request_key_and_contract_never_leave_their_secrets(
    cluster: Any,
    kube: Kube,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator()
    ns = namespaces()
    ns.prepare()
    upgrades = []
    for transport in ("https", "sftp"):
        ns.put_dump(f"dumps/{transport}.dump")
        upgrades.append(
            ns.apply_upgrade(
                f"acme-{transport}",
                platform_url=emulator.url,
                source_path=f"dumps/{transport}.dump",
                destination_path=f"upgraded/{transport}.dump",
                transport=transport,
            )
        )
    for obj in wait_all(upgrades, "Succeeded", "Failed", timeout=180):
        assert phase_of(obj) == "Succeeded", describe(obj)

    secrets: dict[str, str] = {"contract": SAMPLE_CONTRACT}
    for upgrade in upgrades:
        data = upgrade.request_secret()
        secrets[f"{upgrade.name} key"] = data["key"]
        for number, line in enumerate(private_key_body(data.get("ssh-privatekey", ""))):
            secrets[f"{upgrade.name} ssh private key line {number}"] = line
    assert all(len(value) >= 8 for value in secrets.values()), "secrets too short to search"

    places = {
        "resources": kube.run("get", RESOURCE, "-n", ns.name, "-o", "yaml"),
        "events": kube.run("get", "events", "-n", ns.name, "-o", "yaml"),
        "operator log": live_operator.logs(),
        "operator metrics": live_operator.metrics(),
        **{f"pod log {path}": text for path, text in pod_logs(cluster).items()},
    }
    assert any(f"/{ns.name}_" in name for name in places), "no mover pod log of this run to search"
    leaks = [
        f"{secret} in {place}"
        for place, text in places.items()
        for secret, value in secrets.items()
        if value in text
    ]
    assert leaks == []
