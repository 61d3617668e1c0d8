"""Jobs run to their real outcome: the pod runner executes the pods, kube-controller-manager's
Job controller and garbage collector do the rest, as in a cluster with kubelets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_cluster import LocalCluster, wait_until

pytestmark = pytest.mark.e2e

MANAGED = {"app.kubernetes.io/managed-by": "odoo-upgrade-operator"}


def job_manifest(
    name: str,
    code: str,
    *,
    backoff_limit: int = 0,
    volumes: list[dict[str, Any]] | None = None,
    **container: Any,
) -> str:
    """A Job running ``python -c code`` with the label the pod runner serves."""
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff_limit,
                "template": {
                    "metadata": {"labels": MANAGED},
                    "spec": {
                        "restartPolicy": "Never",
                        "volumes": volumes or [],
                        "containers": [
                            {
                                "name": "main",
                                "image": "python:3",
                                "command": ["python", "-c", code],
                                **container,
                            }
                        ],
                    },
                },
            },
        }
    )


def job_condition(cluster: LocalCluster, namespace: str, name: str, kind: str) -> Any:
    job = cluster.get_json("job", name, "-n", namespace)
    for condition in job.get("status", {}).get("conditions", []):
        if condition["type"] == kind and condition["status"] == "True":
            return condition
    return None


def job_pods(cluster: LocalCluster, namespace: str, name: str) -> list[Any]:
    pods: list[Any] = cluster.get_json("pods", "-n", namespace, "-l", f"job-name={name}")["items"]
    return pods


def test_job_completes_and_its_pod_reports_the_termination_message(
    cluster: LocalCluster, namespace: str
) -> None:
    code = (
        "import json, sys; print('mover says hello');"
        "open('/dev/termination-log', 'w').write(json.dumps({'bytes': 42}))"
    )
    cluster.apply(job_manifest("hello", code), namespace)

    wait_until(
        lambda: job_condition(cluster, namespace, "hello", "Complete"),
        what="Job hello to complete",
    )
    [pod] = job_pods(cluster, namespace, "hello")
    assert pod["status"]["phase"] == "Succeeded"
    [status] = pod["status"]["containerStatuses"]
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert json.loads(terminated["message"]) == {"bytes": 42}
    assert "mover says hello" in cluster.pod_log(namespace, pod["metadata"]["name"])


def test_failing_job_is_retried_up_to_its_backoff_limit_then_failed(
    cluster: LocalCluster, namespace: str
) -> None:
    code = "import sys; print('doomed', file=sys.stderr); sys.exit(3)"
    cluster.apply(
        job_manifest(
            "doomed",
            code,
            backoff_limit=1,
            terminationMessagePolicy="FallbackToLogsOnError",
        ),
        namespace,
    )

    failed = wait_until(
        lambda: job_condition(cluster, namespace, "doomed", "Failed"),
        timeout=90,
        what="Job doomed to fail",
    )
    assert failed["reason"] == "BackoffLimitExceeded"
    pods = job_pods(cluster, namespace, "doomed")
    # backoffLimit 1: the first pod and one retry, both failed with the program's exit code.
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3
        assert terminated["reason"] == "Error"
        assert "doomed" in terminated["message"]


def test_deleting_a_job_garbage_collects_its_pods(cluster: LocalCluster, namespace: str) -> None:
    # A pod that runs until it is stopped: deletion must also end its process.
    code = "import os, time; open('/work/pid', 'w').write(str(os.getpid())); time.sleep(600)"
    cluster.apply(
        job_manifest(
            "sleeper",
            code,
            volumes=[{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}],
            volumeMounts=[{"name": "work", "mountPath": "/work"}],
        ),
        namespace,
    )
    [pod] = wait_until(
        lambda: [
            p
            for p in job_pods(cluster, namespace, "sleeper")
            if p["status"].get("phase") == "Running"
        ],
        what="the sleeper pod to run",
    )
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    pid_file = cluster.volume_dir(namespace, "work") / "pid"
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), what="the pid"))

    cluster.kubectl(
        "delete", "job", "sleeper", "-n", namespace, "--cascade=background", "--wait=false"
    )

    wait_until(
        lambda: job_pods(cluster, namespace, "sleeper") == [],
        what="the garbage collector to delete the Job's pod",
    )
    assert not Path(f"/proc/{pid}").exists()
