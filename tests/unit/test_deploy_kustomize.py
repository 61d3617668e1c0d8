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
CRD_FILE = REPO / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"
INSTALL_NAMESPACE = "odoo-upgrade-system"
IMAGE_NAME = "ghcr.io/odoo-upgrade-operator/odoo-upgrade-operator"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}

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


def test_one_operator_at_a_time(installed: list[Manifest]) -> None:
    spec = one(installed, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


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
    container = container_of(kustomize(overlay))
    assert container["image"] == "registry.example/odoo-upgrade:9.9"
    (mover,) = [e for e in container["env"] if e["name"] == "ODOO_UPGRADE_MOVER_IMAGE"]
    assert mover["value"] == "registry.example/odoo-upgrade:9.9"


def test_default_mover_image_is_the_operator_image(installed: list[Manifest]) -> None:
    container = container_of(installed)
    (mover,) = [e for e in container["env"] if e["name"] == "ODOO_UPGRADE_MOVER_IMAGE"]
    assert mover["value"] == container["image"]
    assert container["image"].startswith(IMAGE_NAME + ":")
