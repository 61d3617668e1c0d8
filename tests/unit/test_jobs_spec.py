"""Mover Job manifests: deterministic names, labels and owner, locked-down pods, the exact
command the test pod runner and docs/INTERNALS.md expect; outcomes read from conditions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from odoo_upgrade.controller.jobs import (
    Owner,
    download_job_spec,
    job_outcome,
    mover_job_spec,
    termination_result,
    upload_job_name,
    upload_job_spec,
)
from odoo_upgrade.controller.spec import parse_spec
from odoo_upgrade.request.mover_result import Direction
from odoo_upgrade.request.transport import Transport

OWNER = Owner(name="acme-to-18", namespace="odoo", uid="0b1c-uid")
SPEC = parse_spec(
    {
        "target": "18.0",
        "email": "ops@acme.example",
        "contractSecretRef": {"name": "odoo-contract"},
        "source": {"claimName": "odoo-backups", "path": "dumps/acme.dump"},
        "destination": {"claimName": "odoo-out", "path": "upgraded/acme-18.dump", "format": "sql"},
        "transport": "https",
        "platform": {"url": "http://127.0.0.1:8069", "pollInterval": "5s"},
    }
)


@pytest.fixture(params=["upload", "download"])
def job(request: pytest.FixtureRequest) -> dict[str, Any]:
    build = upload_job_spec if request.param == "upload" else download_job_spec
    return build(OWNER, SPEC)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_names_are_deterministic(job: dict[str, Any]) -> None:
    assert job["metadata"]["name"] in ("acme-to-18-upload", "acme-to-18-download")
    assert job["metadata"]["namespace"] == "odoo"


def test_long_names_are_shortened_stably_within_label_limits() -> None:
    name = "a" * 80
    short = upload_job_name(name)
    assert len(short) <= 63 and short.endswith("-upload")
    assert short == upload_job_name(name)
    assert short != upload_job_name("a" * 79 + "b")


def test_labels_on_job_and_pods_and_owner_reference(job: dict[str, Any]) -> None:
    expected = {
        "app.kubernetes.io/managed-by": "odoo-upgrade-operator",
        "app.kubernetes.io/component": "mover",
        "upgrade.odoo-operator.io/upgrade-uid": "0b1c-uid",
        "upgrade.odoo-operator.io/upgrade-name": "acme-to-18",
    }
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "upgrade.odoo-operator.io/v1alpha1",
        "kind": "OdooUpgrade",
        "name": "acme-to-18",
        "uid": "0b1c-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_pods_run_locked_down_without_a_token(job: dict[str, Any]) -> None:
    spec = pod(job)
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/run/odoo-upgrade/request"]["readOnly"] is True
    assert "/tmp" in mounts
    request = next(v for v in spec["volumes"] if v["name"] == "request")
    assert request["secret"]["secretName"] == "acme-to-18-request"


def test_a_failure_another_pod_cannot_fix_fails_the_job_at_once(job: dict[str, Any]) -> None:
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "mover", "operator": "In",
            "values": [2]}} in rules  # fmt: skip
    assert job["spec"]["backoffLimit"] <= 5


def test_upload_mounts_the_source_read_only_and_passes_every_path() -> None:
    job = upload_job_spec(OWNER, SPEC)
    spec = pod(job)
    (container,) = spec["containers"]
    assert container["command"] == [
        "odoo-upgrade", "mover", "upload",
        "--platform-url", "http://127.0.0.1:8069",
        "--request-dir", "/var/run/odoo-upgrade/request",
        "--source", "/data/source/dumps/acme.dump",
        "--transport", "https",
        "--sftp-threshold-bytes", str(1024**3),
        "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    source = next(v for v in spec["volumes"] if v["name"] == "source")
    assert source["persistentVolumeClaim"] == {"claimName": "odoo-backups", "readOnly": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "source")
    assert mount == {"name": "source", "mountPath": "/data/source", "readOnly": True}


def test_download_writes_to_the_destination_claim_in_the_asked_format() -> None:
    job = download_job_spec(OWNER, SPEC)
    spec = pod(job)
    (container,) = spec["containers"]
    assert container["command"] == [
        "odoo-upgrade", "mover", "download",
        "--platform-url", "http://127.0.0.1:8069",
        "--request-dir", "/var/run/odoo-upgrade/request",
        "--destination", "/data/destination/upgraded/acme-18.dump",
        "--format", "sql",
        "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    destination = next(v for v in spec["volumes"] if v["name"] == "destination")
    assert destination["persistentVolumeClaim"] == {"claimName": "odoo-out"}
    assert not any(v["name"] == "source" for v in spec["volumes"])


def test_a_download_over_sftp_tells_the_mover_so_and_nothing_secret() -> None:
    spec = replace(SPEC, destination_format="archive", transport="sftp")
    job = mover_job_spec(OWNER, spec, Direction.DOWNLOAD, transport=Transport.SFTP)
    (container,) = pod(job)["containers"]
    command = container["command"]
    assert command[command.index("--transport") + 1] == "sftp"
    assert command[command.index("--format") + 1] == "archive"
    # The access, key pair and host key stay in the mounted request Secret.
    assert not any("sftp-" in word or "ssh-" in word for word in command)
    (over_https,) = pod(mover_job_spec(OWNER, spec, Direction.DOWNLOAD))["containers"]
    assert "--transport" not in over_https["command"]  # https: the mover's default


def test_mover_image_comes_from_the_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODOO_UPGRADE_MOVER_IMAGE", "registry.local/mover:dev")
    (container,) = pod(upload_job_spec(OWNER, SPEC))["containers"]
    assert container["image"] == "registry.local/mover:dev"


def job_with(*conditions: tuple[str, str], failed: int = 0) -> dict[str, Any]:
    return {
        "status": {
            "failed": failed,
            "conditions": [
                {"type": t, "status": s, "reason": "R", "message": "M"} for t, s in conditions
            ],
        }
    }


def test_outcome_comes_from_conditions_not_counters() -> None:
    assert not job_outcome(job_with(failed=2)).finished  # retries under way: still running
    assert job_outcome(job_with(("Complete", "True"), failed=1)).succeeded
    assert job_outcome(job_with(("SuccessCriteriaMet", "True"))).succeeded
    failed = job_outcome(job_with(("FailureTarget", "True")))
    assert failed.finished and not failed.succeeded and failed.message == "M"
    assert not job_outcome(job_with(("Failed", "False"))).finished
    assert not job_outcome({}).finished


def pod_with(message: str | None, created: str) -> dict[str, Any]:
    terminated = {"exitCode": 1} | ({"message": message} if message is not None else {})
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def test_result_is_read_from_the_newest_pods_termination_message() -> None:
    pods = [
        pod_with('{"reason": "TRANSFER:UNAVAILABLE", "error": "old"}', "2026-01-01T00:00:00Z"),
        pod_with('{"bytes": 3, "sha256": "ab"}', "2026-01-01T00:05:00Z"),
    ]
    newest = termination_result(pods)
    assert newest is not None and newest.to_json() == {"bytes": 3, "sha256": "ab"}
    assert termination_result([pod_with(None, "2026-01-01T00:00:00Z")]) is None
    crashed = termination_result([pod_with("Traceback ... boom", "2026-01-01T00:00:00Z")])
    assert crashed is not None and crashed.reason == "MoverCrashed"


def test_upgrade_request_jobs_name_the_api_rsync_and_the_allowed_plain_http_hosts() -> None:
    from odoo_upgrade.controller import settings

    spec = parse_spec(
        {
            "target": "18.0",
            "email": "ops@acme.example",
            "contractSecretRef": {"name": "odoo-contract"},
            "source": {"claimName": "odoo-backups", "path": "dumps/acme.dump"},
            "destination": {"claimName": "odoo-out", "path": "upgraded/acme-18"},
            "platform": {"url": "http://127.0.0.1:8069", "api": "upgrade-request"},
        }
    )
    allowed = ("https://upgrade.odoo.com", "http://127.0.0.1:8069", "http://localhost:8070")
    settings.configure(settings.OperatorSettings(allowed_platform_urls=allowed))
    try:
        upload, download = upload_job_spec(OWNER, spec), download_job_spec(OWNER, spec)
    finally:
        settings.configure(settings.OperatorSettings())
    for job in (upload, download):
        (container,) = pod(job)["containers"]
        command = container["command"]
        at = command.index("--api")
        # Only the other plain-http host: the mover allows the platform URL's own by itself.
        assert command[at : at + 4] == [
            "--api", "upgrade-request", "--plain-http-host", "localhost:8070"
        ]  # fmt: skip
        assert command.count("--plain-http-host") == 1
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"  # ssh writes there
    upload_command = pod(upload)["containers"][0]["command"]
    assert upload_command[upload_command.index("--transport") + 1] == "rsync"
    download_command = pod(download)["containers"][0]["command"]
    assert "/data/destination/upgraded/acme-18" in download_command
    # No secret of the request in the Job: it reads them from the mounted Secret.
    assert not any("token" in word or "key" in word.lower() for word in download_command)
