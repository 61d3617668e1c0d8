"""Pod logs through the real apiserver: the pod runner serves them as a kubelet does, so that
`kubectl logs` and `pods/log` work, and only the apiserver (or an authorised client) reads them."""

from __future__ import annotations

import datetime
import json
import queue
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.certs import issue_client_certificate, write_certificates
from tests.harness.kubectl import KUBECTL
from tests.harness.local_cluster import LocalCluster, wait_until

pytestmark = pytest.mark.e2e

MANAGED = {"app.kubernetes.io/managed-by": "odoo-upgrade-operator"}
NODE = "odoo-upgrade-podrunner"
LINES = [f"progress {n}/5" for n in range(1, 6)]
PRINT_LINES = "import sys\nfor n in range(1, 6): print(f'progress {n}/5', flush=True)\n"


def container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "python:3", "command": ["python", "-c", code], **extra}


def pod_manifest(name: str, *containers: dict[str, Any], **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": MANAGED},
            "spec": {"restartPolicy": "Never", "containers": list(containers), **spec},
        }
    )


def phase(cluster: LocalCluster, namespace: str, pod: str) -> str:
    return str(cluster.get_json("pod", pod, "-n", namespace)["status"].get("phase", ""))


def run_to_completion(cluster: LocalCluster, namespace: str, manifest: str, pod: str) -> None:
    cluster.apply(manifest, namespace)
    wait_until(
        lambda: phase(cluster, namespace, pod) in ("Succeeded", "Failed"),
        what=f"pod {pod} to finish",
    )
    assert phase(cluster, namespace, pod) == "Succeeded", cluster.pod_log(namespace, pod)


def pod_log(cluster: LocalCluster, namespace: str, pod: str, **query: str) -> httpx.Response:
    """GET the apiserver's pods/log subresource as cluster admin."""
    with cluster.admin_client() as client:
        return client.get(f"/api/v1/namespaces/{namespace}/pods/{pod}/log", params=query)


def test_kubectl_logs_of_a_job_shows_its_pod_output(cluster: LocalCluster, namespace: str) -> None:
    code = PRINT_LINES + "print('and a warning', file=sys.stderr)\n"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "mover"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": MANAGED},
                "spec": {"restartPolicy": "Never", "containers": [container("main", code)]},
            },
        },
    }
    cluster.apply(json.dumps(job), namespace)
    wait_until(
        lambda: cluster.get_json("job", "mover", "-n", namespace)["status"].get("succeeded"),
        what="Job mover to succeed",
    )

    shown = cluster.kubectl("logs", "job/mover", "-n", namespace)

    # stdout and stderr together, in order, as a kubelet shows them.
    assert shown.stdout.splitlines() == [*LINES, "and a warning"]
    [pod] = cluster.get_json("pods", "-n", namespace, "-l", "job-name=mover")["items"]
    assert shown.stdout == cluster.pod_log(namespace, pod["metadata"]["name"])


def test_pods_log_honours_tail_lines_limit_bytes_timestamps_and_container(
    cluster: LocalCluster, namespace: str
) -> None:
    manifest = pod_manifest(
        "two",
        container("main", PRINT_LINES),
        container("side", "print('from the side container')"),
    )
    run_to_completion(cluster, namespace, manifest, "two")

    tail = pod_log(cluster, namespace, "two", container="main", tailLines="2")
    assert tail.status_code == 200, tail.text
    assert tail.text.splitlines() == LINES[-2:]

    limited = pod_log(cluster, namespace, "two", container="main", limitBytes="12")
    assert limited.status_code == 200, limited.text
    assert limited.text == "\n".join(LINES)[:12]

    stamped = pod_log(cluster, namespace, "two", container="main", timestamps="true")
    assert stamped.status_code == 200, stamped.text
    started = datetime.datetime.fromisoformat(
        cluster.get_json("pod", "two", "-n", namespace)["status"]["startTime"]
    )
    for line, expected in zip(stamped.text.splitlines(), LINES, strict=True):
        when, text = line.split(" ", 1)
        assert text == expected
        assert len(when) == len("2006-01-02T15:04:05.000000000Z"), when
        # The pod's startTime has whole seconds; its lines come after it.
        written = datetime.datetime.fromisoformat(when[:26] + "+00:00")
        assert written >= started, (written, started)

    side = cluster.kubectl("logs", "two", "-c", "side", "-n", namespace)
    assert side.stdout == "from the side container\n"
    # kubectl picks the first container, saying so; the API itself asks which one.
    defaulted = cluster.kubectl("logs", "two", "-n", namespace)
    assert defaulted.stdout.splitlines() == LINES
    assert 'Defaulted container "main"' in defaulted.stderr
    unnamed = pod_log(cluster, namespace, "two")
    assert unnamed.status_code == 400
    assert "main" in unnamed.text and "side" in unnamed.text, unnamed.text


def _lines_of(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's stdout lines as they arrive (None at its end), read by a thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_follow_streams_lines_as_the_pod_prints_them_and_ends_when_it_exits(
    cluster: LocalCluster, namespace: str
) -> None:
    signals = cluster.volume_dir(namespace, "signals")
    code = (
        "import os, time\n"
        "def wait_for(name):\n"
        "    while not os.path.exists(os.path.join(os.environ['SIGNALS'], name)):\n"
        "        time.sleep(0.05)\n"
        "print('first line', flush=True)\n"
        "wait_for('go')\n"
        "print('second line', flush=True)\n"
        "wait_for('stop')\n"
        "print('last words', end='', flush=True)\n"
    )
    manifest = pod_manifest(
        "talker",
        container(
            "main",
            code,
            env=[{"name": "SIGNALS", "value": "/signals"}],
            volumeMounts=[{"name": "signals", "mountPath": "/signals"}],
        ),
        volumes=[{"name": "signals", "persistentVolumeClaim": {"claimName": "signals"}}],
    )
    cluster.apply(manifest, namespace)
    wait_until(lambda: phase(cluster, namespace, "talker") == "Running", what="pod talker to run")

    follow = subprocess.Popen(
        [str(KUBECTL), "logs", "-f", "talker", "-n", namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    try:
        lines = _lines_of(follow)
        assert lines.get(timeout=30) == "first line"
        # The pod prints its second line only once told to: what arrives next was streamed.
        assert lines.empty()
        (signals / "go").touch()
        assert lines.get(timeout=30) == "second line"
        assert follow.poll() is None, "the follow ended while the pod still ran"
        (signals / "stop").touch()
        assert lines.get(timeout=30) == "last words"
        assert lines.get(timeout=30) is None
        assert follow.wait(timeout=30) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        follow.kill()
        follow.wait()
    wait_until(lambda: phase(cluster, namespace, "talker") == "Succeeded", what="talker to end")


def kubelet_url(cluster: LocalCluster, namespace: str, pod: str, container: str) -> str:
    """The pod runner's endpoint, as its Node advertises it to the apiserver."""
    status = cluster.get_json("node", NODE)["status"]
    [address] = [a["address"] for a in status["addresses"] if a["type"] == "InternalIP"]
    port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    return f"https://{address}:{port}/containerLogs/{namespace}/{pod}/{container}"


def tls(cluster: LocalCluster, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Trusts the cluster CA only (the endpoint's certificate must be the cluster's)."""
    context = ssl.create_default_context(cafile=str(cluster.pki_dir / "ca.crt"))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def test_kubelet_endpoint_serves_only_authorised_client_certificates(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    run_to_completion(
        cluster, namespace, pod_manifest("quiet", container("main", PRINT_LINES)), "quiet"
    )
    url = kubelet_url(cluster, namespace, "quiet", "main")

    anonymous = httpx.get(url, verify=tls(cluster), timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    assert "progress" not in anonymous.text

    nobody = issue_client_certificate(cluster.pki_dir, tmp_path / "nobody", "nobody")
    forbidden = httpx.get(url, verify=tls(cluster, *nobody), timeout=30)
    assert forbidden.status_code == 403, forbidden.text
    assert "user=nobody" in forbidden.text and "progress" not in forbidden.text

    stranger = write_certificates(tmp_path / "other-ca", node_name=NODE)
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=tls(cluster, stranger.admin_cert, stranger.admin_key), timeout=30)

    # A cluster admin is allowed by the apiserver's own authoriser (SubjectAccessReview).
    admin = tls(cluster, cluster.pki_dir / "admin.crt", cluster.pki_dir / "admin.key")
    allowed = httpx.get(url, params={"tailLines": "1"}, verify=admin, timeout=30)
    assert allowed.status_code == 200, allowed.text
    assert allowed.text == f"{LINES[-1]}\n"
    missing = httpx.get(kubelet_url(cluster, namespace, "ghost", "main"), verify=admin, timeout=30)
    assert missing.status_code == 404
    assert 'pod "ghost" does not exist' in missing.text
