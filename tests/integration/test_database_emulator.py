"""The emulator's upgrades of real Odoo-like dumps restore with real PostgreSQL tools."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from odoo_upgrade.database import (
    BIN_DIR_ENV,
    ConnectionSettings,
    DumpFormat,
    build_filestore,
    restore_database,
)
from odoo_upgrade.emulator.dumps import sniff_dump
from odoo_upgrade.emulator.upgrade import (
    POSTGRES_URL_MISSING,
    UpgradeRefused,
    produce_upgraded_directory_dump,
)
from tests.harness.postgres import PostgresServer
from tests.support.emulator import RunningEmulator
from tests.support.odoo_db import (
    OdooDatabase,
    attachment_files,
    create_odoo_database,
    module_versions,
    odoo_zip_backup,
    pg_dump_file,
    read_zip_member,
    table_row_counts,
    zip_members,
)

pytest_plugins = ["tests.support.postgres_fixtures"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with RunningEmulator(tmp_path_factory.mktemp("emulator"), process_seconds=0) as running:
        yield running


def upload_dump(postgres: PostgresServer, database: OdooDatabase, path: Path, kind: str) -> Path:
    if kind == "zip":
        return odoo_zip_backup(postgres, database, path)
    return pg_dump_file(postgres, database.name, path, kind)


def run_upgrade(emulator: RunningEmulator, dump: Path, target: str) -> dict[str, Any]:
    request = emulator.create_request(target=target, filename=dump.name)
    assert emulator.upload(request["id"], request["key"], dump.read_bytes())["failures"] == []
    emulator.api("process", request=request["id"], key=request["key"])
    return emulator.wait_for_state(request["id"], request["key"], "done", "invalid")


@pytest.mark.parametrize("kind", ["custom", "plain", "gzip", "zip"])
def test_each_upload_format_comes_back_restorable_at_the_target_series(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    emulator: RunningEmulator,
    tmp_path: Path,
    kind: str,
) -> None:
    dump = upload_dump(postgres, odoo_database, tmp_path / f"acme.{kind}", kind)

    final = run_upgrade(emulator, dump, "18.0")
    archive = tmp_path / "upgraded.zip"
    archive.write_bytes(emulator.upgraded_bytes(final["id"]))
    target = f"{odoo_database.name}_18"
    restored = restore_database(app_settings, archive, target, target="18.0", token=kind)
    filestore = build_filestore(odoo_database.filestore, tmp_path / target, upgraded=archive)

    assert final["state"] == "done" and final["database_version"] == "16.0"
    assert restored.format is DumpFormat.ODOO_ZIP and restored.base_version == "18.0.1.3"
    members = zip_members(archive)
    assert {"dump.sql", "manifest.json"} <= set(members)
    new_files = [m for m in members if m.startswith("filestore/")]
    assert len(new_files) == 1
    assert json.loads(read_zip_member(archive, "manifest.json"))["version"] == "18.0"
    modules = module_versions(postgres, target)
    assert modules["base"] == ("installed", "18.0.1.3")
    assert all(v.startswith("18.0.") for s, v in modules.values() if s == "installed")
    assert modules["crm"] == ("uninstalled", "")
    source_counts = table_row_counts(postgres, odoo_database.name)
    counts = table_row_counts(postgres, target)
    assert counts == {**source_counts, "ir_attachment": source_counts["ir_attachment"] + 1}
    new_name = new_files[0].removeprefix("filestore/")
    assert new_name in attachment_files(postgres, target)
    assert all((filestore.path / f).is_file() for f in attachment_files(postgres, target))


def test_database_version_is_read_from_the_base_module_row(
    postgres: PostgresServer,
    emulator: RunningEmulator,
    tmp_path: Path,
    database_name: Any,
) -> None:
    # No "Odoo version" marker anywhere: only the ir_module_module rows tell.
    database = create_odoo_database(
        postgres, database_name("v15"), tmp_path / "fs", series="15.0", partners=10, attachments=3
    )
    try:
        for kind in ("custom", "plain"):
            dump = upload_dump(postgres, database, tmp_path / f"v15.{kind}", kind)
            assert b"Odoo version" not in dump.read_bytes()

            final = run_upgrade(emulator, dump, "17.0")

            assert final["database_version"] == "15.0", kind
            assert final["postgresql"] == postgres.rows("SHOW server_version")[0][0].split(".")[0]
    finally:
        postgres.drop_database(database.name)


def test_a_custom_dump_without_postgresql_tools_is_invalid_saying_what_is_missing(
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dump = pg_dump_file(postgres, odoo_database.name, tmp_path / "acme.dump")
    (tmp_path / "no-tools").mkdir()
    monkeypatch.setenv(BIN_DIR_ENV, str(tmp_path / "no-tools"))  # inherited by the emulator

    with RunningEmulator(tmp_path / "emulator", process_seconds=0) as emulator:
        final = run_upgrade(emulator, dump, "18.0")

    assert final["state"] == "invalid"
    assert "pg_restore" in final["customer_message"]
    assert "not installed on the emulator host" in final["customer_message"]


def test_directory_format_upgrade_needs_and_uses_a_scratch_server(
    postgres: PostgresServer,
    app_settings: ConnectionSettings,
    odoo_database: OdooDatabase,
    tmp_path: Path,
) -> None:
    original = pg_dump_file(postgres, odoo_database.name, tmp_path / "origin.dump", "directory")
    info = sniff_dump(original)
    assert info.compressions == ["pgdmp_directory"] and info.database_version == "16.0"
    out = tmp_path / "data" / "upgraded.dump"
    out.parent.mkdir()
    databases_before = postgres.databases()

    with pytest.raises(UpgradeRefused, match="--postgres-url") as refused:
        produce_upgraded_directory_dump(original, info, "18.0", out, None)
    assert str(refused.value) == POSTGRES_URL_MISSING and not out.exists()

    produced = produce_upgraded_directory_dump(
        original,
        info,
        "18.0",
        out,
        postgres.url(superuser=False),
        filestore_dir=tmp_path / "data" / "filestore",
    )
    assert postgres.databases() == databases_before  # the scratch database is gone
    assert (out / "toc.dat").is_file() and produced.base_version == "18.0.1.3"
    target = f"{odoo_database.name}_dir"
    restored = restore_database(app_settings, out, target, target="18.0", token="dir")
    filestore = build_filestore(
        odoo_database.filestore, tmp_path / target, upgraded=tmp_path / "data" / "filestore"
    )
    assert restored.format is DumpFormat.DIRECTORY and restored.base_version == "18.0.1.3"
    assert produced.filestore_files[0] in attachment_files(postgres, target)
    assert all((filestore.path / f).is_file() for f in attachment_files(postgres, target))
    shutil.rmtree(out)


def test_a_directory_upgrade_of_a_non_odoo_dump_is_refused(
    postgres: PostgresServer, tmp_path: Path, database_name: Any
) -> None:
    name = database_name("plain")
    postgres.psql(f'CREATE DATABASE "{name}"')
    postgres.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);", name)
    dump = pg_dump_file(postgres, name, tmp_path / "plain.dump")
    postgres.drop_database(name)

    with pytest.raises(UpgradeRefused, match="not an Odoo database"):
        produce_upgraded_directory_dump(
            dump, sniff_dump(dump), "18.0", tmp_path / "upgraded.dump", postgres.url()
        )
    assert not (tmp_path / "upgraded.dump").exists()
    assert not [d for d in postgres.databases() if d.startswith("emulator_scratch_")]


def test_a_custom_dump_cut_short_becomes_invalid_with_pg_restores_words(
    postgres: PostgresServer,
    odoo_database: OdooDatabase,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    whole = pg_dump_file(postgres, odoo_database.name, tmp_path / "acme.dump").read_bytes()
    cut = tmp_path / "cut.dump"
    # res_partner's data comes last: the module rows (read at `process`) are still whole.
    cut.write_bytes(whole[: int(len(whole) * 0.8)])

    final = run_upgrade(emulator, cut, "18.0")

    assert final["state"] == "invalid", final
    assert final["database_version"] == "16.0"
    assert "pg_restore" in final["customer_message"]
