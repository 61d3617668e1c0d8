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

from odoo_upgrade.request.progress import ProgressLine, parse_progress_line
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


def done_request(emulator: RunningEmulator) -> dict[str, Any]:
    """A request whose upgraded dump is ready on the platform."""
    request = emulator.create_request(filename="acme.dump")
    assert not emulator.upload(request["id"], request["key"], sample_dump_bytes())["failures"]
    assert not emulator.api("process", request=request["id"], key=request["key"])["failures"]
    emulator.wait_for_state(request["id"], request["key"], "done")
    return request


def download_args(emulator: RunningEmulator, directory: Path, destination: Path, log: Path,
                  *extra: str) -> list[str]:  # fmt: skip
    return [
        "download",
        "--platform-url", emulator.url,
        "--request-dir", str(directory),
        "--destination", str(destination),
        *extra,
        "--termination-log", str(log),
    ]  # fmt: skip


def mounted_request(
    tmp_path: Path, emulator: RunningEmulator, request: dict[str, Any], transport: str, **extra: str
) -> tuple[Path, list[str]]:
    """The request Secret as the operator leaves it for a download over `transport` (for SFTP:
    access granted again once done, the host key recorded); the mover's transport flags."""
    if transport == "https":
        return request_dir(tmp_path, request, **extra), []
    keys = generate_ssh_keypair()
    answer = emulator.api(
        "request_sftp_access",
        http_method="POST",
        request=request["id"],
        key=request["key"],
        ssh_keys=keys.public_line,
    )
    assert not answer["failures"], answer
    values = {
        "ssh_privatekey": keys.private_pem,
        "ssh_publickey": keys.public_line,
        "sftp_download_access": json.dumps(answer["request"]),
        "sftp_host_key": emulator.host_key_line(),
        **extra,
    }
    return request_dir(tmp_path, request, **{k: v for k, v in values.items() if v}), [
        "--transport",
        "sftp",
    ]


def sftp_gets(emulator: RunningEmulator, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in emulator.calls("sftp-get") if c["request"] == request["id"]]


@pytest.mark.parametrize("recorded", ["pinned", "first-use"])
def test_download_over_sftp_gets_the_upgraded_file_with_the_download_grant(
    emulator: RunningEmulator, tmp_path: Path, recorded: str
) -> None:
    request = done_request(emulator)
    host_key = {"sftp_host_key": ""} if recorded == "first-use" else {}
    directory, flags = mounted_request(tmp_path, emulator, request, "sftp", **host_key)
    destination = tmp_path / "destination" / "acme-18.dump"
    log = tmp_path / "termination-log"
    done = mover(*download_args(emulator, directory, destination, log, *flags))
    assert done.returncode == 0, done.stderr
    upgraded = emulator.upgraded_bytes(request["id"])
    assert destination.read_bytes() == upgraded
    result = termination(log)
    assert result["transport"] == "sftp" and result["bytes"] == len(upgraded)
    assert result["sha256"] == hashlib.sha256(upgraded).hexdigest()
    # Trusted on first use, the key is reported for the operator to record; pinned, not again.
    assert result.get("hostKey") == (emulator.host_key_line() if recorded == "first-use" else None)
    assert [(c["file"], c["bytes"]) for c in sftp_gets(emulator, request)] == [
        ("upgraded_acme.dump", len(upgraded))
    ]
    # The last progress line, as the operator reads it from the pod's log.
    assert parse_progress_line(done.stdout) == ProgressLine(
        "download", len(upgraded), len(upgraded)
    )
    private = (directory / "ssh-privatekey").read_text().splitlines()[1]
    assert private not in done.stdout + done.stderr + log.read_text()


def test_sftp_download_of_the_sql_stream_is_refused_naming_both_flags(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = done_request(emulator)
    directory, flags = mounted_request(tmp_path, emulator, request, "sftp")
    log = tmp_path / "termination-log"
    destination = tmp_path / "acme-18.sql"
    done = mover(*download_args(emulator, directory, destination, log, *flags, "--format", "sql"))
    assert done.returncode == 2
    result = termination(log)
    assert result["reason"] == "TransportNotOffered" and not result["transient"]
    assert "--transport sftp" in result["error"] and "--format sql" in result["error"]
    assert not destination.exists() and sftp_gets(emulator, request) == []


def test_sftp_download_without_the_download_grant_fails_naming_the_secret_key(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = done_request(emulator)
    directory, flags = mounted_request(tmp_path, emulator, request, "sftp", sftp_download_access="")
    log = tmp_path / "termination-log"
    done = mover(*download_args(emulator, directory, tmp_path / "out.dump", log, *flags))
    assert done.returncode == 2
    result = termination(log)
    assert result["reason"] == "SftpAccessMissing" and "sftp-download-access" in result["error"]


FOREIGN_ORIGINS = {
    # Left by a mover or CLI that recorded no origin (before bindings existed).
    "unbound": None,
    # Left by an interrupted download of another request to the same path.
    "another-request": {
        "request_id": "999999",
        "source_sha256": "0" * 64,
        "size": None,
        "validator": '"etag-of-another-file"',
    },
}


@pytest.mark.parametrize("transport", ["https", "sftp"])
@pytest.mark.parametrize("left", FOREIGN_ORIGINS, ids=list(FOREIGN_ORIGINS))
def test_download_never_splices_a_foreign_part_into_the_published_dump(
    emulator: RunningEmulator, tmp_path: Path, left: str, transport: str
) -> None:
    request = done_request(emulator)
    directory, flags = mounted_request(tmp_path, emulator, request, transport)
    upgraded = emulator.upgraded_bytes(request["id"])
    destination = tmp_path / "destination" / "acme-18.dump"
    destination.parent.mkdir()
    # A stale prefix at the destination, shorter than the upgraded dump: resumed with a Range
    # request, the published file would have the right size and the wrong bytes.
    destination.with_name(".acme-18.dump.part").write_bytes(b"F" * (len(upgraded) // 2))
    origin = FOREIGN_ORIGINS[left]
    if origin is not None:
        destination.with_name(".acme-18.dump.part.json").write_text(json.dumps(origin))
    log = tmp_path / "termination-log"
    done = mover(*download_args(emulator, directory, destination, log, *flags))
    assert done.returncode == 0, done.stderr
    assert destination.read_bytes() == upgraded
    digest = hashlib.sha256(upgraded).hexdigest()
    assert termination(log)["sha256"] == digest
    assert destination.with_name("acme-18.dump.sha256").read_text() == f"{digest}  acme-18.dump\n"
    assert not destination.with_name(".acme-18.dump.part").exists()


@pytest.mark.parametrize("transport", ["https", "sftp"])
@pytest.mark.parametrize("lost", ["result", "result-and-checksum"])
def test_a_download_published_but_not_recorded_succeeds_on_the_next_attempt(
    emulator: RunningEmulator, tmp_path: Path, lost: str, transport: str
) -> None:
    """The mover killed after the rename, before its result reached the operator (and, the
    worst case, before `<name>.sha256` was written): the next attempt finds its own file."""
    request = done_request(emulator)
    directory, flags = mounted_request(tmp_path, emulator, request, transport)
    destination = tmp_path / "acme-18.dump"
    first_log, second_log = tmp_path / "first-log", tmp_path / "second-log"
    first = mover(*download_args(emulator, directory, destination, first_log, *flags))
    assert first.returncode == 0, first.stderr
    checksum = destination.with_name("acme-18.dump.sha256")
    if lost == "result-and-checksum":
        checksum.unlink()
    gets = len(emulator.calls("status")), len(sftp_gets(emulator, request))
    again = mover(*download_args(emulator, directory, destination, second_log, *flags))
    assert again.returncode == 0, again.stderr
    first_result, second_result = termination(first_log), termination(second_log)
    upgraded = emulator.upgraded_bytes(request["id"])
    assert second_result["sha256"] == first_result["sha256"] == hashlib.sha256(upgraded).hexdigest()
    assert second_result["bytes"] == len(upgraded)
    assert destination.read_bytes() == upgraded
    assert checksum.read_text() == f"{first_result['sha256']}  acme-18.dump\n"
    assert second_result["transport"] == transport
    # Recognised on disk: nothing asked of the platform again, no byte fetched again.
    assert (len(emulator.calls("status")), len(sftp_gets(emulator, request))) == gets


def test_a_destination_published_for_another_request_is_still_refused(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    mine, theirs = done_request(emulator), done_request(emulator)
    destination = tmp_path / "acme-18.dump"
    log = tmp_path / "termination-log"
    assert (
        mover(*download_args(emulator, request_dir(tmp_path, theirs), destination, log)).returncode
        == 0
    )
    written = destination.read_bytes()
    (tmp_path / "request").rename(tmp_path / "theirs")
    done = mover(*download_args(emulator, request_dir(tmp_path, mine), destination, log))
    assert done.returncode == 2
    assert termination(log)["reason"] == "DestinationExists"
    assert destination.read_bytes() == written


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


def done_upgrade_request(emulator: RunningEmulator, tmp_path: Path, name: str) -> tuple[str, ...]:
    """A request uploaded and done on the upgrade/request API: the mover flags to reach it."""
    from tests.support.emulator import write_directory_dump

    (tmp_path / name).mkdir()
    secret, token = upgrade_request_dir(tmp_path / name, emulator)
    common = ("--platform-url", emulator.url, "--request-dir", str(secret), "--api",
              "upgrade-request")  # fmt: skip
    dump = write_directory_dump(tmp_path / name / "source" / "acme.dump")
    log = tmp_path / name / "upload-log"
    sent = mover("upload", *common, "--termination-log", str(log), "--source", str(dump),
                 "--transport", "rsync")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    emulator.request_api("process", token=token)
    for _ in range(100):
        if emulator.request_api("status", token=token)["result"]["status"] == "done":
            break
        time.sleep(0.1)
    return common


def test_an_upgraded_set_published_but_not_recorded_succeeds_on_the_next_attempt(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """upgrade-request: the mover killed after the set's rename, before its result reached the
    operator; the next attempt finds its own set (by its receipt) instead of DestinationExists,
    and a set of another request at that path is still refused."""
    common = done_upgrade_request(emulator, tmp_path, "mine")
    destination = tmp_path / "out" / "acme-18"
    first_log, second_log = tmp_path / "first-log", tmp_path / "second-log"
    first = mover("download", *common, "--termination-log", str(first_log),
                  "--destination", str(destination))  # fmt: skip
    assert first.returncode == 0, first.stderr
    windows = len(emulator.calls("upgrade/request/transfer/start"))
    again = mover("download", *common, "--termination-log", str(second_log),
                  "--destination", str(destination))  # fmt: skip
    assert again.returncode == 0, again.stderr
    first_result, second_result = termination(first_log), termination(second_log)
    for key in ("sha256", "bytes", "files", "dumpPath", "reportPath", "logPath", "transport"):
        assert second_result[key] == first_result[key], key
    assert len(emulator.calls("upgrade/request/transfer/start")) == windows  # nothing fetched

    theirs = done_upgrade_request(emulator, tmp_path, "theirs")
    refused_log = tmp_path / "refused-log"
    refused = mover("download", *theirs, "--termination-log", str(refused_log),
                    "--destination", str(destination))  # fmt: skip
    assert refused.returncode == 2
    assert termination(refused_log)["reason"] == "DestinationExists"


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


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["upload", "--platform-url", "https://upgrade.odoo.com", "--no-such-flag"],
         "--no-such-flag"),
        (["dump", "--token", "uid-1", "--no-such-flag"], "--no-such-flag"),
        (["teleport"], "teleport"),
        (["--no-such-flag", "upload"], "--no-such-flag"),  # before the direction
    ],
)  # fmt: skip
def test_arguments_the_mover_does_not_know_fail_the_job_at_once_with_its_own_result(
    tmp_path: Path, args: list[str], named: str
) -> None:
    # An operator newer than its mover image passes arguments the mover does not know: no
    # other pod would do better, and the operator must learn why from the result, not guess
    # from a result-less pod (which it retries as transient).
    log = tmp_path / "termination-log"
    done = mover(*args, "--termination-log", str(log))
    assert done.returncode == 2, done.stderr
    result = termination(log)
    assert result["reason"] == "MoverArgumentsRejected" and result["transient"] is False
    assert named in result["error"] and "image" in result["error"]
    assert named in done.stderr


def test_a_bad_value_is_rejected_without_blaming_the_image(tmp_path: Path) -> None:
    # A path of the wrong type on the volume is the spec's problem: the result says what is
    # wrong with the value and does not send the user looking for another image.
    log = tmp_path / "termination-log"
    done = mover("dump", "--token", "uid-1", "--destination", str(tmp_path), "--termination-log",
                 str(log))  # fmt: skip
    assert done.returncode == 2, done.stderr
    result = termination(log)
    assert result["reason"] == "MoverArgumentsRejected" and result["transient"] is False
    assert "is a directory" in result["error"] and "image" not in result["error"]
