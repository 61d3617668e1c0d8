"""The Helm chart's namespaced mode is enough, and confined: with `watchNamespaces` the operator
gets its namespaced permissions through a RoleBinding in each watched namespace only, runs with
the chart's ServiceAccount token, takes an upgrade there to Succeeded, and leaves upgrades in
other namespaces alone."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_deploy_rbac import FORBIDDEN_MARKERS, service_account_kubeconfig
from tests.harness.local_cluster import LocalCluster
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.platform_ports import take_port
from tests.support.scenario import Kube, Namespace, describe, phase_of

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "odoo-upgrade-operator"
CRD = REPO / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"
RELEASE = "rbac-scoped"
SERVICE_ACCOUNT = f"{RELEASE}-odoo-upgrade-operator"


@pytest.fixture(scope="module")
def helm() -> Path:
    """helm from the Go module proxy, built once and cached by scripts/build-helm.sh."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"scripts/build-helm.sh failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scoped_namespaces(cluster: LocalCluster) -> Iterator[dict[str, Namespace]]:
    """The release namespace, one watched and one unwatched namespace."""
    admin = Kube(cluster.kubeconfig)
    created = {
        role: Namespace.create(admin, cluster.volume_dir, prefix=role)
        for role in ("release", "watched", "unwatched")
    }
    yield created
    for namespace in created.values():
        namespace.delete()


@pytest.fixture(scope="module")
def scoped_operator(
    cluster: LocalCluster,
    helm: Path,
    scoped_namespaces: dict[str, Namespace],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    """The chart installed for real (minus its Deployment) watching one namespace, and the
    operator started with that release's ServiceAccount token and the Deployment's scope."""
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/odooupgrades.upgrade.odoo-operator.io"
    )
    release_ns, watched = scoped_namespaces["release"].name, scoped_namespaces["watched"].name
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            release_ns,
            "--set",
            f"watchNamespaces={{{watched}}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    manifests = [doc for doc in yaml.safe_load_all(rendered) if doc]
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all([m for m in manifests if m["kind"] != "Deployment"]),
    )
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", release_ns, "--duration=2h"
    ).stdout.strip()
    kubeconfig = service_account_kubeconfig(
        cluster, token, tmp_path_factory.mktemp("scoped-sa") / "kubeconfig"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    scope = [
        a.removeprefix("--namespace=") for a in container["args"] if a.startswith("--namespace=")
    ]
    assert scope == [watched]
    running = RunningOperator(
        kubeconfig, tmp_path_factory.mktemp("scoped-operator") / "operator.log", namespaces=scope
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
        for manifest in manifests:
            if manifest["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl(
                    "delete",
                    manifest["kind"].lower(),
                    manifest["metadata"]["name"],
                    "--ignore-not-found",
                    check=False,
                )


def test_operator_scoped_by_the_chart_upgrades_in_its_namespace_only(
    scoped_operator: RunningOperator, scoped_namespaces: dict[str, Namespace], tmp_path: Path
) -> None:
    watched, unwatched = scoped_namespaces["watched"], scoped_namespaces["unwatched"]
    emulator = RunningEmulator(
        data_dir=tmp_path / "emulator", port=take_port(), process_seconds=1.0
    )
    try:
        upgrades = {}
        for ns in (watched, unwatched):
            ns.diagnostics = scoped_operator.log_tail
            ns.prepare()
            ns.put_dump("dumps/acme.dump")
            upgrades[ns.name] = ns.apply_upgrade(
                "acme-to-18",
                platform_url=emulator.url,
                source_path="dumps/acme.dump",
                destination_path="upgraded/acme-18.dump",
            )
        obj = upgrades[watched.name].wait_for_phase("Succeeded", "Failed", timeout=180)
        assert phase_of(obj) == "Succeeded", describe(obj) + "\n" + scoped_operator.log_tail()
        # The other namespace's upgrade was never touched: no status, no platform request.
        assert "status" not in upgrades[unwatched.name].get()
        assert len(emulator.calls("create")) == 1
        refused = [
            line
            for line in scoped_operator.logs().splitlines()
            if any(marker in line for marker in FORBIDDEN_MARKERS)
        ]
        assert not refused, "\n".join(refused[:20])
    finally:
        emulator.stop()


def test_chart_service_account_has_no_access_outside_the_watched_namespace(
    cluster: LocalCluster, scoped_operator: RunningOperator, scoped_namespaces: dict[str, Namespace]
) -> None:
    def can_i(*args: str) -> bool:
        done = cluster.kubectl(
            "--kubeconfig", str(scoped_operator.kubeconfig), "auth", "can-i", *args, check=False
        )
        return done.stdout.strip() == "yes"

    watched, unwatched = scoped_namespaces["watched"].name, scoped_namespaces["unwatched"].name
    assert can_i("get", "secrets", "-n", watched)
    assert can_i("create", "jobs.batch", "-n", watched)
    assert not can_i("get", "secrets", "-n", unwatched)
    assert not can_i("create", "jobs.batch", "-n", unwatched)
    assert not can_i("get", "secrets", "--all-namespaces")
    assert can_i("list", "namespaces")
