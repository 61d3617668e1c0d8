"""`reconcile` with `spec.source.database` and `spec.restore`, pass after pass, on the in-memory
cluster: the check, dump and restore movers are the real `odoo-upgrade mover` processes against
a real PostgreSQL server (tests/harness/postgres.py) and a real emulator. One test per branch
of the database steps (controller/database_steps.py).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from odoo_upgrade.database import BIN_DIR_ENV, restore_marker, temporary_database_name
from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer
from tests.support.emulator import RunningEmulator
from tests.support.fake_cluster import FakeCluster
from tests.support.odoo_db import (
    OdooDatabase,
    attachment_files,
    create_odoo_database,
    filestore_checksums,
    module_versions,
    table_row_counts,
)
from tests.unit.test_reconcile import DESTINATIONS, NAME, NS, UR, Run, creates_for, spec_for

pytest_plugins = ["tests.support.postgres_fixtures"]

SOURCE = "dumps/acme.dump"
PG_SECRET = "acme-pg-app"


@pytest.fixture(scope="module")
def emulator(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[RunningEmulator]:
    # A scratch server: the upgrade/request API's set holds a real directory-format dump.
    with RunningEmulator(
        tmp_path_factory.mktemp("emulator"), process_seconds=0.3, postgres_url=postgres.url()
    ) as running:
        yield running


@pytest.fixture
def run(tmp_path: Path, emulator: RunningEmulator, allow: Callable[..., None]) -> Run:
    return Run(FakeCluster(tmp_path), emulator)


@pytest.fixture
def allow(emulator: RunningEmulator) -> Iterator[Callable[..., None]]:
    from odoo_upgrade.controller import settings

    settings.configure(
        settings.OperatorSettings(
            allowed_platform_urls=(emulator.url,), mover_retry_base_seconds=0.2
        )
    )
    yield lambda: None
    settings.configure(settings.OperatorSettings())


@dataclass
class Live:
    """The source database (on the real server) and its filestore on the `odoo-data` PVC."""

    database: OdooDatabase
    target: str  # restore.database.name
    data: Path  # the odoo-data volume

    @property
    def new_filestore(self) -> Path:
        return self.data / "filestore" / self.target


@pytest.fixture
def live(run: Run, postgres: PostgresServer, database_name: Callable[[str], str]) -> Iterator[Live]:
    name = database_name("acme")
    data = run.cluster.add_pvc(NS, "odoo-data")
    database = create_odoo_database(
        postgres, name, data / "filestore" / name, partners=500, attachments=40
    )
    yield Live(database, f"{name}_18", data)
    for other in postgres.databases():
        if other.startswith(name):
            postgres.drop_database(other)


def database_spec(run: Run, live: Live, api: str = "database-v1", **changes: Any) -> dict[str, Any]:
    spec = spec_for(
        run.emulator,
        api,
        source={
            "claimName": "backups",
            "path": SOURCE,
            "database": {"name": live.database.name, "connectionSecretRef": {"name": PG_SECRET}},
        },
        restore={
            "database": {"name": live.target, "connectionSecretRef": {"name": PG_SECRET}},
            "filestore": {
                "claimName": "odoo-data",
                "sourcePath": f"filestore/{live.database.name}",
                "path": f"filestore/{live.target}",
            },
        },
    )
    spec.update(changes)
    return spec


def prepare(
    run: Run,
    postgres: PostgresServer,
    live: Live,
    *,
    secret: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> None:
    """Contract and connection Secrets, the backups PVC (empty: the dump goes there), the
    resource."""
    cluster = run.cluster
    cluster.add_secret(NS, "odoo-contract", {"contract": run.emulator.contract})
    if secret is not None:
        cluster.add_secret(NS, PG_SECRET, secret)
    cluster.add_pvc(NS, "backups")
    cluster.add_upgrade(NS, NAME, spec or database_spec(run, live))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def is_true(type_: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: condition(status, type_).get("status") == "True"


def platform_calls(run: Run) -> int:
    return len(run.emulator.calls())


def job_names(run: Run) -> set[str]:
    return {name for (_, name) in run.cluster.jobs}


def assert_password_only_in_mounted_secrets(run: Run, password: str) -> None:
    """The check and dump Jobs see the connection Secret as a volume, nothing else secret."""
    for name in (f"{NAME}-check", f"{NAME}-dump"):
        job = run.cluster.jobs[(NS, name)]
        assert password not in repr(job)
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert secrets == {PG_SECRET}  # no request Secret before the request exists
        assert not any("valueFrom" in e for e in container["env"])
        tmp = next(v for v in pod["volumes"] if v["name"] == "private-tmp")
        assert tmp["emptyDir"]["medium"] == "Memory"
        assert {"name": "TMPDIR", "value": "/var/run/odoo-upgrade/tmp"} in container["env"]
    check = run.cluster.jobs[(NS, f"{NAME}-check")]["spec"]["template"]["spec"]
    claims = [v for v in check["volumes"] if "persistentVolumeClaim" in v]
    assert claims and all(v["persistentVolumeClaim"]["readOnly"] for v in claims)


# -- the whole flow -------------------------------------------------------------------------


async def test_a_live_database_is_checked_dumped_before_create_upgraded_and_restored(
    run: Run, postgres: PostgresServer, live: Live
) -> None:
    source_counts = table_row_counts(postgres, live.database.name)
    source_files = filestore_checksums(live.database.filestore)
    calls_before = platform_calls(run)
    prepare(run, postgres, live, secret=postgres.secret_data())
    # What a restore killed half-way leaves: its temporary database, marked as its own. The
    # restore drops it and starts over.
    uid = run.cluster.upgrades[(NS, NAME)]["metadata"]["uid"]
    leftover = temporary_database_name(live.target, uid)
    postgres.psql(f'CREATE DATABASE "{leftover}"', superuser=False)
    postgres.psql(f"COMMENT ON DATABASE \"{leftover}\" IS '{restore_marker(uid)}'", superuser=False)
    postgres.psql("CREATE TABLE half_restored (x int);", leftover, superuser=False)

    await run.until(is_true("Dumped"))
    assert platform_calls(run) == calls_before  # dumped before anything was asked
    dump = run.cluster.volume(NS, "backups") / SOURCE
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert (
        run.status["dump"]["sha256"] == digest
        and run.status["dump"]["bytes"] == dump.stat().st_size
    )
    assert run.status["dump"]["serverVersion"] == run.status["preflight"]["sourceServerVersion"]
    assert_password_only_in_mounted_secrets(run, postgres.secret_data()["password"])

    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert len(run.emulator.calls("create")) == 1
    assert status["upload"]["sha256"] == digest  # the platform got the dump we made
    order = ["PreflightPassed", "DumpStarted", "Dumped", "RequestCreated", "Uploaded", "Downloaded",
             "RestoreStarted", "Restored", "Succeeded"]  # fmt: skip
    assert [r for r in run.reasons if r in order] == order
    restore = status["restore"]
    assert restore["database"] == live.target and restore["baseVersion"].startswith("18.0.")
    assert restore["filestoreFiles"] == live.database.attachments + 1
    assert is_true("Restored")(status) and is_true("Ready")(status)
    assert live.target in condition(status, "Ready")["message"]
    # Every table and row of the source, plus the attachment the upgrade added.
    counts = table_row_counts(postgres, live.target)
    assert counts == {**source_counts, "ir_attachment": source_counts["ir_attachment"] + 1}
    installed = [v for s, v in module_versions(postgres, live.target).values() if s == "installed"]
    assert installed and all(v.startswith("18.0.") for v in installed)
    for fname in attachment_files(postgres, live.target):
        assert (live.new_filestore / fname).is_file(), fname
    # The source database and filestore are as they were; the dumps stay on the volume.
    assert table_row_counts(postgres, live.database.name) == source_counts
    assert filestore_checksums(live.database.filestore) == source_files
    assert dump.is_file() and (dump.parent / "acme.dump.sha256").is_file()
    assert (run.cluster.volume(NS, "backups") / "upgraded/acme-18.dump").is_file()
    assert not [d for d in postgres.databases() if "__restoring_" in d]
    assert "half_restored" not in counts
    assert postgres.secret_data()["password"] not in repr(status) + repr(run.events)


async def test_the_upgrade_request_set_is_restored_with_its_filestore_merged(
    run: Run, postgres: PostgresServer, live: Live
) -> None:
    """upgrade/request delivers a directory: the restore Job finds the directory-format dump
    inside it and merges the set's `filestore/` (never the dump's own files) over the copy."""
    source_counts = table_row_counts(postgres, live.database.name)
    prepare(run, postgres, live, secret=postgres.secret_data(), spec=database_spec(run, live, UR))

    status = await run.to_the_end()

    assert status["phase"] == "Succeeded", status
    assert creates_for(run.emulator, UR) == 1
    upgraded_set = run.cluster.volume(NS, "backups") / DESTINATIONS[UR]
    assert status["download"]["path"] == f"{DESTINATIONS[UR]}/upgraded.dump"
    assert (upgraded_set / "upgraded.dump" / "toc.dat").is_file()
    assert status["restore"]["baseVersion"].startswith("18.0.")
    assert status["restore"]["filestoreFiles"] == live.database.attachments + 1
    counts = table_row_counts(postgres, live.target)
    assert counts == {**source_counts, "ir_attachment": source_counts["ir_attachment"] + 1}
    for fname in attachment_files(postgres, live.target):
        assert (live.new_filestore / fname).is_file(), fname
    assert not list(live.new_filestore.rglob("toc.dat"))


# auto: the operator made the dump, so it knows its size and asks for SFTP access only when
# auto will use it (above the threshold); a file it did not make gets access in case.
AUTO_UPLOADS: dict[str, tuple[dict[str, Any], str]] = {
    "below-threshold": ({}, "https"),
    "above-threshold": ({"thresholdBytes": 1024}, "sftp"),
}


@pytest.mark.parametrize("case", AUTO_UPLOADS, ids=list(AUTO_UPLOADS))
async def test_auto_asks_for_sftp_access_only_when_the_dump_it_made_is_above_the_threshold(
    run: Run, postgres: PostgresServer, live: Live, case: str
) -> None:
    sftp, expected = AUTO_UPLOADS[case]
    spec = database_spec(run, live, transport="auto", sftp=sftp)
    prepare(run, postgres, live, secret=postgres.secret_data(), spec=spec)
    await run.until(is_true("Uploaded"))
    request_id = run.status["requestId"]
    granted = [c for c in run.emulator.calls("request_sftp_access") if c["request"] == request_id]
    assert len(granted) == (1 if expected == "sftp" else 0)
    assert run.status["dump"]["bytes"] > 1024
    assert run.status["upload"]["transport"] == expected
    secret = run.cluster.secret_values(NS, f"{NAME}-request")
    assert ("sftp-access" in secret) == (expected == "sftp")


# -- pre-flight: each failure names the field, nothing dumped, no platform call -------------


@pytest.mark.parametrize(
    ("breakage", "reason", "field"),
    [
        ("database not found", "DatabaseNotFound", "source.database.name"),
        ("wrong password", "DatabaseAuthenticationFailed", "source.database.connectionSecretRef"),
        ("unreachable", "DatabaseUnreachable", "source.database.connectionSecretRef"),
        ("key missing", "DatabaseSecretKeyMissing", "source.database.connectionSecretRef"),
        ("restore target exists", "RestoreTargetExists", "restore.database.name"),
        ("filestore source missing", "FilestoreSourceNotFound", "restore.filestore.sourcePath"),
        ("filestore path exists", "FilestoreDestinationExists", "restore.filestore.path"),
    ],
)
async def test_a_failing_pre_flight_check_waits_naming_the_field_and_calls_no_platform(
    run: Run, postgres: PostgresServer, live: Live, breakage: str, reason: str, field: str
) -> None:
    secret = postgres.secret_data()
    spec = database_spec(run, live)
    if breakage == "database not found":
        spec["source"]["database"]["name"] = "no_such_database"
    elif breakage == "wrong password":
        secret["password"] = "not-the-password-" + "x" * 8
    elif breakage == "unreachable":
        secret["port"] = str(free_port())
    elif breakage == "key missing":
        del secret["password"]
    elif breakage == "restore target exists":
        postgres.psql(f'CREATE DATABASE "{live.target}"')
    elif breakage == "filestore source missing":
        spec["restore"]["filestore"]["sourcePath"] = "filestore/nowhere"
    elif breakage == "filestore path exists":
        live.new_filestore.mkdir(parents=True)
    calls_before = platform_calls(run)
    prepare(run, postgres, live, secret=secret, spec=spec)

    for _ in range(2):  # the check Job, then its result
        await run.step()

    status = run.status
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason), status
    assert field in ready["message"]
    assert status["phase"] == "Pending" and "requestId" not in status
    assert platform_calls(run) == calls_before
    assert f"{NAME}-dump" not in job_names(run)
    assert not (run.cluster.volume(NS, "backups") / SOURCE).exists()
    assert not postgres.database_exists(live.target) or breakage == "restore target exists"
    assert "not-the-password" not in repr(status) + repr(run.events)


async def test_client_tools_older_than_the_server_wait_naming_the_setting(
    run: Run, postgres: PostgresServer, live: Live, tmp_path: Path, monkeypatch: Any
) -> None:
    old = tmp_path / "old-client"
    old.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        script = old / tool
        script.write_text(
            f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{tool} (PostgreSQL) 12.22"; '
            f'exit 0; fi\nexec {Path(postgres.bin_dir) / tool} "$@"\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(BIN_DIR_ENV, str(old))  # what the mover processes run with
    calls_before = platform_calls(run)
    prepare(run, postgres, live, secret=postgres.secret_data())
    for _ in range(3):
        await run.step()
    ready = condition(run.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ClientTooOld")
    assert "12.22" in ready["message"] and "--database-image" in ready["message"]
    assert platform_calls(run) == calls_before and f"{NAME}-dump" not in job_names(run)


async def test_a_missing_connection_secret_is_waited_for_then_the_flow_goes_on(
    run: Run, postgres: PostgresServer, live: Live
) -> None:
    prepare(run, postgres, live, secret=None)
    for _ in range(2):
        await run.step()
    ready = condition(run.status, "Ready")
    assert ready["reason"] == "DatabaseSecretNotFound" and PG_SECRET in ready["message"]
    assert "source.database.connectionSecretRef" in ready["message"]
    assert not run.cluster.jobs  # the operator looked itself: no Job, no platform call
    run.cluster.add_secret(NS, PG_SECRET, postgres.secret_data())
    await run.until(is_true("Dumped"))
    assert condition(run.status, "Ready")["reason"] != "DatabaseSecretNotFound"


async def test_a_database_created_after_a_failed_check_is_dumped_once_it_exists(
    run: Run, postgres: PostgresServer, live: Live
) -> None:
    spec = database_spec(run, live)
    late = f"{live.database.name}_late"
    spec["source"]["database"]["name"] = late
    prepare(run, postgres, live, secret=postgres.secret_data(), spec=spec)
    for _ in range(2):
        await run.step()
    assert condition(run.status, "Ready")["reason"] == "DatabaseNotFound"
    assert (run.status.get("moverRetries") or 0) >= 1
    postgres.psql(f'CREATE DATABASE "{late}" TEMPLATE "{live.database.name}"')
    await run.until(is_true("Dumped"))
    assert run.status.get("moverRetries") is None


# -- restore --------------------------------------------------------------------------------


async def test_a_restore_target_that_appeared_meanwhile_is_never_touched_and_waited_out(
    run: Run, postgres: PostgresServer, live: Live
) -> None:
    prepare(run, postgres, live, secret=postgres.secret_data())
    await run.until(is_true("Downloaded"))
    # Someone creates the target between the pre-flight and the restore.
    postgres.psql(f'CREATE DATABASE "{live.target}"')
    postgres.psql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);", live.target)
    await run.until(lambda s: condition(s, "Restored").get("reason") == "RestoreTargetExists")
    status = run.status
    assert status["phase"] == "Restoring"  # waiting, not failed: the upgrade is paid for
    assert condition(status, "Ready")["reason"] == "RestoreTargetExists"
    assert "restore.database.name" in condition(status, "Ready")["message"]
    assert postgres.rows("SELECT x FROM precious", live.target) == [["42"]]
    assert not [d for d in postgres.databases() if "__restoring_" in d]
    assert not live.new_filestore.exists()
    # Moved away by its owner: the restore goes on.
    postgres.drop_database(live.target)
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert status["restore"]["baseVersion"].startswith("18.0.")
    assert len(run.emulator.calls("create")) >= 1


async def test_an_sql_destination_restores_without_merging_a_filestore(
    run: Run, postgres: PostgresServer, live: Live
) -> None:
    spec = database_spec(run, live)
    spec["destination"]["format"] = "sql"
    del spec["source"]["database"]  # a dump file given by the user, restored afterwards
    dump = run.cluster.add_pvc(NS, "backups") / SOURCE
    dump.parent.mkdir(parents=True)
    from tests.support.odoo_db import pg_dump_file

    pg_dump_file(postgres, live.database.name, dump)
    prepare(run, postgres, live, secret=postgres.secret_data(), spec=spec)
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert "dump" not in status and f"{NAME}-dump" not in job_names(run)
    assert status["restore"]["filestoreFiles"] == live.database.attachments  # nothing merged
    assert os.path.isdir(live.new_filestore)
