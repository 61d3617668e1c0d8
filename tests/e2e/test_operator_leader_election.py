"""Two operators with `--leader-elect`: only the holder of the Lease acts, a standby takes over
within 30 s of the leader's death (SIGKILL, Lease not released) and carries on every upgrade
with the same platform request, and a leader that loses the Lease stops at once."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_cluster import LocalCluster, wait_until
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import (
    REPO_ROOT,
    Kube,
    Namespace,
    Upgrade,
    assert_delivered,
    describe,
    phase_of,
    wait_all,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

LEASE = "odoo-upgrade-operator"
TAKEOVER_BOUND_SECONDS = 30
LEASE_DURATION_SECONDS = 15  # controller/leadership.py LeaseTimings
RESOURCES = 4
CRD = REPO_ROOT / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"


def identity_of(operator: RunningOperator) -> str:
    """The holder identity an operator started outside a pod writes: `<hostname>-<pid>`."""
    return f"{socket.gethostname()}-{operator.pid}"


def lease(kube: Kube, namespace: str) -> dict[str, Any] | None:
    out = kube.run("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def holder(kube: Kube, namespace: str) -> str | None:
    found = lease(kube, namespace)
    return (found or {}).get("spec", {}).get("holderIdentity")


def platform_calls_made(operator: RunningOperator) -> float:
    """The operator's own count of platform calls (its /metrics)."""
    total = 0.0
    for line in operator.metrics().splitlines():
        match = re.match(r"odoo_upgrade_platform_calls_total\{[^}]*\} ([0-9.e+]+)$", line)
        if match:
            total += float(match.group(1))
    return total


@pytest.fixture
def lease_namespace(cluster: LocalCluster) -> Iterator[str]:
    """A namespace of its own for each test's Lease."""
    name = cluster.create_namespace("lease")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def elected(
    cluster: LocalCluster, kube: Kube, lease_namespace: str, tmp_path: Path
) -> Iterator[Callable[..., RunningOperator]]:
    """Start operators with --leader-elect on the test's Lease; all stopped at the end."""
    kube.run("apply", "-f", str(CRD))
    kube.run("wait", "--for=condition=Established", f"crd/{CRD.name.removesuffix('.yaml')}")
    started: list[RunningOperator] = []

    def start(kubeconfig: Path | None = None) -> RunningOperator:
        # RunningOperator allows the emulators' ports (tests/support/platform_ports.py).
        operator = RunningOperator(
            kubeconfig or Path(cluster.kubeconfig),
            tmp_path / f"operator-{len(started)}.log",
            extra_args=["--leader-elect", "--leader-election-namespace", lease_namespace],
        )
        started.append(operator)
        # Live (the standby serves the liveness probe itself) whether it leads or not.
        return operator.start()

    yield start
    for operator in started:
        operator.kill()


def make_namespace(cluster: LocalCluster, kube: Kube, *operators: RunningOperator) -> Namespace:
    def diagnostics() -> str:
        return "\n".join(o.log_tail(40) for o in operators)

    ns = Namespace.create(kube, cluster.volume_dir, prefix="ha", diagnostics=diagnostics)
    ns.prepare()
    return ns


def apply_upgrades(ns: Namespace, emulator: RunningEmulator, count: int) -> list[Upgrade]:
    upgrades = []
    for index in range(count):
        ns.put_dump(f"dumps/db{index}.dump", size=512 * 1024)
        upgrades.append(
            ns.apply_upgrade(
                f"db{index}-to-18",
                platform_url=emulator.url,
                source_path=f"dumps/db{index}.dump",
                destination_path=f"upgraded/db{index}-18.dump",
            )
        )
    return upgrades


def test_standby_takes_over_a_killed_leader_and_never_creates_a_request_twice(
    cluster: LocalCluster,
    kube: Kube,
    lease_namespace: str,
    elected: Callable[..., RunningOperator],
    start_emulator: Callable[..., RunningEmulator],
    record_property: Callable[[str, object], None],
) -> None:
    # Slow processing and answers keep every upgrade in flight when the leader dies.
    emulator = start_emulator(process_seconds=8, latency=0.3)
    leader = elected()
    wait_until(
        lambda: holder(kube, lease_namespace) == identity_of(leader),
        timeout=30,
        what="the first operator to hold the Lease",
    )
    standby = elected()
    ns = make_namespace(cluster, kube, leader, standby)
    try:
        upgrades = apply_upgrades(ns, emulator, RESOURCES)
        # Mid-flight: every request created (and recorded), none finished.
        for upgrade in upgrades:
            upgrade.wait_until(
                lambda obj: "requestId" in obj.get("status", {}), "its request id recorded"
            )
        assert not [u for u in upgrades if phase_of(u.get()) == "Succeeded"]
        assert holder(kube, lease_namespace) == identity_of(leader)
        # The standby has not called the platform (nor run a handler) while the leader lives.
        assert platform_calls_made(standby) == 0
        assert "leading:" not in standby.logs()
        assert "standby: waiting for Lease" in standby.logs()

        killed_at = time.monotonic()
        leader.kill()
        wait_until(
            lambda: holder(kube, lease_namespace) == identity_of(standby),
            timeout=TAKEOVER_BOUND_SECONDS,
            interval=0.5,
            what=f"the standby to take the Lease over within {TAKEOVER_BOUND_SECONDS}s",
        )
        took_over = time.monotonic() - killed_at
        record_property("takeover_seconds", round(took_over, 1))
        # Not before the dead leader's Lease expired: it was never released.
        assert took_over >= LEASE_DURATION_SECONDS - 5, took_over

        objs = wait_all(upgrades, "Succeeded", "Failed", timeout=240)
        for upgrade, obj in zip(upgrades, objs, strict=True):
            assert phase_of(obj) == "Succeeded", describe(obj) + "\n" + standby.log_tail()
            index = upgrade.name.removeprefix("db").split("-")[0]
            request_id = int(obj["status"]["requestId"])
            assert_delivered(
                obj, ns.volume(), f"upgraded/db{index}-18.dump", emulator.upgraded_bytes(request_id)
            )
        # Exactly one `create` per resource, across the kill and the hand-over.
        created = sorted(int(c["request"]) for c in emulator.calls("create") if c.get("ok"))
        assert len(emulator.calls("create")) == RESOURCES
        assert created == sorted(int(o["status"]["requestId"]) for o in objs)
        assert platform_calls_made(standby) > 0  # the new leader did the rest
    finally:
        ns.delete()


def test_a_standby_never_acts_while_another_holds_the_lease(
    cluster: LocalCluster,
    kube: Kube,
    lease_namespace: str,
    elected: Callable[..., RunningOperator],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator()
    # Another replica holds the Lease and keeps renewing it (this test, for it).
    stop_renewing = threading.Event()
    kube.apply(lease_manifest(lease_namespace, "another-replica"))
    renewer = threading.Thread(target=renew_until, args=(kube, lease_namespace, stop_renewing))
    renewer.start()
    try:
        standby = elected()
        ns = make_namespace(cluster, kube, standby)
        try:
            (upgrade,) = apply_upgrades(ns, emulator, 1)
            # Long enough for an acting operator to create the request several times over.
            time.sleep(12)
            assert emulator.calls() == [], "a standby called the platform"
            obj = upgrade.get()
            assert "status" not in obj, describe(obj)
            assert not obj["metadata"].get("finalizers"), "a standby touched the resource"
            assert holder(kube, lease_namespace) == "another-replica"

            # The other replica dies: its Lease expires, the standby leads and does the work.
            stop_renewing.set()
            renewer.join()
            obj = upgrade.wait_for_phase("Succeeded", "Failed", timeout=120)
            assert phase_of(obj) == "Succeeded", describe(obj) + "\n" + standby.log_tail()
            assert holder(kube, lease_namespace) == identity_of(standby)
            assert len(emulator.calls("create")) == 1
        finally:
            ns.delete()
    finally:
        stop_renewing.set()
        renewer.join()


def test_a_leader_that_sees_another_holder_exits_at_once(
    kube: Kube, lease_namespace: str, elected: Callable[..., RunningOperator]
) -> None:
    leader = elected()
    wait_until(
        lambda: holder(kube, lease_namespace) == identity_of(leader),
        timeout=30,
        what="the operator to hold the Lease",
    )
    # Someone else writes himself into the Lease (a partition healed, a clock jumped...).
    kube.run(
        "patch", "lease", LEASE, "-n", lease_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"holderIdentity": "usurper", "renewTime": micro_now()}}),
    )  # fmt: skip
    # At its next renewal (every 2 s) the leader reads the Lease, sees it is not its own, stops.
    wait_until(lambda: not leader.alive(), timeout=8, what="the deposed leader to exit")
    assert leader.returncode() == 1
    assert "leadership lost (the Lease is held by usurper)" in leader.logs()
    assert holder(kube, lease_namespace) == "usurper"  # it did not fight back


def test_a_leader_cut_off_from_the_api_server_exits_before_its_lease_expires(
    cluster: LocalCluster,
    kube: Kube,
    lease_namespace: str,
    elected: Callable[..., RunningOperator],
    tmp_path: Path,
) -> None:
    front = BlackholeFront(cluster.server)
    try:
        leader = elected(kubeconfig=front.kubeconfig(Path(cluster.kubeconfig), tmp_path))
        wait_until(
            lambda: holder(kube, lease_namespace) == identity_of(leader),
            timeout=30,
            what="the operator (behind the front) to hold the Lease",
        )
        front.cut()  # calls hang: no answer, no error (the case a plain retry loop never leaves)
        cut_at = time.monotonic()
        wait_until(lambda: not leader.alive(), timeout=20, interval=0.2, what="the leader to exit")
        stopped_after = time.monotonic() - cut_at
        last_renewal = parse_micro_time(lease(kube, lease_namespace)["spec"]["renewTime"])
        stopped_at = datetime.now(UTC)
        assert leader.returncode() == 1
        assert "leadership lost" in leader.logs()
        # Stopped within the renew deadline (10 s) of its last renewal, well before the Lease
        # (15 s) lets a standby take over.
        assert (stopped_at - last_renewal).total_seconds() < LEASE_DURATION_SECONDS, stopped_after
    finally:
        front.close()


# -- helpers ----------------------------------------------------------------------------------


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def lease_manifest(namespace: str, holder_identity: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": namespace},
        "spec": {
            "holderIdentity": holder_identity,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "acquireTime": micro_now(),
            "renewTime": micro_now(),
        },
    }


def renew_until(kube: Kube, namespace: str, stop: threading.Event) -> None:
    """Renew the Lease every 2 s, as its holder would, until `stop`."""
    while not stop.wait(2):
        kube.run(
            "patch", "lease", LEASE, "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"renewTime": micro_now()}}),
        )  # fmt: skip


class BlackholeFront:
    """A TCP front to the API server that can stop forwarding without closing anything."""

    def __init__(self, server: str) -> None:
        host, port = server.removeprefix("https://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_off = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def kubeconfig(self, admin: Path, directory: Path) -> Path:
        """The admin kubeconfig, pointed at this front (the serving cert covers 127.0.0.1)."""
        text = admin.read_text()
        host, port = self.target
        path = directory / "front.kubeconfig"
        path.write_text(text.replace(f"https://{host}:{port}", f"https://127.0.0.1:{self.port}"))
        path.chmod(0o600)
        return path

    def cut(self) -> None:
        self.cut_off.set()

    def close(self) -> None:
        self.closed.set()
        for sock in [self.listener, *self.sockets]:
            sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self.closed.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            # Cut: swallow everything, answer nothing; connections stay open.
            while self.cut_off.is_set() and not self.closed.is_set():
                time.sleep(0.1)
            if self.closed.is_set():
                return
            try:
                sink.sendall(data)
            except OSError:
                return
