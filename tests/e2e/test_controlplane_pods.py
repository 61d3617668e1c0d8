"""What a pod's process sees under the pod runner: volumes, Secrets, downward API, read-only
mounts; and what the API sees back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.local_cluster import LocalCluster, wait_until

pytestmark = pytest.mark.e2e

MANAGED = {"app.kubernetes.io/managed-by": "odoo-upgrade-operator"}

# Reports, as JSON in the termination message, what the container can see and do.
PROBE = """
import json, os, pathlib
def write(path):
    try:
        pathlib.Path(path).write_text("written by the pod")
        return "ok"
    except OSError as error:
        return type(error).__name__
report = {
    "source": pathlib.Path("/data/source/dump.txt").read_text(),
    "write_source": write("/data/source/dump.txt"),
    "create_in_source": write("/data/source/new.txt"),
    "write_destination": write("/data/destination/out.txt"),
    "secret_file": pathlib.Path("/var/run/request/key").read_text(),
    "write_secret": write("/var/run/request/key"),
    "env": {k: os.environ.get(k) for k in ("KEY", "POD", "NS", "NODE", "LABEL", "MODE", "TAG")},
    "cwd": os.getcwd(),
    "args": os.environ["ARGS_SEEN"],
}
pathlib.Path("/dev/termination-log").write_text(json.dumps(report))
"""


def probe_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**MANAGED, "tier": "probe"}},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "source", "persistentVolumeClaim": {"claimName": "backups"}},
                {"name": "destination", "persistentVolumeClaim": {"claimName": "backups"}},
                {"name": "request", "secret": {"secretName": "request"}},
            ],
            "containers": [
                {
                    "name": "probe",
                    "image": "python:3",
                    "command": ["python", "-c", PROBE],
                    "workingDir": "/data/destination/work",
                    "envFrom": [{"configMapRef": {"name": "settings"}}],
                    "env": [
                        {
                            "name": "KEY",
                            "valueFrom": {"secretKeyRef": {"name": "request", "key": "key"}},
                        },
                        {
                            "name": "POD",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {
                            "name": "NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {
                            "name": "NODE",
                            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                        },
                        {
                            "name": "LABEL",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                        },
                        {"name": "TAG", "value": "$(MODE)-tagged"},
                        {"name": "ARGS_SEEN", "value": "--out=/data/destination/x"},
                    ],
                    "volumeMounts": [
                        {
                            "name": "source",
                            "mountPath": "/data/source",
                            "subPath": "dumps",
                            "readOnly": True,
                        },
                        {"name": "destination", "mountPath": "/data/destination"},
                        {"name": "request", "mountPath": "/var/run/request"},
                    ],
                }
            ],
        },
    }


def finished_pod(cluster: LocalCluster, namespace: str, name: str) -> Any:
    def probe() -> Any:
        pod = cluster.get_json("pod", name, "-n", namespace)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    return wait_until(probe, what=f"pod {name} to finish")


def test_pod_sees_volumes_secrets_and_downward_api_with_read_only_source(
    cluster: LocalCluster, namespace: str
) -> None:
    volume = cluster.volume_dir(namespace, "backups")
    (volume / "dumps").mkdir()
    (volume / "dumps" / "dump.txt").write_text("original dump")
    (volume / "work").mkdir()
    cluster.kubectl(
        "create", "secret", "generic", "request", "-n", namespace, "--from-literal=key=s3cr3t"
    )
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=MODE=test")
    cluster.apply(json.dumps(probe_pod("probe")), namespace)

    pod = finished_pod(cluster, namespace, "probe")

    assert pod["status"]["phase"] == "Succeeded", cluster.pod_log(namespace, "probe")
    assert pod["spec"]["nodeName"] == "odoo-upgrade-podrunner"
    report = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert report["source"] == "original dump"
    # readOnly mount: neither overwriting nor creating files works, and the volume is intact.
    # (As root without CAP_SYS_ADMIN the runner can only offer a copy, which root may write:
    # podrunner.log says which enforcement is in use.)
    assert report["write_source"] != "ok", "read-only mount was writable: see podrunner.log"
    assert report["create_in_source"] != "ok"
    assert (volume / "dumps" / "dump.txt").read_text() == "original dump"
    assert not (volume / "dumps" / "new.txt").exists()
    # The read-write mount of the same claim lands in the claim's directory.
    assert report["write_destination"] == "ok"
    assert (volume / "out.txt").read_text() == "written by the pod"
    # Secret volumes are read-only too; the env var comes from the same Secret.
    assert report["secret_file"] == "s3cr3t"
    assert report["write_secret"] != "ok"
    assert report["env"] == {
        "KEY": "s3cr3t",
        "POD": "probe",
        "NS": namespace,
        "NODE": "odoo-upgrade-podrunner",
        "LABEL": "probe",
        "MODE": "test",
        "TAG": "test-tagged",
    }
    assert report["cwd"] == str(volume / "work")
    assert report["args"] == f"--out={volume}/x"


def test_pod_waits_for_a_missing_secret_then_runs(cluster: LocalCluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "patient", "labels": MANAGED},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3",
                    "command": ["python", "-c", "import os; print(os.environ['KEY'])"],
                    "env": [
                        {
                            "name": "KEY",
                            "valueFrom": {"secretKeyRef": {"name": "late", "key": "key"}},
                        }
                    ],
                }
            ],
        },
    }
    cluster.apply(json.dumps(pod), namespace)

    def waiting_reason() -> Any:
        statuses = cluster.get_json("pod", "patient", "-n", namespace)["status"].get(
            "containerStatuses", []
        )
        return statuses and statuses[0]["state"].get("waiting", {}).get("reason")

    assert wait_until(waiting_reason, what="a waiting reason") == "CreateContainerConfigError"
    cluster.kubectl("create", "secret", "generic", "late", "-n", namespace, "--from-literal=key=v")

    assert finished_pod(cluster, namespace, "patient")["status"]["phase"] == "Succeeded"
    assert cluster.pod_log(namespace, "patient").strip() == "v"


def test_container_without_command_fails_with_a_start_error(
    cluster: LocalCluster, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "imageonly", "labels": MANAGED},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "nginx"}]},
    }
    cluster.apply(json.dumps(pod), namespace)

    finished = finished_pod(cluster, namespace, "imageonly")

    assert finished["status"]["phase"] == "Failed"
    terminated = finished["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    assert "no command" in terminated["message"]


def test_init_container_runs_first_and_shares_an_empty_dir(
    cluster: LocalCluster, namespace: str
) -> None:
    write = "open('/scratch/greeting', 'w').write('prepared by init')"
    read = "open('/dev/termination-log', 'w').write(open('/scratch/greeting').read())"
    mount = [{"name": "scratch", "mountPath": "/scratch"}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "staged", "labels": MANAGED},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "initContainers": [
                {
                    "name": "prepare",
                    "image": "python:3",
                    "command": ["python", "-c", write],
                    "volumeMounts": mount,
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "python:3",
                    "command": ["python", "-c", read],
                    "volumeMounts": mount,
                }
            ],
        },
    }
    cluster.apply(json.dumps(pod), namespace)

    finished = finished_pod(cluster, namespace, "staged")

    assert finished["status"]["phase"] == "Succeeded"
    [init] = finished["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed"
    [main] = finished["status"]["containerStatuses"]
    assert main["state"]["terminated"]["message"] == "prepared by init"
