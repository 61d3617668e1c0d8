"""No secret anywhere a user or a log collector can read, on the paths where leaks hide: retries,
cut transfers, platform refusals, a mover that refuses a host key, an operator SIGKILLed and
restarted mid-flight.

The happy path alone is pinned by test_operator_key_never_leaks.py. Here one flaky platform
(30 % `SERVER:ERROR`, every transfer cut once, slow answers) serves seven upgrades that end in
seven different ways, on both platform APIs, then everything readable is scanned: the
resources, core and events.k8s.io Events, the mover Jobs and Pods (commands, termination
messages), the operator's log (tracebacks included), the mover pods' logs and the metrics
output. Secrets looked for: the contract, every request key and token (raw and URL-encoded),
any `/database/<region>/<id>/<key>` URL, `PRIVATE KEY` and the lines of each SSH private key
(upgrade-request makes one per request). A hit names its place, secret masked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from odoo_upgrade.transfer import generate_ssh_keypair
from tests.chaos.ledger import RunLedger
from tests.chaos.secret_scan import scan_texts
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import (
    RESOURCE,
    Kube,
    Namespace,
    Upgrade,
    describe,
    phase_of,
    upgrade_manifest,
    wait_all,
    write_file,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DUMP_BYTES = 512 * 1024


def start(ns: Namespace, emulator: RunningEmulator, name: str, **spec_changes: Any) -> Upgrade:
    transport = spec_changes.pop("transport", "https")
    api = "upgrade-request" if transport == "rsync" else None
    manifest = upgrade_manifest(
        ns.name,
        name,
        platform_url=emulator.url,
        source_path=f"dumps/{name}.dump",
        destination_path=f"upgraded/{name}" + ("" if api else ".dump"),
        transport=transport,
        api=api,
        env=spec_changes.pop("env", None),
    )
    manifest["spec"].update(spec_changes)
    ns.kube.apply(manifest)
    return Upgrade(ns.kube, ns.name, name, ns.diagnostics)


def readable_places(
    cluster: Any, kube: Kube, ns: Namespace, operator: RunningOperator
) -> dict[str, str]:
    """Everything of this run a user, a dashboard or a log shipper can read."""
    places = {
        "kubectl get odooupgrade -o yaml": kube.run("get", RESOURCE, "-n", ns.name, "-o", "yaml"),
        "kubectl get events (core)": kube.run("get", "events", "-n", ns.name, "-o", "yaml"),
        "kubectl get events.events.k8s.io": kube.run(
            "get", "events.events.k8s.io", "-n", ns.name, "-o", "yaml"
        ),
        "kubectl get jobs -o yaml": kube.run("get", "jobs", "-n", ns.name, "-o", "yaml"),
        "kubectl get pods -o yaml": kube.run("get", "pods", "-n", ns.name, "-o", "yaml"),
        "operator log": operator.logs(),
        "operator metrics": operator.metrics(),
    }
    for path in sorted((Path(cluster.logs_dir) / "pods").glob(f"{ns.name}_*")):
        places[f"pod log {path.name}"] = path.read_text(errors="replace")
    return places


def test_no_secret_leaks_on_failure_retry_and_restart_paths(
    cluster: Any,
    kube: Kube,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
    record_property: Any,
) -> None:
    emulator = start_emulator(
        fail_rate=0.3, drop_after_bytes=DUMP_BYTES // 2, latency=0.2, fault_seed=11
    )
    ns = namespaces()
    ns.prepare(contract=emulator.contract)
    for name in ("https-ok", "sftp-ok", "target-refused", "host-key-refused", "rsync-ok",
                 "rsync-failed"):  # fmt: skip
        ns.put_dump(f"dumps/{name}.dump", size=DUMP_BYTES)
    write_file(ns.volume() / "dumps/garbage.dump", b"not a dump\n" * 20000)
    stranger = " ".join(generate_ssh_keypair().public_line.split()[:2])
    outcomes = {
        "https-ok": ("Succeeded", start(ns, emulator, "https-ok")),
        "sftp-ok": ("Succeeded", start(ns, emulator, "sftp-ok", transport="sftp")),
        "garbage": ("Failed", start(ns, emulator, "garbage")),
        "target-refused": ("Failed", start(ns, emulator, "target-refused", target="5.0")),
        "host-key-refused": (
            "Failed",
            start(ns, emulator, "host-key-refused", transport="sftp", sftp={"hostKey": stranger}),
        ),
        "rsync-ok": ("Succeeded", start(ns, emulator, "rsync-ok", transport="rsync")),
        # The platform's reason for the failure lands in status and an Event: a path to scan.
        "rsync-failed": (
            "Failed",
            start(
                ns,
                emulator,
                "rsync-failed",
                transport="rsync",
                env=["ODOO_UPGRADE_EMULATOR_FAIL=the upgrade of module stock failed"],
            ),
        ),
    }
    ledger = RunLedger(record_property)
    ledger.resources(len(outcomes))

    # A restart replays the handlers from the stored state: the path where stale text is logged.
    # Every `create` is answered first: an operator killed while one is in flight fails that
    # resource CreateOutcomeUnknown by design (tests/chaos/test_create_exactly_once.py).
    for name, (_, upgrade) in outcomes.items():
        upgrade.wait_until(
            lambda obj: (
                obj.get("status", {}).get("requestId") is not None or phase_of(obj) == "Failed"
            ),
            f"{name}: a request id (or a refusal) before the operator is killed",
        )
    live_operator.kill()
    time.sleep(2)
    live_operator.start()
    ledger.fault(f"operator SIGKILL with {len(outcomes)} upgrades in flight")

    finals = wait_all([u for _, u in outcomes.values()], "Succeeded", "Failed", timeout=300)
    for (name, (expected, _)), obj in zip(outcomes.items(), finals, strict=True):
        assert phase_of(obj) == expected, f"{name}: {describe(obj)}"

    secrets: dict[str, str] = {"the contract": emulator.contract}
    for (name, (_, upgrade)), obj in zip(outcomes.items(), finals, strict=True):
        # A create the platform refused leaves no request, hence no request Secret.
        data = upgrade.request_secret() if obj["status"].get("requestId") else {}
        if data.get("key"):
            secrets[f"request key of {name}"] = data["key"]
        if data.get("token"):
            secrets[f"request token of {name}"] = data["token"]
        pem = data.get("ssh-privatekey", "")
        for number, line in enumerate(pem.splitlines()):
            if line and not line.startswith("-----"):
                secrets[f"line {number} of the SSH private key of {name}"] = line
    assert sum(k.startswith("request key") for k in secrets) >= 4, "too few keys to look for"
    assert sum(k.startswith("request token") for k in secrets) == 2, "no tokens to look for"
    assert any("SSH private key" in k for k in secrets), "no SSH private key to look for"

    places = readable_places(cluster, kube, ns, live_operator)
    assert any(p.startswith("pod log") for p in places), "no mover pod log to scan"
    hits = scan_texts(places, secrets)
    assert not hits, "secrets found:\n" + "\n".join(str(hit) for hit in hits)
    ledger.verified(len(outcomes), 0)
