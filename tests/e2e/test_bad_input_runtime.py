"""Bad input only the running operator can catch, each with the outcome a user sees.

- a file that is not a database dump: Failed, with the platform's own `customer_message`;
- a contract Secret without the key the spec names: the upgrade waits, a condition names the
  key, and the platform is never asked anything;
- an SFTP host key that does not match the pinned one: the mover refuses to connect, the
  upgrade fails saying so, and not a byte reaches the platform.

Missing PVC / Secret / source and an existing destination file are pinned by
test_operator_waits_for_prerequisites.py and test_operator_never_overwrites_destination.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from odoo_upgrade.emulator.dumps import NOT_A_DUMP_MESSAGE
from odoo_upgrade.transfer import generate_ssh_keypair
from tests.chaos.ledger import RunLedger
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import (
    Namespace,
    Upgrade,
    conditions_of,
    describe,
    phase_of,
    upgrade_manifest,
    write_file,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

SOURCE = "dumps/acme.dump"
DESTINATION = "upgraded/acme-18.dump"


def user_visible_text(obj: dict[str, Any]) -> str:
    """Everything `kubectl describe` shows about why: status message and conditions."""
    status = obj.get("status", {})
    parts = [str(status.get("message", ""))]
    parts += [f"{c.get('reason')}: {c.get('message')}" for c in conditions_of(obj)]
    return "\n".join(parts)


@dataclass
class Run:
    """One bad input applied: the namespace, its emulator and the resource."""

    ns: Namespace
    emulator: RunningEmulator
    upgrade: Upgrade


def apply(
    run_ns: Namespace,
    emulator: RunningEmulator,
    *,
    transport: str = "https",
    spec: dict[str, Any] | None = None,
) -> Upgrade:
    manifest = upgrade_manifest(
        run_ns.name,
        "bad-input",
        platform_url=emulator.url,
        source_path=SOURCE,
        destination_path=DESTINATION,
        transport=transport,
    )
    manifest["spec"].update(spec or {})
    run_ns.kube.apply(manifest)
    return Upgrade(run_ns.kube, run_ns.name, "bad-input", run_ns.diagnostics)


def garbage_dump(ns: Namespace, emulator: RunningEmulator) -> Upgrade:
    ns.prepare(contract=emulator.contract)
    write_file(ns.volume() / SOURCE, b"this is not a database dump\n" * 4096)
    return apply(ns, emulator)


def expect_garbage_dump_failed(run: Run) -> None:
    obj = run.upgrade.wait_for_phase("Failed", "Succeeded", timeout=180)
    assert phase_of(obj) == "Failed", describe(obj)
    assert obj["status"]["platform"].get("customerMessage") == NOT_A_DUMP_MESSAGE, describe(obj)
    assert NOT_A_DUMP_MESSAGE in user_visible_text(obj), describe(obj)
    assert len(run.emulator.calls("create")) == 1
    assert not (run.ns.volume() / DESTINATION).exists()


def secret_without_key(ns: Namespace, emulator: RunningEmulator) -> Upgrade:
    ns.add_pvc()
    ns.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "odoo-contract", "namespace": ns.name},
            "stringData": {"contract-ref": emulator.contract},
        }
    )
    ns.put_dump(SOURCE)
    return apply(ns, emulator)


def expect_missing_key_named_and_platform_untouched(run: Run) -> None:
    obj = run.upgrade.wait_until(
        lambda o: (
            "spec.contractSecretRef.key" in user_visible_text(o)
            or phase_of(o) in ("Failed", "Succeeded")
        ),
        "a condition naming spec.contractSecretRef.key",
        timeout=120,
    )
    text = user_visible_text(obj)
    assert "spec.contractSecretRef.key" in text and '"contract"' in text, describe(obj)
    assert phase_of(obj) not in ("Failed", "Succeeded"), describe(obj)
    time.sleep(2)  # a few more operator passes: still nothing asked of the platform
    assert run.emulator.calls() == []


def wrong_host_key(ns: Namespace, emulator: RunningEmulator) -> Upgrade:
    ns.prepare(contract=emulator.contract)
    ns.put_dump(SOURCE)
    stranger = " ".join(generate_ssh_keypair().public_line.split()[:2])
    assert stranger != emulator.host_key_line()
    return apply(ns, emulator, transport="sftp", spec={"sftp": {"hostKey": stranger}})


def expect_host_key_refused(run: Run) -> None:
    obj = run.upgrade.wait_for_phase("Failed", "Succeeded", timeout=180)
    assert phase_of(obj) == "Failed", describe(obj)
    assert "host key" in user_visible_text(obj).lower(), describe(obj)
    request_id = int(obj["status"]["requestId"])
    assert not run.emulator.original_path(request_id).exists(), "bytes reached the platform"
    assert not any(c["method"] == "process" for c in run.emulator.calls())
    assert not (run.ns.volume() / DESTINATION).exists()


@dataclass(frozen=True)
class BadInput:
    case: str
    arrange: Callable[[Namespace, RunningEmulator], Upgrade]
    expect: Callable[[Run], None]


BAD_INPUTS = [
    BadInput("garbage dump", garbage_dump, expect_garbage_dump_failed),
    BadInput(
        "contract Secret without the key",
        secret_without_key,
        expect_missing_key_named_and_platform_untouched,
    ),
    BadInput("SFTP host key mismatch", wrong_host_key, expect_host_key_refused),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.case.replace(" ", "-") for b in BAD_INPUTS])
def test_bad_input_gets_the_outcome_a_user_can_act_on(
    bad: BadInput,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    record_property: Any,
) -> None:
    emulator = start_emulator()
    ns = namespaces()
    upgrade = bad.arrange(ns, emulator)
    bad.expect(Run(ns, emulator, upgrade))
    RunLedger(record_property).input(bad.case)
    # Secrets never in what the user sees, even on the failure paths.
    assert emulator.contract not in json.dumps(upgrade.get())
