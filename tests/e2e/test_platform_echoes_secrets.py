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
from tests.support.scenario import (
    Kube,
    Namespace,
    Upgrade,
    condition,
    describe,
    events_text,
    phase_of,
)

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


def apply_behind(front: PlatformFront, ns: Namespace, name: str) -> Upgrade:
    ns.put_dump(f"dumps/{name}.dump")
    return ns.apply_upgrade(
        name,
        platform_url=front.url,
        source_path=f"dumps/{name}.dump",
        destination_path=f"upgraded/{name}.dump",
    )


def test_a_key_the_platform_echoes_is_masked_everywhere(
    own_operator: RunningOperator, cluster: Any, tmp_path: Path
) -> None:
    kube = Kube(Path(cluster.kubeconfig))
    with (
        RunningEmulator(tmp_path / "emulator", port=take_port()) as emulator,
        PlatformFront(emulator.url, port=take_port()) as chatty,
        PlatformFront(emulator.url, port=take_port()) as refusing,
    ):
        chatty.echo_key_in = {"status"}  # customer_message quotes the key
        refusing.echo_key_in = {"process"}  # the refusal of `process` quotes it
        ns = Namespace.create(kube, cluster.volume_dir, diagnostics=own_operator.log_tail)
        try:
            ns.prepare(contract=emulator.contract)
            told = apply_behind(chatty, ns, f"told-{uuid.uuid4().hex[:6]}")
            refused = apply_behind(refusing, ns, f"refused-{uuid.uuid4().hex[:6]}")
            told_obj = told.wait_for_phase("Failed", "Succeeded", timeout=180)
            refused_obj = refused.wait_for_phase("Failed", "Succeeded", timeout=180)
            keys = [told.request_secret()["key"], refused.request_secret()["key"]]
            readable = {
                "status": json.dumps([told_obj.get("status"), refused_obj.get("status")]),
                "events": events_text(kube, ns.name),
                "operator log": own_operator.logs(),
            }
        finally:
            ns.delete()
    assert phase_of(told_obj) == "Succeeded", describe(told_obj)
    assert "***" in str(told_obj["status"]["platform"].get("customerMessage"))
    assert phase_of(refused_obj) == "Failed", describe(refused_obj)
    ready = condition(refused_obj, "Ready") or {}
    assert ready.get("reason") == "ProcessRefused", describe(refused_obj)
    failure = refused_obj["status"]["failures"][0]
    assert failure["reason"] == "KEY:REJECTED" and "***" in failure["message"]
    leaks = [where for where, text in readable.items() for key in keys if key in text]
    assert leaks == [], f"a request key is readable in: {', '.join(leaks)}"
