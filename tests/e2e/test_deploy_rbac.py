"""The RBAC of deploy/default is enough, and no more: the operator runs with the token of the
ServiceAccount `kubectl apply -k deploy/default` creates (TokenRequest API) and takes upgrades to
Succeeded, and cleans up on delete; what it was not granted, it cannot do."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.kubectl import kubectl, kustomize
from tests.harness.local_cluster import LocalCluster, wait_until
from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.platform_ports import take_port
from tests.support.scenario import (
    Kube,
    Namespace,
    assert_delivered,
    describe,
    phase_of,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
INSTALL_NAMESPACE = "odoo-upgrade-system"
SERVICE_ACCOUNT = "odoo-upgrade-operator"
CRD_NAME = "odooupgrades.upgrade.odoo-operator.io"
# What an API server answers when a rule is missing; kopf logs some of these and carries on.
FORBIDDEN_MARKERS = ("Forbidden", "forbidden", " 403", "Not enough permissions")
# Also 403, but not RBAC: other tests' namespaces being deleted refuse new Events.
NOT_RBAC_MARKERS = ("being terminated", "NamespaceTerminating")


def service_account_kubeconfig(cluster: LocalCluster, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with `token` only (no client certificate)."""
    ca = base64.b64encode((cluster.pki_dir / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {"server": cluster.server, "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": SERVICE_ACCOUNT}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/default applied for real, except the Deployment (no kubelet runs images here), and
    a kubeconfig holding a fresh token of its ServiceAccount."""
    # `kubectl kustomize deploy/default`: what the one-line install applies, but the operator.
    manifests = [m for m in kustomize(REPO / "deploy" / "default") if m["kind"] != "Deployment"]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", INSTALL_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    assert token.count(".") == 2, "TokenRequest did not return a JWT"
    return service_account_kubeconfig(cluster, token, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture(scope="module")
def operator_as_service_account(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    """The operator, started as deploy/default starts it, with the ServiceAccount's token."""
    running = RunningOperator(
        operator_kubeconfig,
        tmp_path_factory.mktemp("operator-sa") / "operator.log",
        extra_args=["--json-logs"],
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def can_i(kubeconfig: Path, *args: str) -> bool:
    done = kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return done.stdout.strip() == "yes"


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_operator_with_the_service_account_token_takes_an_upgrade_to_succeeded(
    cluster: LocalCluster,
    operator_as_service_account: RunningOperator,
    tmp_path: Path,
    transport: str,
) -> None:
    operator = operator_as_service_account
    admin = Kube(cluster.kubeconfig)
    ns = Namespace.create(admin, cluster.volume_dir, prefix="rbac", diagnostics=operator.log_tail)
    emulator = RunningEmulator(
        data_dir=tmp_path / "emulator", port=take_port(), process_seconds=1.0
    )
    try:
        ns.prepare()
        ns.put_dump("dumps/acme.dump")
        upgrade = ns.apply_upgrade(
            "acme-to-18",
            platform_url=emulator.url,
            source_path="dumps/acme.dump",
            destination_path="upgraded/acme-18.dump",
            transport=transport,
        )
        obj = upgrade.wait_for_phase("Succeeded", "Failed", timeout=180)
        assert phase_of(obj) == "Succeeded", describe(obj) + "\n" + operator.log_tail()
        request_id = int(obj["status"]["requestId"])
        assert_delivered(
            obj, ns.volume(), "upgraded/acme-18.dump", emulator.upgraded_bytes(request_id)
        )
        # kopf posted its Events with the operator's credentials.
        assert [e for e in ns.events() if e["involvedObject"].get("name") == "acme-to-18"]

        # Deleting runs the cleanup handler (Jobs and request Secret deleted, finalizer patched).
        admin.run("delete", "odooupgrade", "acme-to-18", "-n", ns.name, "--wait=false")
        wait_until(
            lambda: not admin.exists("odooupgrade", "acme-to-18", ns.name),
            timeout=60,
            what="the OdooUpgrade to be deleted (finalizer removed)",
        )
        assert not admin.exists("secret", "acme-to-18-request", ns.name)
        # Nothing was refused along the way, not even a call kopf merely logs as a warning.
        refused = [
            line
            for line in operator.logs().splitlines()
            if any(m in line for m in FORBIDDEN_MARKERS)
            and not any(m in line for m in NOT_RBAC_MARKERS)
        ]
        assert not refused, "\n".join(refused[:20])
    finally:
        emulator.stop()
        ns.delete()


@pytest.mark.parametrize(
    "action",
    [
        ("list", "secrets", "--all-namespaces"),
        ("watch", "secrets", "--all-namespaces"),
        ("create", "pods", "-n", "default"),
        ("create", "deployments.apps", "-n", "default"),
        ("delete", "odooupgrades.upgrade.odoo-operator.io", "-n", "default"),
        ("create", "odooupgrades.upgrade.odoo-operator.io", "-n", "default"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("list", "namespaces"),
        ("create", "pods", "--subresource=exec", "-n", "default"),
        ("update", "odooupgrades.upgrade.odoo-operator.io", "-n", "default"),
        ("list", "persistentvolumeclaims", "--all-namespaces"),
    ],
    ids=" ".join,
)
def test_service_account_is_refused_what_the_operator_never_does(
    operator_kubeconfig: Path, action: tuple[str, ...]
) -> None:
    assert not can_i(operator_kubeconfig, *action)


@pytest.mark.parametrize(
    "action",
    [
        ("get", "secrets", "-n", "default"),
        ("create", "jobs.batch", "-n", "default"),
        ("patch", "odooupgrades.upgrade.odoo-operator.io", "--subresource=status", "-n", "default"),
        ("get", "pods", "--subresource=log", "-n", "default"),
        ("create", "events", "-n", "default"),
    ],
    ids=" ".join,
)
def test_service_account_may_do_what_the_operator_does_in_any_namespace(
    operator_kubeconfig: Path, action: tuple[str, ...]
) -> None:
    assert can_i(operator_kubeconfig, *action)


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        ("edit", ["create", "get", "list", "watch", "patch", "delete"], ["patch status"]),
        ("view", ["get", "list", "watch"], ["create", "patch", "delete"]),
    ],
)
def test_namespace_users_of_builtin_roles_get_odooupgrade_access(
    cluster: LocalCluster,
    operator_kubeconfig: Path,
    namespace: str,
    role: str,
    allowed: list[str],
    refused: list[str],
) -> None:
    # The aggregated ClusterRoles of deploy/default extend the built-in `edit` and `view`.
    user = f"{role}-user@example.com"
    cluster.kubectl(
        "create",
        "rolebinding",
        f"{role}-user",
        f"--clusterrole={role}",
        f"--user={user}",
        "-n",
        namespace,
    )

    def user_can(verb: str) -> bool:
        verb, _, sub = verb.partition(" ")
        # `auth can-i VERB TYPE/NAME` reads a slash as a name: subresources go in a flag.
        subresource = [f"--subresource={sub}"] if sub else []
        done = cluster.kubectl(
            "auth",
            "can-i",
            verb,
            "odooupgrades.upgrade.odoo-operator.io",
            *subresource,
            "-n",
            namespace,
            f"--as={user}",
            check=False,
        )
        return done.stdout.strip() == "yes"

    # kube-controller-manager aggregates the rules into the built-in role shortly after apply.
    wait_until(
        lambda: all(user_can(v) for v in allowed),
        timeout=60,
        what=f"{role} users to be allowed {allowed} on OdooUpgrades",
    )
    assert not [v for v in refused if user_can(v)]
