"""The scripting subcommands (`create`, `upload`, `sftp-access`, `process`, `status`,
`download`) chained the way a shell script would, against the emulator."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.emulator import RunningEmulator, write_sample_dump

CONSOLE_SCRIPT = Path(sys.executable).with_name("odoo-upgrade")
CLI = (
    [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "odoo_upgrade.cli"]
)


def odoo_upgrade(
    emulator: RunningEmulator, *args: str, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOO_UPGRADE_")}
    env.update(env_extra)
    return subprocess.run(
        [*CLI, "--platform-url", emulator.url, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def json_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def create(emulator: RunningEmulator, tmp_path: Path, filename: str) -> tuple[int, Path]:
    """`create --save-key`; returns the request id and the key file."""
    key_file = tmp_path / f"{filename}.key"
    result = odoo_upgrade(
        emulator,
        "create",
        "--target",
        "18.0",
        "--email",
        "ops@acme.example",
        "--filename",
        filename,
        "--save-key",
        str(key_file),
        ODOO_UPGRADE_CONTRACT=emulator.contract,
    )
    assert result.returncode == 0, result.stderr
    request_id = int(result.stdout.split()[2])
    return request_id, key_file


def wait_done(emulator: RunningEmulator, request_id: int, key_file: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        view = json_of(
            odoo_upgrade(
                emulator,
                "status",
                "--request",
                str(request_id),
                "--key-file",
                str(key_file),
                "--json",
            )
        )
        if view["state"] in ("done", "invalid") or time.monotonic() > deadline:
            return view
        time.sleep(0.3)


def test_create_json_prints_id_and_key_and_nothing_on_stderr_leaks(
    emulator: RunningEmulator,
) -> None:
    result = odoo_upgrade(
        emulator,
        "create",
        "--target",
        "18.0",
        "--email",
        "ops@acme.example",
        "--filename",
        "acme.dump",
        "--json",
        ODOO_UPGRADE_CONTRACT=emulator.contract,
    )
    created = json_of(result)
    assert created["state"] == "draft"
    assert created["key"]
    status = emulator.api("status", request=created["id"], key=created["key"])
    assert status["failures"] == []
    assert created["key"] not in result.stderr
    assert emulator.contract not in result.stdout + result.stderr


def test_https_steps_chain_from_create_to_download(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=128 * 1024)
    request_id, key_file = create(emulator, tmp_path, "acme.dump")
    key = key_file.read_text().strip()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    common = ["--request", str(request_id), "--key-file", str(key_file)]

    uploaded = json_of(odoo_upgrade(emulator, "upload", *common, "--dump", str(dump), "--json"))
    assert uploaded["bytes"] == dump.stat().st_size
    assert uploaded["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert emulator.original_path(request_id).read_bytes() == dump.read_bytes()

    assert json_of(odoo_upgrade(emulator, "process", *common, "--json"))["processing"] is True
    view = wait_done(emulator, request_id, key_file)
    assert view["state"] == "done"
    assert "urls" not in view

    human = odoo_upgrade(emulator, "status", *common)
    assert human.returncode == 0
    assert "state:" in human.stdout and "done" in human.stdout
    assert key not in human.stdout and "/database/" not in human.stdout

    with_urls = json_of(odoo_upgrade(emulator, "status", *common, "--json", "--show-urls"))
    assert with_urls["urls"]["upgraded_dump_url"].startswith(emulator.url)

    output = tmp_path / "out" / "acme-18.dump"
    output.parent.mkdir()
    downloaded = json_of(
        odoo_upgrade(emulator, "download", *common, "--output", str(output), "--json")
    )
    assert output.read_bytes() == emulator.upgraded_bytes(request_id)
    assert downloaded["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()

    again = odoo_upgrade(emulator, "download", *common, "--output", str(output))
    assert again.returncode == 2
    assert output.read_bytes() == emulator.upgraded_bytes(request_id)


def test_sql_format_download_is_the_upgraded_sql_stream(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    dump = write_sample_dump(tmp_path / "acme.sql", "sql", size=32 * 1024)
    request_id, key_file = create(emulator, tmp_path, "acme.sql")
    common = ["--request", str(request_id), "--key-file", str(key_file)]
    assert odoo_upgrade(emulator, "upload", *common, "--dump", str(dump)).returncode == 0
    assert odoo_upgrade(emulator, "process", *common).returncode == 0
    assert wait_done(emulator, request_id, key_file)["state"] == "done"
    output = tmp_path / "upgraded.sql"
    result = odoo_upgrade(emulator, "download", *common, "--output", str(output), "--format", "sql")
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == emulator.upgraded_sql_bytes(request_id)


def test_download_over_sftp_gets_the_upgraded_file_once_done(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=128 * 1024)
    request_id, key_file = create(emulator, tmp_path, "acme.dump")
    common = ["--request", str(request_id), "--key-file", str(key_file)]
    assert odoo_upgrade(emulator, "upload", *common, "--dump", str(dump)).returncode == 0
    assert odoo_upgrade(emulator, "process", *common).returncode == 0
    assert wait_done(emulator, request_id, key_file)["state"] == "done"
    output = tmp_path / "acme-18.dump"
    sql = odoo_upgrade(
        emulator, "download", *common, "--output", str(output), "--transport", "sftp",
        "--format", "sql",
    )  # fmt: skip
    assert sql.returncode == 2 and "--transport sftp" in sql.stderr and "--format sql" in sql.stderr
    downloaded = json_of(
        odoo_upgrade(
            emulator,
            "download",
            *common,
            "--output",
            str(output),
            "--transport",
            "sftp",
            "--host-key",
            emulator.host_key_line(),
            "--json",
        )
    )
    upgraded = emulator.upgraded_bytes(request_id)
    assert output.read_bytes() == upgraded
    assert downloaded["transport"] == "sftp"
    assert downloaded["sha256"] == hashlib.sha256(upgraded).hexdigest()
    gets = [
        (c["file"], c["bytes"]) for c in emulator.calls("sftp-get") if c["request"] == request_id
    ]
    assert gets == [("upgraded_acme.dump", len(upgraded))]


def test_upload_over_sftp_lands_the_dump(emulator: RunningEmulator, tmp_path: Path) -> None:
    dump = write_sample_dump(tmp_path / "big.dump", "pgdmp", size=512 * 1024)
    request_id, key_file = create(emulator, tmp_path, "big.dump")
    result = odoo_upgrade(
        emulator,
        "upload",
        "--request",
        str(request_id),
        "--key-file",
        str(key_file),
        "--dump",
        str(dump),
        "--transport",
        "sftp",
        "--host-key",
        emulator.host_key_line(),
        "--json",
    )
    assert json_of(result)["transport"] == "sftp"
    assert emulator.original_path(request_id).read_bytes() == dump.read_bytes()


def test_sftp_access_answers_where_to_connect(emulator: RunningEmulator, tmp_path: Path) -> None:
    request_id, key_file = create(emulator, tmp_path, "acme.dump")
    keys = tmp_path / "authorized_keys"
    keys.write_text(
        "# ops laptop\n\n"
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops\n"
    )
    access = json_of(
        odoo_upgrade(
            emulator,
            "sftp-access",
            "--request",
            str(request_id),
            "--key-file",
            str(key_file),
            "--ssh-keys",
            str(keys),
            "--json",
        )
    )
    assert access["sftp_port"] == emulator.sftp_port
    assert access["sftp_user"] == f"user_{request_id}"
    assert access["shared_file"] == "acme.dump"


def test_wrong_key_is_the_platforms_failure_exit_1(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request_id, _ = create(emulator, tmp_path, "acme.dump")
    result = odoo_upgrade(
        emulator, "status", "--request", str(request_id), "--json", ODOO_UPGRADE_KEY="not-the-key"
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["failures"]
    assert "not-the-key" not in result.stdout + result.stderr


def test_missing_key_is_a_usage_error_without_any_call(emulator: RunningEmulator) -> None:
    result = odoo_upgrade(emulator, "process", "--request", "1")
    assert result.returncode == 2
    assert "--key-file" in result.stderr and "ODOO_UPGRADE_KEY" in result.stderr
    assert emulator.calls() == []


def test_unreachable_platform_exits_4_after_retries(tmp_path: Path) -> None:
    class Nowhere:
        url = "http://127.0.0.1:9"  # discard port: connection refused

    result = odoo_upgrade(
        Nowhere(),  # type: ignore[arg-type]
        "status",
        "--request",
        "1",
        ODOO_UPGRADE_KEY="some-request-key",
    )
    assert result.returncode == 4, result.stderr
    assert "some-request-key" not in result.stderr


# -- upgrade-request: the request from the state file of `run` --------------------------------


def test_log_follows_the_platform_log_and_status_and_wipe_take_the_state_file(
    make_emulator: Any, tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=3)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=64 * 1024)
    state_file = dump.with_name(dump.name + ".odoo-upgrade.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOO_UPGRADE_")}
    env["ODOO_UPGRADE_CONTRACT"] = emulator.contract
    run = subprocess.Popen(
        [*CLI, "--platform-url", emulator.url, "run", "--api", "upgrade-request", "--dump",
         str(dump), "--target", "18.0", "--poll-interval", "0.3", "--no-progress"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (state_file.exists() and '"processing"' in state_file.read_text()):
            assert time.monotonic() < deadline and run.poll() is None, run.communicate()
            time.sleep(0.05)
        followed = odoo_upgrade(
            emulator, "log", "--token-from", str(state_file), "--follow", "--interval", "0.2"
        )
        _, run_stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, run_stderr
    assert followed.returncode == 0, followed.stderr
    state = json.loads(state_file.read_text())
    whole = (dump.with_name("upgraded_acme") / "upgrade.log").read_text()
    assert followed.stdout == whole  # every line, once, in order, up to the final one
    assert "upgrading module" in whole and whole.rstrip().endswith("done")
    assert f"{len(whole.encode())} bytes" in followed.stderr
    # From a byte on, as a tail: only what comes after it.
    offset = len(whole.encode()) // 2
    part = odoo_upgrade(
        emulator, "log", "--token-from", str(state_file), "--from-byte", str(offset)
    )
    assert part.stdout == whole.encode()[offset:].decode()

    status = json_of(odoo_upgrade(emulator, "status", "--token-from", str(state_file), "--json"))
    assert status["state"] == "done" and status["api"] == "upgrade-request"
    assert status["assignedHost"] == emulator.assigned_host
    refused = odoo_upgrade(emulator, "wipe", "--token-from", str(state_file))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    wiped = json_of(
        odoo_upgrade(
            emulator, "wipe", "--token-from", str(state_file), "--yes", "--json",
            ODOO_UPGRADE_CONTRACT=emulator.contract,
        )
    )  # fmt: skip
    assert wiped["wiped"] == [str(state["request_id"])]
    assert not emulator.request_data(state["request_id"]).exists()
    for result in (followed, part, refused):
        assert state["token"] not in result.stdout + result.stderr


def test_log_of_a_database_v1_request_is_refused(emulator: RunningEmulator, tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text(
        json.dumps({"request_id": 1, "key": "k" * 24, "platform_url": emulator.url, "dump": "/d",
                    "dump_size": 1, "target": "18.0", "aim": "test", "filename": "d",
                    "transport": "https"})
    )  # fmt: skip
    result = odoo_upgrade(emulator, "log", "--token-from", str(state_file))
    assert result.returncode == 2
    assert "only upgrade-request serves a log" in result.stderr
    assert emulator.calls() == []
