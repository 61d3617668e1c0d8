"""The OdooUpgrade CRD on a real kube-apiserver: invalid specs are refused at admission with a
message naming the field, defaults are filled in, and the request-defining fields freeze once
the operator recorded `status.requestId` (CEL transition rules)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.kubectl import kubectl
from tests.support.scenario import Kube

pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"
RESOURCE = "odooupgrades.upgrade.odoo-operator.io"


@pytest.fixture(scope="module")
def kube(cluster: Any) -> Kube:
    kube = Kube(Path(cluster.kubeconfig))
    kube.run("apply", "-f", str(CRD))
    kube.run("wait", "--for=condition=Established", f"crd/{RESOURCE}", "--timeout=60s")
    return kube


@pytest.fixture(scope="module")
def namespace(kube: Kube) -> Iterator[str]:
    name = f"crd-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def manifest(namespace: str, name: str, **spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": "18.0",
        "email": "ops@acme.example",
        "contractSecretRef": {"name": "odoo-contract"},
        "source": {"claimName": "odoo-backups", "path": "dumps/acme.dump"},
        "destination": {"claimName": "odoo-backups", "path": "upgraded/acme-18.dump"},
    }
    for key, value in spec_changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {
        "apiVersion": "upgrade.odoo-operator.io/v1alpha1",
        "kind": "OdooUpgrade",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create(kube: Kube, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "create", "-f", "-", kubeconfig=kube.kubeconfig, input=json.dumps(obj), check=False
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"target": None}, "spec.target"),
        ({"target": "18"}, "spec.target"),
        ({"target": "eighteen"}, "spec.target"),
        ({"aim": "fun"}, "spec.aim"),
        ({"email": "ops-at-acme"}, "spec.email"),
        ({"email": None}, "spec.email"),
        ({"contractSecretRef": None}, "spec.contractSecretRef"),
        ({"source": {"claimName": "odoo-backups", "path": "/etc/passwd"}}, "spec.source.path"),
        ({"source": {"claimName": "odoo-backups", "path": "dumps/../../x"}}, "spec.source.path"),
        ({"destination": {"claimName": "b", "path": "/abs.dump"}}, "spec.destination.path"),
        ({"destination": {"claimName": "b", "path": ".."}}, "spec.destination.path"),
        (
            {"destination": {"claimName": "b", "path": "x", "format": "zip"}},
            "spec.destination.format",
        ),
        ({"transport": "ftp"}, "spec.transport"),
        ({"transport": "rsync"}, "spec.platform.api"),
        ({"platform": {"api": "upgrade-request"}, "transport": "https"}, "spec.transport"),
        ({"platform": {"pollInterval": "soon"}}, "spec.platform.pollInterval"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_invalid_spec_is_refused_naming_the_field(
    kube: Kube, namespace: str, changes: dict[str, Any], field: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    refused = create(kube, manifest(namespace, name, **changes))
    assert refused.returncode != 0, f"accepted: {changes}"
    assert field in refused.stderr, refused.stderr
    assert not kube.exists(RESOURCE, name, namespace)


def test_valid_resource_is_accepted_with_defaults_filled(kube: Kube, namespace: str) -> None:
    created = create(kube, manifest(namespace, "defaults"))
    assert created.returncode == 0, created.stderr
    spec = kube.json("get", RESOURCE, "defaults", "-n", namespace)["spec"]
    assert spec["aim"] == "test"
    assert spec["transport"] == "auto"
    assert spec["contractSecretRef"]["key"] == "contract"
    assert spec["destination"]["format"] == "archive"
    assert spec["platform"] == {
        "url": "https://upgrade.odoo.com",
        "pollInterval": "60s",
        "api": "database-v1",
    }


def patch_spec(
    kube: Kube, namespace: str, name: str, spec: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "patch",
        RESOURCE,
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
        kubeconfig=kube.kubeconfig,
        check=False,
    )


def test_target_change_is_refused_once_the_request_exists(kube: Kube, namespace: str) -> None:
    assert create(kube, manifest(namespace, "frozen")).returncode == 0
    # Before the request exists the user may still fix the spec.
    assert patch_spec(kube, namespace, "frozen", {"target": "17.0"}).returncode == 0
    kube.run(
        "patch", RESOURCE, "frozen", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"requestId": 10534, "phase": "Uploading"}}),
    )  # fmt: skip
    refused = patch_spec(kube, namespace, "frozen", {"target": "18.0"})
    assert refused.returncode != 0
    assert "spec.target" in refused.stderr and "immutable" in refused.stderr
    source = {"claimName": "odoo-backups", "path": "dumps/other.dump"}
    refused = patch_spec(kube, namespace, "frozen", {"source": source})
    assert refused.returncode != 0 and "spec.source" in refused.stderr
    # What only concerns the way back may still change: the destination, the poll interval.
    accepted = patch_spec(
        kube, namespace, "frozen",
        {"destination": {"claimName": "odoo-backups", "path": "upgraded/other.dump"},
         "platform": {"pollInterval": "2m"}},
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    spec = kube.json("get", RESOURCE, "frozen", "-n", namespace)["spec"]
    assert spec["target"] == "17.0"


@pytest.mark.parametrize("sample", ["odooupgrade.yaml", "odooupgrade-upgrade-request.yaml"])
def test_the_sample_resources_are_accepted(kube: Kube, namespace: str, sample: str) -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "deploy" / "samples" / sample
    obj = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = namespace
    created = create(kube, obj)
    assert created.returncode == 0, created.stderr
    stored = kube.json("get", RESOURCE, obj["metadata"]["name"], "-n", namespace)["spec"]
    assert stored["platform"]["api"] in ("database-v1", "upgrade-request")
