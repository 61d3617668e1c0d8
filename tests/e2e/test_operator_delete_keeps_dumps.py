"""Deleting an OdooUpgrade removes what the operator created for it (mover Jobs, their pods, the
request Secret) through owner references, and never a dump on a volume."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.scenario import (
    RESOURCE,
    UID_LABEL,
    Kube,
    Namespace,
    Upgrade,
    describe,
    phase_of,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]


def owned(kube: Kube, namespace: str, uid: str) -> dict[str, list[str]]:
    """Jobs and pods labelled with the resource's uid, and Secrets it owns."""
    selector = f"{UID_LABEL}={uid}"
    found = {
        kind: kube.run("get", kind, "-n", namespace, "-l", selector, "-o", "name").split()
        for kind in ("jobs", "pods")
    }
    secrets = kube.json("get", "secrets", "-n", namespace)["items"]
    found["secrets"] = [
        s["metadata"]["name"]
        for s in secrets
        if any(o.get("uid") == uid for o in s["metadata"].get("ownerReferences") or [])
    ]
    return found


def wait_until_gone(kube: Kube, namespace: str, uid: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    left = owned(kube, namespace, uid)
    while any(left.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still there {timeout:.0f}s after deletion: {left}")
        time.sleep(0.5)
        left = owned(kube, namespace, uid)


def delete(upgrade: Upgrade) -> None:
    upgrade.kube.run(
        "delete", RESOURCE, upgrade.name, "-n", upgrade.namespace, "--wait=true", "--timeout=60s"
    )


def uploaded_and_processing(obj: dict[str, Any]) -> bool:
    return phase_of(obj) == "Processing" and bool(obj.get("status", {}).get("requestId"))


def test_deleting_upgrades_removes_jobs_and_secret_but_keeps_dumps(
    kube: Kube,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    fast = start_emulator()
    slow = start_emulator(process_seconds=120)
    ns = namespaces()
    ns.prepare()
    volume = ns.volume()
    finished_source = ns.put_dump("dumps/finished.dump")
    midway_source = ns.put_dump("dumps/midway.dump")
    finished = ns.apply_upgrade(
        "finished",
        platform_url=fast.url,
        source_path="dumps/finished.dump",
        destination_path="upgraded/finished.dump",
    )
    midway = ns.apply_upgrade(
        "midway",
        platform_url=slow.url,
        source_path="dumps/midway.dump",
        destination_path="upgraded/midway.dump",
    )
    obj = finished.wait_for_phase("Succeeded", "Failed")
    assert phase_of(obj) == "Succeeded", describe(obj)
    midway.wait_until(uploaded_and_processing, "the dump uploaded and being processed")
    upgraded = (volume / "upgraded/finished.dump").read_bytes()
    checksum = (volume / "upgraded/finished.dump.sha256").read_text()
    uids = {u.name: u.get()["metadata"]["uid"] for u in (finished, midway)}
    midway_owned = owned(kube, ns.name, uids["midway"])
    assert midway_owned["secrets"], f"no request Secret owned by the resource: {midway_owned}"
    assert midway_owned["jobs"], f"no upload Job labelled with the resource's uid: {midway_owned}"

    for upgrade in (finished, midway):
        delete(upgrade)
    for uid in uids.values():
        wait_until_gone(kube, ns.name, uid)

    assert (volume / "dumps/finished.dump").read_bytes() == finished_source
    assert (volume / "dumps/midway.dump").read_bytes() == midway_source
    assert (volume / "upgraded/finished.dump").read_bytes() == upgraded
    assert (volume / "upgraded/finished.dump.sha256").read_text() == checksum
