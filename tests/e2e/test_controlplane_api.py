"""The test control plane is a real Kubernetes API: the pinned version, CRDs, RBAC."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.harness.local_cluster import LocalCluster, wait_until

pytestmark = pytest.mark.e2e

WIDGET_CRD = textwrap.dedent(
    """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.harness.example.com}
    spec:
      group: harness.example.com
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
        - name: v1
          served: true
          storage: true
          subresources: {status: {}}
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties: {size: {type: integer, minimum: 1}}
                status:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
    """
)


def test_version_endpoint_reports_the_pinned_kubernetes_release(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == cluster.kubernetes_version == "v1.36.3"
    assert (version["major"], version["minor"]) == ("1", "36")


def test_applied_crd_is_served_and_validates_its_schema(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.apply(WIDGET_CRD)
    wait_until(
        lambda: cluster.kubectl("get", "widgets", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="widgets to be served",
    )
    cluster.apply(
        "apiVersion: harness.example.com/v1\nkind: Widget\n"
        "metadata: {name: small}\nspec: {size: 2}\n",
        namespace,
    )
    assert cluster.get_json("widget", "small", "-n", namespace)["spec"] == {"size": 2}
    refused = cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input="apiVersion: harness.example.com/v1\nkind: Widget\n"
        "metadata: {name: empty}\nspec: {size: 0}\n",
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr


def test_rbac_denies_a_service_account_without_a_role(
    cluster: LocalCluster, namespace: str
) -> None:
    answer = cluster.kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert answer.stdout.strip() == "no"
