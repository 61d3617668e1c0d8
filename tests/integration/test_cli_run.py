"""`odoo-upgrade run` as a user runs it: a subprocess against the emulator over real HTTP/SFTP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator, write_sample_dump

CONSOLE_SCRIPT = Path(sys.executable).with_name("odoo-upgrade")
MIB = 1024 * 1024
CLI = (
    [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "odoo_upgrade.cli"]
)


def cli_env(emulator: RunningEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOO_UPGRADE_")}
    env["ODOO_UPGRADE_PLATFORM_URL"] = emulator.url
    env.update(extra)
    return env


def run_args(dump: Path, contract_file: Path, *extra: str) -> list[str]:
    return [
        *CLI,
        "run",
        "--dump",
        str(dump),
        "--target",
        "18.0",
        "--email",
        "ops@acme.example",
        "--contract-file",
        str(contract_file),
        "--poll-interval",
        "0.2",
        "--no-progress",
        *extra,
    ]


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    # stdin=DEVNULL: the CLI must never wait for a prompt (CI has no stdin).
    return subprocess.run(
        args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    return write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=256 * 1024)


@pytest.fixture
def contract_file(tmp_path: Path, emulator: RunningEmulator) -> Path:
    path = tmp_path / "contract"
    path.write_text(emulator.contract + "\n")
    return path


def state_of(dump: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dump.with_name(dump.name + ".odoo-upgrade.json").read_text())
    return data


def assert_upgraded_output(emulator: RunningEmulator, dump: Path, request_id: int) -> None:
    output = dump.with_name("upgraded_" + dump.name)
    expected = emulator.upgraded_bytes(request_id)
    assert output.read_bytes() == expected
    digest = hashlib.sha256(expected).hexdigest()
    assert output.with_name(output.name + ".sha256").read_text() == f"{digest}  {output.name}\n"


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_run_delivers_the_upgraded_dump_and_keeps_the_contract_secret(
    emulator: RunningEmulator, dump: Path, contract_file: Path, transport: str
) -> None:
    result = run_cli(
        run_args(dump, contract_file, "--transport", transport, "--json"), cli_env(emulator)
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    request_id = summary["request_id"]
    assert summary["platform_state"] == "done"
    assert summary["transport"] == transport
    assert summary["bytes_uploaded"] == dump.stat().st_size
    assert_upgraded_output(emulator, dump, request_id)
    assert summary["sha256"] == hashlib.sha256(emulator.upgraded_bytes(request_id)).hexdigest()
    used = {c["method"] for c in emulator.calls()}
    assert ("request_sftp_access" in used) == (transport == "sftp")
    assert ("upload" in used) == (transport == "https")
    assert len(emulator.calls("create")) == 1

    state_file = dump.with_name(dump.name + ".odoo-upgrade.json")
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert state_of(dump)["step"] == "downloaded"
    key = state_of(dump)["key"]
    for text in (result.stdout, result.stderr, state_file.read_text()):
        assert emulator.contract not in text
    assert key not in result.stdout + result.stderr


def test_human_summary_names_request_output_and_digest(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    result = run_cli(run_args(dump, contract_file), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    request_id = state_of(dump)["request_id"]
    digest = hashlib.sha256(emulator.upgraded_bytes(request_id)).hexdigest()
    assert f"request:        {request_id}" in result.stdout
    assert digest in result.stdout
    assert str(dump.with_name("upgraded_acme.dump")) in result.stdout
    assert "platform state: done" in result.stderr


def test_contract_from_the_environment_is_accepted_and_not_echoed(
    emulator: RunningEmulator, dump: Path
) -> None:
    args = run_args(dump, Path("unused"))
    args = args[: args.index("--contract-file")] + args[args.index("--contract-file") + 2 :]
    result = run_cli(args, cli_env(emulator, ODOO_UPGRADE_CONTRACT=emulator.contract))
    assert result.returncode == 0, result.stderr
    assert emulator.contract not in result.stdout + result.stderr


def test_invalid_target_exits_1_with_the_platforms_failure_and_no_state(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    args = run_args(dump, contract_file)
    args[args.index("18.0")] = "5.0"
    result = run_cli(args, cli_env(emulator))
    assert result.returncode == 1
    assert "TARGET:INVALID" in result.stderr
    assert "value: 5.0" in result.stderr
    assert "expected: " in result.stderr and "18.0" in result.stderr
    assert not dump.with_name(dump.name + ".odoo-upgrade.json").exists()


def test_unknown_contract_exits_1_without_echoing_the_contract(
    emulator: RunningEmulator, dump: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-contract"
    wrong.write_text("M999999-notmine")
    result = run_cli(run_args(dump, wrong, "--json"), cli_env(emulator))
    assert result.returncode == 1
    assert "CONTRACT:NOT_FOUND" in result.stderr
    assert json.loads(result.stdout)["failures"][0]["reason"] == "CONTRACT:NOT_FOUND"
    assert "M999999-notmine" not in result.stdout + result.stderr
    assert not dump.with_name(dump.name + ".odoo-upgrade.json").exists()


def test_missing_contract_is_a_usage_error_naming_both_sources(
    emulator: RunningEmulator, dump: Path
) -> None:
    args = run_args(dump, Path("unused"))
    args = args[: args.index("--contract-file")] + args[args.index("--contract-file") + 2 :]
    result = run_cli(args, cli_env(emulator))
    assert result.returncode == 2
    assert "--contract-file" in result.stderr and "ODOO_UPGRADE_CONTRACT" in result.stderr
    assert emulator.calls() == []


def test_dump_the_platform_rejects_exits_3_with_its_customer_message(
    emulator: RunningEmulator, tmp_path: Path, contract_file: Path
) -> None:
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"this is not a database dump\n" * 100)
    result = run_cli(run_args(garbage, contract_file), cli_env(emulator))
    assert result.returncode == 3
    assert "ended `invalid`" in result.stderr
    request_id = state_of(garbage)["request_id"]
    message = emulator.api("status", request=request_id, key=state_of(garbage)["key"])["request"][
        "customer_message"
    ]
    assert message and message in result.stderr


def test_existing_output_is_never_overwritten_and_nothing_is_created(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    output = dump.with_name("upgraded_" + dump.name)
    output.write_bytes(b"precious")
    result = run_cli(run_args(dump, contract_file), cli_env(emulator))
    assert result.returncode == 2
    assert "never overwritten" in result.stderr
    assert output.read_bytes() == b"precious"
    assert emulator.calls("create") == []


def start_run(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(dump: Path, steps: set[str], process: subprocess.Popen[str]) -> str:
    """Wait until the state file shows one of `steps` (the process must still be running)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            step = str(state_of(dump)["step"])
        except (FileNotFoundError, json.JSONDecodeError):
            step = ""
        if step in steps:
            return step
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"state file never reached {steps}")


def rerun_to_success(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> subprocess.CompletedProcess[str]:
    result = run_cli(run_args(dump, contract_file), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    assert "continuing request" in result.stderr
    return result


@pytest.mark.parametrize(
    ("transport", "kill_at"),
    [("https", {"created"}), ("sftp", {"created"}), ("https", {"uploaded", "processing"})],
)
def test_rerun_after_kill_continues_the_same_request(
    make_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    transport: str,
    kill_at: set[str],
) -> None:
    # Slow answers and a slow upgrade: the kill lands mid-upload or mid-poll.
    emulator = make_emulator(process_seconds=4, latency=0.3)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=1024 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    args = run_args(dump, contract_file, "--transport", transport)
    first = start_run(args, cli_env(emulator))
    try:
        wait_for_step(dump, kill_at, first)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL

    rerun_to_success(emulator, dump, contract_file)
    assert len(emulator.calls("create")) == 1
    assert_upgraded_output(emulator, dump, state_of(dump)["request_id"])


def test_ctrl_c_exits_130_and_says_a_rerun_continues(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=4)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=64 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    first = start_run(run_args(dump, contract_file), cli_env(emulator))
    try:
        wait_for_step(dump, {"processing"}, first)
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 130
    assert "rerun the same command to continue" in stderr

    rerun_to_success(emulator, dump, contract_file)
    assert len(emulator.calls("create")) == 1


def test_rerun_of_a_finished_run_creates_nothing_and_succeeds(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    assert run_cli(run_args(dump, contract_file), cli_env(emulator)).returncode == 0
    rerun_to_success(emulator, dump, contract_file)
    assert len(emulator.calls("create")) == 1


def test_state_file_of_another_target_is_refused(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    assert run_cli(run_args(dump, contract_file), cli_env(emulator)).returncode == 0
    args = run_args(dump, contract_file)
    args[args.index("18.0")] = "17.0"
    result = run_cli(args, cli_env(emulator))
    assert result.returncode == 2
    assert "state file" in result.stderr and "target '18.0'" in result.stderr
    assert len(emulator.calls("create")) == 1


def test_verbose_logs_never_show_the_key_or_contract(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    args = run_args(dump, contract_file, "--transport", "https")
    result = run_cli([*args[:1], "--verbose", *args[1:]], cli_env(emulator))
    assert result.returncode == 0, result.stderr
    assert "HTTP Request: POST" in result.stderr  # the logs do show each call...
    assert "key=***" in result.stderr  # ...with the key masked
    key = state_of(dump)["key"]
    for secret in (key, emulator.contract):
        assert secret not in result.stdout + result.stderr


def test_auto_transport_picks_sftp_above_the_threshold(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    result = run_cli(
        run_args(dump, contract_file, "--sftp-threshold", "100KiB", "--json"), cli_env(emulator)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["transport"] == "sftp"
    assert emulator.calls("upload") == []


def test_a_second_run_on_the_same_dump_at_once_is_refused(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=3)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=64 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    first = start_run(run_args(dump, contract_file), cli_env(emulator))
    try:
        wait_for_step(dump, {"processing"}, first)
        second = run_cli(run_args(dump, contract_file), cli_env(emulator))
        assert second.returncode == 2
        assert "another odoo-upgrade run is working on" in second.stderr
        first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0
    assert len(emulator.calls("create")) == 1


def test_run_rides_out_server_errors_with_a_single_request(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=1, fail_rate=0.2, fault_seed=7)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=64 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    result = run_cli(run_args(dump, contract_file), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    assert [c["ok"] for c in emulator.calls("create")].count(True) == 1
    assert any(not c["ok"] for c in emulator.calls())  # faults did happen
    assert_upgraded_output(emulator, dump, state_of(dump)["request_id"])


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_run_survives_cut_connections_in_upload_and_download(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, transport: str
) -> None:
    emulator = make_emulator(process_seconds=1, drop_after_bytes=100_000)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=512 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    result = run_cli(run_args(dump, contract_file, "--transport", transport), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    assert "cut after" in emulator.log()  # the faults did hit
    assert emulator.original_path(state_of(dump)["request_id"]).read_bytes() == dump.read_bytes()
    assert_upgraded_output(emulator, dump, state_of(dump)["request_id"])


def test_sftp_upload_killed_midway_resumes_from_what_the_server_holds(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=8 * 1024 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    args = [a for a in run_args(dump, contract_file, "--transport", "sftp") if a != "--no-progress"]
    first = start_run(args, cli_env(emulator))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and first.poll() is None, "no partial upload seen"
            state = (
                state_of(dump) if dump.with_name(dump.name + ".odoo-upgrade.json").exists() else {}
            )
            partial = emulator.original_path(state["request_id"]) if state else None
            # At least 1 MiB in (so a resume shows as >= 10%), and not all of it yet.
            if partial and partial.exists() and MIB <= partial.stat().st_size < dump.stat().st_size:
                break
            time.sleep(0.002)
    finally:
        first.kill()
        first.communicate()

    result = run_cli(args, cli_env(emulator))
    assert result.returncode == 0, result.stderr
    first_progress = next(
        line for line in result.stderr.splitlines() if line.startswith("upload: ")
    )
    assert not first_progress.startswith("upload: 0%"), first_progress  # resumed, not restarted
    assert len(emulator.calls("create")) == 1
    assert emulator.original_path(state["request_id"]).read_bytes() == dump.read_bytes()
