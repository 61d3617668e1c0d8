"""`odoo-upgrade run` as a user runs it: a subprocess against the emulator over real HTTP/SFTP,
and over JSON-RPC and rsync for `--api upgrade-request`. What both APIs share is one test
parametrised by API."""

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
from tests.support.front import PlatformFront

CONSOLE_SCRIPT = Path(sys.executable).with_name("odoo-upgrade")
MIB = 1024 * 1024
CLI = (
    [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "odoo_upgrade.cli"]
)
V1 = "database-v1"
UR = "upgrade-request"
API_ARGS = {V1: (), UR: ("--api", UR)}


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


def assert_upgraded_output(
    emulator: RunningEmulator, dump: Path, request_id: int, api: str = V1
) -> None:
    if api == UR:
        assert_upgraded_set(emulator, dump.with_name("upgraded_" + dump.stem), request_id)
        return
    output = dump.with_name("upgraded_" + dump.name)
    expected = emulator.upgraded_bytes(request_id)
    assert output.read_bytes() == expected
    digest = hashlib.sha256(expected).hexdigest()
    assert output.with_name(output.name + ".sha256").read_text() == f"{digest}  {output.name}\n"


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_upgraded_set(emulator: RunningEmulator, output: Path, request_id: int) -> None:
    """The directory holds the platform's whole upgraded set, and its SHA256SUMS checks."""
    got = tree(output)
    got.pop("SHA256SUMS")
    served = tree(emulator.request_data(request_id))
    assert got == {k: v for k, v in served.items() if not k.startswith("origin.")}
    assert {"upgrade-report.html", "upgrade.log"} <= set(got)
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=output, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(p.name for p in output.parent.iterdir() if p.name.startswith(".")) == []


def sftp_gets(emulator: RunningEmulator, request_id: int) -> list[tuple[str, int]]:
    """What the platform's SFTP server served the request: (file, bytes) per get."""
    return [
        (c["file"], c["bytes"]) for c in emulator.calls("sftp-get") if c["request"] == request_id
    ]


def creates(emulator: RunningEmulator, api: str = V1) -> list[dict[str, Any]]:
    return emulator.calls("create" if api == V1 else "upgrade/request/create")


@pytest.mark.parametrize(("api", "transport"), [(V1, "https"), (V1, "sftp"), (UR, "rsync")])
def test_run_delivers_the_upgraded_dump_and_keeps_the_contract_secret(
    emulator: RunningEmulator, dump: Path, contract_file: Path, api: str, transport: str
) -> None:
    result = run_cli(
        run_args(dump, contract_file, *API_ARGS[api], "--transport", transport, "--json"),
        cli_env(emulator),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    request_id = summary["request_id"]
    assert summary["platform_state"] == "done"
    assert summary["transport"] == transport and summary["api"] == api
    assert summary["bytes_uploaded"] == dump.stat().st_size
    assert summary["upload_sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert_upgraded_output(emulator, dump, request_id, api)
    assert len(creates(emulator, api)) == 1
    state_file = dump.with_name(dump.name + ".odoo-upgrade.json")
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert state_of(dump)["step"] == "downloaded"
    if api == V1:
        upgraded = emulator.upgraded_bytes(request_id)
        assert summary["sha256"] == hashlib.sha256(upgraded).hexdigest()
        used = {c["method"] for c in emulator.calls()}
        assert ("request_sftp_access" in used) == (transport == "sftp")
        assert ("upload" in used) == (transport == "https")
        # The dump comes back the way it went: over SFTP, `get upgraded_<filename>` once done.
        assert summary["download_transport"] == state_of(dump)["download_transport"] == transport
        expected_gets = [("upgraded_acme.dump", len(upgraded))] if transport == "sftp" else []
        assert sftp_gets(emulator, request_id) == expected_gets
        if transport == "sftp":
            assert [c["method"] for c in emulator.calls() if c["method"] in (
                "process", "request_sftp_access")] == [
                "request_sftp_access", "process", "request_sftp_access"]  # fmt: skip
        secrets = [state_of(dump)["key"]]
    else:
        output = Path(summary["output"])
        assert summary["sha256_file"] == str(output / "SHA256SUMS")
        assert summary["sha256"] == hashlib.sha256((output / "SHA256SUMS").read_bytes()).hexdigest()
        assert summary["files"] == len(tree(output)) - 1
        state = state_of(dump)
        assert state["api"] == UR and state["assigned_host"] == emulator.assigned_host
        assert "key" not in state and state["ssh_public_key"].startswith("ssh-ed25519 ")
        secrets = [state["token"], state["ssh_private_key"].splitlines()[1]]
    for text in (result.stdout, result.stderr, state_file.read_text()):
        assert emulator.contract not in text
    for secret in secrets:
        assert secret not in result.stdout + result.stderr


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
    # The refused create left no attempt behind: the corrected command opens the request.
    fixed = run_cli(run_args(dump, contract_file), cli_env(emulator))
    assert fixed.returncode == 0, fixed.stderr
    assert [c["request"] for c in creates(emulator) if c["ok"]] == [state_of(dump)["request_id"]]


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


@pytest.mark.parametrize(
    ("env", "state", "said"),
    [
        ("ODOO_UPGRADE_EMULATOR_FAIL=module sale_loyalty broke", "failed", "sale_loyalty broke"),
        ("ODOO_UPGRADE_EMULATOR_CANCEL=1", "cancelled", "Cancelled by the platform"),
    ],
)
def test_upgrade_request_failed_or_cancelled_exits_3_with_the_platforms_reason(
    emulator: RunningEmulator, dump: Path, contract_file: Path, env: str, state: str, said: str
) -> None:
    args = run_args(dump, contract_file, "--api", UR, "--env", env, "--json")
    result = run_cli(args, cli_env(emulator))
    assert result.returncode == 3, result.stderr
    assert f"ended `{state}`" in result.stderr and said in result.stderr
    error = json.loads(result.stdout)
    assert error["state"] == state and said in error["customer_message"]
    assert state_of(dump)["platform_state"] == state
    assert not dump.with_name("upgraded_acme").exists()


@pytest.mark.parametrize("api", [V1, UR])
def test_existing_output_is_never_overwritten_and_nothing_is_created(
    emulator: RunningEmulator, dump: Path, contract_file: Path, api: str
) -> None:
    output = dump.with_name("upgraded_" + (dump.name if api == V1 else dump.stem))
    output.write_bytes(b"precious")
    result = run_cli(run_args(dump, contract_file, *API_ARGS[api]), cli_env(emulator))
    assert result.returncode == 2
    assert "never overwritten" in result.stderr
    assert output.read_bytes() == b"precious"
    assert emulator.calls() == []


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--api", UR, "--transport", "https"), "--transport https is not a transport of --api"),
        (("--transport", "rsync"), "--transport rsync is not a transport of --api database-v1"),
        (("--env", "A=1"), "--env is sent only with --api upgrade-request"),
        (("--api", UR, "--env", "no-equals"), "--env: expected NAME=VALUE"),
        (("--api", UR, "--format", "sql"), "--format sql is a database-v1 download"),
    ],
)
def test_options_of_the_other_api_are_refused_before_any_call(
    emulator: RunningEmulator, dump: Path, contract_file: Path, extra: tuple[str, ...], words: str
) -> None:
    result = run_cli(run_args(dump, contract_file, *extra), cli_env(emulator))
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert emulator.calls() == []
    assert not dump.with_name(dump.name + ".odoo-upgrade.json").exists()


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
    emulator: RunningEmulator, dump: Path, contract_file: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    result = run_cli(run_args(dump, contract_file, *extra), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    assert "continuing request" in result.stderr
    return result


@pytest.mark.parametrize(
    ("api", "transport", "kill_at"),
    [
        (V1, "https", {"created"}),
        (V1, "sftp", {"created"}),
        (V1, "https", {"uploaded", "processing"}),
        (UR, "rsync", {"created"}),
        (UR, "rsync", {"uploaded", "processing"}),
    ],
)
def test_rerun_after_kill_continues_the_same_request(
    make_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    api: str,
    transport: str,
    kill_at: set[str],
) -> None:
    # Slow answers and a slow upgrade: the kill lands mid-upload or mid-poll.
    emulator = make_emulator(process_seconds=4, latency=0.3)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=1024 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    args = run_args(dump, contract_file, *API_ARGS[api], "--transport", transport)
    first = start_run(args, cli_env(emulator))
    try:
        wait_for_step(dump, kill_at, first)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL

    rerun_to_success(emulator, dump, contract_file, *API_ARGS[api])
    assert len(creates(emulator, api)) == 1
    assert_upgraded_output(emulator, dump, state_of(dump)["request_id"], api)


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


def test_a_set_published_before_the_state_file_said_so_is_adopted_not_downloaded_again(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    args = (*API_ARGS[UR], "--json")
    assert run_cli(run_args(dump, contract_file, *args), cli_env(emulator)).returncode == 0
    # As if the run had died between publishing the set and recording it.
    state_file = dump.with_name(dump.name + ".odoo-upgrade.json")
    state = state_of(dump)
    state["step"] = "done"
    state_file.write_text(json.dumps(state))
    downloads = len(emulator.calls("rsync-download"))
    again = rerun_to_success(emulator, dump, contract_file, *args)
    assert len(emulator.calls("rsync-download")) == downloads
    assert json.loads(again.stdout)["sha256"] == state["download_sha256"]
    assert state_of(dump)["step"] == "downloaded"
    # A set that does not match its SHA256SUMS is not taken for the download.
    (dump.with_name("upgraded_acme") / "upgrade-report.html").write_text("edited")
    state["step"] = "done"
    state_file.write_text(json.dumps(state))
    refused = run_cli(run_args(dump, contract_file, *args), cli_env(emulator))
    assert refused.returncode == 2 and "never overwritten" in refused.stderr


def test_state_file_of_another_api_is_refused(
    emulator: RunningEmulator, dump: Path, contract_file: Path
) -> None:
    assert run_cli(run_args(dump, contract_file), cli_env(emulator)).returncode == 0
    result = run_cli(run_args(dump, contract_file, "--api", UR), cli_env(emulator))
    assert result.returncode == 2
    assert "api 'database-v1' (given 'upgrade-request')" in result.stderr
    assert len(emulator.calls("create")) == 1 and creates(emulator, UR) == []


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
    summary = json.loads(result.stdout)
    assert summary["transport"] == summary["download_transport"] == "sftp"
    assert emulator.calls("upload") == []
    request_id = summary["request_id"]
    assert sftp_gets(emulator, request_id) == [
        ("upgraded_acme.dump", len(emulator.upgraded_bytes(request_id)))
    ]
    assert_upgraded_output(emulator, dump, request_id)


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_a_foreign_part_beside_the_output_is_never_spliced_into_it(
    emulator: RunningEmulator, dump: Path, contract_file: Path, transport: str
) -> None:
    # Left by an interrupted download of another request to the same output.
    foreign = dump.with_name(".upgraded_acme.dump.part")
    foreign.write_bytes(b"F" * 4096)
    result = run_cli(run_args(dump, contract_file, "--transport", transport), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    assert_upgraded_output(emulator, dump, state_of(dump)["request_id"])
    assert not foreign.exists()


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
    request_id = state_of(dump)["request_id"]
    # The faults did hit both ways, on the transport asked for.
    cuts = {
        "https": ("upload of request {} cut after", "download of request {} cut after"),
        "sftp": ("sftp sftp-shared of request {} cut", "sftp sftp-upgraded of request {} cut"),
    }
    for cut in cuts[transport]:
        assert cut.format(request_id) in emulator.log()
    assert emulator.original_path(request_id).read_bytes() == dump.read_bytes()
    assert_upgraded_output(emulator, dump, request_id)


def test_sftp_download_cut_midway_resumes_where_it_stopped(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    # Past the bytes a cut OpenSSH transfer may leave unsettled (2 MiB) plus what was in
    # flight when the link was cut (under load, cut after 3 MiB, nothing settled once), so a
    # resume shows.
    emulator = make_emulator(process_seconds=1, drop_after_bytes=5 * MIB)
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=8 * MIB)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    result = run_cli(run_args(dump, contract_file, "--transport", "sftp"), cli_env(emulator))
    assert result.returncode == 0, result.stderr
    request_id = state_of(dump)["request_id"]
    assert_upgraded_output(emulator, dump, request_id)
    size = len(emulator.upgraded_bytes(request_id))
    gets = [c for c in emulator.calls("sftp-get") if c["request"] == request_id]
    assert gets[0]["from"] == 0 and gets[0]["bytes"] < size, gets  # cut
    assert 0 < gets[-1]["from"] == size - gets[-1]["bytes"], gets  # resumed, to the end


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
            request_id = state.get("request_id")  # none while `create` is unanswered
            partial = emulator.original_path(request_id) if request_id else None
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


@pytest.mark.parametrize("api", [V1, UR])
def test_a_run_killed_while_create_was_unanswered_never_sends_a_second_create(
    emulator: RunningEmulator, tmp_path: Path, api: str
) -> None:
    """The platform opened (and bills) the request, the answer never reached the state file:
    a rerun must not open a second one. It refuses (exit 2) saying what to check."""
    dump = write_sample_dump(tmp_path / "acme.dump", "pgdmp", size=64 * 1024)
    contract_file = tmp_path / "contract"
    contract_file.write_text(emulator.contract)
    with PlatformFront(emulator.url) as front:
        front.hold_create()
        env = cli_env(emulator, ODOO_UPGRADE_PLATFORM_URL=front.url)
        first = start_run(run_args(dump, contract_file, *API_ARGS[api]), env)
        try:
            wait_for_step(dump, {"creating"}, first)
            deadline = time.monotonic() + 30
            while not front.creates_seen and time.monotonic() < deadline:
                time.sleep(0.02)
            assert front.creates_seen == 1
        finally:
            first.kill()
            first.communicate()
        front.release()
        deadline = time.monotonic() + 30
        while not creates(emulator, api) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(creates(emulator, api)) == 1  # the platform acted: a request exists

        again = run_cli(run_args(dump, contract_file, *API_ARGS[api]), env)

    assert again.returncode == 2, again.stderr
    assert "create" in again.stderr and "may hold a request" in again.stderr
    assert str(dump.with_name(dump.name + ".odoo-upgrade.json")) in again.stderr
    assert emulator.contract not in again.stderr + again.stdout
    assert len(creates(emulator, api)) == 1
