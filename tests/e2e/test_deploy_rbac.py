"""The RBAC of deploy/default is enough, and no more: the operator runs with the token of the
ServiceAccount `kubectl apply -k deploy/default` creates (TokenRequest API), as its Deployment runs
it (leader election on its Lease included), and takes upgrades to Succeeded, and cleans up on
delete; what it was not granted, it cannot do. Its mover Job admission policy lets that token
create the operator's mover Jobs and nothing else."""

from __future__ import annotations

import base64
import copy
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from odoo_upgrade.controller.jobs import Owner, download_job_spec, upload_job_spec
from odoo_upgrade.controller.spec import parse_spec
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
LEASE = "odoo-upgrade-operator"
# Deployment arguments the test sets itself: the scope, the probe and metrics ports (free ones),
# the platform allowlist (the emulator's URL instead of upgrade.odoo.com).
SET_BY_THE_TEST = ("operator", "--all-namespaces", "--liveness=", "--metrics-port=",
                   "--allowed-platform-url=")  # fmt: skip
# What an API server answers when a rule is missing; kopf logs some of these and carries on.
FORBIDDEN_MARKERS = ("Forbidden", "forbidden", " 403", "Not enough permissions")
# Also 403, but not RBAC: other tests' namespaces being deleted refuse new Events.
NOT_RBAC_MARKERS = ("being terminated", "NamespaceTerminating")
# The harness's own line before each start: its command line may hold " 403" (a port).
START_HEADER = "--- start #"


def refused_calls(log: str) -> list[str]:
    """The operator's log lines that show a call refused for lack of permission."""
    return [
        line
        for line in log.splitlines()
        if not line.startswith(START_HEADER)
        and any(m in line for m in FORBIDDEN_MARKERS)
        and not any(m in line for m in NOT_RBAC_MARKERS)
    ]


def kustomized_install() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/default`: the manifests the one-line install applies."""
    return kustomize(REPO / "deploy" / "default")


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
    """deploy/default applied for real, and a kubeconfig holding a fresh token of its
    ServiceAccount. The Deployment's pods stay Pending (no kubelet runs images here; the operator
    runs as a local process instead): the mover image policy reads the images from it."""
    manifests = kustomized_install()
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


def deployment_args() -> list[str]:
    """The operator arguments of deploy/default's Deployment that a local process can take."""
    (deployment,) = [m for m in kustomized_install() if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return [a for a in container["args"] if not a.startswith(SET_BY_THE_TEST)]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    # On a port the test operators allow (`--allowed-platform-url`).
    with RunningEmulator(
        data_dir=tmp_path_factory.mktemp("emulator"), port=take_port(), process_seconds=1.0
    ) as running:
        yield running


@pytest.fixture(scope="module")
def operator_as_service_account(
    operator_kubeconfig: Path, emulator: RunningEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    """The operator, started as deploy/default starts it, with the ServiceAccount's token.

    In a pod the Lease's namespace comes from the ServiceAccount; here it is given."""
    args = deployment_args()
    assert "--leader-elect" in args and "--json-logs" in args
    running = RunningOperator(
        operator_kubeconfig,
        tmp_path_factory.mktemp("operator-sa") / "operator.log",
        extra_args=[
            *args,
            f"--leader-election-namespace={INSTALL_NAMESPACE}",
            f"--allowed-platform-url={emulator.url}",
        ],
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
    emulator: RunningEmulator,
    transport: str,
) -> None:
    operator = operator_as_service_account
    admin = Kube(cluster.kubeconfig)
    ns = Namespace.create(admin, cluster.volume_dir, prefix="rbac", diagnostics=operator.log_tail)
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
        refused = refused_calls(operator.logs())
        assert not refused, "\n".join(refused[:20])
        # It acted as the leader, on the Lease of the operator's namespace.
        lease = admin.json("get", "lease", LEASE, "-n", INSTALL_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == f"{socket.gethostname()}-{operator.pid}"
    finally:
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
        # Leases: its own only, in its own namespace, and never deleted or listed.
        ("get", "leases.coordination.k8s.io/other", "-n", INSTALL_NAMESPACE),
        ("update", "leases.coordination.k8s.io/other", "-n", INSTALL_NAMESPACE),
        ("get", f"leases.coordination.k8s.io/{LEASE}", "-n", "default"),
        ("create", "leases.coordination.k8s.io", "-n", "default"),
        ("delete", f"leases.coordination.k8s.io/{LEASE}", "-n", INSTALL_NAMESPACE),
        ("list", "leases.coordination.k8s.io", "-n", INSTALL_NAMESPACE),
        # Nor may it loosen the policy that confines its Jobs.
        ("update", "configmaps/odoo-upgrade-operator-mover-jobs", "-n", INSTALL_NAMESPACE),
        ("delete", "validatingadmissionpolicies.admissionregistration.k8s.io"),
        ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io"),
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


@pytest.mark.parametrize(
    "action",
    [
        ("get", f"leases.coordination.k8s.io/{LEASE}"),
        ("update", f"leases.coordination.k8s.io/{LEASE}"),
        ("create", "leases.coordination.k8s.io"),
    ],
    ids=" ".join,
)
def test_service_account_may_hold_its_lease(
    operator_kubeconfig: Path, action: tuple[str, ...]
) -> None:
    assert can_i(operator_kubeconfig, *action, "-n", INSTALL_NAMESPACE)


# -- the mover Job admission policy ---------------------------------------------------------------


def real_mover_jobs(namespace: str) -> list[dict[str, Any]]:
    """The upload and download Jobs exactly as the operator builds them (controller/jobs.py)."""
    spec = parse_spec(
        {
            "target": "18.0",
            "email": "ops@acme.example",
            "contractSecretRef": {"name": "odoo-contract"},
            "source": {"claimName": "odoo-backups", "path": "dumps/acme.dump"},
            "destination": {"claimName": "odoo-backups", "path": "upgraded/acme-18.dump"},
        }
    )
    owner = Owner("acme-to-18", namespace, "6b1c9f5e-0000-4000-8000-000000000001")
    return [upload_job_spec(owner, spec), download_job_spec(owner, spec)]


def create_job(kubeconfig: Path, job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """A server-side dry run of creating `job` with `kubeconfig`: admission runs, nothing stays."""
    return kubectl(
        "create", "--dry-run=server", "-f", "-", kubeconfig=kubeconfig, input=json.dumps(job),
        check=False,
    )  # fmt: skip


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def break_labels(job: dict[str, Any]) -> None:
    job["metadata"]["labels"]["app.kubernetes.io/component"] = "shell"


def break_pod_labels(job: dict[str, Any]) -> None:
    del job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"]


def break_image(job: dict[str, Any]) -> None:
    pod_of(job)["containers"][0]["image"] = "docker.io/library/busybox:1.36"


def add_init_container(job: dict[str, Any]) -> None:
    extra = copy.deepcopy(pod_of(job)["containers"][0])
    pod_of(job)["initContainers"] = [{**extra, "name": "fetch", "image": "alpine:3.20"}]


def mount_token(job: dict[str, Any]) -> None:
    pod_of(job)["automountServiceAccountToken"] = True


def project_token(job: dict[str, Any]) -> None:
    source = {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    pod_of(job)["volumes"].append({"name": "token", "projected": {"sources": [source]}})


def mount_host_path(job: dict[str, Any]) -> None:
    pod_of(job)["volumes"].append({"name": "root", "hostPath": {"path": "/"}})


def use_host_network(job: dict[str, Any]) -> None:
    pod_of(job)["hostNetwork"] = True


def run_privileged(job: dict[str, Any]) -> None:
    pod_of(job)["containers"][0]["securityContext"]["privileged"] = True
    pod_of(job)["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (break_labels, "mover Jobs only"),
        (break_pod_labels, "mover Jobs only"),
        (break_image, "not docker.io/library/busybox:1.36"),
        (add_init_container, "not alpine:3.20"),
        (mount_token, "automountServiceAccountToken"),
        (project_token, "no projected service-account token"),
        (mount_host_path, "no host path"),
        (use_host_network, "host namespaces"),
        (run_privileged, "privileged"),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_the_operator_token_cannot_create_a_job_that_is_not_a_mover(
    operator_kubeconfig: Path,
    namespace: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    job = real_mover_jobs(namespace)[0]
    change(job)
    refused = create_job(operator_kubeconfig, job)
    assert refused.returncode != 0, f"{change.__name__}: admitted"
    assert "odoo-upgrade-operator-mover-" in refused.stderr, refused.stderr
    assert message in refused.stderr, refused.stderr


def test_the_operators_real_mover_jobs_are_admitted(
    operator_kubeconfig: Path, namespace: str
) -> None:
    for job in real_mover_jobs(namespace):
        admitted = create_job(operator_kubeconfig, job)
        assert admitted.returncode == 0, admitted.stderr


def test_other_users_jobs_are_not_judged_by_the_policy(
    cluster: LocalCluster, operator_kubeconfig: Path, namespace: str
) -> None:
    # The policy exists (operator_kubeconfig applied deploy/default), yet an admin's Job of any
    # shape is admitted: only the operator's ServiceAccount is confined.
    job = real_mover_jobs(namespace)[0]
    break_image(job)
    break_labels(job)
    mount_token(job)
    admitted = create_job(Path(cluster.kubeconfig), job)
    assert admitted.returncode == 0, admitted.stderr


def test_a_missing_operator_deployment_blocks_no_ones_jobs(
    cluster: LocalCluster, namespace: str
) -> None:
    # A copy of the image policy for a stand-in operator account whose Deployment (the policy's
    # parameter) is missing: the parameter is looked up before matchConditions, so refusing on a
    # missing one would refuse every Job of the cluster. With Allow, nobody's Job is refused.
    account = f"system:serviceaccount:{namespace}:stand-in-operator"
    installed = kustomized_install()
    (policy,) = [
        m
        for m in installed
        if m["kind"] == "ValidatingAdmissionPolicy" and "paramKind" in m["spec"]
    ]
    (binding,) = [
        m
        for m in installed
        if m["kind"] == "ValidatingAdmissionPolicyBinding" and "paramRef" in m["spec"]
    ]
    name = f"mover-image-{namespace}"
    policy = copy.deepcopy(policy)
    policy["metadata"] = {"name": name}
    policy["spec"]["matchConditions"][0]["expression"] = f"request.userInfo.username == '{account}'"
    binding = copy.deepcopy(binding)
    binding["metadata"] = {"name": name}
    binding["spec"]["policyName"] = name
    binding["spec"]["paramRef"] = {
        **binding["spec"]["paramRef"],
        "name": "missing",
        "namespace": namespace,
    }
    cluster.kubectl(
        "create", "rolebinding", "stand-in-edit", "--clusterrole=edit",
        f"--serviceaccount={namespace}:stand-in-operator", "-n", namespace,
    )  # fmt: skip
    job = real_mover_jobs(namespace)[0]
    break_image(job)

    def create_as(*who: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", *who, input=json.dumps(job), check=False
        )

    def bind(action: str) -> None:
        binding["spec"]["paramRef"]["parameterNotFoundAction"] = action
        cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))

    try:
        # Why Allow: with Deny, even the admin's Job is refused once the parameter is missing.
        bind("Deny")
        wait_until(
            lambda: "no params found" in create_as().stderr,
            timeout=30,
            what="Deny on a missing parameter to refuse even the admin's Job",
        )
        bind("Allow")
        wait_until(
            lambda: create_as().returncode == 0,
            timeout=30,
            what="Allow on a missing parameter to admit the admin's Job again",
        )
        admitted = create_as(f"--as={account}")
        assert admitted.returncode == 0, admitted.stderr
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, check=False)
        cluster.kubectl("delete", "validatingadmissionpolicy", name, check=False)
