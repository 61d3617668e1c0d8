"""`odoo-upgrade mover upload|download` run as the Job runs it (a process with explicit paths)
against the emulator on loopback: the result lands in the termination log, failures are named,
the exit code tells the Job whether another pod could help, and the key is never printed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from odoo_upgrade.transfer import generate_ssh_keypair
from tests.support.emulator import RunningEmulator, sample_dump_bytes


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with RunningEmulator(tmp_path_factory.mktemp("emulator"), process_seconds=0.5) as running:
        yield running


def request_dir(tmp_path: Path, request: dict[str, Any], **extra: str) -> Path:
    """The request Secret as the kubelet mounts it: one file per key."""
    directory = tmp_path / "request"
    directory.mkdir()
    (directory / "requestId").write_text(str(request["id"]))
    (directory / "key").write_text(request["key"])
    for name, value in extra.items():
        (directory / name.replace("_", "-")).write_text(value)
    return directory


def mover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "odoo_upgrade.mover", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def termination(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_upload_https_puts_the_dump_on_the_platform_and_reports_size_and_sha256(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request(filename="acme.dump")
    dump = sample_dump_bytes(size=200 * 1024)
    source = tmp_path / "source" / "dumps" / "acme.dump"
    source.parent.mkdir(parents=True)
    source.write_bytes(dump)
    log = tmp_path / "termination-log"
    done = mover(
        "upload",
        "--platform-url", emulator.url,
        "--request-dir", str(request_dir(tmp_path, request)),
        "--source", str(source),
        "--transport", "https",
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = termination(log)
    assert result == {
        "bytes": len(dump),
        "sha256": hashlib.sha256(dump).hexdigest(),
        "attempts": 1,
        "transport": "https",
    }
    assert emulator.original_path(request["id"]).read_bytes() == dump
    assert "upload: " in done.stdout
    assert request["key"] not in done.stdout + done.stderr + log.read_text()


def test_upload_auto_picks_sftp_above_the_threshold_with_the_operator_provided_access(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request(filename="acme.dump")
    keys = generate_ssh_keypair()
    answer = emulator.api(
        "request_sftp_access",
        http_method="POST",
        request=request["id"],
        key=request["key"],
        ssh_keys=keys.public_line,
    )
    assert not answer["failures"], answer
    dump = sample_dump_bytes(size=96 * 1024)
    source = tmp_path / "acme.dump"
    source.write_bytes(dump)
    directory = request_dir(
        tmp_path,
        request,
        ssh_privatekey=keys.private_pem,
        sftp_access=json.dumps(answer["request"]),
        sftp_host_key=emulator.host_key_line(),
    )
    log = tmp_path / "termination-log"
    done = mover(
        "upload",
        "--platform-url", emulator.url,
        "--request-dir", str(directory),
        "--source", str(source),
        "--transport", "auto",
        "--sftp-threshold-bytes", "1024",
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert termination(log)["transport"] == "sftp"
    assert emulator.original_path(request["id"]).read_bytes() == dump
    assert keys.private_pem not in done.stdout + done.stderr + log.read_text()


def test_upload_of_a_missing_source_fails_at_once_naming_the_file(tmp_path: Path) -> None:
    directory = request_dir(tmp_path, {"id": 7, "key": "Aw7pItGVKFuZ_FOR3U8VFQ=="})
    log = tmp_path / "termination-log"
    done = mover(
        "upload",
        "--platform-url", "http://127.0.0.1:9",
        "--request-dir", str(directory),
        "--source", str(tmp_path / "dumps" / "acme.dump"),
        "--transport", "https",
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 2  # permanent for this pod: the Job fails at once
    result = termination(log)
    assert result["reason"] == "SourceNotFound"
    assert "dumps/acme.dump" in result["error"]
    assert "dumps/acme.dump" in done.stderr


def test_download_writes_the_upgraded_dump_and_its_checksum(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request(filename="acme.dump")
    assert not emulator.upload(request["id"], request["key"], sample_dump_bytes())["failures"]
    assert not emulator.api("process", request=request["id"], key=request["key"])["failures"]
    emulator.wait_for_state(request["id"], request["key"], "done")
    destination = tmp_path / "destination" / "upgraded" / "acme-18.dump"
    log = tmp_path / "termination-log"
    done = mover(
        "download",
        "--platform-url", emulator.url,
        "--request-dir", str(request_dir(tmp_path, request)),
        "--destination", str(destination),
        "--format", "archive",
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    upgraded = emulator.upgraded_bytes(request["id"])
    assert destination.read_bytes() == upgraded
    result = termination(log)
    assert result["bytes"] == len(upgraded)
    checksum = destination.with_name("acme-18.dump.sha256").read_text()
    assert checksum == f"{result['sha256']}  acme-18.dump\n"
    assert request["key"] not in done.stdout + done.stderr + log.read_text()


def test_download_never_overwrites_an_existing_destination(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request(filename="acme.dump")
    destination = tmp_path / "acme-18.dump"
    destination.write_bytes(b"precious")
    status_calls = len(emulator.calls("status"))
    log = tmp_path / "termination-log"
    done = mover(
        "download",
        "--platform-url", emulator.url,
        "--request-dir", str(request_dir(tmp_path, request)),
        "--destination", str(destination),
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 2
    result = termination(log)
    assert result["reason"] == "DestinationExists"
    assert str(destination) in result["error"]
    assert destination.read_bytes() == b"precious"
    assert len(emulator.calls("status")) == status_calls  # refused before asking the platform


def test_download_before_the_platform_is_done_is_a_transient_failure(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request(filename="acme.dump")
    log = tmp_path / "termination-log"
    done = mover(
        "download",
        "--platform-url", emulator.url,
        "--request-dir", str(request_dir(tmp_path, request)),
        "--destination", str(tmp_path / "out.dump"),
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 1
    assert termination(log)["reason"] == "NotReady"
    assert not (tmp_path / "out.dump").exists()


# -- upgrade-request: rsync inside the transfer window ---------------------------------------


def upgrade_request_dir(tmp_path: Path, emulator: RunningEmulator) -> tuple[Path, str]:
    """A new upgrade/request request, mounted as the operator stores it; its token."""
    pair = generate_ssh_keypair()
    answer = emulator.request_api(
        "create", contract=emulator.contract, target="18.0", aim="test", ssh_key=pair.public_line
    )["result"]
    directory = tmp_path / "request"
    directory.mkdir()
    for name, value in {
        "requestId": str(answer["request_id"]),
        "token": answer["token"],
        "assignedHost": answer["assigned_host_uri"],
        "ssh-privatekey": pair.private_pem,
        "ssh-publickey": pair.public_line,
    }.items():
        (directory / name).write_text(value)
    return directory, str(answer["token"])


def test_upgrade_request_upload_and_download_move_the_dump_and_the_set_by_rsync(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from tests.support.emulator import write_directory_dump

    secret, token = upgrade_request_dir(tmp_path, emulator)
    dump = write_directory_dump(tmp_path / "source" / "acme.dump")
    log = tmp_path / "termination-log"
    common = ("--platform-url", emulator.url, "--request-dir", str(secret), "--api",
              "upgrade-request", "--termination-log", str(log))  # fmt: skip
    sent = mover("upload", *common, "--source", str(dump), "--transport", "rsync")
    assert sent.returncode == 0, sent.stderr
    result = termination(log)
    assert result["transport"] == "rsync" and result["files"] == 3
    assert result["remoteName"] == "origin.dump" and result["attempts"] == 1
    assert "upload: " in sent.stdout
    request_id = int((secret / "requestId").read_text())
    assert (emulator.request_data(request_id) / "origin.dump" / "toc.dat").is_file()

    early = mover("download", *common, "--destination", str(tmp_path / "out" / "acme-18"))
    assert early.returncode == 1 and termination(log)["reason"] == "NotReady"
    assert not (tmp_path / "out" / "acme-18").exists()
    emulator.request_api("process", token=token)
    for _ in range(100):
        if emulator.request_api("status", token=token)["result"]["status"] == "done":
            break
        time.sleep(0.1)
    got = mover("download", *common, "--destination", str(tmp_path / "out" / "acme-18"))
    assert got.returncode == 0, got.stderr
    result = termination(log)
    assert result["dumpPath"] == "upgraded.dump" and result["reportPath"] == "upgrade-report.html"
    assert result["logPath"] == "upgrade.log" and result["transport"] == "rsync"
    sums = (tmp_path / "out" / "acme-18" / "SHA256SUMS").read_bytes()
    assert result["sha256"] == hashlib.sha256(sums).hexdigest()
    assert result["files"] == len(sums.splitlines())
    private = (secret / "ssh-privatekey").read_text().splitlines()[1]
    for done in (sent, early, got):
        assert token not in done.stdout + done.stderr
        assert private not in done.stdout + done.stderr
    assert token not in log.read_text()


@pytest.mark.parametrize(
    ("api", "transport"), [("upgrade-request", "https"), ("database-v1", "rsync")]
)
def test_a_transport_of_the_other_api_is_refused_before_any_call(
    emulator: RunningEmulator, tmp_path: Path, api: str, transport: str
) -> None:
    secret, _ = upgrade_request_dir(tmp_path, emulator)
    source = tmp_path / "acme.dump"
    source.write_bytes(sample_dump_bytes())
    calls = len(emulator.calls())
    log = tmp_path / "termination-log"
    done = mover(
        "upload",
        "--platform-url", emulator.url,
        "--request-dir", str(secret),
        "--api", api,
        "--source", str(source),
        "--transport", transport,
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 2
    result = termination(log)
    assert result["reason"] == "TransportNotOffered" and not result["transient"]
    assert f"--transport {transport}" in result["error"] and f"--api {api}" in result["error"]
    assert len(emulator.calls()) == calls
