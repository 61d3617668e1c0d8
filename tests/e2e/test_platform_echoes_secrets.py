"""A platform that quotes the request key back — in `customer_message` and in the failure of
`process` — never gets it into what a user or a log collector reads: status (platform mirror,
message, conditions, failures), Events, or the operator's log, in text and in JSON log mode.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.front import PlatformFront
from tests.support.operator import RunningOperator
from tests.support.operator_fixtures import install_crd
from tests.support.platform_ports import take_port
from tests.support.scenario import Kube, Namespace, condition, describe, events_text, phase_of

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["text", "json"])
def own_operator(
    request: pytest.FixtureRequest, cluster: Any, tmp_path: Path
) -> Iterator[RunningOperator]:
    """An operator of this test alone, logging in the mode under test."""
    kube = Kube(Path(cluster.kubeconfig))
    install_crd(kube)
    extra = ["--json-logs"] if request.param == "json" else []
    running = RunningOperator(
        Path(cluster.kubeconfig), tmp_path / "operator.log", extra_args=extra
    ).start()
    try:
        yield running
    finally:
        running.stop()


def test_a_key_the_platform_echoes_is_masked_everywhere(
    own_operator: RunningOperator, cluster: Any, tmp_path: Path
) -> None:
    kube = Kube(Path(cluster.kubeconfig))
    with (
        RunningEmulator(tmp_path / "emulator", port=take_port()) as emulator,
        PlatformFront(emulator.url, port=take_port()) as front,
    ):
        front.echo_key = True
        ns = Namespace.create(kube, cluster.volume_dir, diagnostics=own_operator.log_tail)
        try:
            ns.prepare(contract=emulator.contract)
            ns.put_dump("dumps/acme.dump")
            upgrade = ns.apply_upgrade(
                f"echo-{uuid.uuid4().hex[:6]}",
                platform_url=front.url,
                source_path="dumps/acme.dump",
                destination_path="upgraded/acme-18.dump",
            )
            obj = upgrade.wait_for_phase("Failed", "Succeeded", timeout=180)
            key = upgrade.request_secret()["key"]
            readable = {
                "status": json.dumps(obj.get("status", {})),
                "events": events_text(kube, ns.name),
                "operator log": own_operator.logs(),
            }
        finally:
            ns.delete()
    assert phase_of(obj) == "Failed", describe(obj)
    assert (condition(obj, "Ready") or {}).get("reason") == "ProcessRefused", describe(obj)
    assert obj["status"]["failures"][0]["reason"] == "KEY:REJECTED"
    assert "***" in obj["status"]["failures"][0]["message"]
    assert "***" in str(obj["status"]["platform"].get("customerMessage"))
    leaks = [where for where, text in readable.items() if key in text]
    assert leaks == [], f"the request key is readable in: {', '.join(leaks)}"
