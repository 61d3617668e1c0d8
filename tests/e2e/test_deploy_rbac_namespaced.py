"""The namespaced installs are enough, and confined. The Helm chart with `watchNamespaces`: the
operator gets its namespaced permissions through a RoleBinding in each watched namespace only,
runs with the chart's ServiceAccount token (leader election on its Lease included), takes an
upgrade there to Succeeded, and leaves upgrades in other namespaces alone. deploy/namespaced: the
same with Roles only, and no cluster-wide grant at all."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_deploy_rbac import refused_calls, service_account_kubeconfig
from tests.harness.kubectl import kustomize
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
CLUSTER_SCOPED_KINDS = (
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
# The names deploy/namespaced ships with, replaced by the test's own namespaces.
SHIPPED_NAMESPACE, SHIPPED_WATCHED = "odoo-upgrade-system", "odoo-apps"


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
    assert "--leader-elect" in container["args"]
    running = RunningOperator(
        kubeconfig,
        tmp_path_factory.mktemp("scoped-operator") / "operator.log",
        namespaces=scope,
        # In a pod the Lease's namespace comes from the ServiceAccount; here it is given.
        extra_args=["--leader-elect", f"--leader-election-namespace={release_ns}"],
    )
    running.start()
    try:
        yield running
    finally:
        # While the operator runs, so that it releases its finalizers (stopped, it would
        # leave each deletion waiting out its timeout).
        for namespace in scoped_namespaces.values():
            namespace.delete()
        running.stop()
        for manifest in manifests:
            if manifest["kind"] in CLUSTER_SCOPED_KINDS:
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
        refused = refused_calls(scoped_operator.logs())
        assert not refused, "\n".join(refused[:20])
        lease = scoped_namespaces["release"].kube.json(
            "get", "lease", "odoo-upgrade-operator", "-n", scoped_namespaces["release"].name
        )
        assert lease["spec"]["holderIdentity"]
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


# -- deploy/namespaced: Roles only ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant_namespaces(cluster: LocalCluster) -> Iterator[dict[str, Namespace]]:
    admin = Kube(cluster.kubeconfig)
    created = {
        role: Namespace.create(admin, cluster.volume_dir, prefix=f"kz-{role}")
        for role in ("operator", "watched", "unwatched")
    }
    yield created
    for namespace in created.values():
        namespace.delete()


def namespaced_install(operator_ns: str, watched: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/namespaced`, moved to the test's namespaces."""
    text = json.dumps(kustomize(REPO / "deploy" / "namespaced"))
    text = text.replace(SHIPPED_NAMESPACE, operator_ns).replace(SHIPPED_WATCHED, watched)
    manifests: list[dict[str, Any]] = json.loads(text)
    return manifests


@pytest.fixture(scope="module")
def tenant_operator(
    cluster: LocalCluster,
    tenant_namespaces: dict[str, Namespace],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    """deploy/namespaced's namespaced objects applied for real (the cluster-scoped ones are
    deploy/default's, already there or irrelevant here), and the operator started as its
    Deployment starts it, with its ServiceAccount's token."""
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/odooupgrades.upgrade.odoo-operator.io"
    )
    operator_ns = tenant_namespaces["operator"].name
    watched = tenant_namespaces["watched"].name
    manifests = namespaced_install(operator_ns, watched)
    assert not [m for m in manifests if m["kind"] == "ClusterRoleBinding"]
    namespaced = [m for m in manifests if m["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(namespaced))
    token = cluster.kubectl(
        "create", "token", "odoo-upgrade-operator", "-n", operator_ns, "--duration=2h"
    ).stdout.strip()
    kubeconfig = service_account_kubeconfig(
        cluster, token, tmp_path_factory.mktemp("tenant-sa") / "kubeconfig"
    )
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    scope = [a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")]
    assert scope == [watched]
    assert "--no-cluster-scan" in args and "--leader-elect" in args
    running = RunningOperator(
        kubeconfig,
        tmp_path_factory.mktemp("tenant-operator") / "operator.log",
        namespaces=scope,
        extra_args=[
            "--no-cluster-scan",
            "--leader-elect",
            f"--leader-election-namespace={operator_ns}",
            "--json-logs",
        ],
    )
    running.start()
    try:
        yield running
    finally:
        for namespace in tenant_namespaces.values():
            namespace.delete()  # while the operator runs: it releases its finalizers
        running.stop()


def test_operator_of_deploy_namespaced_upgrades_with_roles_only(
    tenant_operator: RunningOperator, tenant_namespaces: dict[str, Namespace], tmp_path: Path
) -> None:
    watched, unwatched = tenant_namespaces["watched"], tenant_namespaces["unwatched"]
    emulator = RunningEmulator(
        data_dir=tmp_path / "emulator", port=take_port(), process_seconds=1.0
    )
    try:
        upgrades = {}
        for ns in (watched, unwatched):
            ns.diagnostics = tenant_operator.log_tail
            ns.prepare()
            ns.put_dump("dumps/acme.dump")
            upgrades[ns.name] = ns.apply_upgrade(
                "acme-to-18",
                platform_url=emulator.url,
                source_path="dumps/acme.dump",
                destination_path="upgraded/acme-18.dump",
            )
        obj = upgrades[watched.name].wait_for_phase("Succeeded", "Failed", timeout=180)
        assert phase_of(obj) == "Succeeded", describe(obj) + "\n" + tenant_operator.log_tail()
        assert "status" not in upgrades[unwatched.name].get()
        assert len(emulator.calls("create")) == 1
        # Not one call refused: not even kopf's, which would otherwise list CRDs and namespaces.
        refused = refused_calls(tenant_operator.logs())
        assert not refused, "\n".join(refused[:20])
    finally:
        emulator.stop()


def test_deploy_namespaced_account_has_no_cluster_wide_access(
    cluster: LocalCluster,
    tenant_operator: RunningOperator,
    tenant_namespaces: dict[str, Namespace],
) -> None:
    def can_i(*args: str) -> bool:
        done = cluster.kubectl(
            "--kubeconfig", str(tenant_operator.kubeconfig), "auth", "can-i", *args, check=False
        )
        return done.stdout.strip() == "yes"

    watched, unwatched = tenant_namespaces["watched"].name, tenant_namespaces["unwatched"].name
    operator_ns = tenant_namespaces["operator"].name
    assert can_i("get", "secrets", "-n", watched)
    assert can_i("create", "jobs.batch", "-n", watched)
    assert can_i("update", "leases.coordination.k8s.io/odoo-upgrade-operator", "-n", operator_ns)
    assert not can_i("get", "secrets", "-n", unwatched)
    assert not can_i("get", "secrets", "-n", operator_ns)
    assert not can_i("list", "namespaces")
    assert not can_i("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i("list", "odooupgrades.upgrade.odoo-operator.io", "--all-namespaces")
