"""Crashes mid-dump and mid-restore: never a half database under the final name, nor a half
dump under the final file name; a rerun completes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from odoo_upgrade.database import (
    ConnectionSettings,
    DumpFailed,
    RestoreFailed,
    dump_database,
    restore_database,
    temporary_database_name,
)
from tests.harness.postgres import PostgresServer
from tests.support.odoo_db import OdooDatabase, create_odoo_database, pg_dump_file, table_row_counts

pytest_plugins = ["tests.support.postgres_fixtures"]

REPO = Path(__file__).resolve().parents[2]
BIG_PARTNERS = 400_000  # enough rows that a restore runs for a while


@pytest.fixture(scope="module")
def big_database(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OdooDatabase]:
    root = tmp_path_factory.mktemp("big")
    database = create_odoo_database(
        postgres, "crashdb", root / "filestore", partners=BIG_PARTNERS, attachments=50
    )
    yield database
    for name in postgres.databases():
        if name.startswith("crashdb"):
            postgres.drop_database(name)


def processes_with(*needles: str) -> list[int]:
    """Pids whose command line holds every needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


def wait_for_process(*needles: str, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = processes_with(*needles)
        if pids:
            return pids[0]
        time.sleep(0.02)
    raise AssertionError(f"no process with {needles} within {timeout}s")


def kill_when_running(*needles: str, after: float = 0.3) -> threading.Thread:
    """SIGKILL the first process matching `needles` once it has run `after` seconds."""

    def kill() -> None:
        pid = wait_for_process(*needles)
        time.sleep(after)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


CHILD = """
import sys
from pathlib import Path
from odoo_upgrade.database import dump_database, restore_database, settings_from_secret_dir
settings = settings_from_secret_dir(sys.argv[2])
if sys.argv[1] == "restore":
    restore_database(settings, Path(sys.argv[3]), sys.argv[4], target="16.0", token=sys.argv[5])
else:
    dump_database(settings, sys.argv[3], Path(sys.argv[4]))
"""


def start_child(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """The library in a process of its own; its temp files (the password file a SIGKILL
    leaves behind) stay under the test's tmp_path."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "operator"), TMPDIR=str(tmp_path / "tmp"))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], env=env, start_new_session=True
    )  # fmt: skip


def test_killed_pg_restore_leaves_no_database_and_a_rerun_completes(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    big_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    dump = pg_dump_file(postgres, big_database.name, tmp_path / "big.dump")
    target = "crashdb_killed_tool"
    temporary = temporary_database_name(target, "uid-1")
    killer = kill_when_running("pg_restore", temporary)

    with pytest.raises(RestoreFailed) as raised:
        restore_database(app_settings, dump, target, target="16.0", token="uid-1", jobs=1)
    killer.join()

    assert raised.value.reason == "RestoreFailed" and "pg_restore" in raised.value.message
    assert target not in postgres.databases() and temporary not in postgres.databases()
    result = restore_database(app_settings, dump, target, target="16.0", token="uid-1")
    assert not result.adopted
    assert table_row_counts(postgres, target) == table_row_counts(postgres, big_database.name)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_killed_restoring_process_leaves_no_database_under_the_final_name(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    big_database: OdooDatabase,
    tmp_path: Path,
    fmt: str,
) -> None:
    dump = pg_dump_file(postgres, big_database.name, tmp_path / f"big.{fmt}", fmt)
    secret = postgres.write_secret_dir(tmp_path / "secret")
    target = f"crashdb_killed_{fmt}"
    temporary = temporary_database_name(target, "uid-2")
    tool = "pg_restore" if fmt == "custom" else "psql"
    child = start_child(tmp_path, "restore", str(secret), str(dump), target, "uid-2")
    try:
        wait_for_process(tool, temporary)
        time.sleep(0.3)
        child.kill()  # only our process: its pg_restore/psql is orphaned, as in a killed pod
        child.wait()

        assert target not in postgres.databases() and temporary in postgres.databases()
        # The rerun drops the leftover (ending the orphan's sessions) and starts over.
        result = restore_database(app_settings, dump, target, target="16.0", token="uid-2")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the orphan, if it outlived the rerun
    assert result.database == target and not result.adopted
    assert table_row_counts(postgres, target) == table_row_counts(postgres, big_database.name)
    assert temporary not in postgres.databases()


def test_killed_pg_dump_leaves_no_file_and_a_rerun_completes(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    big_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    dump = tmp_path / "big.dump"
    killer = kill_when_running("pg_dump", "--format=custom", big_database.name, after=0.1)

    with pytest.raises(DumpFailed) as raised:
        dump_database(app_settings, big_database.name, dump)
    killer.join()

    assert raised.value.field == "source.database.name"
    assert sorted(tmp_path.iterdir()) == []
    result = dump_database(app_settings, big_database.name, dump)
    assert dump.stat().st_size == result.bytes > 0


def test_killed_dumping_process_leaves_only_a_part_and_a_rerun_replaces_it(
    postgres: PostgresServer, big_database: OdooDatabase, tmp_path: Path
) -> None:
    secret = postgres.write_secret_dir(tmp_path / "secret")
    out = tmp_path / "out"
    out.mkdir()
    dump = out / "big.dump"
    child = start_child(tmp_path, "dump", str(secret), big_database.name, str(dump))
    wait_for_process("pg_dump", "--format=custom", big_database.name)
    deadline = time.monotonic() + 30
    while not (out / ".big.dump.part").exists() or not (out / ".big.dump.part").stat().st_size:
        assert time.monotonic() < deadline, "the dump never started writing"
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()

    assert not dump.exists()
    settings = ConnectionSettings(postgres.host, postgres.port, "odoo", postgres.app_password)
    result = dump_database(settings, big_database.name, dump)
    assert sorted(p.name for p in out.iterdir()) == ["big.dump", "big.dump.sha256"]
    listed = subprocess.run(
        [str(Path(postgres.bin_dir) / "pg_restore"), "--list", str(dump)],
        capture_output=True,
        check=True,
    )
    assert b"TABLE DATA public res_partner" in listed.stdout and result.bytes > 0
