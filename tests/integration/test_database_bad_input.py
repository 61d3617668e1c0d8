"""Each bad input gets its own reason, names the field to fix, and leaks no password."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from odoo_upgrade.database import (
    BIN_DIR_ENV,
    ClientToolsMissing,
    ClientTooOld,
    ConnectionSettings,
    DatabaseAuthenticationFailed,
    DatabaseError,
    DatabaseNameInvalid,
    DatabaseNotFound,
    DatabasePermissionDenied,
    DatabaseSecretKeyMissing,
    DatabaseUnreachable,
    DumpFormatUnknown,
    DumpNotFound,
    check_restore_target,
    check_source,
    dump_database,
    find_client_tools,
    restore_database,
    settings_from_secret,
    settings_from_secret_dir,
)
from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer
from tests.support.odoo_db import OdooDatabase

pytest_plugins = ["tests.support.postgres_fixtures"]

SOURCE_SECRET = "source.database.connectionSecretRef"
RESTORE_SECRET = "restore.database.connectionSecretRef"


def fail(call: Callable[[], object]) -> DatabaseError:
    with pytest.raises(DatabaseError) as raised:
        call()
    return raised.value


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def tools_dir(tmp_path: Path, postgres: PostgresServer, *, old: tuple[str, ...] = ()) -> Path:
    """pg_dump/pg_restore/psql that log their argv and environment, then run the real tool;
    those in `old` claim to be version 12.22."""
    directory = tmp_path / "pgbin"
    directory.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        real = Path(postgres.bin_dir) / tool
        fake_version = (
            f'if [ "$1" = "--version" ]; then echo "{tool} (PostgreSQL) 12.22"; exit 0; fi\n'
            if tool in old
            else ""
        )
        write_script(
            directory / tool,
            "#!/bin/sh\n"
            f'printf "%s\\n" "{tool} $*" >> {directory}/argv.log\n'
            f"env >> {directory}/env.log\n"
            f'{fake_version}exec {real} "$@"\n',
        )
    return directory


def test_unreachable_server_is_transient_and_names_the_secret(tmp_path: Path) -> None:
    settings = ConnectionSettings("127.0.0.1", free_port(), "odoo", "irrelevant")

    error = fail(lambda: check_source(settings, "acme"))

    assert isinstance(error, DatabaseUnreachable) and error.transient
    assert error.reason == "DatabaseUnreachable" and error.field == SOURCE_SECRET
    assert error.as_result()["transient"] is True
    assert not (tmp_path / "acme.dump").exists()


def test_wrong_password_is_refused_and_no_password_appears_anywhere(
    postgres: PostgresServer, odoo_database: OdooDatabase, tmp_path: Path, monkeypatch: Any
) -> None:
    wrong = "Wr0ng:pass\\word"
    bin_dir = tools_dir(tmp_path, postgres)
    monkeypatch.setenv(BIN_DIR_ENV, str(bin_dir))
    settings = settings_from_secret(postgres.secret_data(password=wrong))

    error = fail(lambda: dump_database(settings, odoo_database.name, tmp_path / "acme.dump"))

    assert isinstance(error, DatabaseAuthenticationFailed) and not error.transient
    assert error.reason == "DatabaseAuthenticationFailed" and error.field == SOURCE_SECRET
    assert "password authentication failed" in error.message  # libpq's own words
    # A good run too, so that the tools see the right password; neither shows anywhere.
    good = settings_from_secret(postgres.secret_data())
    dump_database(good, odoo_database.name, tmp_path / "acme.dump")
    seen = "\n".join(
        [str(error), json.dumps(error.as_result()), repr(settings), repr(good)]
        + [(bin_dir / log).read_text() for log in ("argv.log", "env.log")]
    )
    assert "pg_dump --format=custom" in seen
    for password in (wrong, postgres.app_password):
        assert password not in seen
    assert "PGPASSWORD" not in (bin_dir / "env.log").read_text()
    assert "PGPASSFILE=" in (bin_dir / "env.log").read_text()
    # The password file is gone once the work is done.
    passfiles = {
        line.split("=", 1)[1]
        for line in (bin_dir / "env.log").read_text().splitlines()
        if line.startswith("PGPASSFILE=")
    }
    assert passfiles and not any(os.path.exists(p) for p in passfiles)


def test_a_password_echoed_by_the_server_is_masked(
    postgres: PostgresServer, odoo_database: OdooDatabase
) -> None:
    # A database named like the password: the server's "does not exist" repeats it.
    settings = settings_from_secret(postgres.secret_data())

    error = fail(lambda: check_source(settings, postgres.app_password))

    assert isinstance(error, DatabaseNotFound)
    assert postgres.app_password not in str(error) and "***" in str(error)


def test_database_not_found_names_the_database_field(
    postgres: PostgresServer, app_settings: ConnectionSettings
) -> None:
    error = fail(lambda: check_source(app_settings, "no_such_database"))

    assert isinstance(error, DatabaseNotFound) and error.field == "source.database.name"
    assert "'no_such_database' does not exist" in error.message


def test_client_older_than_the_server_is_refused_before_any_work(
    postgres: PostgresServer, odoo_database: OdooDatabase, tmp_path: Path, monkeypatch: Any
) -> None:
    bin_dir = tools_dir(tmp_path, postgres, old=("pg_dump", "pg_restore"))
    monkeypatch.setenv(BIN_DIR_ENV, str(bin_dir))
    settings = settings_from_secret(postgres.secret_data())
    server_version = postgres.rows("SHOW server_version")[0][0].split()[0]
    dump = tmp_path / "acme.dump"

    for call in (
        lambda: dump_database(settings, odoo_database.name, dump),
        lambda: check_restore_target(settings, f"{odoo_database.name}_new"),
    ):
        error = fail(call)
        assert isinstance(error, ClientTooOld) and error.reason == "ClientTooOld"
        assert "12.22" in error.message and server_version in error.message
        assert "--database-image" in error.message and "mover image" in error.message
    assert not dump.exists() and not dump.with_name(".acme.dump.part").exists()
    assert "pg_dump --format" not in (bin_dir / "argv.log").read_text()


def test_the_newest_client_wins_over_an_old_one_first_on_path(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: Any
) -> None:
    old = tools_dir(tmp_path, postgres, old=("pg_dump",))
    monkeypatch.delenv(BIN_DIR_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{old}{os.pathsep}{os.environ['PATH']}")

    tools = find_client_tools()

    assert tools.bin_dir != old and not tools.version.startswith("12.")


def test_missing_client_tools_say_what_to_install(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(BIN_DIR_ENV, str(tmp_path))

    error = fail(find_client_tools)

    assert isinstance(error, ClientToolsMissing) and "pg_dump" in error.message
    assert BIN_DIR_ENV in error.message


def test_secret_without_a_key_names_the_field_and_the_key(tmp_path: Path) -> None:
    from_data = fail(
        lambda: settings_from_secret({"host": "db", "username": "odoo"}, field_name=RESTORE_SECRET)
    )
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "host").write_text("db\n")
    (secret_dir / "password").write_text("pw")
    from_dir = fail(lambda: settings_from_secret_dir(secret_dir))
    bad_port = fail(
        lambda: settings_from_secret(
            {"host": "db", "username": "u", "password": "p", "port": "54x"}
        )
    )

    assert isinstance(from_data, DatabaseSecretKeyMissing)
    assert from_data.field == RESTORE_SECRET and "'password'" in from_data.message
    assert isinstance(from_dir, DatabaseSecretKeyMissing) and "'username'" in from_dir.message
    assert isinstance(bad_port, DatabaseSecretKeyMissing) and "'port'" in bad_port.message


def test_a_mounted_secret_directory_connects(
    postgres: PostgresServer, odoo_database: OdooDatabase, tmp_path: Path
) -> None:
    settings = settings_from_secret_dir(postgres.write_secret_dir(tmp_path / "secret"))

    assert check_source(settings, odoo_database.name).database == odoo_database.name


def test_a_role_without_createdb_cannot_be_a_restore_target(
    postgres: PostgresServer, database_name: Callable[[str], str]
) -> None:
    role = database_name("reader")
    postgres.create_role(role, "reader-password")
    settings = settings_from_secret(
        postgres.secret_data(user=role, password="reader-password"), field_name=RESTORE_SECRET
    )

    error = fail(lambda: check_restore_target(settings, f"{role}_target"))

    assert isinstance(error, DatabasePermissionDenied) and error.field == RESTORE_SECRET
    assert "CREATEDB" in error.message


def test_bad_database_name_and_missing_or_unknown_dump(
    app_settings: ConnectionSettings, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01\x02 not a dump")

    too_long = fail(lambda: check_source(app_settings, "x" * 64))
    missing = fail(
        lambda: restore_database(
            app_settings, tmp_path / "nope.dump", "new_db", target="18.0", token="t"
        )
    )
    unknown = fail(
        lambda: restore_database(app_settings, garbage, "new_db", target="18.0", token="t")
    )

    assert isinstance(too_long, DatabaseNameInvalid) and too_long.field == "source.database.name"
    assert isinstance(missing, DumpNotFound) and missing.field == "destination.path"
    assert isinstance(unknown, DumpFormatUnknown) and unknown.field == "destination.path"
