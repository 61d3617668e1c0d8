"""Dump a live Odoo-like database and restore it into a new one, on a real PostgreSQL."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from odoo_upgrade.database import (
    ConnectionSettings,
    DumpDestinationExists,
    DumpFormat,
    RestoreTargetExists,
    RestoreVerificationFailed,
    build_filestore,
    check_dump_destination,
    check_restore_target,
    check_source,
    dump_database,
    restore_database,
    temporary_database_name,
)
from tests.harness.postgres import PostgresServer
from tests.support.emulator import RunningEmulator
from tests.support.odoo_db import (
    OdooDatabase,
    attachment_files,
    filestore_checksums,
    module_versions,
    odoo_zip_backup,
    pg_dump_file,
    table_row_counts,
)

pytest_plugins = ["tests.support.postgres_fixtures"]


def upgrade_on_emulator(dump: Path, target: str, destination: Path) -> Path:
    """Upload `dump` to a real emulator process, process it, fetch the upgraded archive."""
    with RunningEmulator(destination.parent / "emulator", process_seconds=0) as emulator:
        request = emulator.create_request(target=target, filename=dump.name)
        assert emulator.upload(request["id"], request["key"], dump.read_bytes())["failures"] == []
        emulator.api("process", request=request["id"], key=request["key"])
        final = emulator.wait_for_state(request["id"], request["key"], "done", "invalid")
        assert final["state"] == "done", final["customer_message"]
        destination.write_bytes(emulator.upgraded_bytes(request["id"]))
    return destination


def test_dump_upgrade_restore_gives_every_table_base_at_target_and_every_file(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    source_counts = table_row_counts(postgres, odoo_database.name)
    source_files = filestore_checksums(odoo_database.filestore)
    dump = tmp_path / "acme.dump"

    dumped = dump_database(app_settings, odoo_database.name, dump)
    archive = upgrade_on_emulator(dump, "18.0", tmp_path / "upgraded.zip")
    target = f"{odoo_database.name}_18"
    restored = restore_database(app_settings, archive, target, target="18.0", token="uid-1")
    filestore = build_filestore(
        odoo_database.filestore, tmp_path / "filestore" / target, upgraded=archive, token="uid-1"
    )

    assert restored.database == target and restored.base_version == "18.0.1.3"
    assert restored.status() == {"database": target, "baseVersion": "18.0.1.3"}
    counts = table_row_counts(postgres, target)
    # The upgrade adds one attachment (its report); every other table is as the source's.
    assert counts == {**source_counts, "ir_attachment": source_counts["ir_attachment"] + 1}
    versions = module_versions(postgres, target)
    assert all(v.startswith("18.0.") for s, v in versions.values() if s == "installed")
    for fname in attachment_files(postgres, target):
        assert (filestore.path / fname).is_file(), fname
    assert filestore.files == odoo_database.attachments + 1
    assert filestore.status() == {"filestoreFiles": odoo_database.attachments + 1}
    # The source database and filestore are as they were; the dumps stay.
    assert table_row_counts(postgres, odoo_database.name) == source_counts
    assert filestore_checksums(odoo_database.filestore) == source_files
    assert dump.stat().st_size == dumped.bytes


def test_dump_is_custom_format_with_checksum_sidecar_and_server_version(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    seen: list[tuple[int, int | None]] = []
    dump = tmp_path / "dumps" / "acme.dump"
    dump.parent.mkdir()

    result = dump_database(
        app_settings, odoo_database.name, dump, progress=lambda d, t: seen.append((d, t))
    )

    data = dump.read_bytes()
    assert data.startswith(b"PGDMP")
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.bytes == len(data)
    sidecar = dump.with_name("acme.dump.sha256").read_text()
    assert sidecar == f"{result.sha256}  acme.dump\n"
    server_version = postgres.rows("SHOW server_version")[0][0].split()[0]
    assert result.server_version == server_version
    assert result.status() == {
        "bytes": len(data),
        "sha256": result.sha256,
        "serverVersion": server_version,
    }
    assert sorted(p.name for p in dump.parent.iterdir()) == ["acme.dump", "acme.dump.sha256"]
    assert seen and seen[-1][0] == len(data) and all(t and t > 0 for _, t in seen)
    listed = subprocess.run(
        [str(Path(postgres.bin_dir) / "pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "TABLE DATA public res_partner" in listed and " OWNER TO " not in listed


def test_dump_never_overwrites_an_existing_file(
    app_settings: ConnectionSettings, odoo_database: OdooDatabase, tmp_path: Path
) -> None:
    existing = tmp_path / "acme.dump"
    existing.write_bytes(b"yesterday's dump")

    with pytest.raises(DumpDestinationExists) as raised:
        dump_database(app_settings, odoo_database.name, existing)

    assert raised.value.reason == "DumpDestinationExists" and raised.value.field == "source.path"
    assert existing.read_bytes() == b"yesterday's dump"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["acme.dump"]


def test_a_dump_published_but_not_recorded_is_recognised_by_its_resource_only(
    app_settings: ConnectionSettings, odoo_database: OdooDatabase, tmp_path: Path
) -> None:
    # A dump Job killed between publishing the file and writing its result leaves the file:
    # the next attempt of the same resource (its uid as token) finds its own dump; another
    # resource, or a file without a receipt, is refused as before.
    dump = tmp_path / "acme.dump"
    first = dump_database(app_settings, odoo_database.name, dump, token="uid-7")
    written = dump.stat().st_mtime_ns

    check_dump_destination(dump, token="uid-7")
    again = dump_database(app_settings, odoo_database.name, dump, token="uid-7")

    assert (again.bytes, again.sha256, again.server_version) == (
        first.bytes,
        first.sha256,
        first.server_version,
    )
    assert dump.stat().st_mtime_ns == written  # adopted, not dumped again
    with pytest.raises(DumpDestinationExists):
        check_dump_destination(dump, token="uid-8")
    with pytest.raises(DumpDestinationExists):
        dump_database(app_settings, odoo_database.name, dump, token="uid-8")
    copied = tmp_path / "copied" / "acme.dump"
    copied.parent.mkdir()
    copied.write_bytes(dump.read_bytes())  # the same bytes, but no receipt of this resource
    with pytest.raises(DumpDestinationExists):
        dump_database(app_settings, odoo_database.name, copied, token="uid-7")
    assert dump.stat().st_mtime_ns == written and copied.read_bytes() == dump.read_bytes()


@pytest.mark.parametrize("fmt", ["custom", "directory", "plain", "gzip", "zip"])
def test_restore_each_dump_format_into_a_new_database(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
    fmt: str,
) -> None:
    if fmt == "zip":
        dump = odoo_zip_backup(postgres, odoo_database, tmp_path / "backup.zip")
    else:
        dump = pg_dump_file(postgres, odoo_database.name, tmp_path / f"acme.{fmt}", fmt)
    target = f"{odoo_database.name}_{fmt}"
    progress: list[tuple[int, int | None, str]] = []

    result = restore_database(
        app_settings,
        dump,
        target,
        target="16.0",
        token="t",
        jobs=2,
        progress=lambda *p: progress.append(p),
    )

    expected = {
        "custom": DumpFormat.CUSTOM,
        "directory": DumpFormat.DIRECTORY,
        "plain": DumpFormat.SQL,
        "gzip": DumpFormat.SQL_GZIP,
        "zip": DumpFormat.ODOO_ZIP,
    }[fmt]
    assert result.format is expected and result.base_version == "16.0.1.3" and not result.adopted
    assert table_row_counts(postgres, target) == table_row_counts(postgres, odoo_database.name)
    owner = postgres.rows(
        f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{target}'"  # noqa: S608
    )
    assert owner == [[postgres.app_user]]
    assert progress and progress[-1][0] == progress[-1][1]  # finished at its total
    assert postgres.databases().count(target) == 1
    assert not [d for d in postgres.databases() if "__restoring_" in d]


def test_restore_refuses_an_existing_target_and_touches_nothing(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    dump = pg_dump_file(postgres, odoo_database.name, tmp_path / "acme.dump")
    target = f"{odoo_database.name}_prod"
    postgres.psql(f'CREATE DATABASE "{target}"')
    postgres.psql("CREATE TABLE keep (id int); INSERT INTO keep VALUES (1), (2);", target)

    with pytest.raises(RestoreTargetExists) as pre:
        check_restore_target(app_settings, target, token="t")
    with pytest.raises(RestoreTargetExists) as raised:
        restore_database(app_settings, dump, target, target="16.0", token="t")

    for error in (pre.value, raised.value):
        assert error.reason == "RestoreTargetExists" and error.field == "restore.database.name"
        assert target in error.message and not error.transient
    assert table_row_counts(postgres, target) == {"keep": 2}
    assert temporary_database_name(target, "t") not in postgres.databases()


def test_restore_of_a_dump_not_at_the_target_series_creates_nothing(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    dump = pg_dump_file(postgres, odoo_database.name, tmp_path / "acme.dump")
    target = f"{odoo_database.name}_18"

    with pytest.raises(RestoreVerificationFailed) as raised:
        restore_database(app_settings, dump, target, target="18.0", token="t")

    assert raised.value.reason == "RestoreVerificationFailed"
    assert "16.0.1.3" in raised.value.message and "18.0" in raised.value.message
    assert not [d for d in postgres.databases() if d.startswith(target)]


def test_a_rerun_after_success_reports_the_restore_it_made(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    dump = pg_dump_file(postgres, odoo_database.name, tmp_path / "acme.dump")
    target = f"{odoo_database.name}_copy"
    first = restore_database(app_settings, dump, target, target="16.0", token="uid-7")
    postgres.psql("INSERT INTO res_partner (name) VALUES ('written after the restore')", target)

    check = check_restore_target(app_settings, target, token="uid-7")
    again = restore_database(app_settings, dump, target, target="16.0", token="uid-7")

    assert check.already_restored and again.adopted and not first.adopted
    assert again.base_version == first.base_version
    # Adopting reads, never restores again: the row written afterwards is still there.
    assert postgres.rows("SELECT count(*) FROM res_partner WHERE name LIKE 'written%'", target)[
        0
    ] == ["1"]


def test_source_check_reports_versions_and_size(
    postgres: PostgresServer, app_settings: ConnectionSettings, odoo_database: OdooDatabase
) -> None:
    checked = check_source(app_settings, odoo_database.name)

    assert checked.server_version == postgres.rows("SHOW server_version")[0][0].split()[0]
    assert checked.client_version.split(".")[0] >= checked.server_version.split(".")[0]
    assert checked.size_bytes > 0
