"""`odoo-upgrade run --database NAME --restore-name NAME --filestore DIR`: from a live database to
a restored, verified upgraded one, as a user runs it (a subprocess) against the emulator and a
real PostgreSQL server, with libpq's environment and the password in PGPASSWORD only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer
from tests.integration.test_cli_run import (
    API_ARGS,
    CLI,
    UR,
    V1,
    cli_env,
    creates,
    run_cli,
    start_run,
    wait_for_step,
)
from tests.support.emulator import RunningEmulator
from tests.support.odoo_db import (
    OdooDatabase,
    attachment_files,
    filestore_checksums,
    module_versions,
    table_row_counts,
)

pytest_plugins = ["tests.support.postgres_fixtures"]


def pg_env(emulator: RunningEmulator, postgres: PostgresServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env(emulator).items() if not k.startswith("PG")}
    env.update(
        PGHOST=postgres.host,
        PGPORT=str(postgres.port),
        PGUSER=postgres.app_user,
        PGPASSWORD=postgres.app_password,
    )
    env.update(extra)
    return env


def database_args(
    database: OdooDatabase, workdir: Path, contract_file: Path, *extra: str
) -> list[str]:
    return [
        *CLI, "run",
        "--database", database.name,
        "--dump", str(workdir / "acme.dump"),
        "--target", "18.0",
        "--email", "ops@acme.example",
        "--contract-file", str(contract_file),
        "--restore-name", f"{database.name}_18",
        "--filestore", str(database.filestore),
        "--poll-interval", "0.2",
        "--no-progress",
        "--json",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def emulator(tmp_path: Path, postgres: PostgresServer) -> Iterator[RunningEmulator]:
    """An emulator with a scratch PostgreSQL server: the upgrade/request API's upgraded set
    holds a real directory-format dump (v1's archive is restorable without one)."""
    with RunningEmulator(
        tmp_path / "emulator", process_seconds=1, postgres_url=postgres.url()
    ) as running:
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def contract_file(tmp_path: Path, emulator: RunningEmulator) -> Path:
    path = tmp_path / "contract"
    path.write_text(emulator.contract + "\n")
    return path


def state(workdir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((workdir / "acme.dump.odoo-upgrade.json").read_text())
    return loaded


@pytest.mark.parametrize("api", [V1, UR])
def test_run_dumps_upgrades_restores_and_verifies_a_live_database(
    emulator: RunningEmulator,
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    workdir: Path,
    contract_file: Path,
    api: str,
) -> None:
    source_counts = table_row_counts(postgres, odoo_database.name)
    source_files = filestore_checksums(odoo_database.filestore)
    target = f"{odoo_database.name}_18"
    args = database_args(odoo_database, workdir, contract_file, *API_ARGS[api])

    result = run_cli(args, pg_env(emulator, postgres))

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["database"]["dumped"] == odoo_database.name
    assert summary["database"]["restored"] == target
    assert summary["database"]["base_version"].startswith("18.0.")
    assert summary["database"]["filestore_files"] == odoo_database.attachments + 1
    assert len(creates(emulator, api)) == 1
    assert state(workdir)["step"] == "restored"
    counts = table_row_counts(postgres, target)
    assert counts == {**source_counts, "ir_attachment": source_counts["ir_attachment"] + 1}
    installed = [v for s, v in module_versions(postgres, target).values() if s == "installed"]
    assert all(v.startswith("18.0.") for v in installed)
    new_filestore = odoo_database.filestore.parent / target
    assert all((new_filestore / f).is_file() for f in attachment_files(postgres, target))
    assert table_row_counts(postgres, odoo_database.name) == source_counts
    assert filestore_checksums(odoo_database.filestore) == source_files
    assert (workdir / "acme.dump").is_file()
    if api == V1:
        assert (workdir / "upgraded_acme.dump").is_file()
    else:  # the set: its directory dump restored, its filestore/ merged, not the dump's files
        upgraded_set = workdir / "upgraded_acme"
        assert (upgraded_set / "upgraded.dump" / "toc.dat").is_file()
        assert not list(new_filestore.rglob("toc.dat"))
    assert postgres.app_password not in result.stdout + result.stderr
    assert postgres.app_password not in (workdir / "acme.dump.odoo-upgrade.json").read_text()

    rerun = run_cli(args, pg_env(emulator, postgres))
    assert rerun.returncode == 0, rerun.stderr  # finished: nothing done again
    assert len(creates(emulator, api)) == 1


def dumped_then_refused_at_create(
    odoo_database: OdooDatabase, workdir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """A first run that dumps, then is refused at `create` (a wrong contract): the dump is
    made and recorded, no request exists."""
    wrong = tmp_path / "wrong-contract"
    wrong.write_text("M000000-wrong\n")
    first = run_cli(database_args(odoo_database, workdir, wrong), env)
    assert first.returncode == 1, first.stderr
    assert state(workdir)["step"] == "dumped" and "request_id" not in state(workdir)


def test_a_run_stopped_after_the_dump_continues_with_that_dump_and_one_request(
    emulator: RunningEmulator,
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    workdir: Path,
    contract_file: Path,
    tmp_path: Path,
) -> None:
    env = pg_env(emulator, postgres)
    dumped_then_refused_at_create(odoo_database, workdir, tmp_path, env)
    dump = workdir / "acme.dump"
    dumped = dump.stat()

    second = run_cli(database_args(odoo_database, workdir, contract_file), env)

    assert second.returncode == 0, second.stderr
    assert "continuing after the dump" in second.stderr
    assert dump.stat().st_mtime_ns == dumped.st_mtime_ns  # not dumped again
    assert [c["ok"] for c in emulator.calls("create")] == [False, True]
    assert state(workdir)["dump_sha256"] == json.loads(second.stdout)["database"]["dump_sha256"]


def killed_before_the_dump_record(tmp_path: Path) -> str:
    """A PYTHONPATH entry whose sitecustomize makes the CLI die (as SIGKILL would: no cleanup)
    the moment it would record its dump in the state file: after the dump's rename."""
    hook = tmp_path / "kill-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "import odoo_upgrade.runflow as runflow\n"
        "def killed(*args, **kwargs):\n"
        "    os._exit(137)\n"
        "runflow.save_dump_record = killed\n"
    )
    return str(hook)


def test_a_run_killed_between_its_dump_and_its_record_recognises_its_own_dump(
    emulator: RunningEmulator,
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    workdir: Path,
    contract_file: Path,
    tmp_path: Path,
) -> None:
    # Killed after the dump's rename but before the state file recorded it: the dump and no
    # state file are left. The rerun (same state file, same source) recognises its own dump
    # by the receipt beside it; a run with another state file is refused (as a file without a
    # receipt is: tests/integration/test_database_dump_restore.py).
    env = pg_env(emulator, postgres)
    killed = run_cli(
        database_args(odoo_database, workdir, contract_file),
        {**env, "PYTHONPATH": killed_before_the_dump_record(tmp_path)},
    )
    assert killed.returncode == 137, killed.stderr
    dump = workdir / "acme.dump"
    dumped = dump.stat()
    assert not (workdir / "acme.dump.odoo-upgrade.json").exists()
    assert emulator.calls("create") == []

    other = run_cli(
        database_args(odoo_database, workdir, contract_file, "--state-file", str(tmp_path / "x")),
        env,
    )
    assert other.returncode == 2 and "--dump" in other.stderr and "exists" in other.stderr
    again = run_cli(database_args(odoo_database, workdir, contract_file), env)

    assert again.returncode == 0, again.stderr
    assert dump.stat().st_mtime_ns == dumped.st_mtime_ns  # not dumped again
    assert state(workdir)["dump_sha256"] == json.loads(again.stdout)["database"]["dump_sha256"]
    assert len(emulator.calls("create")) == 1


def test_a_recorded_dump_is_not_adopted_again_once_its_state_file_is_gone(
    emulator: RunningEmulator,
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    workdir: Path,
    contract_file: Path,
    tmp_path: Path,
) -> None:
    # The receipt covers only the kill window between the dump's rename and its record: a
    # user who removes the state file to start over meets the old dump refused, as before,
    # instead of a days-old dump uploaded in silence.
    env = pg_env(emulator, postgres)
    dumped_then_refused_at_create(odoo_database, workdir, tmp_path, env)
    (workdir / "acme.dump.odoo-upgrade.json").unlink()

    again = run_cli(database_args(odoo_database, workdir, contract_file), env)

    assert again.returncode == 2 and "--dump" in again.stderr and "exists" in again.stderr
    assert [c["ok"] for c in emulator.calls("create")] == [False]


def test_a_second_database_run_at_once_is_refused_and_one_request_is_made(
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    workdir: Path,
    tmp_path: Path,
) -> None:
    # With --database the dump does not exist when the first run starts, so the lock cannot be
    # on it: the run's state file is locked instead, and a second run with the same state file
    # is refused from the start (it would otherwise continue the same dump and `create` again).
    with RunningEmulator(
        tmp_path / "slow-emulator", process_seconds=4, postgres_url=postgres.url()
    ) as emulator:
        contract = tmp_path / "contract-slow"
        contract.write_text(emulator.contract + "\n")
        env = pg_env(emulator, postgres)
        first = start_run(database_args(odoo_database, workdir, contract), env)
        try:
            wait_for_step(workdir / "acme.dump", {"dumped", "created", "uploaded", "processing"},
                          first)  # fmt: skip
            second = run_cli(database_args(odoo_database, workdir, contract), env)
            assert second.returncode == 2, second.stderr
            assert "another odoo-upgrade run is working on" in second.stderr
            first.communicate(timeout=120)
        finally:
            first.kill()
        assert first.returncode == 0
        assert len(emulator.calls("create")) == 1


@pytest.mark.parametrize(
    ("breakage", "flag"),
    [
        ("database not found", "--database"),
        ("wrong password", "--pg-host/--pg-port/--pg-user"),
        ("unreachable", "--pg-host/--pg-port/--pg-user"),
        ("restore target exists", "--restore-name"),
        ("filestore path exists", "--restore-filestore"),
    ],
)
def test_bad_database_input_exits_before_any_dump_or_request_naming_the_flag(
    emulator: RunningEmulator,
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    workdir: Path,
    contract_file: Path,
    breakage: str,
    flag: str,
) -> None:
    env = pg_env(emulator, postgres)
    args = database_args(odoo_database, workdir, contract_file)
    if breakage == "database not found":
        args[args.index("--database") + 1] = "no_such_database"
    elif breakage == "wrong password":
        env["PGPASSWORD"] = "not-the-password-at-all"
    elif breakage == "unreachable":
        env["PGPORT"] = str(free_port())
    elif breakage == "restore target exists":
        postgres.psql(f'CREATE DATABASE "{odoo_database.name}_18"')
    elif breakage == "filestore path exists":
        (odoo_database.filestore.parent / f"{odoo_database.name}_18").mkdir()

    result = run_cli(args, env)

    assert result.returncode == (4 if breakage == "unreachable" else 2), result.stderr
    error = json.loads(result.stdout)
    assert flag in error["error"] and error["reason"]
    assert emulator.calls() == []
    assert not (workdir / "acme.dump").exists()
    assert "not-the-password-at-all" not in result.stdout + result.stderr


def test_filestore_flags_without_a_restore_are_usage_errors(
    emulator: RunningEmulator, workdir: Path
) -> None:
    result = run_cli(
        [*CLI, "run", "--dump", str(workdir / "x.dump"), "--target", "18.0",
         "--filestore", str(workdir)],
        cli_env(emulator),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--filestore needs --restore-name" in result.stderr
