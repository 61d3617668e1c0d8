"""What `kubectl apply -k deploy/default` installs, as kustomize (kubectl's own) renders it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.kubectl import kustomize

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "deploy" / "default"
NAMESPACED = REPO / "deploy" / "namespaced"
CRD_FILE = REPO / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"
INSTALL_NAMESPACE = "odoo-upgrade-system"
IMAGE_NAME = "ghcr.io/odoo-upgrade-operator/odoo-upgrade-operator"
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
OPERATOR_USER = f"system:serviceaccount:{INSTALL_NAMESPACE}:odoo-upgrade-operator"

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def installed() -> list[Manifest]:
    return kustomize(DEFAULT)


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    return found


def container_of(manifests: list[Manifest]) -> Manifest:
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def flag_value(args: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    return value


def whitespace_folded(value: Any) -> Any:
    """`value` with every run of whitespace in its strings made one space."""
    if isinstance(value, dict):
        return {k: whitespace_folded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whitespace_folded(v) for v in value]
    return " ".join(value.split()) if isinstance(value, str) else value


def test_install_carries_the_crd_of_crds_unchanged(installed: list[Manifest]) -> None:
    # kustomize re-emits folded (`>-`) scalars whose lines are more indented with an extra
    # newline; CEL rules and descriptions do not care, so compare modulo whitespace runs.
    crd = one(installed, "CustomResourceDefinition")
    assert whitespace_folded(crd) == whitespace_folded(yaml.safe_load(CRD_FILE.read_text()))


def test_every_namespaced_object_goes_to_the_install_namespace(installed: list[Manifest]) -> None:
    namespace = one(installed, "Namespace")
    assert namespace["metadata"]["name"] == INSTALL_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for manifest in installed:
        if manifest["kind"] not in CLUSTER_SCOPED:
            assert manifest["metadata"]["namespace"] == INSTALL_NAMESPACE, manifest["kind"]


def test_operator_is_bound_to_its_cluster_role(installed: list[Manifest]) -> None:
    account = one(installed, "ServiceAccount")
    binding = one(installed, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "odoo-upgrade-operator"
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": INSTALL_NAMESPACE,
        }
    ]
    pod = one(installed, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_two_replicas_elect_a_leader(installed: list[Manifest]) -> None:
    spec = one(installed, "Deployment")["spec"]
    assert spec["replicas"] == 2
    # The new pod starts (as a standby) before an old one stops.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = container_of(installed)
    assert "--leader-elect" in container["args"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_the_lease_is_granted_in_the_operator_namespace_only(installed: list[Manifest]) -> None:
    (role,) = [m for m in installed if m["kind"] == "Role"]
    assert role["metadata"]["namespace"] == INSTALL_NAMESPACE
    assert sorted(
        (tuple(r["verbs"]), tuple(r.get("resourceNames") or ())) for r in role["rules"]
    ) == [(("create",), ()), (("get", "update"), ("odoo-upgrade-operator",))]
    assert all(r["apiGroups"] == ["coordination.k8s.io"] for r in role["rules"])
    (binding,) = [m for m in installed if m["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"][0]["namespace"] == INSTALL_NAMESPACE
    cluster_rules = [r for m in installed if m["kind"] == "ClusterRole" for r in m["rules"]]
    assert not [r for r in cluster_rules if "coordination.k8s.io" in r["apiGroups"]]


def test_a_disruption_budget_keeps_one_operator_running(installed: list[Manifest]) -> None:
    budget = one(installed, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    pod_labels = one(installed, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_only_the_odoo_platform_is_allowed(installed: list[Manifest]) -> None:
    args = container_of(installed)["args"]
    assert [a for a in args if a.startswith("--allowed-platform-url")] == [
        "--allowed-platform-url=https://upgrade.odoo.com"
    ]


def test_the_mover_job_policies_judge_the_operators_jobs_only(installed: list[Manifest]) -> None:
    deployment = one(installed, "Deployment")
    for name in ("odoo-upgrade-operator-mover-jobs", "odoo-upgrade-operator-mover-image"):
        policy = one(installed, "ValidatingAdmissionPolicy", name)
        binding = one(installed, "ValidatingAdmissionPolicyBinding", name)
        (condition,) = policy["spec"]["matchConditions"]
        assert f"'{OPERATOR_USER}'" in " ".join(condition["expression"].split())
        assert binding["spec"]["policyName"] == name
    # The image policy reads the images from the operator's own Deployment.
    param = one(installed, "ValidatingAdmissionPolicyBinding", "odoo-upgrade-operator-mover-image")
    assert param["spec"]["paramRef"]["name"] == deployment["metadata"]["name"]
    assert param["spec"]["paramRef"]["namespace"] == INSTALL_NAMESPACE
    assert deployment["spec"]["template"]["spec"]["containers"][0]["name"] == "operator"
    account = one(installed, "ServiceAccount")
    assert OPERATOR_USER.endswith(":" + account["metadata"]["name"])


def test_operator_watches_all_namespaces_and_knows_its_pod_name(installed: list[Manifest]) -> None:
    container = container_of(installed)
    assert container["args"][:2] == ["operator", "--all-namespaces"]
    (pod_id,) = [e for e in container["env"] if e["name"] == "POD_ID"]
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_probe_and_metrics_ports_match_what_the_operator_serves(installed: list[Manifest]) -> None:
    container = container_of(installed)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = flag_value(container["args"], "--liveness")
    assert liveness == f"http://0.0.0.0:{ports['healthz']}/healthz"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert int(flag_value(container["args"], "--metrics-port")) == ports["metrics"]
    service = one(installed, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = one(installed, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_operator_pod_is_not_taken_for_a_mover(installed: list[Manifest]) -> None:
    # Mover pods are recognised by managed-by=odoo-upgrade-operator; the operator's must not be.
    pod_labels = one(installed, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels.get("app.kubernetes.io/managed-by") != "odoo-upgrade-operator"


def test_operator_container_is_locked_down(installed: list[Manifest]) -> None:
    pod = one(installed, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container_of(installed)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_an_overlay_image_override_reaches_the_mover_image(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only.
                "resources": [os.path.relpath(DEFAULT, overlay)],
                "images": [
                    {
                        "name": IMAGE_NAME,
                        "newName": "registry.example/odoo-upgrade",
                        "newTag": "9.9",
                    }
                ],
            }
        )
    )
    manifests = kustomize(overlay)
    container = container_of(manifests)
    assert container["image"] == "registry.example/odoo-upgrade:9.9"
    (mover,) = [e for e in container["env"] if e["name"] == "ODOO_UPGRADE_MOVER_IMAGE"]
    assert mover["value"] == "registry.example/odoo-upgrade:9.9"


def test_default_mover_image_is_the_operator_image(installed: list[Manifest]) -> None:
    container = container_of(installed)
    (mover,) = [e for e in container["env"] if e["name"] == "ODOO_UPGRADE_MOVER_IMAGE"]
    assert mover["value"] == container["image"]
    assert container["image"].startswith(IMAGE_NAME + ":")


# -- deploy/namespaced ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced() -> list[Manifest]:
    return kustomize(NAMESPACED)


def test_namespaced_install_grants_nothing_cluster_wide(namespaced: list[Manifest]) -> None:
    assert not [m for m in namespaced if m["kind"] == "ClusterRoleBinding"]
    # Only the aggregated roles for users remain cluster-scoped roles.
    assert sorted(m["metadata"]["name"] for m in namespaced if m["kind"] == "ClusterRole") == [
        "odoo-upgrade-operator-edit",
        "odoo-upgrade-operator-view",
    ]
    for binding in (m for m in namespaced if m["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "odoo-upgrade-operator",
                "namespace": INSTALL_NAMESPACE,
            }
        ]


def test_namespaced_install_watches_the_listed_namespace_without_cluster_scans(
    namespaced: list[Manifest],
) -> None:
    args = container_of(namespaced)["args"]
    assert args[:3] == ["operator", "--namespace=odoo-apps", "--no-cluster-scan"]
    assert "--all-namespaces" not in args
    assert "--leader-elect" in args
    watched = {a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")}
    granted = {
        m["metadata"]["namespace"]
        for m in namespaced
        if m["kind"] == "RoleBinding" and m["roleRef"]["name"] == "odoo-upgrade-operator"
    }
    assert granted == watched


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_watched_namespace_role_has_the_namespaced_rules_of_the_cluster_role(
    installed: list[Manifest], namespaced: list[Manifest]
) -> None:
    cluster_role = one(installed, "ClusterRole", "odoo-upgrade-operator")
    namespaced_rules = {
        r for r in rule_set(cluster_role["rules"]) if r[0] != "apiextensions.k8s.io"
    }
    (role,) = [
        m
        for m in namespaced
        if m["kind"] == "Role" and m["metadata"]["name"] == "odoo-upgrade-operator"
    ]
    assert role["metadata"]["namespace"] == "odoo-apps"
    assert rule_set(role["rules"]) == namespaced_rules


def test_namespaced_install_keeps_the_rest_of_deploy_default(
    installed: list[Manifest], namespaced: list[Manifest]
) -> None:
    def by_id(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
        return {(m["kind"], m["metadata"]["name"]): m for m in manifests}

    default, scoped = by_id(installed), by_id(namespaced)
    for key in (
        ("Role", "odoo-upgrade-operator-leader-election"),
        ("PodDisruptionBudget", "odoo-upgrade-operator"),
        ("ValidatingAdmissionPolicy", "odoo-upgrade-operator-mover-jobs"),
        ("CustomResourceDefinition", "odooupgrades.upgrade.odoo-operator.io"),
    ):
        assert scoped[key] == default[key], key
