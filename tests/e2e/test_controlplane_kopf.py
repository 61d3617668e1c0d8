"""A kopf operator talks to the test control plane as to any cluster: watches a custom resource
and patches its status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_cluster import LocalCluster, wait_until

pytestmark = pytest.mark.e2e

GREETING_CRD = textwrap.dedent(
    """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: greetings.harness.example.com}
    spec:
      group: harness.example.com
      scope: Namespaced
      names: {plural: greetings, singular: greeting, kind: Greeting}
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
                  properties: {name: {type: string}}
                status:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
    """
)

HANDLER = textwrap.dedent(
    """
    import kopf

    @kopf.on.create("harness.example.com", "v1", "greetings")
    def greet(spec, patch, **_):
        patch.status["greeting"] = f"hello, {spec['name']}"
    """
)


@pytest.fixture
def kopf_operator(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """``kopf run --standalone -n <namespace>`` of a one-handler file; yields its log path."""
    cluster.apply(GREETING_CRD)
    wait_until(
        lambda: cluster.kubectl("get", "greetings", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="greetings to be served",
    )
    handler = tmp_path / "greeter.py"
    handler.write_text(HANDLER)
    log = tmp_path / "kopf.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "kopf"),
                "run",
                "--standalone",
                "-n",
                namespace,
                str(handler),
            ],
            env=cluster.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_kopf_handler_patches_the_status_of_a_new_custom_object(
    cluster: LocalCluster, namespace: str, kopf_operator: Path
) -> None:
    cluster.apply(
        "apiVersion: harness.example.com/v1\nkind: Greeting\n"
        "metadata: {name: world}\nspec: {name: world}\n",
        namespace,
    )

    def greeting() -> Any:
        obj = cluster.get_json("greeting", "world", "-n", namespace)
        return obj.get("status", {}).get("greeting")

    assert (
        wait_until(greeting, timeout=60, what=f"kopf to greet (log: {kopf_operator})")
        == "hello, world"
    )
